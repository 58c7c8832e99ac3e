import ArgumentParser
import Foundation
import TallyCore
import TallyEngine
import TallyPostgres
import TallySQLite
import TallyStore

/// `tally bench`: throughput figures, one JSON line per run. Every run is bounded in events and
/// works on throw-away files. Timing uses the monotonic clock; seconds are time, not money.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Benchmarks: ingest (report path), check (check-and-record), bill-run.")

    enum Scenario: String, ExpressibleByArgument, CaseIterable { case ingest, check, billRun = "bill-run" }

    @Option(help: "ingest, check or bill-run (default: all three).")
    var scenario: Scenario?

    @Option(help: "sqlite, postgres (needs --db), or memory to measure the engine alone.")
    var store: String = "sqlite"

    @Option(help: "For --store postgres: a server URL; each run makes a fresh database beside it.")
    var db: String?

    @Option(help: "Events (ingest, check) to run, at most 10,000,000.")
    var events: Int = 1_000_000

    @Option(help: "For ingest: events recorded first, 36 days before the run, so that their ids have left the index (a store with a history), at most 10,000,000.")
    var aged: Int = 0

    @Option(help: "Events for the one-transaction-per-event baseline, at most 100,000.")
    var baselineEvents: Int = 3_000

    @Option(help: "Accounts (bill-run: accounts billed), at most 2,000,000.")
    var accounts: Int = 1_000

    @Option(help: "Events per batch on the report path.")
    var batch: Int = RecordUsageBatch.eventsMax

    @Option(help: "Concurrent callers for check.")
    var callers: Int = 256

    @Option(help: "Decisions per call for check: 1 asks one at a time; more is the batch mode (check-and-record for a batch).")
    var checkBatch: Int = 1

    @OptionGroup var catalog: CatalogOptions

    func run() async throws {
        do {
            guard ["sqlite", "memory", "postgres"].contains(store) else {
                throw TallyError(.invalidRequest, "--store is sqlite, postgres (with --db) or memory (the engine's own cost)")
            }
            if store == "postgres", db == nil { throw TallyError(.invalidRequest, "--store postgres needs --db postgres://...") }
            guard (1...10_000_000).contains(events), (0...10_000_000).contains(aged), (1...100_000).contains(baselineEvents), (1...2_000_000).contains(accounts),
                  (1...RecordUsageBatch.eventsMax).contains(batch), (1...10_000).contains(callers),
                  (1...RecordUsageBatch.eventsMax).contains(checkBatch) else {
                throw TallyError(.countOutOfRange, "a bench bound is out of range (see --help)")
            }
            let catalog = try CatalogLocator.load(self.catalog.catalog)
            for scenario in scenario.map({ [$0] }) ?? Scenario.allCases {
                let line: JSON
                switch scenario {
                case .ingest: line = try await ingest(catalog)
                case .check: line = try await check(catalog)
                case .billRun: line = try await billRun(catalog)
                }
                print(line.serialized())
            }
        } catch {
            throw fail(error)
        }
    }

    /// A fresh engine on a throw-away SQLite file, with `count` activated accounts.
    func engine(_ catalog: Catalog, accounts count: Int) async throws -> (Tally, VirtualClock, String) {
        let path = Stores.temporarySQLitePath("bench")
        let clock = VirtualClock(start: Instant(rfc3339: "2026-11-02T10:00:00+08:00")!)
        let backing: any TallyStore
        switch store {
        case "memory": backing = InMemoryStore()
        case "postgres": backing = try await PostgresStore(url: PostgresStore.createDatabase(near: db!, name: "bench_\(UUID().uuidString.prefix(8).lowercased())"))
        default: backing = try SQLiteStore(path: path)
        }
        let tally = try await Tally.start(catalog: catalog, store: backing, clock: clock.clock, ids: SequentialIDs())
        var index = 0
        while index < count {
            let chunk = (index..<min(index + 5_000, count)).map { "acct\($0)" }
            try await tally.perform(Setup(accounts: chunk))
            index += chunk.count
        }
        return (tally, clock, path)
    }

    /// Batches kept in flight at once, so that settling the next batch overlaps writing the last.
    static let batchesInFlight = 4

    /// Consecutive ranges of `batch` events, up to `events`.
    static func batches(events: Int, batch: Int) -> [Range<Int>] {
        stride(from: 0, to: events, by: batch).map { $0..<min($0 + batch, events) }
    }

    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }

    static func usage(_ n: Int, accounts: Int, prefix: String, mode: RecordUsage.Mode) -> RecordUsage {
        RecordUsage(account: "acct\(n % accounts)", id: "\(prefix)\(n)", api: "image-tagging.general", calls: 1 + Int64(n % 5), mode: mode)
    }

    /// Reports `count` events in batches, `batchesInFlight` at a time, ids starting with `prefix`.
    func report(_ count: Int, prefix: String, to tally: Tally) async throws {
        try await forEach(Bench.batches(events: count, batch: batch), atMost: Bench.batchesInFlight) { range in
            _ = try await tally.perform(RecordUsageBatch(events: range.map { Bench.usage($0, accounts: accounts, prefix: prefix, mode: .report) }))
        }
    }

    /// The report path: batches through the journal's group commit, against the same events
    /// written one transaction per event on the same store.
    func ingest(_ catalog: Catalog) async throws -> JSON {
        let (tally, virtualClock, path) = try await engine(catalog, accounts: accounts)
        defer { Stores.removeSQLite(path) }
        if aged > 0 {
            try await report(aged, prefix: "old", to: tally)
            try virtualClock.advance(to: virtualClock.now.adding(seconds: (Tally.usageIndexDays + 1) * 86_400))
            tally.forgetOldUsage()
        }
        let clock = ContinuousClock()
        let elapsed = try await clock.measure { try await report(events, prefix: "e", to: tally) }
        let (baseline, _, baselinePath) = try await engine(catalog, accounts: accounts)
        defer { Stores.removeSQLite(baselinePath) }
        let baselineElapsed = try await clock.measure {
            for n in 0..<baselineEvents {
                try await baseline.perform(Bench.usage(n, accounts: accounts, prefix: "b", mode: .report))
            }
        }
        let rate = Double(events) / Bench.seconds(elapsed)
        let baselineRate = Double(baselineEvents) / Bench.seconds(baselineElapsed)
        return .object([
            ("scenario", .string("ingest")), ("store", .string(store)), ("events", .int(Int64(events))), ("aged", .int(Int64(aged))),
            ("seconds", .string(String(format: "%.3f", Bench.seconds(elapsed)))),
            ("events_per_second", .int(Int64(rate))),
            ("baseline_events", .int(Int64(baselineEvents))),
            ("baseline_events_per_second", .int(Int64(baselineRate))),
            ("ratio", .string(String(format: "%.1f", rate / baselineRate))),
        ])
    }

    /// Check-and-record: `callers` concurrent callers, each asking for `checkBatch` decisions at a
    /// time (one call, or a batch of calls in one request); every decision is durable (its group
    /// commit done) before the caller hears it.
    func check(_ catalog: Catalog) async throws -> JSON {
        let (tally, _, path) = try await engine(catalog, accounts: accounts)
        defer { Stores.removeSQLite(path) }
        let perCaller = max(1, events / callers / checkBatch) * checkBatch
        let batch = checkBatch
        let clock = ContinuousClock()
        let elapsed = try await clock.measure {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for caller in 0..<callers {
                    group.addTask {
                        for k in stride(from: 0, to: perCaller, by: batch) {
                            let first = caller * perCaller + k
                            if batch == 1 {
                                _ = try await tally.perform(Bench.usage(first, accounts: accounts, prefix: "c", mode: .check))
                            } else {
                                _ = try await tally.perform(RecordUsageBatch(events: (first..<first + batch).map {
                                    Bench.usage($0, accounts: accounts, prefix: "c", mode: .check)
                                }))
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        let total = perCaller * callers
        return .object([
            ("scenario", .string("check")), ("store", .string(store)), ("events", .int(Int64(total))),
            ("seconds", .string(String(format: "%.3f", Bench.seconds(elapsed)))),
            ("events_per_second", .int(Int64(Double(total) / Bench.seconds(elapsed)))),
            ("callers", .int(Int64(callers))), ("decisions_per_call", .int(Int64(checkBatch))),
        ])
    }

    /// The bill run for `accounts` accounts with post-paid usage, in the command line's chunks.
    func billRun(_ catalog: Catalog) async throws -> JSON {
        let (tally, clock, path) = try await engine(catalog, accounts: accounts)
        defer { Stores.removeSQLite(path) }
        var n = 0
        while n < accounts {
            let chunk = (n..<min(n + RecordUsageBatch.eventsMax, accounts)).map {
                RecordUsage(account: "acct\($0)", id: "u\($0)", api: "image-tagging.general", calls: 1_500, mode: .report)
            }
            try await tally.perform(RecordUsageBatch(events: chunk))
            n += chunk.count
        }
        try clock.advance(to: Instant(rfc3339: "2026-12-01T01:00:00+08:00")!)
        let month = Month(year: 2026, month: 11)
        FileHandle.standardError.write(Data("bench: bill run of \(accounts) accounts starting\n".utf8))
        let timer = ContinuousClock()
        var bills = 0
        let elapsed = try await timer.measure {
            bills = try await tally.runBills(month: month).created
        }
        return .object([
            ("scenario", .string("bill-run")), ("store", .string(store)), ("events", .int(Int64(accounts))),
            ("accounts", .int(Int64(accounts))), ("bills", .int(Int64(bills))),
            ("seconds", .string(String(format: "%.3f", Bench.seconds(elapsed)))),
            ("events_per_second", .int(Int64(Double(accounts) / Bench.seconds(elapsed)))),
        ])
    }
}

/// Opens and activates benchmark accounts in one operation.
struct Setup: TallyEngine.Operation {
    let accounts: [String]

    func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        for account in accounts {
            try OpenAccount(account: account, subject: .enterprise, verified: true).execute(&state, env)
            try TopUp(account: account, cash: Money(yuan: 1_000)).execute(&state, env)
            try Activate(account: account, product: "image-tagging").execute(&state, env)
        }
    }
}
