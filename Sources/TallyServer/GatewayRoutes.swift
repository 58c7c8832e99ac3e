import HTTPTypes
import Hummingbird
import TallyCore
import TallyEngine

/// The gateways' own way of asking over HTTP: Envoy's ext_authz HTTP service and nginx's
/// auth_request both send a subrequest, with the client's method and no body Tally needs, and
/// read the answer's status and headers. `/v1/gateway/authorize` is check-and-record exactly as
/// `/v1/usage/check`, with the event in headers:
///
/// - `X-Tally-Account` (or the gateway key's own account), `X-Tally-Api`, `X-Tally-Edition`,
///   `X-Tally-Calls` (1 when absent), and `X-Request-Id` as the event id, so that a client's retry
///   with the same request id is counted once;
/// - 200 allows, with `X-Tally-Payer` (free, pack or postpaid) and, where prepaid calls bound the
///   account, `X-Tally-Remaining`;
/// - a refused call answers 403 (nginx passes only 2xx, 401 and 403 through; anything else
///   becomes a 500), or the status `?deny_status=` names, with `X-Tally-Refusal: <code>` and
///   `X-Tally-Status: 429`, the status the gateway should give its client;
/// - a malformed request (a header missing or out of range) is a 400 problem, and a bad key a
///   401: misconfigurations, which both gateways turn into an error rather than a decision.
///
/// Any method is accepted, and so is any path below `/v1/gateway/authorize/` (ext_authz appends
/// the client's path to its `path_prefix`).
enum GatewayRoutes {
    static let path = "/v1/gateway/authorize"

    static let all: [Endpoint] = [
        Endpoint(.get, path, .meters, readsBody: false) { call in try await authorize(call) },
        Endpoint(.post, path, .meters, readsBody: false) { call in try await authorize(call) },
    ]

    /// The methods a client's request may come with besides those of the table (the OpenAPI
    /// document lists GET and POST and says the others are accepted alike).
    static let otherMethods: [HTTPRequest.Method] = [.head, .put, .patch, .delete, .options]

    /// The statuses `?deny_status=` may choose for a refused call.
    static let denyStatuses: Set<Int> = [402, 403, 429]

    static func authorize(_ call: Call) async throws -> Answer {
        let headers = call.request.headers
        let denyStatus = try denyStatus(call.query("deny_status"))
        // A refusal before settlement (an account the key may not meter, say) is a decision too.
        let refuse = { (error: TallyError) -> Answer in
            call.server.metrics.refusedBeforeSettlement(error.code, protocol: .authorize)
            return deny(error, status: denyStatus)
        }
        let account: String
        switch Result(catching: { () throws(TallyError) in try GatewayRoutes.account(headers[.tallyAccount], principal: call.principal) }) {
        case .success(let named): account = named
        case .failure(let error) where GatewayRoutes.refusesTheCall(error.code): return refuse(error)
        case .failure(let error): throw error
        }
        let api = try required(headers[.tallyApi], "X-Tally-Api", lengthMax: Limits.apiIDLengthMax)
        let edition = try headers[.tallyEdition].map { (text: String) throws(TallyError) in
            try required(text, "X-Tally-Edition", lengthMax: Limits.editionLengthMax)
        }
        let id = try required(headers[.requestID], "X-Request-Id", lengthMax: Limits.eventIDLengthMax)
        var calls: Int64 = 1
        if let text = headers[.tallyCalls] {
            guard let value = Int64(text) else { throw TallyError(.countOutOfRange, "X-Tally-Calls must be a whole number") }
            calls = value
        }
        let event = RecordUsage(account: account, id: id, api: api, edition: edition, calls: calls, mode: .check)
        let decision: GatewayDecision
        switch await decide(event, call.tally) {
        case .success(let decided): decision = decided
        case .failure(let error) where GatewayRoutes.refusesTheCall(error.code): return refuse(error)
        case .failure(let error): throw error
        }
        call.server.metrics.decided([decision.outcome], protocol: .authorize)
        var answer: Answer
        if let code = decision.refusal {
            answer = deny(TallyError(code, GatewayRoutes.sentence(code, event)), status: denyStatus)
        } else {
            answer = .json(Views.outcome(decision.outcome))
            answer.headers[.tallyPayer] = decision.outcome.source
        }
        if let remaining = decision.remaining { answer.headers[.tallyRemaining] = String(remaining) }
        return answer
    }

    /// The engine's decision, or why it made none.
    static func decide(_ event: RecordUsage, _ tally: Tally) async -> Result<GatewayDecision, TallyError> {
        do throws(TallyError) {
            return .success(try await tally.perform(GatewayCheck(event: event)))
        } catch {
            return .failure(error)
        }
    }

    /// The errors that are a refusal of this call rather than a fault of the request or of Tally:
    /// an account the key may not meter, or a request id already used for another call.
    static func refusesTheCall(_ code: TallyError.Code) -> Bool { code == .accountNotFound || code == .idReused }

    /// The account the call is for: the header, or the gateway key's own account.
    static func account(_ header: String?, principal: Principal) throws(TallyError) -> String {
        guard let header else {
            if let scoped = principal.account { return scoped }
            throw TallyError(.invalidRequest, "send the account as X-Tally-Account (or use a gateway key scoped to it)")
        }
        guard principal.mayTouch(header) else { throw TallyError(.accountNotFound, "there is no account \(header)") }
        return header
    }

    static func required(_ header: String?, _ name: String, lengthMax: Int) throws(TallyError) -> String {
        guard let header, !header.isEmpty, header.utf8.count <= lengthMax else {
            throw TallyError(.invalidRequest, "send \(name), 1 to \(lengthMax) bytes")
        }
        return header
    }

    static func denyStatus(_ query: String?) throws(TallyError) -> HTTPResponse.Status {
        guard let query else { return .forbidden }
        guard let code = Int(query), denyStatuses.contains(code) else {
            throw TallyError(.invalidRequest, "deny_status is one of \(denyStatuses.sorted().map(String.init).joined(separator: ", "))")
        }
        return HTTPResponse.Status(code: code)
    }

    /// A refusal as the gateway reads it: the status it asked for, the reason, and the status to
    /// give its client; the body is the problem document, for a gateway that passes it on.
    static func deny(_ error: TallyError, status: HTTPResponse.Status) -> Answer {
        var answer = Answer.problem(Problem(status, error))
        answer.headers[.tallyRefusal] = error.code.rawValue
        answer.headers[.tallyStatus] = "429"
        return answer
    }

    static func sentence(_ code: TallyError.Code, _ event: RecordUsage) -> String {
        "the call to \(event.api) for account \(event.account) is refused: \(code.rawValue)"
    }
}

extension HTTPField.Name {
    static let tallyAccount = HTTPField.Name("X-Tally-Account")!
    static let tallyApi = HTTPField.Name("X-Tally-Api")!
    static let tallyEdition = HTTPField.Name("X-Tally-Edition")!
    static let tallyCalls = HTTPField.Name("X-Tally-Calls")!
    static let tallyPayer = HTTPField.Name("X-Tally-Payer")!
    static let tallyRemaining = HTTPField.Name("X-Tally-Remaining")!
    static let tallyRefusal = HTTPField.Name("X-Tally-Refusal")!
    static let tallyStatus = HTTPField.Name("X-Tally-Status")!
    static let requestID = HTTPField.Name("X-Request-Id")!
}
