import Foundation
import PropertyBased
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// A partition's snapshot: its image written and read back gives the same state, and bytes that
/// were damaged, cut short or written by another format are refused, never half-read.
@Suite(.timeLimit(.minutes(5))) struct SnapshotTests {
    /// An engine whose partitions hold some of everything: accounts, packs, orders, usage in the
    /// index and in the filter, bills, notices, a refund.
    static func busyEngine() async throws -> Tally {
        let clock = VirtualClock(start: PartitionTests.start)
        let tally = try await Tally.start(catalog: StoreConformanceTests.catalog, store: InMemoryStore(), clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: 64, partitions: 4)
        let accounts = (0..<12).map { "acct-\($0)" }
        try await PartitionTests.customers(tally, accounts)
        for start in stride(from: 0, to: 900, by: 150) {
            _ = try await tally.perform(RecordUsageBatch(events: (start..<start + 150).map {
                RecordUsage(account: accounts[$0 % accounts.count], id: "e\($0)", api: "image-tagging.general", calls: 400, mode: .report)
            }))
        }
        try await tally.perform(TopUp(account: accounts[2], cash: Money(parsing: "1000.00")!))
        _ = try await tally.perform(Buy(account: accounts[2], item: "image-tagging.general/100k", quantity: .count(1)))
        _ = try await tally.perform(RecordUsage(account: accounts[2], id: "after-buy", api: "image-tagging.general", calls: 5, mode: .check))
        try clock.advance(to: Instant(rfc3339: "2026-02-01T02:00:00+08:00")!)
        _ = try await tally.runBills(month: Month(year: 2026, month: 1))
        return tally
    }

    @Test func anImageComesBackEqual() async throws {
        let tally = try await Self.busyEngine()
        let zone = StoreConformanceTests.catalog.zone
        for partition in 0..<tally.partitioning.count {
            let image = tally.read(partition: partition) { $0.partition.image }
            #expect(!image.records.accounts.isEmpty && image.retired != nil)
            let bytes = try SnapshotCodec.encode(image)
            let decoded = try SnapshotCodec.decode(bytes)
            #expect(decoded == image)
            // A state made from it has the same image, and its filter answers as the first did.
            let state = try PartitionState(image: decoded, zone: zone, usageCacheGeneration: 16)
            #expect(state.image == image)
            let original = try #require(tally.read(partition: partition) { $0.retiredKeys })
            let keys = (0..<900).map { (TallyState.usageKey(account: "acct-\($0 % 12)", id: "e\($0)"), Optional<Instant>.none) }
            #expect(state.retiredKeys!.suspects(among: keys) == original.suspects(among: keys))
        }
        let retired = tally.readEach { $0.retiredKeys?.count ?? 0 }.reduce(0, +)
        #expect(retired > 0, "some ids left the index for the filter")
    }

    @Test func damagedBytesAreRefused() async throws {
        let tally = try await Self.busyEngine()
        let bytes = try SnapshotCodec.encode(tally.read(partition: 1) { $0.partition.image })
        func refused(_ bytes: [UInt8]) -> Bool {
            do {
                _ = try SnapshotCodec.decode(bytes)
                return false
            } catch {
                return error.code == .snapshotUnusable
            }
        }
        // One bit flipped anywhere after the header: the checksum no longer matches.
        for offset in stride(from: 16, to: bytes.count, by: max(1, bytes.count / 97)) {
            var flipped = bytes
            flipped[offset] ^= 0x10
            #expect(refused(flipped), "a bit flipped at \(offset) of \(bytes.count)")
        }
        #expect(refused(Array(bytes.prefix(bytes.count - 1))))
        #expect(refused(Array(bytes.prefix(10))))
        #expect(refused([]))
        // Another format: refused before anything else is read.
        var other = bytes
        other[4] &+= 1
        #expect(refused(other))
    }

    /// What a rebuild hands over: each fact's position and kind.
    struct Recorder: FactFolding {
        var seen: [(position: Int64, kind: String, shared: Bool)] = []
        mutating func fold(_ fact: Fact, at position: Int64) { seen.append((position, fact.kind, FactRoute.isShared(fact))) }
    }

    /// A store keeps the newest two snapshots of each partition, across a reopen, newest first,
    /// and answers by rank and by partition.
    @Test(arguments: StoreKind.available)
    func aStoreKeepsTheNewestTwoOfEachPartition(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let taken = PartitionTests.start
        for position in [5, 9, 7, 12, 12] {
            try await store.saveSnapshot(StoredSnapshot(partition: 0, position: Int64(position), taken: taken, bytes: [UInt8(position), 1, 2]))
        }
        try await store.saveSnapshot(StoredSnapshot(partition: 3, position: 4, taken: taken, bytes: []))
        let reopened = try await reopen()
        let kept = try await reopened.snapshots()
        #expect(kept.map { [$0.partition, Int($0.position)] } == [[0, 12], [0, 9], [3, 4]])
        #expect(kept[0].bytes == [12, 1, 2] && kept[0].taken == taken && kept[2].bytes.isEmpty)
        // By rank: each partition's newest, then the one before (partition 3 has none).
        let newest = try await reopened.snapshots(rank: 0), before = try await reopened.snapshots(rank: 1)
        #expect(newest.map { [$0.partition, Int($0.position)] } == [[0, 12], [3, 4]] && newest[0].bytes == [12, 1, 2])
        #expect(before.map { [$0.partition, Int($0.position)] } == [[0, 9]] && before[0].bytes == [9, 1, 2])
        #expect(try await reopened.snapshots(rank: 2).isEmpty)
        // By partition: a reload reads the few it reloads.
        let three = try await reopened.snapshots(rank: 0, partitions: [3]), none = try await reopened.snapshots(rank: nil, partitions: [1, 2])
        #expect(three.map { [$0.partition, Int($0.position)] } == [[3, 4]] && none.isEmpty)
        let both = try await reopened.snapshots(rank: nil, partitions: [0, 3])
        #expect(both.map { [$0.partition, Int($0.position)] } == [[0, 12], [0, 9], [3, 4]])
    }

    /// A rebuild after a position hands over every shared fact and every fact after it, in
    /// order and with the positions a full rebuild gives them; the store's position is at or
    /// past every fact committed.
    @Test(arguments: StoreKind.available)
    func aRebuildAfterAPositionReadsTheSharedFactsAndTheTail(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: PartitionTests.start)
        let tally = try await PartitionTests.engine(store, clock, partitions: 4)
        try await PartitionTests.customers(tally, ["a", "b", "c"])
        try await tally.perform(AddWebhookEndpoint(url: "http://127.0.0.1:9/one", secret: "s", account: nil))
        _ = try await tally.perform(RecordUsageBatch(events: (0..<50).map {
            RecordUsage(account: ["a", "b", "c"][$0 % 3], id: "e\($0)", api: "image-tagging.general", calls: 10, mode: .report)
        }))
        let middle = try await store.position()
        try await tally.perform(AddWebhookEndpoint(url: "http://127.0.0.1:9/two", secret: "s", account: nil))
        try await tally.perform(TopUp(account: "b", cash: Money(parsing: "5.00")!))
        _ = try await tally.perform(RecordUsage(account: "c", id: "late", api: "image-tagging.general", calls: 3, mode: .check))
        let again = try await reopen()
        let all = try await again.rebuild(Recorder()).seen
        let end = try await again.position()
        #expect(all.count == tally.read { $0.factCount })
        #expect(zip(all, all.dropFirst()).allSatisfy { $0.position < $1.position } && all.last!.position <= end)
        #expect(middle > 0 && middle < end)
        let tail = try await again.rebuild(Recorder(), after: middle).seen
        let expected = all.filter { $0.position > middle || $0.shared }
        #expect(tail.map(\.position) == expected.map(\.position) && tail.map(\.kind) == expected.map(\.kind))
        #expect(tail.filter(\.shared).count == 2 && tail.contains { $0.kind == "usage_recorded" })
    }

    // MARK: - The engine's snapshots

    static let accounts = ["a", "b", "c", "d", "e", "f"]

    /// One random step, from small integers.
    static func operation(_ code: [Int], step: Int) -> (any TallyEngine.Operation)? {
        let account = accounts[code[1] % accounts.count]
        switch code[0] % 10 {
        case 0: return TopUp(account: account, cash: Money(yuan: Int64(code[2] % 3_000), fen: Int64(code[3] % 100)))
        case 1: return Buy(account: account, item: code[2] % 2 == 0 ? "image-tagging.general/10k" : "image-tagging.general/100k", quantity: .count(1), ref: "o\(step)")
        case 2, 3: return RecordUsage(account: account, id: code[3] % 3 == 0 ? "e\(code[2] % 9)" : "e\(step)", api: "image-tagging.general",
                                      calls: Int64(code[2] % 5_000 + 1), mode: code[3] % 2 == 0 ? .check : .report)
        case 4, 5: return RecordUsageBatch(events: (0..<(code[2] % 40 + 1)).map {
            RecordUsage(account: accounts[($0 + code[1]) % accounts.count], id: "b\(step)-\($0 % (code[3] % 30 + 1))", api: "image-tagging.general",
                        calls: Int64($0 % 700 + 1), mode: .report)
        })
        case 6: return Refund(account: account, ref: "o\(max(0, step - 1 - code[3] % 4))")
        case 7: return GrantVoucher(account: account, amount: Money(yuan: Int64(code[3] % 50) + 1), expires: Instant(rfc3339: "2027-01-01T00:00:00+08:00")!, product: nil)
        case 8: return code[3] % 3 == 0 ? AddWebhookEndpoint(url: "http://127.0.0.1:9/h\(step)", secret: "s", account: nil) : Suspend(account: account, suspended: code[2] % 2 == 0)
        default: return nil
        }
    }

    /// The partitions' states a full replay of `store` gives, with an engine's settings.
    static func replayed(_ store: any TallyStore, partitions: Int, now: Instant) async throws -> PartitionedState {
        let partitioning = try Partitioning(count: partitions)
        return try await store.rebuild(PartitionedState((0..<partitions).map { _ in
            var state = TallyState(catalog: StoreConformanceTests.catalog)
            state.retiredKeys = RetiredUsageKeys()
            state.forgetUsage(recordedBefore: now.adding(seconds: -Tally.usageIndexDays * 86_400))
            return state
        }, partitioning: partitioning))
    }

    /// Every partition of `tally` holds what a full replay of the store gives: records, index
    /// and counts (the filters' keys are each their own).
    static func expectSame(_ tally: Tally, _ replayed: PartitionedState, sourceLocation: SourceLocation = #_sourceLocation) {
        for partition in 0..<tally.partitioning.count {
            let loaded = tally.read(partition: partition) { $0.partition.image }, full = replayed.parts[partition].partition.image
            #expect(loaded.records == full.records, "partition \(partition)", sourceLocation: sourceLocation)
            #expect(Set(loaded.usageCurrent + loaded.usagePrevious) == Set(full.usageCurrent + full.usagePrevious), "partition \(partition)",
                    sourceLocation: sourceLocation)
        }
        #expect(tally.readShared { $0.webhookEndpoints.keys.sorted() } == replayed.parts[0].webhookEndpoints.keys.sorted(), sourceLocation: sourceLocation)
    }

    /// For random sequences of operations, with snapshots taken part way (a round, then one
    /// partition again), a start from the snapshots and the facts after them gives what a full
    /// replay gives, on every store.
    @Test(arguments: StoreKind.available)
    func snapshotsAndTheTailGiveWhatFullReplayGives(kind: StoreKind) async {
        await propertyCheck(count: 8, input: Gen.int(in: 0...10_000).array(of: 4).array(of: 8...40), Gen.int(in: 0...1_000)) { steps, cut in
            do {
                try await Self.compare(kind, steps, snapshotAt: cut % steps.count)
            } catch {
                Issue.record("harness failure: \(error)")
            }
        }
    }

    static func compare(_ kind: StoreKind, _ steps: [[Int]], snapshotAt: Int) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: PartitionTests.start)
        let tally = try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: nil, partitions: 4)
        try await PartitionTests.customers(tally, accounts)
        var snapshotted = false
        for (index, code) in steps.enumerated() {
            if index == snapshotAt {
                #expect(try await tally.snapshotAll() > 0)
                snapshotted = true
            } else if snapshotted, code[1] % 5 == 0 {
                try await tally.snapshot(partition: code[2] % 4)
            }
            if let operation = operation(code, step: index) { _ = try? await tally.perform(operation) }
        }
        let again = try await Tally.start(catalog: StoreConformanceTests.catalog, store: try await reopen(), clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: nil)
        #expect(again.snapshotsLoaded == 4)
        expectSame(again, try await replayed(store, partitions: 4, now: clock.now))
        expectSame(tally, try await replayed(store, partitions: 4, now: clock.now))
    }

    /// Ids that left a small index are in the filter the snapshot brought back: sent again after
    /// a start from snapshots, they are answered as duplicates, with no reload; the audit is clean.
    @Test(arguments: StoreKind.available)
    func idsInTheFilterAreKnownAfterAStartFromSnapshots(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: PartitionTests.start)
        let tally = try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: 128, partitions: 4)
        try await PartitionTests.customers(tally, ["a", "b", "c"])
        let events = (0..<2_000).map { RecordUsage(account: ["a", "b", "c"][$0 % 3], id: "e\($0)", api: "image-tagging.general", calls: 1, mode: .report) }
        for start in stride(from: 0, to: 1_800, by: 300) { _ = try await tally.perform(RecordUsageBatch(events: Array(events[start..<start + 300]))) }
        #expect(try await tally.snapshotAll() == 4)
        #expect(try await tally.snapshotAll() == 0, "nothing applied since: nothing written")
        _ = try await tally.perform(RecordUsageBatch(events: Array(events[1_800...])))
        let again = try await Tally.start(catalog: StoreConformanceTests.catalog, store: try await reopen(), clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: 128)
        #expect(again.snapshotsLoaded == 4)
        #expect(again.readEach { $0.retiredKeys?.count ?? 0 }.reduce(0, +) > 1_000, "most ids are in the filters")
        let resent = try await again.perform(RecordUsageBatch(events: Array(events[0..<1_000])))
        #expect(resent.allSatisfy { (try? $0.get())?.duplicate == true })
        #expect(again.reloads == 0)
        #expect(again.readEach { $0.usageEvents }.reduce(0, +) == 2_000)
        #expect(try await again.audit().isClean)
    }

    /// A newest snapshot that cannot be used (another format, here) is passed over for the one
    /// before it; with none usable, the partition is replayed from its facts. Either way the
    /// state is what a full replay gives.
    @Test(arguments: StoreKind.available)
    func anUnusableSnapshotIsPassedOver(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: PartitionTests.start)
        let tally = try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: nil, partitions: 2)
        try await PartitionTests.customers(tally, Self.accounts)
        try await tally.snapshotAll()
        _ = try await tally.perform(RecordUsageBatch(events: (0..<60).map {
            RecordUsage(account: Self.accounts[$0 % Self.accounts.count], id: "late\($0)", api: "image-tagging.general", calls: 9, mode: .report)
        }))
        // Partition 0: a newer snapshot of another format. Partition 1: its only one damaged.
        let kept = try await store.snapshots()
        var otherFormat = try #require(kept.first { $0.partition == 0 }).bytes
        otherFormat[4] &+= 1
        let end = try await store.position()
        try await store.saveSnapshot(StoredSnapshot(partition: 0, position: end, taken: clock.now, bytes: otherFormat))
        var damaged = try #require(kept.first { $0.partition == 1 })
        var bytes = damaged.bytes
        bytes[bytes.count / 2] ^= 1
        damaged = StoredSnapshot(partition: 1, position: damaged.position, taken: damaged.taken, bytes: bytes)
        try await store.saveSnapshot(damaged)
        let again = try await Tally.start(catalog: StoreConformanceTests.catalog, store: try await reopen(), clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: nil)
        #expect(again.snapshotsLoaded == 1)
        Self.expectSame(again, try await Self.replayed(store, partitions: 2, now: clock.now))
    }
}

