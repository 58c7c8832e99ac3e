import Foundation
import Testing
import TallyCore
import TallyEngine
import TallyPostgres
import TallyStore

/// Several engines on one PostgreSQL database stand for several `tally` processes. Each keeps its
/// state in memory; the database arbitrates. These run when the test command has started its
/// throw-away cluster (scripts/with-postgres); `./scripts/test` always does.
@Suite(.enabled(if: StoreKind.postgresURL != nil, "needs the throw-away cluster that ./scripts/test starts"), .timeLimit(.minutes(5)))
struct PostgresTests {
    static let fixture = """
    start: 2026-11-01T09:00:00+08:00
    steps:
      - {do: open_account, account: x, subject: enterprise, verified: true}
      - {do: top_up, account: x, cash: "6000.00"}
      - {do: buy, account: x, item: taishan.smart-cover/p1}
    """

    /// Three engines, sixteen tasks each, drawing on one 3,000-call pack with 6,000 requests, some
    /// ids sent to two engines: exactly the pack's size is accepted, never below zero, no id twice.
    @Test func enginesOnOneDatabaseNeverOverdrawAPack() async throws {
        let (store, reopen) = try await StoreKind.postgres.make()
        _ = try await Simulator(catalog: StoreConformanceTests.catalog, store: store).run(Scenario.parse(Self.fixture))
        let clock = VirtualClock(start: Instant(rfc3339: "2026-11-01T09:00:00+08:00")!)
        var engines: [Tally] = []
        for _ in 0..<3 {
            engines.append(try await Tally.start(catalog: StoreConformanceTests.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs()))
        }
        let accepted = try await withThrowingTaskGroup(of: Int64.self) { group in
            for (e, engine) in engines.enumerated() {
                for worker in 0..<16 {
                    group.addTask {
                        var mine: Int64 = 0
                        for call in 0..<125 {
                            // Engines 0 and 1 share ids: the same event offered to two processes.
                            let id = e == 2 ? "z\(worker)-\(call)" : "s\(worker)-\(call)"
                            let outcome = try await engine.perform(RecordUsage(account: "x", id: id, api: "taishan.smart-cover", calls: 1, mode: .report))
                            if !outcome.duplicate { mine += outcome.accepted }
                        }
                        return mine
                    }
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(accepted == 3_000)
        let final = try await Tally.start(catalog: StoreConformanceTests.catalog, store: try await reopen(), clock: clock.clock, ids: RandomIDs())
        let (left, events, audit) = final.read { state in
            (state.packs.values.first { !$0.isFree }?.left, state.usage.values.filter { $0.pack > 0 }.count, Audit.run(state))
        }
        #expect(left == 0)
        #expect(events == 3_000)
        #expect(audit.isClean, "\(audit.mismatches.prefix(3))")
    }

    @Test(arguments: [
        "INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn) SELECT account, id, seq + 100000, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, NULL FROM usage_events LIMIT 1",
        "INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn) VALUES ('x', 'bad', 999999, 'a', NULL, 10, 0, 0, 5, 0, 0, 0, NULL, '', NULL)",
        "INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn) VALUES ('ghost', 'bad', 999999, 'a', NULL, 1, 0, 0, 1, 0, 0, 0, NULL, '', NULL)",
        #"UPDATE packs SET "left" = "left" - size - 1 WHERE NOT revoked"#,
        "UPDATE ledger_entries SET amount = amount + 1",
        "DELETE FROM ledger_entries",
        "DELETE FROM facts",
        "UPDATE usage_events SET calls = calls",
        // Accounts stay, so every usage row's account stays valid.
        "DELETE FROM accounts",
        "UPDATE accounts SET id = id || '-renamed'",
    ])
    func databaseRefusesWhatBreaksAnInvariant(sql: String) async throws {
        let (store, _) = try await StoreKind.postgres.make()
        let postgres = try #require(store as? PostgresStore)
        _ = try await Simulator(catalog: StoreConformanceTests.catalog, store: postgres).run(Scenario.parse(Self.fixture + """

          - {do: use, account: x, api: taishan.smart-cover, calls: 10}
          - {at: 2026-12-01T01:00:00+08:00, do: close_month, month: 2026-11}
        """))
        let before = try await [postgres.count("usage_events"), postgres.count("ledger_entries"), postgres.count("facts"), postgres.count("packs")]
        await #expect(throws: (any Error).self) { try await postgres.execute(sql) }
        let after = try await [postgres.count("usage_events"), postgres.count("ledger_entries"), postgres.count("facts"), postgres.count("packs")]
        #expect(before == after)
    }

    /// Usage rows arrive by COPY; one naming an account that does not exist refuses the whole batch
    /// (the per-statement check that stands for the foreign key).
    @Test func usageOfAnUnknownAccountRefusesTheBatch() async throws {
        let (store, _) = try await StoreKind.postgres.make()
        let postgres = try #require(store as? PostgresStore)
        var settlement = Settlement()
        settlement.postpaid = 1
        func usage(_ account: String) -> Fact {
            .usageRecorded(record: UsageRecord(account: account, id: "e1", api: "taishan.smart-cover", edition: nil, calls: 1,
                                               at: Instant(seconds: 0), recorded: Instant(seconds: 0), settlement: settlement),
                           transaction: nil)
        }
        // The control: the same row for an account that exists is taken.
        try await postgres.append([StoreConformanceTests.fact(1), usage("a1")])
        await #expect(throws: (any Error).self) {
            try await postgres.append([StoreConformanceTests.fact(2), usage("ghost")])
        }
        #expect(try await postgres.count("facts") == 1)
        #expect(try await postgres.count("usage_events") == 1)
    }

    /// A usage event for `account`, paid by `settlement` (one call).
    static func usage(_ account: String, _ id: String, edition: String? = nil, settlement: Settlement) -> Fact {
        .usageRecorded(record: UsageRecord(account: account, id: id, api: "taishan.smart-cover", edition: edition, calls: 1,
                                           at: Instant(seconds: 10), recorded: Instant(seconds: 11), settlement: settlement),
                       transaction: nil)
    }

    /// A small batch of usage events alone goes in one statement (`UsageStatement`), a batch with
    /// other facts by COPY: both keep the batch's order and every column, null or not.
    @Test func aSmallBatchOfUsageAloneReadsBackAsTheCopyPathWritesIt() async throws {
        var postpaid = Settlement()
        postpaid.postpaid = 1
        var refused = Settlement()
        refused.refused = 1
        refused.refusal = .quotaExhausted
        let events = [Self.usage("a1", "e3", settlement: postpaid), Self.usage("a1", "e1", edition: "pro", settlement: refused),
                      Self.usage("a1", "e2", settlement: postpaid)]
        let (alone, _) = try await StoreKind.postgres.make()
        try await alone.append([StoreConformanceTests.fact(1)])
        try await alone.append(events)
        let (copied, _) = try await StoreKind.postgres.make()
        try await copied.append([StoreConformanceTests.fact(1)] + events)
        let expected = [StoreConformanceTests.fact(1)] + events
        #expect(try await alone.loadFacts() == expected)
        #expect(try await copied.loadFacts() == expected)
        let stored = try await alone.storedUsage([TallyState.usageKey(account: "a1", id: "e1")])
        #expect(stored.count == 1)
    }

    /// The one statement is atomic like the COPY path's transaction: an unknown account, an event
    /// counted before, or a draw on a pack the store does not hold refuses the whole batch.
    @Test func aSmallBatchOfUsageAloneIsRefusedWhole() async throws {
        let (store, _) = try await StoreKind.postgres.make()
        let postgres = try #require(store as? PostgresStore)
        var postpaid = Settlement()
        postpaid.postpaid = 1
        try await postgres.append([StoreConformanceTests.fact(1), Self.usage("a1", "e1", settlement: postpaid)])
        await #expect(throws: (any Error).self) {
            try await postgres.append([Self.usage("a1", "e2", settlement: postpaid), Self.usage("ghost", "e3", settlement: postpaid)])
        }
        let repeated = await #expect(throws: StoreConflict.self) {
            try await postgres.append([Self.usage("a1", "e4", settlement: postpaid), Self.usage("a1", "e1", settlement: postpaid)])
        }
        #expect(repeated?.known.keys.contains(TallyState.usageKey(account: "a1", id: "e1")) == true)
        var drawn = Settlement()
        drawn.draws = [Settlement.PackDraw(pack: "no-such-pack", calls: 1, isFree: false)]
        let unknownPack = await #expect(throws: TallyError.self) {
            try await postgres.append([Self.usage("a1", "e5", settlement: postpaid), Self.usage("a1", "e6", settlement: drawn)])
        }
        #expect(unknownPack?.code == .storeUnavailable)
        #expect(unknownPack?.message.contains("unknown pack") == true)
        #expect(try await postgres.count("usage_events") == 1)
    }

    /// An unbalanced transaction is refused at commit by the deferred constraint trigger.
    @Test func unbalancedTransactionsAreRefusedAtCommit() async throws {
        let (store, _) = try await StoreKind.postgres.make()
        let postgres = try #require(store as? PostgresStore)
        await #expect(throws: (any Error).self) {
            try await postgres.execute("INSERT INTO ledger_transactions VALUES ('t1', 1, 0, 'forged'); INSERT INTO ledger_entries VALUES ('t1', 'customer:x:cash', 'microyuan', 5)")
        }
        #expect(try await postgres.count("ledger_transactions") == 0)
    }
}
