import ArgumentParser
import Foundation
import Synchronization
import TallyCore
import TallyEngine
import TallyPostgres
import TallySQLite
import TallyServer
import TallyStore

/// `tally bench`: throughput figures, one JSON line per run. Every run is bounded in events and
/// works on throw-away files. Timing uses the monotonic clock; seconds are time, not money.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks: ingest (report path), check (check-and-record), bill-run, mixed (checks beside other accounts' reports), restart (time to ready).")

    enum Scenario: String, ExpressibleByArgument, CaseIterable { case ingest, check, billRun = "bill-run", mixed, restart }

    /// The scenarios run when none is named: the throughput figures (mixed and restart are asked for by name).
    static let defaultScenarios: [Scenario] = [.ingest, .check, .billRun]

    @Option(help: "ingest, check, bill-run, mixed or restart (default: ingest, check and bill-run).")
    var scenario: Scenario?

    @Option(help: "For mixed: single checks per checking caller, at most 100,000 (the run also stops after 120 s).")
    var checks: Int = 500

    @Option(help: "For mixed: callers checking one call at a time.")
    var checkers: Int = 8

    @Option(help: "For mixed: callers reporting batches of 10,000 events for other accounts.")
    var reporters: Int = 4

    @Option(help: "sqlite, postgres (needs --db), or memory to measure the engine alone.")
    var store: String = "sqlite"

    @Option(help: "For --store postgres: a server URL; each run makes a fresh database beside it.")
    var db: String?

    @Option(help: "For mixed: a round of snapshots every this many facts while the reports run (0: none), to see what snapshots cost the checks.")
    var snapshotEveryFacts: Int64 = 0

    @Option(help: "Events (ingest, check, restart's history) to run, at most 20,000,000.")
    var events: Int = 1_000_000

    /// The most events a run records: 20M, the history the restart figure is asked for at.
    static let eventsMax = 20_000_000
    /// How often a mixed run with snapshots looks whether a round is due (the server looks every second).
    static let snapshotCheckMilliseconds = 100

    @Option(help: "For ingest and restart: events recorded first, 36 days before the run, so that their ids have left the index and the filter (a store with a history), at most 20,000,000.")
    var aged: Int = 0

    @Option(help: "For ingest: days the events are spread over, one after another, with the daily trim between them, as a server sees them (at most 35, the ids' window).")
    var days: Int = 1

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

    @Option(help: "Events a generation of the usage index holds (0: every event of the 35-day window, as before the index was bounded).")
    var usageCacheGeneration: Int = Tally.usageCacheGeneration

    @Option(help: "While checks wait, the most facts of bulk work one store write takes (as tally serve's; default the store's).")
    var journalBulkFacts: Int?

    @Option(help: "Partitions the fresh store's accounts are split into (1 to 1,024).")
    var partitions: Int = Partitioning.countDefault

    @OptionGroup var catalog: CatalogOptions

    func run() async throws {
        // NIO's event loops (the PostgreSQL client's) at the priority the server gives them.
        TallyServer.raiseEventLoops()
        do {
            guard ["sqlite", "memory", "postgres"].contains(store) else {
                throw TallyError(.invalidRequest, "--store is sqlite, postgres (with --db) or memory (the engine's own cost)")
            }
            if store == "postgres", db == nil { throw TallyError(.invalidRequest, "--store postgres needs --db postgres://...") }
            guard (1...Bench.eventsMax).contains(events), (0...Bench.eventsMax).contains(aged), (1...Int(Tally.usageIndexDays)).contains(days), (1...100_000).contains(baselineEvents), (1...2_000_000).contains(accounts),
                  (1...RecordUsageBatch.eventsMax).contains(batch), (1...10_000).contains(callers),
                  (1...RecordUsageBatch.eventsMax).contains(checkBatch), (1...100_000).contains(checks), (1...1_000).contains(checkers),
                  (0...64).contains(reporters), usageCacheGeneration >= 0,
                  snapshotEveryFacts == 0 || Tally.snapshotEveryFactsRange.contains(snapshotEveryFacts) else {
                throw TallyError(.countOutOfRange, "a bench bound is out of range (see --help)")
            }
            let catalog = try CatalogLocator.load(self.catalog.catalog)
            for scenario in scenario.map({ [$0] }) ?? Bench.defaultScenarios {
                let line: JSON
                switch scenario {
                case .ingest: line = try await ingest(catalog)
                case .check: line = try await check(catalog)
                case .billRun: line = try await billRun(catalog)
                case .mixed: line = try await mixed(catalog)
                case .restart: line = try await restart(catalog)
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
        let (tally, clock) = try await engine(catalog, accounts: count, on: try await backing(sqlitePath: path, postgresURL: nil))
        return (tally, clock, path)
    }

    /// The store of a run: a new one at `sqlitePath` (or in a new PostgreSQL database, or the one
    /// `postgresURL` names), or in memory.
    func backing(sqlitePath: String, postgresURL: String?) async throws -> any TallyStore {
        switch store {
        case "memory": return InMemoryStore()
        case "postgres":
            let url = if let postgresURL { postgresURL } else {
                try await PostgresStore.createDatabase(near: db!, name: "bench_\(UUID().uuidString.prefix(8).lowercased())")
            }
            return try await PostgresStore(url: url)
        default: return try SQLiteStore(path: sqlitePath)
        }
    }

    func engine(_ catalog: Catalog, accounts count: Int, on backing: any TallyStore) async throws -> (Tally, VirtualClock) {
        let clock = VirtualClock(start: Instant(rfc3339: "2026-11-02T10:00:00+08:00")!)
        let tally = try await Tally.start(catalog: catalog, store: backing, clock: clock.clock, ids: SequentialIDs(),
                                          usageCacheGeneration: usageCacheGeneration == 0 ? nil : usageCacheGeneration,
                                          journalBulkFacts: journalBulkFacts, partitions: partitions)
        var index = 0
        while index < count {
            let chunk = (index..<min(index + 5_000, count)).map { "acct\($0)" }
            try await tally.perform(Setup(accounts: chunk))
            index += chunk.count
        }
        return (tally, clock)
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
        defer { SQLiteStore.removeFiles(at: path) }
        if aged > 0 {
            try await report(aged, prefix: "old", to: tally)
            try virtualClock.advance(to: virtualClock.now.adding(seconds: (Tally.usageIndexDays + 1) * 86_400))
            await tally.forgetOldUsage()
        }
        let clock = ContinuousClock()
        // The events in equal days (the last takes what is left), each day's ids of their own.
        let perDay = events / days
        let elapsed = try await clock.measure {
            for day in 0..<days {
                if day > 0 {
                    try virtualClock.advance(to: virtualClock.now.adding(seconds: 86_400))
                    await tally.forgetOldUsage()
                }
                try await report(day == days - 1 ? events - perDay * (days - 1) : perDay, prefix: "e\(day)-", to: tally)
            }
        }
        let resident = Bench.residentBytes()
        let pageCache = try await (tally.store as? SQLiteStore)?.writerPageCacheBytes() ?? 0
        let (baseline, _, baselinePath) = try await engine(catalog, accounts: accounts)
        defer { SQLiteStore.removeFiles(at: baselinePath) }
        let baselineElapsed = try await clock.measure {
            for n in 0..<baselineEvents {
                try await baseline.perform(Bench.usage(n, accounts: accounts, prefix: "b", mode: .report))
            }
        }
        let rate = Double(events) / Bench.seconds(elapsed)
        let baselineRate = Double(baselineEvents) / Bench.seconds(baselineElapsed)
        return .object([
            ("scenario", .string("ingest")), ("store", .string(store)), ("events", .int(Int64(events))), ("days", .int(Int64(days))), ("aged", .int(Int64(aged))),
            ("seconds", .string(String(format: "%.3f", Bench.seconds(elapsed)))),
            ("events_per_second", .int(Int64(rate))),
            ("baseline_events", .int(Int64(baselineEvents))),
            ("baseline_events_per_second", .int(Int64(baselineRate))),
            ("ratio", .string(String(format: "%.1f", rate / baselineRate))),
            ("indexed", .int(Int64(tally.readEach { $0.usage.count }.reduce(0, +)))),
            ("retired_filter_bytes", .int(Int64(tally.readEach { $0.retiredKeys?.bytes ?? 0 }.reduce(0, +)))),
            ("resident_bytes", .int(resident)),
            ("store_page_cache_bytes", .int(Int64(pageCache))),
            ("max_resident_bytes", .int(Bench.maxResidentBytes())),
        ])
    }

    /// Check-and-record: `callers` concurrent callers, each asking for `checkBatch` decisions at a
    /// time (one call, or a batch of calls in one request); every decision is durable (its group
    /// commit done) before the caller hears it.
    func check(_ catalog: Catalog) async throws -> JSON {
        let (tally, _, path) = try await engine(catalog, accounts: accounts)
        defer { SQLiteStore.removeFiles(at: path) }
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
        defer { SQLiteStore.removeFiles(at: path) }
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

extension Bench {
    /// The process's resident memory now (the second field of /proc/self/statm, in pages); 0
    /// where there is no /proc.
    static func residentBytes() -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int64(fields[1]) else { return 0 }
        return pages * Int64(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// The process's peak resident memory so far (getrusage's ru_maxrss, kilobytes on Linux).
    static func maxResidentBytes() -> Int64 {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int64(usage.ru_maxrss) * 1_024
    }

    /// The longest a mixed run's phase lasts, whatever is left of its checks.
    static let mixedSecondsMax = 120.0

    /// A duration in whole nanoseconds, as latencies are kept.
    static func nanoseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
    }

    /// The latency at percentile `p` (0 to 1, nearest rank) of `sorted` nanoseconds, in
    /// milliseconds; nil when nothing was measured.
    static func milliseconds(atPercentile p: Double, of sorted: [Int64]) -> Double? {
        guard !sorted.isEmpty else { return nil }
        let index = max(0, min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1))
        return Double(sorted[index]) / 1_000_000
    }

    /// Latency figures of one phase: how many calls, over how long, and their percentiles.
    static func latencies(_ name: String, _ nanoseconds: [Int64], seconds: Double) -> (String, JSON) {
        let sorted = nanoseconds.sorted()
        func percentile(_ p: Double) -> JSON {
            Bench.milliseconds(atPercentile: p, of: sorted).map { .string(String(format: "%.3f", $0)) } ?? .null
        }
        return (name, .object([
            ("checks", .int(Int64(sorted.count))), ("checks_per_second", .int(Int64(Double(sorted.count) / seconds))),
            ("p50_ms", percentile(0.5)), ("p99_ms", percentile(0.99)), ("max_ms", percentile(1.0)),
        ]))
    }

    /// `checkers` callers each make `checks` single checks (accounts of the first half), alone
    /// and then beside `reporters` callers reporting batches of 10,000 events for the accounts of
    /// the second half until the checks are done: what a gateway's check waits for behind another
    /// account's bulk report, in process.
    func mixed(_ catalog: Catalog) async throws -> JSON {
        let (tally, _, path) = try await engine(catalog, accounts: max(2, accounts))
        defer { SQLiteStore.removeFiles(at: path) }
        let half = max(1, accounts / 2), checks = self.checks, checkers = self.checkers
        let deadlineSeconds = Bench.mixedSecondsMax
        func checkPhase(_ prefix: String) async throws -> ([Int64], Double) {
            let clock = ContinuousClock()
            let start = clock.now
            let deadline = start + .seconds(deadlineSeconds)
            let all = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for caller in 0..<checkers {
                    // At a gateway's decision's priority, as the server runs a check (`Urgency`).
                    group.addTask(priority: Urgency.decision) {
                        var latencies: [Int64] = []
                        latencies.reserveCapacity(checks)
                        for k in 0..<checks where clock.now < deadline {
                            let n = caller * checks + k
                            let began = clock.now
                            _ = try await tally.perform(RecordUsage(account: "acct\(n % half)", id: "\(prefix)\(n)", api: "image-tagging.general",
                                                                    calls: 1, mode: .check))
                            let took = clock.now - began
                            latencies.append(Bench.nanoseconds(took))
                        }
                        return latencies
                    }
                }
                var all: [Int64] = []
                for try await latencies in group { all += latencies }
                return all
            }
            return (all, Bench.seconds(clock.now - start))
        }
        let (alone, aloneSeconds) = try await checkPhase("alone")
        let progress = ReportProgress()
        let reporters = self.reporters, accounts = max(2, self.accounts)
        let (beside, besideSeconds) = try await withThrowingTaskGroup(of: Void.self) { group in
            for reporter in 0..<reporters {
                group.addTask {
                    var round = 0
                    while !progress.done.load(ordering: .relaxed) {
                        // Made off the cooperative pool, as the server reads a report's body
                        // (`OffPool`): the load generator must not hold the checks' threads.
                        let events = try await OffPool.run { [round] in
                            (0..<RecordUsageBatch.eventsMax).map { i in
                                RecordUsage(account: "acct\(half + (i % (accounts - half)))", id: "r\(reporter)-\(round)-\(i)",
                                            api: "image-tagging.general", calls: 1, mode: .report)
                            }
                        }
                        _ = try await tally.perform(RecordUsageBatch(events: events))
                        progress.reported.add(events.count, ordering: .relaxed)
                        round += 1
                    }
                }
            }
            if snapshotEveryFacts > 0 {
                group.addTask {
                    while !progress.done.load(ordering: .relaxed) {
                        let written = try await tally.snapshotIfDue(everyFacts: snapshotEveryFacts, everySeconds: Tally.snapshotEverySecondsRange.upperBound)
                        if written > 0 { progress.snapshotRounds.add(1, ordering: .relaxed) }
                        try await Task.sleep(for: .milliseconds(Bench.snapshotCheckMilliseconds))
                    }
                }
            }
            // The reports get going before the checks start.
            try await Task.sleep(for: .milliseconds(reporters > 0 ? 500 : 0))
            let result = try await checkPhase("beside")
            progress.done.store(true, ordering: .relaxed)
            try await group.waitForAll()
            return result
        }
        let aloneFigures = Bench.latencies("checks_alone", alone, seconds: aloneSeconds)
        let besideFigures = Bench.latencies("checks_beside_reports", beside, seconds: besideSeconds)
        let aloneRate = Double(alone.count) / aloneSeconds, besideRate = Double(beside.count) / besideSeconds
        return .object([
            ("scenario", .string("mixed")), ("store", .string(store)), ("checkers", .int(Int64(checkers))),
            ("reporters", .int(Int64(reporters))), ("report_batch", .int(Int64(RecordUsageBatch.eventsMax))), ("journal_bulk_facts", .int(Int64(tally.journalBulkFacts))),
            aloneFigures, besideFigures,
            ("reported_events_per_second", .int(Int64(Double(progress.reported.load(ordering: .relaxed)) / besideSeconds))),
            ("checks_per_second_ratio", .string(String(format: "%.3f", besideRate / aloneRate))),
            ("snapshot_every_facts", .int(snapshotEveryFacts)), ("snapshot_rounds", .int(Int64(progress.snapshotRounds.load(ordering: .relaxed)))),
        ])
    }

    /// Time from opening a store that holds `events` usage events of this month, after `aged`
    /// events recorded 36 days before (over `accounts` accounts), to an engine ready to answer:
    /// what `tally serve` spends before `/health` answers, less the HTTP listener.
    func restart(_ catalog: Catalog) async throws -> JSON {
        guard store != "memory" else { throw TallyError(.invalidRequest, "restart needs a durable store: --store sqlite or postgres") }
        let path = Stores.temporarySQLitePath("bench")
        defer { SQLiteStore.removeFiles(at: path) }
        let url = store == "postgres" ? try await PostgresStore.createDatabase(near: db!, name: "bench_\(UUID().uuidString.prefix(8).lowercased())") : nil
        var now = Instant(rfc3339: "2026-11-02T10:00:00+08:00")!
        do {
            let (tally, virtualClock) = try await engine(catalog, accounts: accounts, on: try await backing(sqlitePath: path, postgresURL: url))
            if aged > 0 {
                try await report(aged, prefix: "old", to: tally)
                try virtualClock.advance(to: virtualClock.now.adding(seconds: (Tally.usageIndexDays + 1) * 86_400))
                await tally.forgetOldUsage()
            }
            try await report(events, prefix: "h", to: tally)
            now = virtualClock.now
        }
        let clock = ContinuousClock()
        var facts: Int64 = 0, loaded = 0
        var started: Tally?
        // Started twice: first with no snapshots (every fact replayed), then after a round of
        // snapshots, as `tally serve` takes at a clean shutdown.
        func start() async throws -> Duration {
            try await clock.measure {
                let reopened = try await backing(sqlitePath: path, postgresURL: url)
                let tally = try await Tally.start(catalog: catalog, store: reopened, clock: TallyClock { [now] in now },
                                                  ids: SequentialIDs(), usageCacheGeneration: usageCacheGeneration == 0 ? nil : usageCacheGeneration)
                facts = tally.readShared { $0.factCount } + tally.readEach { $0.partition.factCount }.reduce(0, +)
                loaded = tally.snapshotsLoaded
                started = tally
            }
        }
        let replayed = try await start()
        let snapshotted = try await clock.measure { _ = try await started!.snapshotAll() }
        started = nil
        let fromSnapshots = try await start()
        return .object([
            ("scenario", .string("restart")), ("store", .string(store)), ("events", .int(Int64(events))), ("aged", .int(Int64(aged))),
            ("accounts", .int(Int64(accounts))),
            ("facts", .int(facts)), ("seconds_to_ready", .string(String(format: "%.3f", Bench.seconds(fromSnapshots)))),
            ("partitions_from_snapshots", .int(Int64(loaded))),
            ("seconds_to_ready_replaying_every_fact", .string(String(format: "%.3f", Bench.seconds(replayed)))),
            ("seconds_to_snapshot_every_partition", .string(String(format: "%.3f", Bench.seconds(snapshotted)))),
        ])
    }
}

/// What the reporters of a mixed run share: when to stop, and how many events they reported.
final class ReportProgress: Sendable {
    let done = Atomic<Bool>(false)
    let reported = Atomic<Int>(0)
    let snapshotRounds = Atomic<Int>(0)
}

/// Opens and activates benchmark accounts in one operation.
struct Setup: AcrossPartitions {
    let accounts: [String]

    var placement: Placement { .across }

    func parts(_ partitioning: Partitioning) -> [(partition: Int, part: Setup)] {
        partitioning.split(accounts).map { ($0.partition, Setup(accounts: $0.accounts)) }
    }

    func sharesFacts(_ global: GlobalState) -> Bool { false }

    func gather(_ parts: [(part: Setup, output: Void)]) {}

    func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        for account in accounts {
            _ = try OpenAccount(account: account, subject: .enterprise, verified: true).execute(&state, env)
            _ = try TopUp(account: account, cash: Money(yuan: 1_000)).execute(&state, env)
            _ = try Activate(account: account, product: "image-tagging").execute(&state, env)
        }
    }
}
