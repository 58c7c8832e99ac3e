import ArgumentParser
import Foundation
import Logging
import TallyCore
import TallyEngine
import TallyPostgres
import TallyServer

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run Tally's HTTP service: the API, the console, the scheduler and webhook delivery.",
        discussion: """
          The store is the SQLite file tally.sqlite in the working directory unless --db (or $TALLY_DB) names
          another, or postgres://... An operator key is taken from $TALLY_OPERATOR_KEY; without one, the first
          start issues a key, prints it once on standard error and writes it beside an SQLite store
          (FILE.operator-key, readable by the owner only). SIGTERM or SIGINT drains requests in flight and stops.
          """
    )

    @Option(help: "The store: sqlite:PATH or postgres://user@host/db (default: $TALLY_DB or sqlite:tally.sqlite).")
    var db: String?

    @Option(help: "Seconds to wait for a PostgreSQL server before a request is answered store_unavailable (1 to 600).")
    var connectTimeout: Int64 = PostgresStore.connectTimeoutSecondsDefault

    @Option(help: "The partitions a new store's accounts are split into (1 to \(Partitioning.countMax); default: the store's recorded count, or \(Partitioning.countDefault)). A store keeps the count it was made with.")
    var partitions: Int?

    @Option(help: "The address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "The port to listen on.")
    var port = 8080

    @Option(help: "The port of Envoy's rate limit service (gRPC) on the same address; none by default.")
    var grpcPort: Int?

    @Option(help: "While gateway checks wait, the most facts of bulk work (reports, bill runs) one store write takes, \(Journal.bulkFactsWhileSmallWaitRange.lowerBound) to \(Journal.bulkFactsWhileSmallWaitRange.upperBound): lower answers checks sooner beside bulk reports, higher writes reports faster (default 256 on SQLite, 512 on PostgreSQL).")
    var journalBulkFacts: Int?

    @Option(help: "A round of snapshots (each partition's state, so that a start replays only what came after) every this many facts, \(Tally.snapshotEveryFactsRange.lowerBound) to \(Tally.snapshotEveryFactsRange.upperBound); 0: no snapshots (two processes writing one store).")
    var snapshotEveryFacts = Tally.snapshotEveryFactsDefault

    @Option(help: "A round of snapshots at least this often while anything is applied, in seconds (\(Tally.snapshotEverySecondsRange.lowerBound) to \(Tally.snapshotEverySecondsRange.upperBound)).")
    var snapshotEverySeconds = Tally.snapshotEverySecondsDefault

    @OptionGroup var catalogOptions: CatalogOptions

    func run() async throws {
        let logger = Logger(label: "tally.server")
        let url = db ?? ProcessInfo.processInfo.environment["TALLY_DB"] ?? "sqlite:tally.sqlite"
        let server: ServerEnvironment
        do {
            let catalog = try CatalogLocator.load(catalogOptions.catalog)
            var configuration = ServerConfiguration()
            configuration.host = host
            configuration.port = port
            configuration.grpcPort = grpcPort
            configuration.journalBulkFacts = journalBulkFacts
            configuration.partitions = partitions
            try Tally.checkSnapshotSettings(everyFacts: snapshotEveryFacts, everySeconds: snapshotEverySeconds)
            configuration.snapshotEveryFacts = snapshotEveryFacts
            configuration.snapshotEverySeconds = snapshotEverySeconds
            let store = try await Stores.open(url, connectTimeoutSeconds: connectTimeout)
            server = try await TallyServer.start(store: store, catalog: catalog, configuration: configuration, clock: .system, logger: logger)
            let given = ProcessInfo.processInfo.environment["TALLY_OPERATOR_KEY"].flatMap { $0.isEmpty ? nil : $0 }
            if let fresh = try await Keys.bootstrapOperator(server.tally, secret: given) {
                var message = "tally: issued the first operator key: \(fresh)\n"
                if let database = Stores.sqlitePath(url) {
                    let path = database + ".operator-key"
                    if FileManager.default.createFile(atPath: path, contents: Data((fresh + "\n").utf8), attributes: [.posixPermissions: 0o600]) {
                        message += "tally: it is also in \(path)\n"
                    } else {
                        message += "tally: it could not be written to \(path); keep it from this line\n"
                    }
                }
                FileHandle.standardError.write(Data(message.utf8))
            }
        } catch {
            throw fail(error)
        }
        FileHandle.standardError.write(Data("tally: listening on http://\(host):\(port) (store \(url))\n".utf8))
        if let grpcPort {
            FileHandle.standardError.write(Data("tally: Envoy's rate limit service (gRPC) on \(host):\(grpcPort)\n".utf8))
        }
        try await TallyServer.application(server, logger: logger).runService()
        // Stopped cleanly (SIGTERM, SIGINT): every partition's snapshot, so that the next start
        // replays nothing. A failure leaves the older snapshots and the facts, and costs the next
        // start a longer replay, nothing more.
        if server.configuration.snapshotEveryFacts > 0 {
            do {
                try await server.tally.snapshotAll()
            } catch {
                logger.warning("the snapshots at shutdown failed; the next start replays more", metadata: ["error": "\(error)"])
            }
        }
    }
}
