import ArgumentParser
import AsyncHTTPClient
import EnvoyRateLimitAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore

/// A bounded load on a running `tally serve`, one protocol after the other with the same clients'
/// shape: `concurrency` callers, each asking one decision at a time, every event new. gRPC runs
/// over `grpcConnections` HTTP/2 connections (Envoy's rate limit filter keeps one a worker
/// thread, and runs a worker a core); HTTP over a pool of `concurrency` HTTP/1.1 connections. Prints one JSON line a protocol and one with the
/// ratio. A measurement, not a test: `scripts/load-test` runs it.
struct GatewayLoad: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway-load",
        abstract: "Measure gRPC ShouldRateLimit against HTTP /v1/usage/check on a running server."
    )

    static let secondsMax = 300.0
    static let concurrencyMax = 1_024

    @Option(help: "The rate limit service's address, HOST:PORT.")
    var grpc: String

    @Option(help: "The HTTP API's base URL.")
    var http: String

    @Option(help: "A gateway (or operator) key.")
    var key: String

    @Option(help: "Accounts PREFIX0 ... PREFIX(N-1), which must exist and may call the API.")
    var accounts = 1_000

    @Option(help: "The accounts' id prefix.")
    var accountPrefix = "load"

    @Option(help: "The API every event calls.")
    var api = "image-tagging.general"

    @Option(help: "Seconds per protocol (at most 300).")
    var seconds = 10.0

    @Option(help: "Callers, each with one decision in flight (at most 1,024).")
    var concurrency = 64

    @Option(help: "HTTP/2 connections the gRPC callers share (at most 64).")
    var grpcConnections = 2

    func validate() throws {
        guard seconds > 0, seconds <= GatewayLoad.secondsMax else { throw ValidationError("--seconds is from 0 to 300") }
        guard (1...GatewayLoad.concurrencyMax).contains(concurrency) else { throw ValidationError("--concurrency is from 1 to 1,024") }
        guard (1...64).contains(grpcConnections) else { throw ValidationError("--grpc-connections is from 1 to 64") }
        guard accounts >= 1 else { throw ValidationError("--accounts is at least 1") }
        guard grpcAddress != nil else { throw ValidationError("--grpc is HOST:PORT") }
    }

    var grpcAddress: (host: String, port: Int)? {
        guard let colon = grpc.lastIndex(of: ":"), let port = Int(grpc[grpc.index(after: colon)...]) else { return nil }
        return (String(grpc[..<colon]), port)
    }

    /// What one run measured.
    struct Figures {
        var latenciesNanoseconds: [Int64] = []
        var refused = 0
        var failed = 0

        mutating func add(_ other: Figures) {
            latenciesNanoseconds += other.latenciesNanoseconds
            refused += other.refused
            failed += other.failed
        }

        func json(_ name: String, seconds: Double) -> String {
            let sorted = latenciesNanoseconds.sorted()
            func percentile(_ p: Double) -> String {
                Bench.milliseconds(atPercentile: p, of: sorted).map { String(format: "%.3f", $0) } ?? "null"
            }
            let rate = Double(sorted.count) / seconds
            return #"{"protocol":"\#(name)","decisions":\#(sorted.count),"per_second":\#(String(format: "%.0f", rate)),"p50_ms":\#(percentile(0.5)),"p99_ms":\#(percentile(0.99)),"refused":\#(refused),"failed":\#(failed)}"#
        }
    }

    func run() async throws {
        let runID = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let grpcFigures = try await measureGRPC(runID: runID)
        print(grpcFigures.json("grpc ShouldRateLimit", seconds: seconds))
        let httpFigures = try await measureHTTP(runID: runID)
        print(httpFigures.json("http /v1/usage/check", seconds: seconds))
        let ratio = Double(grpcFigures.latenciesNanoseconds.count) / Double(max(1, httpFigures.latenciesNanoseconds.count))
        print(#"{"grpc_over_http_per_second":\#(String(format: "%.3f", ratio))}"#)
    }

    /// Runs `concurrency` callers of `decide` until the time is up.
    func callers(_ decide: @escaping @Sendable (_ caller: Int, _ account: String, _ id: String) async -> Bool?) async -> Figures {
        let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1_000))
        let accounts = self.accounts, prefix = accountPrefix, callers = concurrency
        return await withTaskGroup(of: Figures.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    var figures = Figures()
                    var n = 0
                    while ContinuousClock.now < deadline {
                        n += 1
                        let started = ContinuousClock.now
                        let allowed = await decide(caller, "\(prefix)\((caller + n * callers) % accounts)", "c\(caller)-\(n)")
                        let elapsed = ContinuousClock.now - started
                        switch allowed {
                        case true?: figures.latenciesNanoseconds.append(Bench.nanoseconds(elapsed))
                        case false?: figures.refused += 1
                        case nil: figures.failed += 1
                        }
                    }
                    return figures
                }
            }
            var all = Figures()
            for await figures in group { all.add(figures) }
            return all
        }
    }

    func measureGRPC(runID: String) async throws -> Figures {
        let (host, port) = grpcAddress!
        let metadata: Metadata = ["authorization": "Bearer \(key)"]
        let api = self.api
        let clients = try (0..<grpcConnections).map { _ in
            GRPCClient(transport: try .http2NIOPosix(target: .ipv4(address: host, port: port), transportSecurity: .plaintext))
        }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients { group.addTask { try await client.runConnections() } }
            let services = clients.map { Envoy_Service_Ratelimit_V3_RateLimitService.Client(wrapping: $0) }
            let figures = await callers { caller, account, id in
                var request = Envoy_Service_Ratelimit_V3_RateLimitRequest()
                request.domain = "tally"
                var descriptor = Envoy_Service_Ratelimit_V3_RateLimitDescriptor()
                for (key, value) in [("account", account), ("api", api), ("request_id", "gl-grpc-\(runID)-\(id)")] {
                    var entry = Envoy_Service_Ratelimit_V3_RateLimitDescriptor.Entry()
                    entry.key = key
                    entry.value = value
                    descriptor.entries.append(entry)
                }
                request.descriptors = [descriptor]
                guard let response = try? await services[caller % services.count].shouldRateLimit(request, metadata: metadata) else { return nil }
                return response.overallCode == .ok
            }
            for client in clients { client.beginGracefulShutdown() }
            try await group.waitForAll()
            return figures
        }
    }

    func measureHTTP(runID: String) async throws -> Figures {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: concurrency)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let url = http + "/v1/usage/check", key = self.key, api = self.api
        let figures = await callers { _, account, id in
            var request = HTTPClientRequest(url: url)
            request.method = .POST
            request.headers.add(name: "Authorization", value: "Bearer \(key)")
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(string: #"{"account":"\#(account)","id":"gl-http-\#(runID)-\#(id)","api":"\#(api)"}"#))
            guard let response = try? await client.execute(request, timeout: .seconds(5)),
                  let body = try? await response.body.collect(upTo: 64 * 1024), response.status == .ok else { return nil }
            return String(buffer: body).contains(#""accepted":true"#)
        }
        try await client.shutdown()
        return figures
    }
}
