import Synchronization
import TallyPostgres
import TallySQLite
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// What every store must do, run against each store.
@Suite(.timeLimit(.minutes(5))) struct StoreConformanceTests {
    static func fact(_ n: Int) -> Fact {
        .accountOpened(account: "a\(n)", subject: .personal, verified: n % 2 == 0, at: Instant(seconds: Int64(n)))
    }

    /// The repository's root.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let catalog: Catalog = {
        let text = String(decoding: FileManager.default.contents(atPath: root.appendingPathComponent("catalogs/tally.yaml").path)!, as: UTF8.self)
        return try! CatalogFile.parse(text)
    }()

    @Test(arguments: StoreKind.available)
    func keepsBatchesInOrder(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        try await store.append((0..<3).map(Self.fact))
        try await store.append([])
        try await store.append((3..<10).map(Self.fact))
        #expect(try await store.loadFacts() == (0..<10).map(Self.fact))
        let reopened = try await reopen()
        #expect(try await reopened.loadFacts() == (0..<10).map(Self.fact))
    }

    static func usage(_ account: String, _ n: Int) -> Fact {
        var settlement = Settlement()
        settlement.postpaid = Int64(n % 5 + 1)
        return .usageRecorded(record: UsageRecord(account: account, id: "u\(n)", api: "image-tagging.general", edition: nil,
                                                  calls: Int64(n % 5 + 1), at: Instant(seconds: Int64(n)),
                                                  recorded: Instant(seconds: Int64(n)), settlement: settlement),
                              transaction: nil)
    }

    /// Usage rows go in several to a statement: runs of every length around that number, each
    /// after the account it names was opened in the same batch, come back in order; a batch with
    /// an event counted before, in the middle of a run, is refused whole.
    @Test(arguments: StoreKind.available)
    func usageRunsOfEveryLengthKeepTheirOrder(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        var batch: [Fact] = []
        var n = 0
        for (run, length) in [1, 15, 16, 17, 33, 2].enumerated() {
            batch.append(.accountOpened(account: "a\(run)", subject: .personal, verified: true, at: Instant(seconds: Int64(n))))
            for _ in 0..<length {
                batch.append(Self.usage("a\(run)", n))
                n += 1
            }
        }
        try await store.append(batch)
        #expect(try await store.loadFacts() == batch)
        let again = [Self.fact(1000)] + (n..<n + 20).map { Self.usage("a4", $0) } + [Self.usage("a4", 60)] + [Self.usage("a4", n + 20)]
        await #expect(throws: (any Error).self) { try await store.append(again) }
        #expect(try await reopen().loadFacts() == batch)
    }

    /// Idempotency answers: kept byte for byte across a reopen, the first answer wins, pruned by age.
    @Test(arguments: StoreKind.available)
    func keepsIdempotencyAnswers(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let first = StoredAnswer(key: "key_1:pay-1", fingerprint: [1, 2, 3, 0, 255], status: 201, contentType: "application/json",
                                 body: Array(#"{"balance":"10.00"}"#.utf8), created: Instant(seconds: 1_000))
        try await store.saveAnswer(first)
        try await store.saveAnswer(StoredAnswer(key: first.key, fingerprint: [9], status: 409, contentType: "text/plain", body: [],
                                                created: Instant(seconds: 2_000)))
        try await store.saveAnswer(StoredAnswer(key: "key_1:later", fingerprint: [7], status: 422, contentType: "application/problem+json",
                                                body: Array("{}".utf8), created: Instant(seconds: 5_000)))
        let reopened = try await reopen()
        #expect(try await reopened.answer(for: first.key) == first)
        #expect(try await reopened.answer(for: "key_1:unknown") == nil)
        try await reopened.pruneAnswers(before: Instant(seconds: 4_000))
        #expect(try await reopened.answer(for: first.key) == nil)
        #expect(try await reopened.answer(for: "key_1:later")?.status == 422)
    }

    /// The partition count: recorded once, kept across a reopen, never changed by a later record;
    /// an engine asked for another count refuses the store.
    @Test(arguments: StoreKind.available)
    func keepsThePartitionCount(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        #expect(try await store.recordedPartitionCount() == nil)
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-01-05T09:00:00+08:00")))
        let first = try await Tally.start(catalog: Self.catalog, store: store, clock: clock.clock, ids: RandomIDs(), partitions: 16)
        #expect(first.partitioning.count == 16)
        try await store.recordPartitionCount(32)
        let reopened = try await reopen()
        #expect(try await reopened.recordedPartitionCount() == 16, "the first count recorded stays")
        let again = try await Tally.start(catalog: Self.catalog, store: reopened, clock: clock.clock, ids: RandomIDs())
        #expect(again.partitioning.count == 16, "no count asked: the recorded one")
        await #expect { try await Tally.start(catalog: Self.catalog, store: reopened, clock: clock.clock, ids: RandomIDs(), partitions: 64) }
            throws: { ($0 as? TallyError)?.code == .partitionCountMismatch }
        let (fresh, _) = try await kind.make()
        let defaulted = try await Tally.start(catalog: Self.catalog, store: fresh, clock: clock.clock, ids: RandomIDs())
        #expect(defaulted.partitioning.count == Partitioning.countDefault)
        #expect(try await fresh.recordedPartitionCount() == Partitioning.countDefault)
    }

    /// Console sessions: kept across a reopen by their digest, the first kept wins, ended one by
    /// one, pruned once expired.
    @Test(arguments: StoreKind.available)
    func keepsConsoleSessions(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let first = StoredSession(digest: [0, 1, 2, 255], keyID: "key_1", csrf: "c1", expires: Instant(seconds: 10_000))
        let later = StoredSession(digest: [7, 7], keyID: "key_2", csrf: "c2", expires: Instant(seconds: 50_000))
        try await store.saveConsoleSession(first)
        try await store.saveConsoleSession(StoredSession(digest: first.digest, keyID: "key_9", csrf: "x", expires: Instant(seconds: 99_000)))
        try await store.saveConsoleSession(later)
        try await store.saveConsoleSession(StoredSession(digest: [9], keyID: "key_3", csrf: "c3", expires: Instant(seconds: 50_000)))
        let reopened = try await reopen()
        #expect(try await reopened.consoleSession(digest: first.digest) == first)
        #expect(try await reopened.consoleSession(digest: [1]) == nil)
        try await reopened.endConsoleSession(digest: [9])
        #expect(try await reopened.consoleSession(digest: [9]) == nil)
        try await reopened.pruneConsoleSessions(expiredBefore: Instant(seconds: 20_000))
        #expect(try await reopened.consoleSession(digest: first.digest) == nil)
        #expect(try await reopened.consoleSession(digest: later.digest) == later)
    }

    /// Facts round-trip through Codable, which is how durable stores keep most of them.
    @Test func factsRoundTripThroughCodable() throws {
        let transaction = LedgerTransaction(id: "t", at: Instant(seconds: 1), kind: "top_up",
                                            entries: [.money(.cash("a"), Money(yuan: 5)), .money(.paymentsReceived, Money(yuan: -5))])
        let facts: [Fact] = [Self.fact(1), .moneyCredited(account: "a", transaction: transaction),
                             .monthClosed(month: Month(year: 2026, month: 1), at: Instant(seconds: 9))]
        let data = try JSONEncoder().encode(facts)
        #expect(try JSONDecoder().decode([Fact].self, from: data) == facts)
    }

    /// The price lists' worked examples give the same outcome, to the byte, on every durable
    /// store as on the in-memory one that the golden tests use: `tally simulate` runs them on a
    /// throw-away SQLite file.
    @Test(arguments: StoreKind.available.filter { $0 != .memory })
    func everyScenarioRunsAlikeOnTheStore(kind: StoreKind) async throws {
        let folder = Self.root.appendingPathComponent("Tests/TallyEngineTests/Scenarios")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(names.count >= 6)
        for name in names {
            let text = String(decoding: FileManager.default.contents(atPath: folder.appendingPathComponent(name).path)!, as: UTF8.self)
            let scenario = try Scenario.parse(text)
            let (store, _) = try await kind.make()
            let durable = try await Simulator(catalog: Self.catalog, store: store).run(scenario)
            let memory = try await Simulator(catalog: Self.catalog, store: InMemoryStore()).run(scenario)
            #expect(durable.serialized(pretty: true) == memory.serialized(pretty: true), "\(name)")
        }
    }

    /// A whole scenario on the store, then a second engine on the same store rebuilds the same
    /// state, and the audit finds nothing.
    @Test(arguments: StoreKind.available)
    func engineStateSurvivesARestart(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let scenario = try Scenario.parse(Self.tour)
        let first = try await Simulator(catalog: Self.catalog, store: store).run(scenario)
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-04-01T09:00:00+08:00")))
        let again = try await Tally.start(catalog: Self.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs())
        let second = try await Report.outcome(tally: again, steps: [], now: clock.now)
        #expect(first["accounts"] == second["accounts"])
        #expect(first["bills"] == second["bills"])
        // Two months on, the index keeps none of January's ids; the totals keep every event, and
        // the audit recounts them from the store.
        #expect(again.read { ($0.usage.count, $0.usageEvents) } == (0, 251))
        let audit = try await again.audit()
        #expect(audit.isClean, "\(audit.mismatches)")
        #expect(audit.transactions > 5)
        // Without the store's recount, the audit says that it cannot account for the events.
        #expect(again.read { Audit.run($0) }.mismatches.contains("usage events: state 251, recomputed 0"))
    }

    /// A bill run large enough that the store encodes its facts on every core
    /// (`StreamingJSONEncoder.bodies`): a restart rebuilds the same bills and the audit is clean.
    @Test(arguments: StoreKind.available)
    func aLargeBillRunIsKeptWhole(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-01-05T09:00:00+08:00")))
        let tally = try await Tally.start(catalog: Self.catalog, store: store, clock: clock.clock, ids: RandomIDs())
        let accounts = (0..<300).map { "acct\($0)" }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for account in accounts {
                group.addTask {
                    try await tally.perform(OpenAccount(account: account, subject: .enterprise, verified: true))
                    try await tally.perform(Activate(account: account, product: "image-tagging"))
                }
            }
            try await group.waitForAll()
        }
        try await tally.perform(RecordUsageBatch(events: accounts.map {
            RecordUsage(account: $0, id: "u", api: "image-tagging.general", calls: 1_500, mode: .report)
        }))
        try clock.advance(to: try #require(Instant(rfc3339: "2026-02-01T02:00:00+08:00")))
        let facts = tally.read { $0.factCount }
        let totals = try await tally.runBills(month: Month(year: 2026, month: 1))
        #expect(totals.created == 300)
        #expect(tally.read { $0.factCount } - facts >= 512, "enough facts in one step for the parallel encoding")
        let again = try await Tally.start(catalog: Self.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs())
        #expect(again.read { $0.bills } == tally.read { $0.bills })
        #expect(again.read { $0.notices.count } == tally.read { $0.notices.count })
        let audit = try await again.audit()
        #expect(audit.isClean, "\(audit.mismatches)")
    }

    /// An event id past the ids' 35-day window, sent again: memory no longer knows it (neither the
    /// index nor the filter, whose days before the window are dropped), and the store still refuses
    /// to count it twice. The engine hears which ids the store knew, reloads once, remembers them,
    /// and answers a duplicate.
    @Test(arguments: StoreKind.available)
    func anIDOlderThanTheIndexIsStillCountedOnce(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-01-05T09:00:00+08:00")))
        let first = try await Tally.start(catalog: Self.catalog, store: store, clock: clock.clock, ids: RandomIDs())
        try await first.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
        try await first.perform(Activate(account: "acme", product: "image-tagging"))
        let event = RecordUsage(account: "acme", id: "e-1", api: "image-tagging.general", calls: 7, mode: .report)
        let counted = try await first.perform(event)
        #expect(counted.accepted == 7)
        try clock.advance(to: try #require(Instant(rfc3339: "2026-01-25T09:00:00+08:00")))
        try await first.perform(RecordUsage(account: "acme", id: "e-2", api: "image-tagging.general", calls: 3, mode: .report))
        // 36 days after the first event: the running engine forgets it, a restarted one never loads it.
        try clock.advance(to: try #require(Instant(rfc3339: "2026-02-10T09:00:00+08:00")))
        #expect(await first.forgetOldUsage() == 1)
        let again = try await Tally.start(catalog: Self.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs())
        #expect(again.read { $0.usage.count } == 1)
        for engine in [first, again] {
            let resent = try await engine.perform(RecordUsage(account: "acme", id: "e-1", api: "image-tagging.general", calls: 7, mode: .report))
            #expect(resent.duplicate)
            #expect(resent.accepted == 7)
            // Refused by the store, past the window: one reload, which puts the id back.
            #expect(engine.reloads == 1)
        }
        // The same id with another body is still refused as reused, and nothing was counted twice.
        await #expect(throws: TallyError.self) {
            try await again.perform(RecordUsage(account: "acme", id: "e-1", api: "image-tagging.general", calls: 8, mode: .report))
        }
        // An id the filter answers "maybe" for but the store never held (a false positive, made
        // here on purpose) is counted as new, in a batch beside an old one.
        let retired = try #require(again.read(account: "acme") { $0.retiredKeys })
        retired.insert(TallyState.usageKey(account: "acme", id: "e-new"), recorded: clock.now)
        let batch = try await again.perform(RecordUsageBatch(events: [
            RecordUsage(account: "acme", id: "e-new", api: "image-tagging.general", calls: 2, mode: .report),
            RecordUsage(account: "acme", id: "e-1", api: "image-tagging.general", calls: 7, mode: .report),
        ]))
        #expect(try batch[0].get().duplicate == false)
        #expect(try batch[0].get().accepted == 2)
        #expect(try batch[1].get().duplicate)
        #expect(again.reloads == 1, "the maybe was read from the store, not refused by it; the old id was remembered")
        let month = Month(year: 2026, month: 1)
        let fresh = try await Tally.start(catalog: Self.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs())
        #expect(fresh.read { $0.monthly[MonthlyKey(account: "acme", api: "image-tagging.general", month: month)]?.calls } == 10)
        #expect(fresh.read { $0.monthly[MonthlyKey(account: "acme", api: "image-tagging.general", month: Month(year: 2026, month: 2))]?.calls } == 2)
        #expect(try await fresh.audit().isClean)
    }

    /// A bounded index (generations of 64 events here): an id the index let go, sent again, is
    /// answered from the store as a duplicate with its first outcome, or refused as reused, with
    /// no reload, on a running engine and a restarted one; memory holds at most two generations.
    @Test(arguments: StoreKind.available)
    func anIDTheBoundedIndexLetGoIsStillCountedOnce(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-01-05T09:00:00+08:00")))
        let first = try await Tally.start(catalog: Self.catalog, store: store, clock: clock.clock, ids: RandomIDs(), usageCacheGeneration: 64)
        try await first.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
        try await first.perform(Activate(account: "acme", product: "image-tagging"))
        let original = try await first.perform(RecordUsage(account: "acme", id: "e-0", api: "image-tagging.general", calls: 1_200, mode: .report))
        for chunk in stride(from: 1, to: 1_000, by: 100) {
            _ = try await first.perform(RecordUsageBatch(events: (chunk..<chunk + 100).map {
                RecordUsage(account: "acme", id: "e-\($0)", api: "image-tagging.general", calls: 1, mode: .report)
            }))
        }
        #expect(first.read { $0.usage.count } <= 128)
        #expect(first.read { $0.usage[TallyState.usageKey(account: "acme", id: "e-0")] } == nil, "let go by the index")
        // The running engine first, then one restarted on the same store (one writer at a time).
        func resend(_ engine: Tally, new id: String) async throws {
            let resent = try await engine.perform(RecordUsage(account: "acme", id: "e-0", api: "image-tagging.general", calls: 1_200, mode: .check))
            #expect(resent.duplicate && resent.free == original.free && resent.postpaid == original.postpaid)
            let batch = try await engine.perform(RecordUsageBatch(events: [
                RecordUsage(account: "acme", id: "e-5", api: "image-tagging.general", calls: 1, mode: .report),
                RecordUsage(account: "acme", id: id, api: "image-tagging.general", calls: 1, mode: .report),
            ]))
            #expect(try batch[0].get().duplicate && !batch[1].get().duplicate)
            await #expect(throws: TallyError.self) {
                try await engine.perform(RecordUsage(account: "acme", id: "e-7", api: "image-tagging.general", calls: 2, mode: .report))
            }
            #expect(engine.reloads == 0)
        }
        try await resend(first, new: "e-new-1")
        let again = try await Tally.start(catalog: Self.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs(),
                                          usageCacheGeneration: 64)
        #expect(again.read { $0.usage.count } <= 128)
        try await resend(again, new: "e-new-2")
        let fresh = try await Tally.start(catalog: Self.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs())
        let calls: Int64? = fresh.read { $0.monthly[MonthlyKey(account: "acme", api: "image-tagging.general", month: Month(year: 2026, month: 1))]?.calls }
        #expect(calls == 2_202, "e-0's 1,200 calls, e-1 ... e-1000 once each, and the two new ids")
        #expect(try await fresh.audit().isClean)
    }

    static let tour = """
    start: 2026-01-01T00:00:00+08:00
    steps:
      - {at: 2026-01-01T09:00:00+08:00, do: open_account, account: acme, subject: enterprise, verified: true}
      - {do: top_up, account: acme, cash: "100000.00", gift: "50.00"}
      - {do: grant_voucher, account: acme, amount: "20.00", expires: 2026-06-30T23:59:59+08:00, product: image-tagging}
      - {do: activate, account: acme, product: image-tagging}
      - {do: buy, account: acme, item: image-tagging.general/100k, count: 3, ref: packs1}
      - {do: buy, account: acme, item: image-tagging.general/10k, count: 1, ref: spare}
      - {do: buy, account: acme, item: taishan/enterprise-basic, years: 1, ref: m1}
      - {do: buy, account: acme, item: taishan.smart-cover/p5, ref: cover1}
      - {do: use, account: acme, api: image-tagging.general, calls: 2000000}
      - {do: use, account: acme, api: image-tagging.legacy, edition: camera, calls: 150000}
      - {do: use, account: acme, api: taishan.smart-cover, calls: 300, rate: 200, mode: check}
      - {do: refund, account: acme, ref: spare}
      - {at: 2026-02-01T01:00:00+08:00, do: close_month, month: 2026-01}
      - {at: 2026-04-01T09:00:00+08:00, do: upgrade, account: acme, to: taishan/enterprise-advanced}
    """
}

/// The SQLite file guards the invariants itself, whatever the code above it does.
@Suite(.timeLimit(.minutes(5))) struct SQLiteGuardTests {
    func seeded() async throws -> SQLiteStore {
        let (store, _) = try await StoreKind.sqlite.make()
        let sqlite = store as! SQLiteStore
        _ = try await Simulator(catalog: StoreConformanceTests.catalog, store: sqlite).run(Scenario.parse(StoreConformanceTests.tour))
        return sqlite
    }

    @Test(arguments: [
        // The same (account, id) twice.
        "INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn) SELECT account, id, seq + 100000, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, NULL FROM usage_events LIMIT 1",
        // A settlement that does not add up.
        "INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn) VALUES ('acme', 'x', 999999, 'a', NULL, 10, 0, 0, 5, 0, 0, 0, NULL, '', NULL)",
        // An event of an account that does not exist.
        "INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn) VALUES ('ghost', 'x', 999999, 'a', NULL, 1, 0, 0, 1, 0, 0, 0, NULL, '', NULL)",
        // A pack drawn below zero.
        #"UPDATE packs SET "left" = "left" - size - 1 WHERE revoked = 0"#,
        // An unbalanced transaction.
        "INSERT INTO ledger_entries VALUES ('t-bad', 'customer:acme:cash', 'microyuan', 5); INSERT INTO ledger_transactions VALUES ('t-bad', 1, 0, 'forged')",
        // Posted entries and facts are never changed.
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "DELETE FROM ledger_transactions",
        "UPDATE facts SET kind = 'x'",
        "DELETE FROM usage_events",
        // A second bill for the same account, product and month.
        "INSERT INTO bills SELECT id || '-again', account, product, month, total FROM bills",
        // Accounts stay, so every row that names one stays valid.
        "DELETE FROM accounts",
        "UPDATE accounts SET id = id || '-renamed'",
    ])
    func refusesWhatBreaksAnInvariant(sql: String) async throws {
        let store = try await seeded()
        let before = try await [store.count("usage_events"), store.count("ledger_entries"), store.count("facts"), store.count("bills")]
        await #expect(throws: (any Error).self) { try await store.execute(sql) }
        let after = try await [store.count("usage_events"), store.count("ledger_entries"), store.count("facts"), store.count("bills")]
        #expect(before == after)
    }

    /// A batch is kept whole or not at all.
    @Test func batchesAreAtomic() async throws {
        let store = try await seeded()
        let before = try await store.count("facts")
        var settlement = Settlement()
        settlement.draws = [.init(pack: "no-such-pack", calls: 1, isFree: false)]
        let bad = UsageRecord(account: "acme", id: "bad", api: "taishan.smart-cover", edition: nil, calls: 1,
                              at: Instant(seconds: 0), recorded: Instant(seconds: 0), settlement: settlement)
        await #expect(throws: (any Error).self) {
            try await store.append([StoreConformanceTests.fact(77), .usageRecorded(record: bad, transaction: nil)])
        }
        #expect(try await store.count("facts") == before)
        #expect(try await store.count("accounts") == 1)
    }
}

