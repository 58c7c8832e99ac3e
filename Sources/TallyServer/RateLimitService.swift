import EnvoyRateLimitAPI
import GRPCCore
import GRPCNIOTransportCore
import GRPCNIOTransportHTTP2
import HTTPTypes
import Logging
import ServiceLifecycle
import TallyCore
import TallyEngine

typealias RateLimitRequest = Envoy_Service_Ratelimit_V3_RateLimitRequest
typealias RateLimitResponse = Envoy_Service_Ratelimit_V3_RateLimitResponse

/// Envoy's global rate limit service (`envoy.service.ratelimit.v3.RateLimitService`), answered by
/// check-and-record: Envoy's rate limit filter asks before every call, and Tally decides it exactly
/// as `/v1/usage/check` does.
///
/// The request carries one descriptor, whose entries name the call (README, "Gateways"):
/// `account` (or the gateway key's own account), `api`, `edition` (optional) and `request_id`
/// (Envoy's `x-request-id`, the event id, so that a retry of the same request is counted once).
/// The call count is the descriptor's `hits_addend`, else the request's, else 1. The gateway key
/// comes as the `authorization: Bearer <key>` metadata (the grpc_service's `initial_metadata`).
///
/// Every refusal answers OVER_LIMIT (Envoy answers its client 429) with `x-tally-refusal: <code>`
/// in `response_headers_to_add`; an allowed call answers OK with `x-tally-payer` (free, pack or
/// postpaid) in `request_headers_to_add`, for the upstream. Where prepaid calls bound the account,
/// the descriptor's `limit_remaining` and `x-tally-remaining` say how many are left. A malformed
/// request is INVALID_ARGUMENT and a bad key UNAUTHENTICATED: errors, which Envoy's
/// `failure_mode_deny: true` turns into a refusal (fail closed).
struct RateLimitService: Envoy_Service_Ratelimit_V3_RateLimitService.ServiceProtocol {
    let server: ServerEnvironment

    /// The descriptor entries Tally reads; any other entry is refused as unknown.
    enum Entry {
        static let account = "account"
        static let api = "api"
        static let edition = "edition"
        static let requestID = "request_id"
        static let all: Set<String> = [account, api, edition, requestID]
    }

    func shouldRateLimit(request: ServerRequest<RateLimitRequest>, context: ServerContext) async throws -> ServerResponse<RateLimitResponse> {
        let started = ContinuousClock.now
        Urgency.raiseCurrentTask()
        defer { server.metrics.timed(.grpc, since: started) }
        do {
            return try await decide(request)
        } catch let error as RPCError {
            // Refused before any settlement: a bad key, a malformed descriptor, a store away.
            let code: TallyError.Code = switch error.code {
            case .unauthenticated: .unauthenticated
            case .permissionDenied: .forbidden
            case .resourceExhausted: .rateLimited
            case .invalidArgument: .invalidRequest
            default: .storeUnavailable
            }
            server.metrics.refusedBeforeSettlement(code, protocol: .grpc)
            throw error
        }
    }

    private func decide(_ request: ServerRequest<RateLimitRequest>) async throws -> ServerResponse<RateLimitResponse> {
        let principal: Principal
        do {
            principal = try await Keys.authenticate(request.metadata[stringValues: "authorization"].first { _ in true }, tally: server.tally)
            try server.admit(principal)
        } catch {
            throw RPCError(code: error.status == .unauthorized ? .unauthenticated : .resourceExhausted, message: error.error.message)
        }
        guard Set<Role>.meters.contains(principal.role) else {
            throw RPCError(code: .permissionDenied, message: "a \(principal.role.rawValue) key may not ask the rate limit service")
        }
        let event: RecordUsage
        do {
            event = try RateLimitService.event(request.message, principal: principal)
        } catch let refusal as TallyError {
            server.metrics.refusedBeforeSettlement(refusal.code, protocol: .grpc)
            return ServerResponse(message: RateLimitService.response(.failure(refusal)))
        }
        switch await GatewayRoutes.decide(event, server.tally) {
        case .success(let decision):
            server.metrics.decided([decision.outcome], protocol: .grpc)
            return ServerResponse(message: RateLimitService.response(.success(decision)))
        case .failure(let error) where GatewayRoutes.refusesTheCall(error.code):
            server.metrics.refusedBeforeSettlement(error.code, protocol: .grpc)
            return ServerResponse(message: RateLimitService.response(.failure(error)))
        case .failure(let error) where error.code == .invalidRequest || error.code == .countOutOfRange:
            throw RPCError(code: .invalidArgument, message: error.message)
        case .failure(let error):
            throw RPCError(code: .unavailable, message: error.message)
        }
    }

