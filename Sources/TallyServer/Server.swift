import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization
import TallyCore
import TallyEngine
import TallyStore

/// How the server runs. Every limit is a named constant with its unit last.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// The port of Envoy's rate limit service (gRPC, plaintext HTTP/2) on `host`; nil runs none.
    public var grpcPort: Int?
    /// The largest request body: a report batch of 10,000 events is about 1.5 MB.
    public var bodyBytesMax = 4 * 1024 * 1024
    /// How often the scheduler looks at the clock.
    public var schedulerIntervalSeconds: Int64 = 30
    /// How often webhook delivery looks for notices owed.
    public var webhookIntervalMilliseconds: Int64 = 1_000
    public var webhookTimeoutSeconds: Int64 = 10
    /// Run the scheduler and webhook delivery (tests drive them by hand).
    public var backgroundServices = true
    /// Requests a second per API key, by role, with a second's burst: a customer's script gone
    /// wrong cannot starve the gateways; a gateway's limit is set far above what one process serves.
    public var requestsPerSecondMax: [Role: Int64] = [.operator: 10_000, .customer: 200, .gateway: 1_000_000]
    /// While checks wait, the most facts of bulk work (reports, bill runs) one store write takes:
    /// lower answers checks sooner beside bulk reports, higher writes the reports faster (nil: the
    /// store's default, `Journal.bulkFactsWhileSmallWaitDefault`).
    public var journalBulkFacts: Int?
    /// The partitions a new store's data is split into; nil: the store's recorded count, or the default.
    public var partitions: Int?
    /// A round of snapshots every this many facts applied, or every this many seconds if anything
    /// was; 0 facts: no snapshots at all (a store two processes write, docs/operations.md).
    public var snapshotEveryFacts = Tally.snapshotEveryFactsDefault
    public var snapshotEverySeconds = Tally.snapshotEverySecondsDefault
    /// How often the snapshot service looks whether a round is due.
    public var snapshotCheckMilliseconds: Int64 = 1_000

    public init() {}
}

/// What every route shares: the engine, the configuration, the idempotency table, the metrics.
public final class ServerEnvironment: Sendable {
    public let tally: Tally
    public let configuration: ServerConfiguration
    public let metrics: ServerMetrics
    let idempotency = IdempotencyTable()
    let schedulerMemory = Scheduler.Memory()
    /// Token buckets per API key for `requestsPerSecondMax`; at most one per key that exists.
    private let requestBuckets = Mutex<[String: TokenBucket]>([:])
    /// One bill run at a time in this process (the scheduler's and an operator's).
    private let billRunning = Mutex(false)

    public init(tally: Tally, configuration: ServerConfiguration, metrics: ServerMetrics) {
        self.tally = tally
        self.configuration = configuration
        self.metrics = metrics
    }

    /// Takes one request from the key's bucket, or refuses with 429 and when to retry.
    func admit(_ principal: Principal) throws(Problem) {
        let rate = configuration.requestsPerSecondMax[principal.role] ?? 1_000
        let now = tally.clock.now()
        let allowed = requestBuckets.withLock { buckets in
            var bucket = buckets[principal.keyID] ?? TokenBucket(qps: rate, at: now)
            let allowed = bucket.take(1, at: now, qps: rate)
            buckets[principal.keyID] = bucket
            return allowed
        }
        guard allowed else {
            var problem = Problem(TallyError(.rateLimited, "this API key is over its \(rate) requests a second; slow down"))
            problem.headers[.retryAfter] = "1"
            throw problem
        }
    }

    /// Runs the bill run for `month`, reporting progress to the metrics. A second run while one is
    /// under way is refused rather than queued.
    func billRun(_ month: Month) async throws -> Tally.BillRunTotals {
        let mine = billRunning.withLock { running -> Bool in
            guard !running else { return false }
            running = true
            return true
        }
        guard mine else { throw Problem(.conflict, TallyError(.limitExceeded, "a bill run is under way; try again when it ends")) }
        defer { billRunning.withLock { $0 = false } }
        let metrics = self.metrics
        return try await tally.runBills(month: month) { done, total in
            metrics.billRunAccountsTotal.set(Double(total))
            metrics.billRunAccountsDone.set(Double(done))
        }
    }
}

/// Tally's HTTP service.
public enum TallyServer {
    /// Starts the engine on `store` (every fact loaded, the state rebuilt) with the store's writes
    /// observed by the metrics.
    public static func start(store: any TallyStore, catalog: Catalog, configuration: ServerConfiguration,
                             clock: TallyClock, logger: Logger) async throws -> ServerEnvironment {
        let metrics = ServerMetrics()
        let tally = try await Tally.start(catalog: catalog, store: ObservedStore(base: store, metrics: metrics), clock: clock,
                                          ids: RandomIDs(), journalBulkFacts: configuration.journalBulkFacts,
                                          partitions: configuration.partitions, logger: logger)
        return ServerEnvironment(tally: tally, configuration: configuration, metrics: metrics)
    }

    /// Every route of the API, from the tables the OpenAPI test reads.
    static let endpoints: [Endpoint] = AccountRoutes.all + OrderRoutes.all + UsageRoutes.all + GatewayRoutes.all + BillingRoutes.all
        + AdminRoutes.all

    /// The OpenAPI document, as shipped in the module's resources.
    public static let openAPIDocument: String = {
        guard let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml", subdirectory: "Resources"),
              let text = try? String(contentsOf: url, encoding: .utf8) else {
            preconditionFailure("the OpenAPI document is missing from the module's resources")
        }
        return text
    }()

