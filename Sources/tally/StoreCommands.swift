import ArgumentParser
import Foundation
import TallyCore
import TallyEngine
import TallyPostgres
import TallySQLite
import TallyStore

/// Options of the commands that work on a stored database.
struct StoreOptions: ParsableArguments {
    @Option(help: "The store: sqlite:PATH, a path to the SQLite file, or postgres://user@host/db.")
    var db: String

    @Option(help: "Seconds to wait for a PostgreSQL server before giving up (1 to 600).")
    var connectTimeout: Int64 = PostgresStore.connectTimeoutSecondsDefault

    @OptionGroup var catalog: CatalogOptions

    /// The engine on the store; `readOnly` commands refuse an SQLite file that does not exist.
    func start(readOnly: Bool = false) async throws -> Tally {
        try await Tally.start(catalog: CatalogLocator.load(catalog.catalog),
                              store: await Stores.open(db, mustExist: readOnly, connectTimeoutSeconds: connectTimeout), clock: .system,
                              ids: RandomIDs())
    }
}

struct Ingest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Bulk-load usage events from a JSON Lines file, idempotently; print a JSON summary.",
        discussion: #"One event a line: {"id","account","api","edition","calls","time"}. Run it again after a crash: every event ends counted once."#)

    @Argument(help: "The JSON Lines file.")
    var file: String

    @OptionGroup var store: StoreOptions

    @Option(help: "Events per batch (1 to \(RecordUsageBatch.eventsMax)).")
    var batch: Int = 4_096

    /// A line longer than this is refused as invalid without being parsed.
    static let lineBytesMax = 64 * 1024

    func run() async throws {
        do {
            guard (1...RecordUsageBatch.eventsMax).contains(batch) else {
                throw TallyError(.countOutOfRange, "--batch must be from 1 to \(RecordUsageBatch.eventsMax)")
            }
            guard let handle = FileHandle(forReadingAtPath: file) else { throw TallyError(.invalidRequest, "cannot read \(file)") }
            let size = (try? FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? 0
            let tally = try await store.start()
            var summary = IngestSummary()
            var progress = Progress(label: "ingest", total: size)
            var pending: [RecordUsage] = []
            var bytesRead = 0
            func flush() async throws {
                guard !pending.isEmpty else { return }
                let results = try await tally.perform(RecordUsageBatch(events: pending))
                for result in results { summary.add(result) }
                pending.removeAll(keepingCapacity: true)
                progress.update(bytesRead)
            }
            for try await line in LineReader(handle: handle, lineBytesMax: Ingest.lineBytesMax) {
                bytesRead += line.count + 1
                summary.events += 1
                guard let event = IngestSummary.parse(line) else {
                    summary.refused["invalid_event", default: 0] += 1
                    continue
                }
                pending.append(event)
                if pending.count == batch { try await flush() }
            }
            try await flush()
            progress.update(size)
            print(summary.json.serialized(pretty: true))
        } catch {
            throw fail(error)
        }
    }
}

struct IngestSummary {
    var events = 0, accepted = 0, duplicates = 0
    var refused: [String: Int] = [:]
    var free: Int64 = 0, pack: Int64 = 0, postpaid: Int64 = 0

    mutating func add(_ result: Result<UsageOutcome, TallyError>) {
        switch result {
        case .failure(let error): refused[error.code.rawValue, default: 0] += 1
        case .success(let outcome) where outcome.duplicate: duplicates += 1
        case .success(let outcome):
            if outcome.accepted > 0 { accepted += 1 }
            if outcome.refused > 0, let code = outcome.refusal, outcome.accepted == 0 { refused[code.rawValue, default: 0] += 1 }
            free += outcome.free; pack += outcome.pack; postpaid += outcome.postpaid
        }
    }

    var json: JSON {
        .object([
            ("events", .int(Int64(events))), ("accepted", .int(Int64(accepted))), ("duplicates", .int(Int64(duplicates))),
            ("refused", .object(refused.keys.sorted().map { ($0, .int(Int64(refused[$0]!))) })),
            ("calls", .object([("free", .int(free)), ("pack", .int(pack)), ("postpaid", .int(postpaid))])),
        ])
    }

    /// One event from a line, or nil when the line is not a well-formed event.
    static func parse(_ line: [UInt8]) -> RecordUsage? {
        guard let value = try? JSON.parse(String(decoding: line, as: UTF8.self)),
              case .string(let id)? = value["id"], case .string(let account)? = value["account"],
              case .string(let api)? = value["api"], case .int(let calls)? = value["calls"] else { return nil }
        var edition: String?
        switch value["edition"] {
        case .string(let text)?: edition = text
        case nil, .null?: edition = nil
        default: return nil
        }
        var at: Instant?
        switch value["time"] {
        case .string(let text)?:
            guard let instant = Instant(rfc3339: text) else { return nil }
            at = instant
        case nil, .null?: at = nil
        default: return nil
        }
        return RecordUsage(account: account, id: id, api: api, edition: edition, calls: calls, at: at, mode: .report)
    }
}

