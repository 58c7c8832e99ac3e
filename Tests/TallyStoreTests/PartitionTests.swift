import Foundation
import Synchronization
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// The engine split into partitions by account: each with its own lock, operations routed to
/// their account's, shared facts reaching every partition, work over many accounts split by
/// partition, and a rebuild from the store giving each partition what memory holds.
@Suite(.timeLimit(.minutes(5))) struct PartitionTests {
    static let start = Instant(rfc3339: "2026-01-05T10:00:00+08:00")!

    static func engine(_ store: any TallyStore, _ clock: VirtualClock, partitions: Int? = nil) async throws -> Tally {
        try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: SequentialIDs(), partitions: partitions)
    }

    static func customers(_ tally: Tally, _ accounts: [String]) async throws {
        for account in accounts {
            try await tally.perform(OpenAccount(account: account, subject: .enterprise, verified: true))
            try await tally.perform(TopUp(account: account, cash: Money(parsing: "100.00")!))
            try await tally.perform(Activate(account: account, product: "image-tagging"))
        }
    }

    /// Two accounts of different partitions.
    static func apart(_ partitioning: Partitioning) -> (String, String) {
        let first = "acct-0"
        let other = (1...).lazy.map { "acct-\($0)" }.first { partitioning.partition(of: $0) != partitioning.partition(of: first) }!
        return (first, other)
    }

    /// Holds its account's partition (its lock, on a thread of its own) until released: what a
    /// long slice does to the other operations of that partition.
    struct Hold: TallyEngine.Operation {
        let account: String
        let flags: Flags
        var placement: Placement { .account(account) }

        func execute(_ state: inout EngineState, _ environment: Environment) throws(TallyError) {
            flags.held.store(true, ordering: .sequentiallyConsistent)
            let deadline = ContinuousClock.now + .seconds(10)
            while !flags.released.load(ordering: .sequentiallyConsistent), ContinuousClock.now < deadline { usleep(200) }
        }
    }

    final class Flags: Sendable {
        let held = Atomic<Bool>(false)
        let released = Atomic<Bool>(false)
    }

    /// A check for an account of one partition is answered, durable, while another partition's
    /// lock is held; the held partition's own check waits for it.
    @Test func aCheckIsAnsweredWhileAnotherPartitionIsHeld() async throws {
        let clock = VirtualClock(start: Self.start)
        let store = InMemoryStore()
        let tally = try await Self.engine(store, clock)
        let (free, busy) = Self.apart(tally.partitioning)
        try await Self.customers(tally, [free, busy])
        let flags = Flags()
        let holding = Task.detached { try await tally.perform(Hold(account: busy, flags: flags)) }
        while !flags.held.load(ordering: .sequentiallyConsistent) { try await Task.sleep(for: .milliseconds(1)) }
        let queuedDone = Atomic<Bool>(false)
        let queued = Task {
            defer { queuedDone.store(true, ordering: .sequentiallyConsistent) }
            return try await tally.perform(RecordUsage(account: busy, id: "queued", api: "image-tagging.general", calls: 1, mode: .check))
        }
        let outcome = try await tally.perform(RecordUsage(account: free, id: "c1", api: "image-tagging.general", calls: 1, mode: .check))
        #expect(outcome.refused == 0 && outcome.free == 1)
        let released = flags.released.load(ordering: .sequentiallyConsistent)
        #expect(!released, "answered while the other partition was still held")
        #expect(store.count > 0)
        try await Task.sleep(for: .milliseconds(20))
        let queuedAnswered = queuedDone.load(ordering: .sequentiallyConsistent)
        #expect(!queuedAnswered, "the held partition's check waits for it")
        flags.released.store(true, ordering: .sequentiallyConsistent)
        try await holding.value
        #expect(try await queued.value.free == 1)
    }

    /// Each account and what it owns is in its own partition only; a shared fact (a key) is in
    /// every partition's shared part, and in the one read without waiting.
    @Test func accountsLiveInTheirPartitionAndSharedFactsInEvery() async throws {
        let tally = try await Self.engine(InMemoryStore(), VirtualClock(start: Self.start), partitions: 8)
        let accounts = (0..<40).map { "acct-\($0)" }
        try await Self.customers(tally, accounts)
        let key = try await tally.perform(IssueKey(role: .customer, account: accounts[5], digest: String(repeating: "ab", count: 32)))
        for partition in 0..<8 {
            let (held, hasKey) = tally.read(partition: partition) { (Set($0.accounts.keys), $0.keys[key.id] != nil) }
            #expect(held == Set(accounts.filter { tally.partitioning.partition(of: $0) == partition }))
            #expect(hasKey)
        }
        #expect(tally.readShared { $0.keys[key.id] } == key)
        #expect(tally.read { $0.accounts.count } == accounts.count)
    }

    /// A report over accounts of many partitions (with a duplicate, an unknown account and an
    /// event of a suspended account among them) answers each event in the report's order, as an
    /// engine of one partition does.
    @Test func aReportAcrossPartitionsAnswersInItsOrder() async throws {
        let accounts = (0..<24).map { "acct-\($0)" }
        var events: [RecordUsage] = []
        for index in 0..<1_900 {
            let account = index % 97 == 0 ? "nobody" : accounts[(index * 7) % accounts.count]
            events.append(RecordUsage(account: account, id: "e\(index)", api: "image-tagging.general", calls: 1 + Int64(index % 3), mode: .report))
        }
        events += events.prefix(100)
        var answers: [[Result<UsageOutcome, TallyError>]] = []
        for partitions in [1, 16] {
            let tally = try await Self.engine(InMemoryStore(), VirtualClock(start: Self.start), partitions: partitions)
            try await Self.customers(tally, accounts)
            try await tally.perform(Suspend(account: accounts[3], suspended: true))
            answers.append(try await tally.perform(RecordUsageBatch(events: events)))
        }
        #expect(answers[0].count == events.count)
        #expect(answers[0] == answers[1])
        #expect(answers[0].contains { (try? $0.get())?.duplicate == true })
        #expect(answers[0].contains { if case .failure = $0 { true } else { false } })
    }

    /// The bill run, the free quota sweep and a catalog change's notices reach the accounts of
    /// every partition, as with one partition; the month is closed in every partition.
    @Test func workOverEveryAccountReachesEveryPartition() async throws {
        var outcomes: [(bills: [String], notices: [String], closed: [Month?])] = []
        for partitions in [1, 16] {
            let clock = VirtualClock(start: Self.start)
            let tally = try await Self.engine(InMemoryStore(), clock, partitions: partitions)
            let accounts = (0..<30).map { "acct-\($0)" }
            try await Self.customers(tally, accounts)
            _ = try await tally.perform(RecordUsageBatch(events: accounts.map {
                RecordUsage(account: $0, id: "u", api: "image-tagging.general", calls: 2_000, mode: .report)
            }))
            try await tally.perform(PublishCatalog(effective: Instant(rfc3339: "2026-03-01T00:00:00+08:00")!,
                                                   changes: "changes: [{api: image-tagging.general, free_monthly: 500}]"))
            try clock.advance(to: Instant(rfc3339: "2026-02-01T02:00:00+08:00")!)
            let totals = try await tally.runBills(month: Month(year: 2026, month: 1))
            #expect(totals.accounts == accounts.count)
            try await tally.grantFreeQuota()
            let state = tally.read { $0 }
            outcomes.append((state.bills.values.map { "\($0.id) \($0.total)" }.sorted(),
                             state.notices.map { "\($0.kind) \($0.account ?? "")" }.sorted(),
                             tally.readEach { $0.closedThrough }))
            #expect(state.notices.filter { $0.kind == "catalog_change_scheduled" }.count == accounts.count)
            #expect(state.accounts.values.allSatisfy { $0.freePacks.keys.contains { $0.month == Month(year: 2026, month: 2) } })
        }
        #expect(outcomes[0].bills == outcomes[1].bills)
        #expect(!outcomes[0].bills.isEmpty)
        #expect(outcomes[0].notices == outcomes[1].notices)
        #expect(outcomes[1].closed.allSatisfy { $0 == Month(year: 2026, month: 1) })
    }

    /// With a small index (a generation of 32 events a partition), ids repeated from long before,
    /// within a report and sent again whole, are read from the store before they are applied and
    /// counted once; nothing fails at the store's unique index, so the engine never reloads.
    @Test(arguments: StoreKind.available)
    func idsThatLeftTheIndexAreCountedOnce(kind: StoreKind) async throws {
        let (store, _) = try await kind.make()
        let tally = try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: VirtualClock(start: Self.start).clock,
                                          ids: SequentialIDs(), usageCacheGeneration: 128, partitions: 4)
        let accounts = ["a", "b", "c"]
        try await Self.customers(tally, accounts)
        let events = (0..<3_000).map { index in
            let number = index % 10 == 9 ? index / 2 : index
            return RecordUsage(account: accounts[number % 3], id: "e\(number)", api: "image-tagging.general", calls: 1, mode: .report)
        }
        let distinct = Set(events.map { "\($0.account)/\($0.id)" }).count
        for start in stride(from: 0, to: events.count, by: 700) {
            _ = try await tally.perform(RecordUsageBatch(events: Array(events[start..<min(start + 700, events.count)])))
        }
        let again = try await tally.perform(RecordUsageBatch(events: Array(events.prefix(RecordUsageBatch.eventsMax))))
        #expect(again.allSatisfy { (try? $0.get())?.duplicate == true })
        #expect(tally.reloads == 0)
        #expect(tally.readEach { $0.usageEvents }.reduce(0, +) == Int64(distinct))
        #expect(tally.readEach { $0.usage.count }.reduce(0, +) < distinct, "the index let ids go")
    }

    /// The filters of retired ids are kept by day: the daily trim drops the days that left the
    /// ids' 35-day window, so memory stops growing with history, and a start never loads them.
    @Test func theDailyTrimDropsTheFiltersDaysPastTheWindow() async throws {
        let store = InMemoryStore()
        let clock = VirtualClock(start: Self.start)
        let tally = try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: 64, partitions: 4)
        try await Self.customers(tally, ["a", "b", "c"])
        func record(_ prefix: String) async throws {
            for start in stride(from: 0, to: 600, by: 100) {
                _ = try await tally.perform(RecordUsageBatch(events: (start..<start + 100).map {
                    RecordUsage(account: ["a", "b", "c"][$0 % 3], id: "\(prefix)\($0)", api: "image-tagging.general", calls: 1, mode: .report)
                }))
            }
        }
        func retired(_ engine: Tally) -> (keys: Int, days: Int) {
            engine.readEach { ($0.retiredKeys!.count, $0.retiredKeys!.dayCount) }.reduce((0, 0)) { ($0.0 + $1.0, max($0.1, $1.1)) }
        }
        try await record("old")
        let first = retired(tally)
        #expect(first.keys > 300 && first.days == 1)
        try clock.advance(to: Instant(rfc3339: "2026-01-20T10:00:00+08:00")!)
        try await record("mid")
        #expect(retired(tally).days == 2)
        // 36 days after the first events: their day goes, the later one stays.
        let before = retired(tally)
        try clock.advance(to: Instant(rfc3339: "2026-02-10T10:00:00+08:00")!)
        _ = await tally.forgetOldUsage()
        let trimmed = retired(tally)
        #expect(trimmed.days == 1 && trimmed.keys < before.keys && trimmed.keys <= 600)
        let again = try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: 64)
        #expect(retired(again).days <= 1 && retired(again).keys <= 600)
    }

    /// Started again on the store, every partition holds what it held in memory.
    @Test(arguments: StoreKind.available)
    func eachPartitionIsRebuiltAsItWas(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: Self.start)
        let tally = try await Self.engine(store, clock, partitions: 8)
        let accounts = (0..<20).map { "acct-\($0)" }
        try await Self.customers(tally, accounts)
        _ = try await tally.perform(RecordUsageBatch(events: (0..<600).map {
            RecordUsage(account: accounts[$0 % accounts.count], id: "e\($0)", api: "image-tagging.general", calls: 300, mode: .report)
        }))
        try await tally.perform(TopUp(account: accounts[2], cash: Money(parsing: "1000.00")!))
        _ = try await tally.perform(Buy(account: accounts[2], item: "image-tagging.general/100k", quantity: .count(1)))
        try await tally.perform(AddWebhookEndpoint(url: "http://127.0.0.1:9/hook", secret: "s", account: nil))
        try clock.advance(to: Instant(rfc3339: "2026-02-01T02:00:00+08:00")!)
        _ = try await tally.runBills(month: Month(year: 2026, month: 1))
        let again = try await Self.engine(try await reopen(), clock)
        #expect(again.partitioning.count == 8)
        func view(_ state: TallyState) -> [String] {
            state.accounts.values.map { "\($0.id) \($0.balance) \($0.inArrears) \($0.packs.count) \($0.open)" }.sorted()
                + state.bills.keys.sorted() + state.monthly.map { "\($0.key.account) \($0.value.calls) \($0.value.postpaid)" }.sorted()
                + state.notices.map(\.kind) + ["\(state.usageEvents) \(state.usage.count) \(state.webhookEndpoints.count) \(state.closedThrough!)"]
        }
        #expect(again.readEach(view) == tally.readEach(view))
        #expect(again.read { Audit.run($0) }.isClean)
    }
}
