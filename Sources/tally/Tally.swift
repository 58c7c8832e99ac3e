import ArgumentParser
import Foundation
import TallyCore
import TallyEngine
import TallySQLite
import TallyStore
import Logging

@main
struct TallyCommand: AsyncParsableCommand {
    /// Logs go to standard error at `$TALLY_LOG_LEVEL` (default warning), as text, or as JSON lines
    /// with `TALLY_LOG_FORMAT=json`; set up once per process.
    static let logging: Void = {
        let environment = ProcessInfo.processInfo.environment
        let level = environment["TALLY_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .warning
        let json = environment["TALLY_LOG_FORMAT"] == "json"
        LoggingSystem.bootstrap { label in LineLogHandler(label: label, format: json ? .json : .text, logLevel: level) }
    }()

    init() { TallyCommand.logging }

    static let configuration = CommandConfiguration(
        commandName: "tally",
        abstract: "Tally: metering, quota and billing for cloud API products and memberships.",
        subcommands: [Serve.self, Simulate.self, Quote.self, CatalogItems.self, CheckCatalog.self, Ingest.self, Audit.self, Report.self, BillRun.self, Bench.self, GatewayLoad.self]
    )
}

/// Options every command that reads the catalog shares.
struct CatalogOptions: ParsableArguments {
    @Option(help: "The catalog file (default: $TALLY_CATALOG or catalogs/tally.yaml).")
    var catalog: String?
}

/// Prints a refusal the way every command does: the code and the sentence, on standard error.
func fail(_ error: Error) -> ExitCode {
    if let error = error as? TallyError {
        FileHandle.standardError.write(Data("error: \(error.code.rawValue): \(error.message)\n".utf8))
    } else {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    }
    return ExitCode(2)
}

struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a scenario against the engine with a virtual clock; print the outcome as JSON.")

    @Argument(help: "The scenario file (YAML).")
    var file: String

    @OptionGroup var options: CatalogOptions

    @Option(help: "Run on this store (sqlite:PATH, a path or postgres://...) and leave it there, instead of a throw-away SQLite file.")
    var db: String?

    /// The largest scenario file read.
    static let fileBytesMax = 16 * 1024 * 1024

    func run() async throws {
        do {
            let catalog = try CatalogLocator.load(options.catalog)
            guard let data = FileManager.default.contents(atPath: file) else {
                throw TallyError(.invalidScenario, "cannot read \(file)")
            }
            guard data.count <= Simulate.fileBytesMax else { throw TallyError(.invalidScenario, "\(file) is larger than \(Simulate.fileBytesMax) bytes") }
            let scenario = try Scenario.parse(String(decoding: data, as: UTF8.self))
            // Without --db, a throw-away SQLite file (SPEC 8): the scenario runs on the same
            // durable store as the server, and the file is removed afterwards.
            let path = db == nil ? Stores.temporarySQLitePath("simulate") : nil
            defer { if let path { SQLiteStore.removeFiles(at: path) } }
            let store: any TallyStore
            if let path { store = try SQLiteStore(path: path) } else { store = try await Stores.open(db!) }
            let outcome = try await Simulator(catalog: catalog, store: store).run(scenario)
            print(outcome.serialized(pretty: true))
        } catch {
            throw fail(error)
        }
    }
}

struct CheckCatalog: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-catalog", abstract: "Validate a catalog file and summarise it.")

    @OptionGroup var options: CatalogOptions

    func run() async throws {
        do {
            let catalog = try CatalogLocator.load(options.catalog)
            let latest = catalog.versions.last!
            print(JSON.object([
                ("catalog", .string(catalog.name)), ("versions", .int(Int64(catalog.versions.count))),
                ("products", .array(latest.products.map { .string($0.id) })),
                ("apis", .int(Int64(latest.apisByID.count))), ("packs", .int(Int64(latest.packsByItem.count))),
                ("editions", .int(Int64(latest.editionsByItem.count))),
            ]).serialized(pretty: true))
        } catch {
            throw fail(error)
        }
    }
}

struct Quote: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The purchase advisor: the cheapest packs, post-paid or mix for an expected volume.",
        discussion: """
        Examples:
          tally quote smart-cover --calls 500000 --qps 100
          tally quote image-tagging --calls 300000 --months 12 --format table
        """)

    @Argument(help: "An API id (taishan.smart-cover), its short name (smart-cover), or a product with one API sold in packs (image-tagging).")
    var target: String

    @Option(help: "The calls expected in all.")
    var calls: Int64

    @Option(help: "The months the calls spread over, evenly.")
    var months: Int64 = 1

    @Option(help: "The peak calls per second needed (for APIs whose packs set a QPS).")
    var qps: Int64?

    @Option(help: "json (default) or table.")
    var format: OutputFormat = .json

    @OptionGroup var options: CatalogOptions

    enum OutputFormat: String, ExpressibleByArgument { case json, table }

    func run() async throws {
        do {
            let catalog = try CatalogLocator.load(options.catalog)
            let api = try QuoteView.resolve(target, in: catalog.versions.last!)
            let quote = try Advisor.quote(api: api, calls: calls, months: months, qps: qps)
            print(format == .json ? QuoteView.json(quote).serialized(pretty: true) : QuoteView.table(quote))
        } catch {
            throw fail(error)
        }
    }
}

struct CatalogItems: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "catalog",
                                                    abstract: "The items on sale now, with the name an order takes, what each gives and its price, as a table.")

    @OptionGroup var options: CatalogOptions

    func run() async throws {
        do {
            let catalog = try CatalogLocator.load(options.catalog)
            print(CatalogView.table(catalog.versions.last!))
        } catch {
            throw fail(error)
        }
    }
}