/// Reads a file line by line in bounded memory; a line over `lineBytesMax` comes back truncated
/// (and so fails to parse) rather than growing the buffer without end.
struct LineReader: AsyncSequence {
    typealias Element = [UInt8]
    let handle: FileHandle
    let lineBytesMax: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        let handle: FileHandle
        let lineBytesMax: Int
        var buffer: [UInt8] = []
        var start = 0
        var finished = false

        mutating func next() async throws -> [UInt8]? {
            while true {
                if let newline = buffer[start...].firstIndex(of: 0x0A) {
                    let line = Array(buffer[start..<Swift.min(newline, start + lineBytesMax)])
                    start = newline + 1
                    if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) { continue }
                    return line
                }
                if finished {
                    guard start < buffer.count else { return nil }
                    let line = Array(buffer[start..<Swift.min(buffer.count, start + lineBytesMax)])
                    start = buffer.count
                    return line
                }
                buffer.removeFirst(start)
                start = 0
                let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
                if chunk.isEmpty { finished = true } else { buffer.append(contentsOf: chunk) }
                if buffer.count > lineBytesMax * 4, buffer.firstIndex(of: 0x0A) == nil {
                    buffer.removeLast(buffer.count - lineBytesMax)   // an endless line: keep its head only
                }
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(handle: handle, lineBytesMax: lineBytesMax) }
}

struct Audit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Recompute every balance, pack, usage total and bill from the ledger and the events; exit 1 on any mismatch.")

    @OptionGroup var store: StoreOptions

    func run() async throws {
        let report: TallyCore.Audit.Report
        var mismatches: [String]
        let events: Int
        do {
            var differences: [String] = []
            try Stores.refuseUnknownScheme(store.db)
            if Stores.sqlitePath(store.db) != nil {
                // One snapshot for the facts and the tables, so that a live server's writes
                // between two reads are not reported as mismatches; the usage recounted as it streams.
                let sqlite = try SQLiteStore(path: try Stores.existingPath(store.db, mustExist: true))
                let (state, recount, found) = try await sqlite.auditProjections(catalog: try CatalogLocator.load(store.catalog.catalog))
                report = TallyCore.Audit.run(state, recount: recount)
                events = Int(state.usageEvents)
                differences = found
            } else {
                let tally = try await store.start(readOnly: true)
                report = try await tally.audit()
                events = tally.readEach { Int($0.usageEvents) }.reduce(0, +)
            }
            mismatches = report.mismatches + differences
        } catch {
            throw fail(error)
        }
        print(JSON.object([
            ("accounts", .int(Int64(report.accounts))), ("transactions", .int(Int64(report.transactions))),
            ("events", .int(Int64(events))),
            ("mismatches", .array(mismatches.map { .string($0) })),
            ("unbalanced_transactions", .array(report.unbalancedTransactions.map { .string($0) })),
        ]).serialized(pretty: true))
        if !mismatches.isEmpty || !report.unbalancedTransactions.isEmpty { throw ExitCode(1) }
    }
}

struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The month's usage per account and API, with estimated amounts, as JSON.")

    @OptionGroup var store: StoreOptions

    @Option(help: "The month, YYYY-MM.")
    var month: String

    func run() async throws {
        do {
            guard let month = Month(parsing: month) else { throw TallyError(.invalidRequest, "--month is YYYY-MM") }
            let tally = try await store.start(readOnly: true)
            let json = tally.read { TallyEngine.Report.usage(month: month, $0) }
            print(json.serialized(pretty: true))
        } catch {
            throw fail(error)
        }
    }
}

struct BillRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bill-run", abstract: "Run the bill run for a month; safe to run again after a stop.")

    @OptionGroup var store: StoreOptions

    @Option(help: "The month, YYYY-MM.")
    var month: String

    func run() async throws {
        do {
            guard let month = Month(parsing: month) else { throw TallyError(.invalidRequest, "--month is YYYY-MM") }
            let tally = try await store.start(readOnly: true)
            var progress: Progress?
            let totals = try await tally.runBills(month: month) { done, of in
                if progress == nil { progress = Progress(label: "bill-run \(month)", total: of) }
                progress?.update(done)
            }
            print(JSON.object([
                ("month", .string(month.description)), ("accounts", .int(Int64(totals.accounts))),
                ("bills_created", .int(Int64(totals.created))), ("bills_existing", .int(Int64(totals.existing))),
                ("total", .string(totals.total.description)),
            ]).serialized(pretty: true))
        } catch {
            throw fail(error)
        }
    }
}

