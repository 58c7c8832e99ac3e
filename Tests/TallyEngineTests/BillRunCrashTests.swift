import Synchronization
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// A store that keeps what it is given until told to stop after some more writes: the process
/// killed between two of a bill run's writes, as the store sees it.
final class StoppingStore: TallyStore {
    let base = InMemoryStore()
    /// Writes still allowed; nil: no limit.
    let writesLeft = Mutex<Int?>(nil)
    var kind: String { base.kind }

    func loadFacts() async throws -> [Fact] { try await base.loadFacts() }
    func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State { try await base.rebuild(state, after: position) }
    func position() async throws -> Int64 { try await base.position() }
    func saveSnapshot(_ snapshot: StoredSnapshot) async throws { try await base.saveSnapshot(snapshot) }
    func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot] { try await base.snapshots(rank: rank, partitions: partitions) }
    func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] { try await base.storedUsage(keys) }
    func answer(for key: String) async throws -> StoredAnswer? { nil }
    func saveAnswer(_ answer: StoredAnswer) async throws {}
    func pruneAnswers(before instant: Instant) async throws {}
    func recordedPartitionCount() async throws -> Int? { nil }
    func recordPartitionCount(_ count: Int) async throws {}
    func consoleSession(digest: [UInt8]) async throws -> StoredSession? { nil }
    func saveConsoleSession(_ session: StoredSession) async throws {}
    func endConsoleSession(digest: [UInt8]) async throws {}
    func pruneConsoleSessions(expiredBefore instant: Instant) async throws {}

    /// Writes asked for, kept or not.
    let attempts = Mutex(0)

    func append(_ batch: EncodedBatch) async throws {
        attempts.withLock { $0 += 1 }
        let allowed = writesLeft.withLock { left -> Bool in
            guard let remaining = left else { return true }
            left = remaining - 1
            return remaining > 0
        }
        guard allowed else { throw TallyError(.storeUnavailable, "the process was killed") }
        try await base.append(batch)
    }
}

@Suite(.timeLimit(.minutes(5))) struct BillRunCrashTests {
    static let month = Month(year: 2026, month: 1)
    /// More than two steps of the bill run.
    static let accounts = Tally.billRunChunkAccounts * 2 + 37

    /// Accounts with post-paid usage in January: the even ones with cash to pay, the odd ones with
    /// none, so that their bill leaves them below zero.
    static func populate(_ tally: Tally, _ clock: VirtualClock) async throws {
        for n in 0..<accounts {
            try await tally.perform(OpenAccount(account: "c\(n)", subject: .enterprise, verified: true))
            if n % 2 == 0 { try await tally.perform(TopUp(account: "c\(n)", cash: money("100.00"))) }
            try await tally.perform(Activate(account: "c\(n)", product: "image-tagging"))
        }
        _ = try await tally.perform(RecordUsageBatch(events: (0..<accounts).map {
            RecordUsage(account: "c\($0)", id: "e", api: "image-tagging.general", calls: 2_000, mode: .report)
        }))
        try clock.advance(to: instant("2026-02-01T01:00:00+08:00"))
    }

    static func bills(_ facts: [Fact]) -> [String: Int] {
        var byAccount: [String: Int] = [:]
        for case .billPosted(let bill, _) in facts { byAccount[bill.account, default: 0] += 1 }
        return byAccount
    }

    /// Killed after some of its writes and run again on what was kept: every account is billed
    /// exactly once, every account left below zero is in arrears, and the ledger balances.
    @Test func aBillRunKilledBetweenItsWritesIsCompletedByARerun() async throws {
        let clock = VirtualClock(start: instant("2026-01-05T10:00:00+08:00"))
        let store = StoppingStore()
        let tally = try await Tally.start(catalog: Repository.catalog, store: store, clock: clock.clock, ids: SequentialIDs())
        try await Self.populate(tally, clock)
        // The run's steps, as `runBills` makes them: the first is written, the process dies
        // before the second's write.
        let accounts = tally.read { RunBills.accountsWithUsage(in: Self.month, $0) }
        store.writesLeft.withLock { $0 = 1 }
        _ = try await tally.perform(RunBills(month: Self.month, accounts: Array(accounts.prefix(Tally.billRunChunkAccounts))))
        await #expect(throws: TallyError.self) {
            try await tally.perform(RunBills(month: Self.month, accounts: Array(accounts.dropFirst(Tally.billRunChunkAccounts))))
        }
        let kept = Self.bills(try await store.base.loadFacts())
        #expect(kept.count == Tally.billRunChunkAccounts, "the run stopped between its writes: \(kept.count) of \(Self.accounts) billed")

        store.writesLeft.withLock { $0 = nil }
        let restarted = try await Tally.start(catalog: Repository.catalog, store: store, clock: clock.clock, ids: SequentialIDs())
        let rerun = try await restarted.runBills(month: Self.month)
        #expect(rerun.existing == kept.count && rerun.created == Self.accounts - kept.count)

        let billed = Self.bills(try await store.base.loadFacts())
        #expect(billed.count == Self.accounts && billed.values.allSatisfy { $0 == 1 })
        restarted.read { state in
            for n in 0..<Self.accounts {
                let account = state.accounts["c\(n)"]!
                #expect(account.balance.isNegative == (n % 2 == 1))
                #expect(account.inArrears == account.balance.isNegative, "c\(n)")
            }
            let report = Audit.run(state)
            #expect(report.isClean, "\(report.mismatches)")
        }
    }

    /// A store written by a journal that cut an operation between an account's bill and its
    /// arrears (as the journal once did at 16,384 facts): the rerun finds the bill, skips it, and
    /// still puts the account in arrears.
    @Test func aRerunCompletesArrearsThatABillWasWrittenWithout() async throws {
        let h = try await Harness.make("2026-01-05T10:00:00+08:00")
        try await h.customer("payer", cash: "100.00", activate: ["image-tagging"])
        try await h.customer("debtor", activate: ["image-tagging"])
        for account in ["payer", "debtor"] {
            try await h.run(RecordUsage(account: account, id: "e", api: "image-tagging.general", calls: 2_000, mode: .report))
        }
        try h.advance("2026-02-01T01:00:00+08:00")
        _ = try await h.tally.runBills(month: Self.month)
        let cut = try await h.store.loadFacts().filter { fact in
            if case .statusChanged(_, .enteredArrears, _) = fact { return false }
            if case .notified(let notice) = fact, notice.kind == "account_in_arrears" { return false }
            return true
        }
        let store = InMemoryStore()
        try await store.append(cut)
        let tally = try await Tally.start(catalog: Repository.catalog, store: store, clock: h.clock.clock, ids: SequentialIDs())
        #expect(tally.read { $0.accounts["debtor"]!.inArrears } == false)
        let rerun = try await tally.runBills(month: Self.month)
        #expect(rerun.created == 0 && rerun.existing == 2)
        tally.read { state in
            #expect(state.accounts["debtor"]!.inArrears)
            #expect(!state.accounts["payer"]!.inArrears)
            #expect(state.notices(of: "debtor").contains { $0.kind == "account_in_arrears" })
        }
    }
}