/// Two processes writing one store: neither can know that a partition's snapshot covers the other's
/// facts, so none is written; a process started after them, alone, writes them again.
@Suite(.timeLimit(.minutes(5))) struct SnapshotWritersTests {
    @Test func noSnapshotIsWrittenWhileAnotherProcessWrites() async throws {
        let store = InMemoryStore()
        let clock = VirtualClock(start: PartitionTests.start)
        let one = try await PartitionTests.engine(store, clock, partitions: 2)
        let two = try await PartitionTests.engine(store, clock)
        try await PartitionTests.customers(one, ["a"])
        try await PartitionTests.customers(two, ["b"])
        #expect(try await one.snapshotAll() == 0)
        #expect(try await two.snapshotAll() == 0)
        #expect(try await store.snapshots().isEmpty)
        let alone = try await PartitionTests.engine(store, clock)
        try await alone.perform(TopUp(account: "a", cash: Money(yuan: 1)))
        #expect(try await alone.snapshotAll() == 2)
        #expect(try await store.snapshots().count == 2)
    }
}

/// A lost race reloads only the partitions whose facts may be missing from the store.
@Suite(.timeLimit(.minutes(5))) struct PartitionReloadTests {
    /// Another process counted an id for an account of one partition; this process, sent the same
    /// id, loses at the store's unique index, reloads that partition alone and answers a duplicate.
    /// Another partition keeps its state as it was, and every partition holds what a full replay
    /// gives.
    @Test(arguments: StoreKind.available)
    func aLostRaceReloadsOnlyItsPartition(kind: StoreKind) async throws {
        let (store, _) = try await kind.make()
        let clock = VirtualClock(start: PartitionTests.start)
        let one = try await PartitionTests.engine(store, clock, partitions: 8)
        let (a, b) = PartitionTests.apart(one.partitioning)
        try await PartitionTests.customers(one, [a, b])
        let two = try await PartitionTests.engine(store, clock)
        _ = try await two.perform(RecordUsage(account: a, id: "raced", api: "image-tagging.general", calls: 5, mode: .report))
        _ = try await one.perform(RecordUsage(account: b, id: "mine", api: "image-tagging.general", calls: 2, mode: .report))
        let before = one.read(account: b) { $0.partition.image }
        let answer = try await one.perform(RecordUsage(account: a, id: "raced", api: "image-tagging.general", calls: 5, mode: .report))
        #expect(answer.duplicate && answer.accepted == 5)
        #expect(one.reloads == 1)
        #expect(one.partitionsLastReloaded == [one.partitioning.partition(of: a)])
        #expect(one.read(account: b) { $0.partition.image } == before)
        SnapshotTests.expectSame(one, try await SnapshotTests.replayed(store, partitions: 8, now: clock.now))
        #expect(try await one.audit().isClean)
    }
}
