import Synchronization
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// A store that can be taken away and given back: while it is down every write and read fails, as
/// a database restarted under load does. `commitThenFail` keeps the next batch and then reports a
/// failure, as a connection lost after the commit and before its answer does.
final class OutageStore: TallyStore {
    let base: any TallyStore
    let down = Mutex(false)
    let commitThenFail = Mutex(false)

    init(_ base: any TallyStore) { self.base = base }

    struct Unavailable: Error {}

    private func check() throws { if down.withLock({ $0 }) { throw Unavailable() } }

    var kind: String { base.kind }
    func loadFacts() async throws -> [Fact] { try check(); return try await base.loadFacts() }
    func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State {
        try check()
        return try await base.rebuild(state, after: position)
    }
    func position() async throws -> Int64 { try check(); return try await base.position() }
    func saveSnapshot(_ snapshot: StoredSnapshot) async throws { try check(); try await base.saveSnapshot(snapshot) }
    func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot] { try check(); return try await base.snapshots(rank: rank, partitions: partitions) }
    func recountUsage(zone: Zone) async throws -> UsageRecount { try check(); return try await base.recountUsage(zone: zone) }
    func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] {
        try check()
        return try await base.storedUsage(keys)
    }
    func append(_ batch: EncodedBatch) async throws {
        try check()
        try await base.append(batch)
        if commitThenFail.withLock({ flag in defer { flag = false }; return flag }) { throw Unavailable() }
    }
    func answer(for key: String) async throws -> StoredAnswer? { try check(); return try await base.answer(for: key) }
    func saveAnswer(_ answer: StoredAnswer) async throws { try check(); try await base.saveAnswer(answer) }
    func pruneAnswers(before instant: Instant) async throws { try check(); try await base.pruneAnswers(before: instant) }
    func recordedPartitionCount() async throws -> Int? { try check(); return try await base.recordedPartitionCount() }
    func recordPartitionCount(_ count: Int) async throws { try check(); try await base.recordPartitionCount(count) }
    func consoleSession(digest: [UInt8]) async throws -> StoredSession? { try check(); return try await base.consoleSession(digest: digest) }
    func saveConsoleSession(_ session: StoredSession) async throws { try check(); try await base.saveConsoleSession(session) }
    func endConsoleSession(digest: [UInt8]) async throws { try check(); try await base.endConsoleSession(digest: digest) }
    func pruneConsoleSessions(expiredBefore instant: Instant) async throws { try check(); try await base.pruneConsoleSessions(expiredBefore: instant) }
}

/// After the store refuses a write, the engine refuses work (nothing is applied on top of facts
/// the store may not hold), reloads from the store as soon as it answers, and serves again: no
/// restart, nothing acknowledged lost, nothing refused counted.
@Suite(.timeLimit(.minutes(5))) struct OutageRecoveryTests {
    static func check(_ id: String) -> RecordUsage { RecordUsage(account: "acme", id: id, api: "image-tagging.general", calls: 1, mode: .check) }

    static func calls(_ tally: Tally) -> Int64 {
        tally.read { state in state.monthly.filter { $0.key.account == "acme" }.values.reduce(0) { $0 + $1.calls } }
    }

    /// Waits until the engine is ready again; fails the test after 10 s.
    static func waitUntilReady(_ tally: Tally) async throws {
        for _ in 0..<1_000 where !tally.isReady { try await Task.sleep(for: .milliseconds(10)) }
        #expect(tally.isReady, "the engine is serving again within 10 s of the store's return")
    }

    static func engine(_ store: OutageStore) async throws -> Tally {
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-01-05T10:00:00+08:00")))
        let tally = try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: RandomIDs())
        try await tally.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
        try await tally.perform(TopUp(account: "acme", cash: Money(parsing: "100.00")!))
        try await tally.perform(Activate(account: "acme", product: "image-tagging"))
        return tally
    }

    @Test(arguments: StoreKind.available)
    func servesAgainAfterTheStoreReturns(kind: StoreKind) async throws {
        let (base, reopen) = try await kind.make()
        let store = OutageStore(base)
        let tally = try await Self.engine(store)
        #expect(try await tally.perform(Self.check("before")).accepted == 1)
        #expect(tally.isReady)

        store.down.withLock { $0 = true }
        await #expect { try await tally.perform(Self.check("during")) } throws: { ($0 as? TallyError)?.code == .storeUnavailable }
        #expect(!tally.isReady, "not ready while the store is away")
        // Nothing more is applied on top of what the store may not hold.
        await #expect { try await tally.perform(Self.check("refused")) } throws: { ($0 as? TallyError)?.code == .storeUnavailable }

        store.down.withLock { $0 = false }
        try await Self.waitUntilReady(tally)
        #expect(Self.calls(tally) == 1, "only what the store took: the call refused during the outage is not counted")
        // The client retries the call it was refused: counted once; the call before is a duplicate.
        #expect(try await tally.perform(Self.check("during")).accepted == 1)
        #expect(try await tally.perform(Self.check("before")).duplicate)
        #expect(Self.calls(tally) == 2)
        let restarted = try await Tally.start(catalog: StoreConformanceTests.catalog, store: try await reopen(), clock: tally.clock, ids: RandomIDs())
        #expect(Self.calls(restarted) == 2, "what memory shows is what the store holds")
    }

    /// The commit went through and its answer was lost: the retry after the reload finds the event
    /// in the store and answers it as a duplicate, counted once.
    @Test(arguments: StoreKind.available)
    func aLostAnswerIsCountedOnce(kind: StoreKind) async throws {
        let (base, _) = try await kind.make()
        let store = OutageStore(base)
        let tally = try await Self.engine(store)
        store.commitThenFail.withLock { $0 = true }
        await #expect { try await tally.perform(Self.check("lost-answer")) } throws: { ($0 as? TallyError)?.code == .storeUnavailable }
        try await Self.waitUntilReady(tally)
        #expect(Self.calls(tally) == 1, "the store took it")
        #expect(try await tally.perform(Self.check("lost-answer")).duplicate)
        #expect(Self.calls(tally) == 1)
    }
}