@Suite(.timeLimit(.minutes(5))) struct SlicedReportCrashTests {
    /// The store stops after the first write a report's slices go to: the caller is told of the
    /// failure, the slices written stay whole, and the whole report sent again after a restart
    /// counts every event exactly once.
    @Test func aReportStoppedBetweenSlicesIsCountedOnceWhenSentAgain() async throws {
        let clock = VirtualClock(start: instant("2026-01-05T10:00:00+08:00"))
        let store = StoppingStore()
        let tally = try await Tally.start(catalog: Repository.catalog, store: store, clock: clock.clock, ids: SequentialIDs())
        try await tally.perform(OpenAccount(account: "b", subject: .enterprise, verified: true))
        try await tally.perform(Activate(account: "b", product: "image-tagging"))
        let report = RecordUsageBatch(events: (0..<3_000).map {
            RecordUsage(account: "b", id: "r\($0)", api: "image-tagging.general", calls: 1, mode: .report)
        })
        store.writesLeft.withLock { $0 = 1 }
        // The first slice's write begins before the second slice is applied (the writes before
        // the report counted already: the hook waits for one more).
        let writesBefore = store.attempts.withLock { $0 }
        tally.onSliceApplied { slice in
            while slice == 0, store.attempts.withLock({ $0 }) == writesBefore { try? await Task.sleep(for: .milliseconds(1)) }
        }
        await #expect(throws: TallyError.self) { try await tally.perform(report) }
        let kept = try await store.base.loadFacts().filter { if case .usageRecorded = $0 { true } else { false } }.count
        #expect(kept == RecordUsageBatch.sliceEventsMax, "the first slice kept whole: \(kept)")

        store.writesLeft.withLock { $0 = nil }
        let restarted = try await Tally.start(catalog: Repository.catalog, store: store, clock: clock.clock, ids: SequentialIDs())
        let results = try await restarted.perform(report)
        #expect(results.filter { (try? $0.get())?.duplicate == true }.count == kept)
        #expect(restarted.read { $0.usageEvents } == 3_000)
        let stored = try await store.base.loadFacts().filter { if case .usageRecorded = $0 { true } else { false } }.count
        #expect(stored == 3_000)
        restarted.read { #expect(Audit.run($0).isClean) }
    }
}