    /// Reads the event from a request: every fault is an INVALID_ARGUMENT `RPCError`, and an
    /// account the key may not meter a `TallyError` (refused as unknown); nothing is recorded.
    static func event(_ request: RateLimitRequest, principal: Principal) throws -> RecordUsage {
        guard request.descriptors.count == 1 else {
            throw RPCError(code: .invalidArgument, message: "a request carries one descriptor, got \(request.descriptors.count)")
        }
        let descriptor = request.descriptors[0]
        var entries: [String: String] = [:]
        for entry in descriptor.entries {
            guard Entry.all.contains(entry.key) else {
                throw RPCError(code: .invalidArgument, message: "unknown descriptor entry \(entry.key); Tally reads account, api, edition and request_id")
            }
            guard entries.updateValue(entry.value, forKey: entry.key) == nil else {
                throw RPCError(code: .invalidArgument, message: "the descriptor names \(entry.key) twice")
            }
        }
        let account: String
        do throws(TallyError) {
            account = try GatewayRoutes.account(entries[Entry.account], principal: principal)
        } catch where error.code == .accountNotFound {
            throw error
        } catch {
            throw RPCError(code: .invalidArgument, message: "the descriptor names no account, and the key is for every account")
        }
        guard let api = entries[Entry.api], !api.isEmpty, api.utf8.count <= Limits.apiIDLengthMax else {
            throw RPCError(code: .invalidArgument, message: "the descriptor names no api (1 to \(Limits.apiIDLengthMax) bytes)")
        }
        guard let id = entries[Entry.requestID], !id.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "the descriptor names no request_id: add a request_headers action for x-request-id")
        }
        let calls: UInt64 = descriptor.hasHitsAddend ? descriptor.hitsAddend.value : request.hitsAddend == 0 ? 1 : UInt64(request.hitsAddend)
        guard calls >= 1, calls <= UInt64(Limits.eventCallsMax) else {
            throw RPCError(code: .invalidArgument, message: "hits_addend must be from 1 to \(Limits.eventCallsMax), got \(calls)")
        }
        return RecordUsage(account: account, id: id, api: api, edition: entries[Entry.edition], calls: Int64(calls), mode: .check)
    }

    /// The response to one decision (or to a refusal before settling: an unknown account, a
    /// reused id).
    static func response(_ decision: Result<GatewayDecision, TallyError>) -> RateLimitResponse {
        var response = RateLimitResponse()
        var status = RateLimitResponse.DescriptorStatus()
        let remaining = (try? decision.get())?.remaining
        if let remaining { status.limitRemaining = UInt32(clamping: remaining) }
        let refusal: TallyError.Code? = switch decision {
        case .success(let decided): decided.refusal
        case .failure(let error): error.code
        }
        if let refusal {
            status.code = .overLimit
            response.overallCode = .overLimit
            response.responseHeadersToAdd.append(header(.tallyRefusal, refusal.rawValue))
            if let remaining { response.responseHeadersToAdd.append(header(.tallyRemaining, String(remaining))) }
        } else {
            status.code = .ok
            response.overallCode = .ok
            if case .success(let decided) = decision, let payer = decided.outcome.source {
                response.requestHeadersToAdd.append(header(.tallyPayer, payer))
            }
            if let remaining { response.requestHeadersToAdd.append(header(.tallyRemaining, String(remaining))) }
        }
        response.statuses = [status]
        return response
    }

    /// A header for Envoy to add, named as the HTTP answer names it (lowercase, as HTTP/2 sends it).
    static func header(_ name: HTTPField.Name, _ value: String) -> Envoy_Service_Ratelimit_V3_HeaderValue {
        var header = Envoy_Service_Ratelimit_V3_HeaderValue()
        header.key = name.canonicalName
        header.value = value
        return header
    }
}

/// The gRPC server for `RateLimitService`, run as a service of the application's group: SIGTERM
/// stops it taking new streams and lets the decisions in flight finish.
struct RateLimitServer: Service {
    /// The largest request: one descriptor of a few short entries is well under a kilobyte.
    static let requestBytesMax = 64 * 1024
    /// Decisions in flight on one connection (Envoy keeps one connection a worker thread); more
    /// wait in the client, not in Tally's memory.
    static let streamsPerConnectionMax = 1_024

    /// The transport's limits, as every listener of the service uses them.
    static var transport: HTTP2ServerTransport.Posix.Config {
        .defaults { config in
            config.rpc.maxRequestPayloadSize = requestBytesMax
            config.http2.maxConcurrentStreams = streamsPerConnectionMax
        }
    }

    let server: ServerEnvironment
    let logger: Logger

    func run() async throws {
        guard let port = server.configuration.grpcPort else { return }
        let host = server.configuration.host
        let address: GRPCNIOTransportCore.SocketAddress = host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port)
        let grpc = GRPCServer(transport: .http2NIOPosix(address: address, transportSecurity: .plaintext, config: RateLimitServer.transport),
                              services: [RateLimitService(server: server)])
        try await withGracefulShutdownHandler {
            try await grpc.serve()
        } onGracefulShutdown: {
            grpc.beginGracefulShutdown()
        }
    }
}