    /// The OpenAPI document as served: the shipped document with the ids of the catalog on sale
    /// filled in where it marks them (`x-tally-enum: <kind>`), so that a generated client or a
    /// fuzzer knows the items, products and APIs this deployment sells now, and the document is
    /// as strict as the validation. A kind with no ids keeps its mark (an empty enum would allow
    /// nothing).
    public static func openAPIDocument(for version: CatalogVersion) -> String {
        openAPIDocument.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            guard let mark = line.range(of: "x-tally-enum: ") else { return String(line) }
            let ids: [String]
            switch line[mark.upperBound...] {
            case "pack-items": ids = Array(version.packsByItem.keys)
            case "membership-items": ids = Array(version.editionsByItem.keys)
            case "membership-products": ids = version.products.filter { !$0.editions.isEmpty }.map(\.id)
            case "activated-products": ids = version.products.filter(\.requiresActivation).map(\.id)
            case "products": ids = version.products.map(\.id)
            case "apis": ids = Array(version.apisByID.keys)
            case "editions": ids = Array(Set(version.apisByID.values.flatMap(\.editions)))
            default: preconditionFailure("the OpenAPI document marks an unknown kind of id: \(line)")
            }
            guard !ids.isEmpty else { return String(line) }
            return "\(line[..<mark.lowerBound])enum: [\(ids.sorted().map { "\"\($0)\"" }.joined(separator: ", "))]"
        }.joined(separator: "\n")
    }

    /// The router: the API's endpoints, the unauthenticated `/health`, `/metrics` and
    /// `/openapi.yaml`, and the console.
    public static func router(_ server: ServerEnvironment) -> Router<BasicRequestContext> {
        let router = Router()
        // One log line a request at info (method, path, request id); keys are never logged.
        router.add(middleware: LogRequestsMiddleware(.info))
        router.add(middleware: ProblemMiddleware())
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ReadinessMiddleware(tally: server.tally))
        for endpoint in endpoints {
            router.on(RouterPath(endpoint.path), method: endpoint.method, use: endpoint.responder(server))
        }
        // The gateway's subrequest comes with the client's method, and from ext_authz with the
        // client's path after the prefix: the same decision for all of them.
        let authorize = GatewayRoutes.all[0].responder(server)
        for method in GatewayRoutes.all.map(\.method) + GatewayRoutes.otherMethods {
            if !GatewayRoutes.all.contains(where: { $0.method == method }) {
                router.on(RouterPath(GatewayRoutes.path), method: method, use: authorize)
            }
            router.on(RouterPath(GatewayRoutes.path + "/**"), method: method, use: authorize)
        }
        // Liveness and readiness: /health and /health/live answer 200 while the process runs (a
        // supervisor restarts it when they stop); /health/ready answers 503 while Tally cannot take
        // writes (the store refused one and it has not reloaded yet): what a load balancer asks.
        for path in ["/health", "/health/live"] {
            router.get(RouterPath(path)) { _, _ in Answer.json(.object([("status", .string("ok"))])).response }
        }
        router.get("/health/ready") { _, _ in
            guard server.tally.isReady else {
                return Problem.response(status: .serviceUnavailable, error: TallyError(.storeUnavailable, "the store refused a write; Tally reloads from it once it answers"))
            }
            return Answer.json(.object([("status", .string("ready"))])).response
        }
        router.get("/metrics") { _, _ in
            Answer.text(server.metrics.text(server.tally), contentType: "text/plain; version=0.0.4").response
        }
        router.get("/openapi.yaml") { _, _ in
            let onSale = server.tally.readShared { $0.catalog.version(at: server.tally.clock.now()) }
            return Answer.text(openAPIDocument(for: onSale), contentType: "application/yaml").response
        }
        Console.routes(router, server)
        return router
    }

    /// The nice value of NIO's event loop threads on Linux, below the request threads' 0. Every
    /// request is read and answered there, a gateway's check too (two of its hops besides the
    /// engine's), while the work that grows with a request (parsing a report, applying it,
    /// answering it) runs elsewhere (`OffPool`, the pool): at 0 a check's bytes waited for a core
    /// behind that work. -4 is what libdispatch gives its user-interactive threads.
    static let eventLoopNice: Int32 = -4

    /// Sets each of NIO's event loop threads (the server's, the gRPC server's and the PostgreSQL
    /// client's) to `eventLoopNice`. Linux keeps a nice value a thread; a process that may not
    /// lower it below 0 (no `CAP_SYS_NICE`) keeps its threads at 0, as libdispatch does.
    public static func raiseEventLoops(_ group: MultiThreadedEventLoopGroup = .singleton) {
        #if os(Linux)
        for loop in group.makeIterator() {
            loop.execute { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, TallyServer.eventLoopNice) }
        }
        #endif
    }

    /// The application: the HTTP server, with the scheduler and webhook delivery as services of
    /// the same service group, so that SIGTERM stops taking requests, lets those in flight
    /// finish (their usage is durable before they are answered) and stops the background work.
    public static func application(_ server: ServerEnvironment, logger: Logger) -> some ApplicationProtocol {
        raiseEventLoops()
        var app = Application(
            router: router(server),
            configuration: .init(address: .hostname(server.configuration.host, port: server.configuration.port), serverName: "tally"),
            logger: logger
        )
        if server.configuration.backgroundServices {
            app.addServices(Scheduler(server: server, logger: logger), WebhookDelivery(server: server, logger: logger))
            if server.configuration.snapshotEveryFacts > 0 { app.addServices(SnapshotService(server: server, logger: logger)) }
        }
        if server.configuration.grpcPort != nil {
            app.addServices(RateLimitServer(server: server, logger: logger))
        }
        return app
    }
}
