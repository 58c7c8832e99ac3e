import Foundation
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
            let keys = (0..<900).map { TallyState.usageKey(account: "acct-\($0 % 12)", id: "e\($0)") }
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

    /// A store keeps the newest two snapshots of each partition, across a reopen, newest first.
    @Test(arguments: StoreKind.available)
    func aStoreKeepsTheNewestTwoOfEachPartition(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let taken = PartitionTests.start
        for position in [5, 9, 7, 12, 12] {
            try await store.saveSnapshot(StoredSnapshot(partition: 0, position: Int64(position), taken: taken, bytes: [UInt8(position), 1, 2]))
        }
        try await store.saveSnapshot(StoredSnapshot(partition: 3, position: 4, taken: taken, bytes: []))
        let kept = try await reopen().snapshots()
        #expect(kept.map { [$0.partition, Int($0.position)] } == [[0, 12], [0, 9], [3, 4]])
        #expect(kept[0].bytes == [12, 1, 2] && kept[0].taken == taken && kept[2].bytes.isEmpty)
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
}