/// A store that counts its writes and can be told to fail.
final class ProbeStore: TallyStore {
    let kind = "probe"
    /// How long a write takes: 2 ms, and this much more a fact.
    let microsecondsPerFact: Int
    /// Writes begun.
    let started = Mutex(0)
    /// Whether writes may run side by side, as PostgreSQL's do (and so small ones are written
    /// beside a bulk one).
    let concurrentWrites: Bool
    var expressWrites: Bool { concurrentWrites }
    /// Each write's start and end, in the order they happened, with the write's facts.
    let events = Mutex<[(start: Bool, write: Int, facts: [Fact])]>([])

    init(microsecondsPerFact: Int = 0, concurrentWrites: Bool = false) {
        self.microsecondsPerFact = microsecondsPerFact
        self.concurrentWrites = concurrentWrites
    }

    let writes = Mutex<[Int]>([])
    /// Every fact written, with the body it came with.
    let written = Mutex<[(fact: Fact, body: [UInt8]?)]>([])
    let failing = Mutex(false)

    func loadFacts() async throws -> [Fact] { [] }
    /// It keeps what it writes only to count it: a start from it finds nothing, and it keeps no snapshots.
    func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State { state }
    func position() async throws -> Int64 { Int64(written.withLock { $0.count }) }
    func saveSnapshot(_ snapshot: StoredSnapshot) async throws { throw TallyError(.storeUnavailable, "the probe keeps no snapshots") }
    func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot] { [] }
    func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] { [:] }
    func answer(for key: String) async throws -> StoredAnswer? { nil }
    func saveAnswer(_ answer: StoredAnswer) async throws {}
    func pruneAnswers(before instant: Instant) async throws {}
    func recordedPartitionCount() async throws -> Int? { nil }
    func recordPartitionCount(_ count: Int) async throws {}
    func consoleSession(digest: [UInt8]) async throws -> StoredSession? { nil }
    func saveConsoleSession(_ session: StoredSession) async throws {}
    func endConsoleSession(digest: [UInt8]) async throws {}
    func pruneConsoleSessions(expiredBefore instant: Instant) async throws {}

    /// The batches written through `appendExpress`.
    let expressed = Mutex<[[Fact]]>([])
    /// The priority of the task each write was asked from, by writer (main or express) and by
    /// what the write carried (bulk: more facts than a small entry's).
    let priorities = Mutex<[(express: Bool, bulk: Bool, priority: UInt8)]>([])
    func appendExpress(_ batch: EncodedBatch) async throws {
        expressed.withLock { $0.append(batch.facts) }
        priorities.withLock { $0.append((true, batch.count > Journal.smallEntryFactsMax, Task.currentPriority.rawValue)) }
        try await write(batch)
    }

    func append(_ batch: EncodedBatch) async throws {
        priorities.withLock { $0.append((false, batch.count > Journal.smallEntryFactsMax, Task.currentPriority.rawValue)) }
        try await write(batch)
    }

    private func write(_ batch: EncodedBatch) async throws {
        if failing.withLock({ $0 }) { throw TallyError(.storeUnavailable, "disk on fire") }
        let write = started.withLock { started in
            started += 1
            events.withLock { $0.append((true, started, batch.facts)) }
            return started
        }
        try await Task.sleep(for: .microseconds(2_000 + microsecondsPerFact * batch.count))
        events.withLock { $0.append((false, write, batch.facts)) }
        writes.withLock { $0.append(batch.count) }
        written.withLock { $0 += zip(batch.facts, batch.bodies).map { ($0, $1) } }
    }
}

@Suite(.timeLimit(.minutes(5))) struct JournalTests {
    /// Under a steady load the queue never empties. The caller that writes hands the role on once
    /// its own facts are durable, instead of writing everyone else's for as long as the load
    /// lasts: no caller's wait spans more than a few of the store's writes.
    @Test func theWriterIsAnsweredOnceItsOwnFactsAreDurable() async throws {
        let store = ProbeStore()
        let journal = Journal(store: store)
        // Facts arrive on their own schedule, one about every millisecond while writes take two,
        // as requests do from many connections; each is waited for by a task of its own.
        let spans = try await withThrowingTaskGroup(of: Int.self) { group in
            for n in 0..<300 {
                let before = store.writes.withLock { $0.count }
                let ticket = journal.enqueue([StoreConformanceTests.fact(n)])
                group.addTask {
                    try await journal.waitDurable(ticket)
                    return store.writes.withLock { $0.count } - before
                }
                try await Task.sleep(for: .milliseconds(1))
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(store.writes.withLock { $0.reduce(0, +) } == 300)
        // A wait spans the write under way, the one that takes its facts and any a slow resume
        // lets pass; a writer that drained the queue spanned most of the run's writes.
        #expect(spans.max()! <= 10, "a caller waited through \(spans.max()!) writes (\(store.writes.withLock { $0.count }) in all)")
    }

    /// A partition is quiet while nothing of its own, nor of several partitions, is on its way to
    /// the store: what a snapshot waits for.
    @Test func aPartitionIsQuietOnceItsEntriesAreDurable() async throws {
        let store = ProbeStore(microsecondsPerFact: 20_000)
        let journal = Journal(store: store)
        #expect(journal.isQuiet(partition: 3) && journal.isQuiet(partition: 4))
        let ticket = journal.enqueue([StoreConformanceTests.fact(1)], partition: 3)
        #expect(!journal.isQuiet(partition: 3) && journal.isQuiet(partition: 4))
        try await journal.waitDurable(ticket)
        #expect(journal.isQuiet(partition: 3))
        let shared = journal.enqueue([StoreConformanceTests.fact(2)])
        #expect(!journal.isQuiet(partition: 4), "an entry of several partitions keeps every one busy")
        try await journal.waitDurable(shared)
        #expect(journal.isQuiet(partition: 4) && journal.isQuiet(partition: 3))
    }

    /// A snapshot waiting for its partition to be quiet waits for that partition's entries, which
    /// the writer takes ahead of other partitions' bulk entries queued before them (40,000 facts,
    /// more than two writes' worth), not after the whole queue; on either kind of store. Each
    /// account's facts still reach the store in the order queued.
    @Test(arguments: [false, true])
    func aPartitionWaitedForIsWrittenAheadOfOthers(concurrentWrites: Bool) async throws {
        let store = ProbeStore(microsecondsPerFact: 20, concurrentWrites: concurrentWrites)
        let journal = Journal(store: store)
        // Queued, not yet submitted: no writer runs until the wait has begun.
        let tickets = (0..<80).map { n in
            journal.enqueue((0..<500).map { JournalTests.usage(account: "r\(n % 4)", id: "\(n)-\($0)") }, bulk: true, partition: 1)
        }
        let waited = journal.enqueue((0..<300).map { JournalTests.usage(account: "w", id: "\($0)") }, bulk: true, partition: 2)
        let waiting = Task { try await journal.waitUntilQuiet(partition: 2) }
        while journal.expeditedPartition != 2 { try await Task.sleep(for: .milliseconds(1)) }
        for ticket in tickets + [waited] { journal.submit(ticket) }
        try await waiting.value
        for ticket in tickets { try await journal.waitDurable(ticket) }
        let first = store.events.withLock { events in events.first(where: \.start)!.facts }
        #expect(first == (0..<300).map { JournalTests.usage(account: "w", id: "\($0)") }, "the first write took \(first.count) facts")
        let written = store.written.withLock { $0.map(\.fact) }
        #expect(written.count == 80 * 500 + 300)
        for account in ["r0", "r1", "r2", "r3"] {
            let ids = written.compactMap { fact -> String? in
                guard case .usageRecorded(let record, _) = fact, record.account == account else { return nil }
                return record.id
            }
            let queued = (0..<80).filter { $0 % 4 == Int(account.dropFirst())! }.flatMap { n in (0..<500).map { "\(n)-\($0)" } }
            #expect(ids == queued)
        }
    }

    /// Many concurrent callers share writes: fewer store writes than facts, every fact written once.
    @Test func groupCommitSharesWrites() async throws {
        let store = ProbeStore()
        let journal = Journal(store: store)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<200 {
                group.addTask {
                    let ticket = journal.enqueue([StoreConformanceTests.fact(n)])
                    try await journal.waitDurable(ticket)
                }
            }
            try await group.waitForAll()
        }
        let writes = store.writes.withLock { $0 }
        #expect(writes.reduce(0, +) == 200)
        #expect(writes.count < 200, "every fact took a write of its own: \(writes.count)")
    }

    /// Each caller encodes its own facts while earlier ones are written: the store gets every fact
    /// once, each account's in the order queued, each with its own body; usage facts need none;
    /// an entry is never cut, so one larger than a write's limit is written alone.
    @Test func factsReachTheStoreInOrderWithTheirBodies() async throws {
        let store = ProbeStore()
        let journal = Journal(store: store)
        let usage = JournalTests.usage(account: "a", id: "u")
        let big = (0..<(Journal.batchSizeMax + 100)).map { StoreConformanceTests.fact(1_000 + $0) }
        let order = Mutex<[Fact]>([])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<100 {
                let facts = n == 50 ? big : n % 3 == 0 ? [usage] : [StoreConformanceTests.fact(n), usage]
                // Queued in one order under a lock, as the engine does; waited on concurrently.
                let ticket = order.withLock { order in
                    order += facts
                    return journal.enqueue(facts)
                }
                group.addTask { try await journal.waitDurable(ticket) }
            }
            try await group.waitForAll()
        }
        let written = store.written.withLock { $0 }
        #expect(JournalTests.byAccount(written.map(\.fact)) == JournalTests.byAccount(order.withLock { $0 }))
        #expect(written.count == order.withLock { $0.count })
        for (fact, body) in written {
            #expect(body == (StreamingJSONEncoder.needsBody(fact) ? try StreamingJSONEncoder.encode(fact) : nil))
        }
        let writes = store.writes.withLock { $0 }
        #expect(writes.contains(big.count))
        #expect(writes.filter { $0 != big.count }.allSatisfy { $0 <= Journal.batchSizeMax })
    }

    /// The fair group commit: a check queued behind 40,000 facts of reports for other accounts,
    /// on a store whose writes take time in proportion to their facts, is durable after the write
    /// under way and the next one; a check for an account a queued report holds waits for that
    /// report; a fact of no single account keeps its place among all others.
    @Test(arguments: [500, 10_000])
    func aCheckIsDurableAfterAtMostTwoWritesBehindBulkReports(reportEntryFacts: Int) async throws {
        let store = ProbeStore(microsecondsPerFact: 20)
        let journal = Journal(store: store)
        let reportFacts = 40_000
        var tickets: [Journal.Ticket] = []
        for n in 0..<(reportFacts / reportEntryFacts) {
            let account = "r\(n * reportEntryFacts * 4 / reportFacts)"
            let ticket = journal.enqueue((0..<reportEntryFacts).map { JournalTests.usage(account: account, id: "\(n)-\($0)") })
            journal.submit(ticket)
            tickets.append(ticket)
        }
        while store.started.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        let before = store.writes.withLock { $0.count }
        try await JournalTests.queueChecks(behind: tickets, in: journal)

        let written = store.written.withLock { $0.map(\.fact) }
        // The write that took the check, counted from the writes done when it was queued (read
        // from the store, not from when the test's task next ran, which a loaded machine delays).
        let checkAt = written.firstIndex(of: JournalTests.usage(account: "c", id: "check"))!
        var factsBefore = 0
        let writeOfCheck = store.writes.withLock { writes in
            writes.firstIndex { factsBefore += $0; return factsBefore > checkAt }!
        }
        #expect(writeOfCheck + 1 - before <= 2, "the check waited through \(writeOfCheck + 1 - before) writes")
        // On a store with one writer the check's write is its own: no report's fact shares it.
        let checkWrite = store.events.withLock { events in
            events.first { $0.start && $0.facts.contains(JournalTests.usage(account: "c", id: "check")) }!.facts
        }
        #expect(checkWrite.allSatisfy { fact in
            guard case .usageRecorded(let record, _) = fact else { return true }
            return record.id == "check"
        }, "the check's write carried \(checkWrite.count) facts")
        #expect(written.count == reportFacts + 4)
        let position = { (fact: Fact) in written.firstIndex(of: fact)! }
        let lastReportOfR3 = written.lastIndex { fact in
            guard case .usageRecorded(let record, _) = fact else { return false }
            return record.account == "r3" && record.id != "check"
        }!
        #expect(position(JournalTests.usage(account: "r3", id: "check")) > lastReportOfR3)
        let sharedAt = position(JournalTests.closedMonth)
        #expect(sharedAt == written.count - 2 && position(JournalTests.usage(account: "d", id: "check")) == written.count - 1)
    }

    /// Checks arriving without end do not hold a report back: a write of small entries only is
    /// followed by one that takes bulk entries, so the report's ten entries (one write each while
    /// checks wait) are durable within about twice ten writes.
    @Test func checksWithoutEndDoNotHoldAReportBack() async throws {
        let store = ProbeStore(microsecondsPerFact: 5)
        let journal = Journal(store: store)
        let checking = Task {
            var n = 0
            while !Task.isCancelled {
                let ticket = journal.enqueue([JournalTests.usage(account: "c\(n % 7)", id: "check-\(n)")])
                Task { try? await journal.waitDurable(ticket) }
                n += 1
                try? await Task.sleep(for: .microseconds(300))
            }
        }
        defer { checking.cancel() }
        try await Task.sleep(for: .milliseconds(20))
        let before = store.writes.withLock { $0.count }
        var tickets: [Journal.Ticket] = []
        for n in 0..<10 {
            let ticket = journal.enqueue((0..<500).map { JournalTests.usage(account: "r", id: "\(n)-\($0)") }, bulk: true)
            journal.submit(ticket)
            tickets.append(ticket)
        }
        for ticket in tickets { try await journal.waitDurable(ticket) }
        let writes = store.writes.withLock { $0.count } - before
        #expect(writes <= 2 * 10 + 2, "the report took \(writes) writes")
        let smallOnly = store.events.withLock { events in
            events.filter { event in
                event.start && event.facts.allSatisfy { fact in
                    guard case .usageRecorded(let record, _) = fact else { return false }
                    return record.id.hasPrefix("check")
                }
            }.count
        }
        #expect(smallOnly > 0, "checks had writes of their own")
    }

    /// On a store that takes writes side by side, a check is written beside a report's write
    /// instead of after it; a check for an account whose report is queued or being written, and a
    /// fact of no single account, still wait for what came before them.
    @Test func aCheckIsWrittenBesideABulkWriteOnAConcurrentStore() async throws {
        let store = ProbeStore(microsecondsPerFact: 20, concurrentWrites: true)
        let journal = Journal(store: store)
        var tickets: [Journal.Ticket] = []
        for n in 0..<4 {
            let ticket = journal.enqueue((0..<10_000).map { JournalTests.usage(account: "r\(n)", id: "\(n)-\($0)") })
            journal.submit(ticket)
            tickets.append(ticket)
        }
        while store.started.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(1)) }
        try await JournalTests.queueChecks(behind: tickets, in: journal)

        let events = store.events.withLock { $0 }
        let start = { (fact: Fact) in events.firstIndex { $0.start && $0.facts.contains(fact) }! }
        let end = { (fact: Fact) in events.firstIndex { !$0.start && $0.facts.contains(fact) }! }
        let firstReport = JournalTests.usage(account: "r0", id: "0-0")
        #expect(end(JournalTests.usage(account: "c", id: "check")) < end(firstReport), "the check was durable before the first report's write ended")
        // A fact that must follow another is in the same write (in order within it) or in a write
        // begun after that one ended.
        let follows = { (later: Fact, earlier: Fact) in start(later) == start(earlier) || start(later) > end(earlier) }
        #expect(follows(JournalTests.usage(account: "r3", id: "check"), JournalTests.usage(account: "r3", id: "3-9999")))
        // The shared fact starts once every write before it has ended, and what follows it after it.
        let sharedFact = JournalTests.closedMonth
        let sharedStart = start(sharedFact)
        #expect(events[..<sharedStart].filter(\.start).count == events[..<sharedStart].filter { !$0.start }.count, "nothing under way beside it")
        #expect(follows(JournalTests.usage(account: "d", id: "check"), sharedFact))
        #expect(events.filter(\.start).reduce(0) { $0 + $1.facts.count } == 40_004, "every fact written once")
    }

    /// The writers run at the priority of what they carry (`Urgency`). On a store with express
    /// writes: the express writer, which writes checks beside bulk writes, at a decision's
    /// priority; the main writer at the default while it writes bulk facts, and at a decision's
    /// while it writes checks alone, before and after a report. On a store without express writes
    /// the main writer writes every check beside bulk work, always at a decision's priority.
    @Test(arguments: [false, true])
    func theWritersRunAtThePriorityOfWhatTheyCarry(expressWrites: Bool) async throws {
        let store = ProbeStore(microsecondsPerFact: 20, concurrentWrites: expressWrites)
        let journal = Journal(store: store)
        try await journal.waitDurable(journal.enqueue([JournalTests.usage(account: "c", id: "before")]))
        let report = journal.enqueue((0..<2_000).map { JournalTests.usage(account: "r", id: "\($0)") }, bulk: true)
        journal.submit(report)
        while store.started.withLock({ $0 }) < 2 { try await Task.sleep(for: .milliseconds(1)) }
        try await journal.waitDurable(journal.enqueue([JournalTests.usage(account: "c", id: "beside")]))
        try await journal.waitDurable(report)
        try await journal.waitDurable(journal.enqueue([JournalTests.usage(account: "c", id: "after")]))
        let writes = store.priorities.withLock { $0 }
        let decision = Urgency.decision.rawValue
        // Checks alone, before and after (and, without express writes, the one beside the report).
        #expect(writes.filter { !$0.express && !$0.bulk }.map(\.priority) == Array(repeating: decision, count: expressWrites ? 2 : 3))
        if expressWrites {
            #expect(writes.filter { !$0.express && $0.bulk }.map(\.priority) == [TaskPriority.medium.rawValue])
            #expect(writes.filter(\.express).map(\.priority) == [decision], "the check beside the report")
        } else {
            #expect(writes.filter { !$0.express && $0.bulk }.allSatisfy { $0.priority == decision })
            #expect(writes.filter(\.express).isEmpty)
        }
    }

    /// On a store with express writes a check with nothing else queued goes to the main writer
    /// (SQLite has nothing to move from its log then). Beside a bulk entry the express writer
    /// takes the checks and the main writer the bulk entry, passing over checks of other
    /// accounts; a check queued after its account's bulk entry is written after that entry's
    /// write ends.
    @Test func checksGoToTheExpressWriterBesideBulkWork() async throws {
        let store = ProbeStore(microsecondsPerFact: 20, concurrentWrites: true)
        let journal = Journal(store: store)
        let alone = JournalTests.usage(account: "c", id: "alone")
        try await journal.waitDurable(journal.enqueue([alone]))
        #expect(store.expressed.withLock { $0 }.isEmpty, "the main writer took it")

        let before = JournalTests.usage(account: "c", id: "before")
        let report = (0..<1_000).map { JournalTests.usage(account: "r", id: "\($0)") }
        let behind = JournalTests.usage(account: "r", id: "behind")
        let tickets = [journal.enqueue([before]), journal.enqueue(report, bulk: true), journal.enqueue([behind])]
        for ticket in tickets { journal.submit(ticket) }
        for ticket in tickets { try await journal.waitDurable(ticket) }
        let expressed = store.expressed.withLock { $0 }.flatMap { $0 }
        #expect(expressed.first == before, "the check beside the report")
        #expect(!expressed.contains(report[0]))
        #expect(store.events.withLock { $0 }.filter(\.start).reduce(0) { $0 + $1.facts.count } == 1_003, "every fact written once")
        let events = store.events.withLock { $0 }
        let reportEnd = events.firstIndex { !$0.start && $0.facts.contains(report[0]) }!
        let behindStart = events.firstIndex { $0.start && $0.facts.contains(behind) }!
        #expect(behindStart > reportEnd, "its account's report was durable first")
    }

    /// Random traffic on a store that takes writes side by side: small and bulk entries of a few
    /// accounts and now and then a shared fact, queued from several tasks. However the two
    /// writers interleave, each account's facts are written in the order they were queued (in one
    /// write, or in writes begun after the earlier ones ended), and a shared fact is written with
    /// nothing beside it and after everything queued before it.
    @Test func twoWritersKeepEveryAccountsOrder() async throws {
        let store = ProbeStore(microsecondsPerFact: 5, concurrentWrites: true)
        let journal = Journal(store: store)
        var generator = SystemRandomNumberGenerator()
        var queued: [[Fact]] = []
        var tickets: [Journal.Ticket] = []
        for n in 0..<300 {
            let facts: [Fact]
            switch Int.random(in: 0..<20, using: &generator) {
            case 0: facts = [.monthClosed(month: Month(year: 2026, month: 1), at: Instant(seconds: Int64(n)))]
            case 1...4:
                let account = "a\(Int.random(in: 0..<6, using: &generator))"
                facts = (0..<Int.random(in: 100...2_000, using: &generator)).map { JournalTests.usage(account: account, id: "\(n)-\($0)") }
            default: facts = [JournalTests.usage(account: "a\(Int.random(in: 0..<6, using: &generator))", id: "\(n)")]
            }
            let ticket = journal.enqueue(facts)
            journal.submit(ticket)
            queued.append(facts)
            tickets.append(ticket)
            if n % 10 == 0 { try await Task.sleep(for: .milliseconds(1)) }
        }
        for ticket in tickets { try await journal.waitDurable(ticket) }

        let events = store.events.withLock { $0 }
        // Each write: when it started and ended, among all starts and ends.
        var starts: [Int: Int] = [:], ends: [Int: Int] = [:]
        var writeOf: [Fact: (write: Int, position: Int)] = [:]
        for (index, event) in events.enumerated() {
            if event.start {
                starts[event.write] = index
                for (position, fact) in event.facts.enumerated() { writeOf[fact] = (event.write, position) }
            } else {
                ends[event.write] = index
            }
        }
        #expect(writeOf.count == queued.reduce(0) { $0 + $1.count }, "every fact written once")
        func follows(_ later: Fact, _ earlier: Fact) -> Bool {
            let a = writeOf[later]!, b = writeOf[earlier]!
            if a.write == b.write { return a.position > b.position }
            return starts[a.write]! > ends[b.write]!
        }
        var lastOf: [String: Fact] = [:]
        var everyEarlier: [Fact] = []
        var lastShared: Fact?
        var violations = 0
        for entry in queued {
            for fact in entry {
                if case .account(let id) = FactRoute(fact) {
                    if let previous = lastOf[id], !follows(fact, previous) {
                        violations += 1
                        print("order: \(fact) before \(previous): writes \(writeOf[fact]!) \(writeOf[previous]!)")
                    }
                    if let lastShared, !follows(fact, lastShared) {
                        violations += 1
                        print("barrier: \(fact) passed \(lastShared)")
                    }
                    lastOf[id] = fact
                } else {
                    lastShared = fact
                    let write = writeOf[fact]!.write
                    let beside = starts.keys.filter { $0 != write && starts[$0]! < ends[write]! && ends[$0]! > starts[write]! }
                    if !beside.isEmpty || everyEarlier.contains(where: { !follows(fact, $0) }) {
                        violations += 1
                        print("shared: \(fact) beside \(beside.count) writes")
                    }
                }
            }
            everyEarlier.append(entry.last!)
        }
        #expect(violations == 0)
    }

    /// A fact of no single account: it keeps its place among all others.
    static let closedMonth = Fact.monthClosed(month: Month(year: 2026, month: 1), at: Instant(seconds: 1))

    /// Queues, behind the reports of `reports` (accounts r0 to r3), a check for another account
    /// ("c"), a check for r3, `closedMonth` and a check after it ("d"); returns once all are durable,
    /// having waited for the first check first.
    static func queueChecks(behind reports: [Journal.Ticket], in journal: Journal) async throws {
        let check = journal.enqueue([usage(account: "c", id: "check")])
        let sameAccount = journal.enqueue([usage(account: "r3", id: "check")])
        let shared = journal.enqueue([closedMonth])
        let afterShared = journal.enqueue([usage(account: "d", id: "check")])
        try await journal.waitDurable(check)
        for ticket in reports + [sameAccount, shared, afterShared] { try await journal.waitDurable(ticket) }
    }

    static func usage(account: String, id: String) -> Fact {
        .usageRecorded(record: UsageRecord(account: account, id: id, api: "p.a", edition: nil, calls: 1,
                                           at: Instant(seconds: 1), recorded: Instant(seconds: 1), settlement: Settlement()),
                       transaction: nil)
    }

    /// Facts by the account they belong to, in order.
    static func byAccount(_ facts: [Fact]) -> [String: [Fact]] {
        var grouped: [String: [Fact]] = [:]
        for fact in facts {
            guard case .account(let id) = FactRoute(fact) else { preconditionFailure("an account's fact") }
            grouped[id, default: []].append(fact)
        }
        return grouped
    }

    /// The caller that writes a batch may be cancelled (an HTTP client hangs up): the write goes on,
    /// the caller is told the truth once it is durable, and the journal keeps working.
    @Test func aCancelledWriterDoesNotFailTheBatch() async throws {
        let store = ProbeStore()
        let journal = Journal(store: store)
        let writer = Task { try await journal.waitDurable(journal.enqueue([StoreConformanceTests.fact(1)])) }
        writer.cancel()
        try await writer.value
        try await journal.waitDurable(journal.enqueue([StoreConformanceTests.fact(2)]))
        #expect(store.writes.withLock { $0.reduce(0, +) } == 2)
    }

    /// A failed write is reported to its waiters and every later caller: nothing is acknowledged
    /// that was not kept.
    @Test func failedWritesAreNeverAcknowledged() async throws {
        let store = ProbeStore()
        store.failing.withLock { $0 = true }
        let clock = VirtualClock(start: Instant(seconds: 1_800_000_000))
        let tally = try await Tally.start(catalog: try CatalogFile.parse(Self.catalog), store: store, clock: clock.clock, ids: SequentialIDs())
        await #expect(throws: TallyError.self) { try await tally.perform(OpenAccount(account: "a", subject: .personal, verified: true)) }
        store.failing.withLock { $0 = false }
        do {
            try await tally.perform(OpenAccount(account: "b", subject: .personal, verified: true))
            Issue.record("an engine whose store failed went on acknowledging work")
        } catch {
            #expect(error.code == .storeUnavailable)
        }
    }

    static let catalog = """
    catalog: probe
    currency: CNY
    time_zone: {name: UTC, utc_offset: "+00:00"}
    versions:
      - effective: 2020-01-01T00:00:00Z
        products:
          - id: p
            activation: none
            verification: none
            refund: none
            apis: [{id: p.a, postpaid: {model: flat, unit_price: "0.01"}}]
    """
}

import Foundation

/// The guard statements must fail for the invariant they target, not for a typo: the same
/// statements with the offending value corrected are accepted.
@Suite(.timeLimit(.minutes(5))) struct GuardControlTests {
    @Test func aValidUsageRowIsAccepted() async throws {
        let store = try await SQLiteGuardTests().seeded()
        try await store.execute("INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn) VALUES ('acme', 'fine', 999999, 'a', NULL, 10, 0, 0, 10, 0, 0, 0, NULL, '', NULL)")
        #expect(try await store.count("usage_events") > 0)
    }

    /// Accounts are append-only by trigger, not only through the foreign keys of the rows that
    /// name them: an account nothing refers to cannot be deleted or renamed either.
    @Test(arguments: StoreKind.available.filter { $0 != .memory })
    func anAccountNothingNamesIsKeptToo(kind: StoreKind) async throws {
        let (store, _) = try await kind.make()
        let tables = try #require(store as? any SQLTables)
        try await store.append([StoreConformanceTests.fact(1)])
        for sql in ["DELETE FROM accounts WHERE id = 'a1'", "UPDATE accounts SET id = 'a1-renamed' WHERE id = 'a1'"] {
            await #expect(throws: (any Error).self, "\(sql)") { try await tables.execute(sql) }
        }
        #expect(try await tables.count("accounts") == 1)
    }
}

/// The raw SQL both durable stores take, for tests of what the database itself refuses.
protocol SQLTables: Sendable {
    func execute(_ sql: String) async throws
    func count(_ table: String) async throws -> Int
}

extension SQLiteStore: SQLTables {}
extension PostgresStore: SQLTables {}
