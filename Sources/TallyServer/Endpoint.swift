import HTTPTypes
import Hummingbird
import NIOCore
import TallyCore
import TallyEngine
import TallyStore

/// One route of the API: its method and OpenAPI-style path, the roles that may call it, and what
/// it does. The table of endpoints is the single source the router is built from and the test
/// that holds the OpenAPI document to the code reads.
struct Endpoint: Sendable {
    let method: HTTPRequest.Method
    /// The path as the OpenAPI document writes it: `/v1/accounts/{account}`.
    let path: String
    let roles: Set<Role>
    /// Whether the route reads a JSON body (and honours `Idempotency-Key`), or leaves any body
    /// unread: a gateway's authorization subrequest carries the client's method and headers, and
    /// whatever body it has is the client's, not Tally's.
    let readsBody: Bool
    let handle: @Sendable (inout Call) async throws -> Answer

    init(_ method: HTTPRequest.Method, _ path: String, _ roles: Set<Role>, readsBody: Bool = true,
         _ handle: @escaping @Sendable (inout Call) async throws -> Answer) {
        self.method = method
        self.path = path
        self.roles = roles
        self.readsBody = readsBody
        self.handle = handle
    }

    /// The names in braces in the path.
    var parameterNames: [String] {
        path.split(separator: "/").compactMap { part in
            part.hasPrefix("{") && part.hasSuffix("}") ? String(part.dropFirst().dropLast()) : nil
        }
    }
}

/// One request as a route sees it: who calls, the path parameters, the body's fields, the query,
/// and the engine.
struct Call {
    let request: Request
    let principal: Principal
    let parameters: [String: String]
    var fields: Fields
    let server: ServerEnvironment

    var tally: Tally { server.tally }
    var now: Instant { server.tally.clock.now() }

    /// Reads the catalog version on sale now, when a route needs it.
    var onSale: () -> CatalogVersion {
        let tally = server.tally
        return { tally.readShared { $0.catalog.version(at: tally.clock.now()) } }
    }

    func parameter(_ name: String) -> String { parameters[name]! }

    /// The `{account}` of the path; the dispatcher has checked the caller may touch it.
    var account: String { parameters["account"]! }

    func query(_ name: String) -> String? { request.uri.queryParameters.get(name) }

    /// A whole number from the query, nil when absent.
    func integer(_ name: String) throws(TallyError) -> Int64? {
        guard let text = query(name) else { return nil }
        guard let value = Int64(text) else { throw TallyError(.invalidRequest, "\(name) must be a whole number") }
        return value
    }

    /// A page size from `?limit=`: 1 to `pageSizeMax`, `pageSizeDefault` when absent.
    func limit() throws(TallyError) -> Int {
        guard let text = query("limit") else { return Pagination.pageSizeDefault }
        guard let value = Int(text), (1...Pagination.pageSizeMax).contains(value) else {
            throw TallyError(.pageSizeOutOfRange, "limit must be a whole number from 1 to \(Pagination.pageSizeMax)")
        }
        return value
    }

    /// A month from `?month=YYYY-MM`, this month in the catalog's zone when absent.
    func month() throws(TallyError) -> Month {
        guard let text = query("month") else { return tally.readShared { $0.zone.month(of: now) } }
        guard let month = Month(parsing: text) else { throw TallyError(.invalidRequest, "month must be YYYY-MM") }
        return month
    }
}

/// Lists are pages: `?limit=` items after the `?starting_after=` id, in a stable order.
enum Pagination {
    static let pageSizeDefault = 100
    static let pageSizeMax = 1_000

    /// The page of `items` (sorted by `id`) after `cursor`, and whether more follow.
    static func page<T>(_ items: [T], id: (T) -> String, call: Call) throws(TallyError) -> (items: ArraySlice<T>, hasMore: Bool) {
        let limit = try call.limit()
        var start = 0
        if let cursor = call.query("starting_after") {
            start = items.firstIndex { id($0) > cursor } ?? items.count
        }
        let end = min(start + limit, items.count)
        return (items[start..<end], end < items.count)
    }

    static func json<T>(_ items: [T], id: (T) -> String, call: Call, render: (T) -> JSON) throws(TallyError) -> JSON {
        let (page, hasMore) = try page(items, id: id, call: call)
        return .object([("data", .array(page.map(render))), ("has_more", .bool(hasMore))])
    }

    /// The page of `items` (in any order) after the cursor, found without sorting them all: the
    /// `limit + 1` smallest ids are kept as the items pass. A table of a million accounts is read
    /// once, under the engine's lock, instead of sorted for every page. Items come out of a
    /// dictionary in no order, so a new item is rarely among the smallest so far and the kept
    /// page is seldom touched.
    static func json<T>(unordered items: some Sequence<T>, id: (T) -> String, call: Call, render: (T) -> JSON) throws(TallyError) -> JSON {
        let limit = try call.limit()
        let kept = try smallest(unordered: items, id: id, call: call)
        return .object([("data", .array(kept.prefix(limit).map(render))), ("has_more", .bool(kept.count > limit))])
    }

    /// The page over every partition from each partition's `smallest` items, rendered with their
    /// ids: the `limit` smallest of them all, and whether more follow.
    static func json(pages: [[(id: String, json: JSON)]], call: Call) throws(TallyError) -> JSON {
        let limit = try call.limit()
        let items = pages.joined().sorted { $0.id < $1.id }
        return .object([("data", .array(items.prefix(limit).map(\.json))), ("has_more", .bool(items.count > limit))])
    }

    /// The `limit + 1` items with the smallest ids after the cursor, in order (see `json(unordered:)`).
    static func smallest<T>(unordered items: some Sequence<T>, id: (T) -> String, call: Call) throws(TallyError) -> [T] {
        let limit = try call.limit()
        let cursor = call.query("starting_after")
        var kept: [T] = []
        kept.reserveCapacity(limit + 1)
        for item in items {
            let key = id(item)
            if let cursor, key <= cursor { continue }
            if kept.count > limit, key >= id(kept[limit]) { continue }
            var low = 0, high = kept.count
            while low < high {
                let middle = (low + high) / 2
                if id(kept[middle]) < key { low = middle + 1 } else { high = middle }
            }
            kept.insert(item, at: low)
            if kept.count > limit + 1 { kept.removeLast() }
        }
        return kept
    }
}

/// What a route answers: a status, a content type and the bytes. Kept whole (not streamed) so
/// that an idempotent request's answer can be stored and replayed byte for byte.
struct Answer: Sendable {
    var status: HTTPResponse.Status
    var contentType: String
    var body: ByteBuffer
    var headers: HTTPFields = [:]

    static func json(_ value: JSON, status: HTTPResponse.Status = .ok) -> Answer {
        Answer(status: status, contentType: "application/json", body: ByteBuffer(bytes: value.utf8()))
    }

    static func text(_ text: String, contentType: String, status: HTTPResponse.Status = .ok) -> Answer {
        Answer(status: status, contentType: contentType, body: ByteBuffer(string: text))
    }

    static func problem(_ problem: Problem) -> Answer {
        Answer(status: problem.status, contentType: "application/problem+json", body: Problem.body(problem.status, problem.error),
               headers: problem.headers)
    }

    var response: Response {
        var fields = headers
        fields[.contentType] = contentType
        return Response(status: status, headers: fields, body: .init(byteBuffer: body))
    }
}

extension HTTPField.Name {
    static let idempotencyKey = HTTPField.Name("Idempotency-Key")!
    static let idempotentReplayed = HTTPField.Name("Idempotent-Replayed")!
}

extension Endpoint {
    /// The usage routes, by the protocol their decisions are counted under; the single-decision
    /// ones (a gateway's) are also timed, and run at a decision's priority (`Urgency`).
    static let decisionRoutes: [String: (protocol: ServerMetrics.DecisionProtocol, single: Bool)] = [
        "/v1/usage/check": (.http, true), "/v1/usage/check-batch": (.http, false), "/v1/usage/report": (.http, false),
        "/v1/gateway/authorize": (.authorize, true),
    ]

    /// The Hummingbird handler: authenticate, check the role and the account scope, read the
    /// body within its limit, apply `Idempotency-Key`, run the route; a usage route's refusals and
    /// time are counted in the metrics.
    func responder(_ server: ServerEnvironment) -> @Sendable (Request, BasicRequestContext) async throws -> Response {
        let respond = plainResponder(server)
        guard let (decisionProtocol, single) = Endpoint.decisionRoutes[path] else { return respond }
        return { request, context in
            let started = ContinuousClock.now
            // A gateway's decision goes ahead of bulk work for a core (`Urgency`).
            if single { Urgency.raiseCurrentTask() }
            defer { if single { server.metrics.timed(decisionProtocol, since: started) } }
            do {
                return try await respond(request, context)
            } catch {
                // Refused before any settlement: a bad key, an unknown account, a malformed call.
                let code = (error as? TallyError)?.code ?? (error as? Problem)?.error.code ?? .internalError
                server.metrics.refusedBeforeSettlement(code, protocol: decisionProtocol)
                throw error
            }
        }
    }

    private func plainResponder(_ server: ServerEnvironment) -> @Sendable (Request, BasicRequestContext) async throws -> Response {
        let endpoint = self
        let names = parameterNames
        return { request, context in
            var parameters: [String: String] = [:]
            for name in names { parameters[name] = context.parameters.get(name) ?? "" }
            let account = parameters["account"]
            let (principal, accountExists) = try await Keys.authenticate(request.headers[.authorization], tally: server.tally,
                                                                        account: account)
            try server.admit(principal)
            guard endpoint.roles.contains(principal.role) else {
                throw Problem(.forbidden, TallyError(.forbidden, "a \(principal.role.rawValue) key may not call \(endpoint.method) \(endpoint.path)"))
            }
            // Another customer's account answers exactly as an unknown one does.
            if let account, !(principal.mayTouch(account) && accountExists) {
                throw Problem(TallyError(.accountNotFound, "there is no account \(account)"))
            }
            guard endpoint.readsBody else {
                var call = Call(request: request, principal: principal, parameters: parameters, fields: .empty, server: server)
                return try await endpoint.handle(&call).response
            }
            var request = request
            let body = try await Endpoint.collect(&request, limit: server.configuration.bodyBytesMax)
            var fields = Fields.empty
            if endpoint.method == .post || endpoint.method == .put || endpoint.method == .patch, body.readableBytes > 0 {
                if let type = request.headers[.contentType], !type.lowercased().hasPrefix("application/json") {
                    throw Problem(TallyError(.unsupportedMediaType, "send the body as application/json"))
                }
                let bytes = Array(buffer: body)
                // A large body is parsed off the cooperative pool (`OffPool`).
                let json: JSON
                do {
                    json = bytes.count >= OffPool.bodyBytesMin ? try await OffPool.run { try JSON.parse(utf8: bytes) } : try JSON.parse(utf8: bytes)
                } catch let error as TallyError {
                    throw TallyError(.invalidRequest, "the request body is not JSON (\(error.message))")
                }
                fields = try Fields(json)
            }
            var call = Call(request: request, principal: principal, parameters: parameters, fields: fields, server: server)
            guard endpoint.method == .post, let key = request.headers[.idempotencyKey] else {
                return try await endpoint.handle(&call).response
            }
            return try await Endpoint.idempotent(key: key, principal: principal, request: request, body: body, server: server) {
                try await endpoint.handle(&call)
            }.response
        }
    }

    static func collect(_ request: inout Request, limit: Int) async throws -> ByteBuffer {
        do {
            return try await request.collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw Problem(TallyError(.bodyTooLarge, "the request body is over the limit of \(limit) bytes"))
        } catch is NIOTooManyBytesError {
            throw Problem(TallyError(.bodyTooLarge, "the request body is over the limit of \(limit) bytes"))
        }
    }

    /// Runs `run` once per (API key, Idempotency-Key); replays its answer afterwards. A refusal is
    /// an answer too and is replayed; a server error is not kept, so the request may be retried.
    static func idempotent(key: String, principal: Principal, request: Request, body: ByteBuffer, server: ServerEnvironment,
                           run: () async throws -> Answer) async throws -> Answer {
        guard !key.isEmpty, key.utf8.count <= IdempotencyTable.keyLengthMax else {
            throw Problem(TallyError(.invalidRequest, "an Idempotency-Key is 1 to \(IdempotencyTable.keyLengthMax) bytes"))
        }
        let scoped = "\(principal.keyID):\(key)"  // key ids hold no colon
        let table = server.idempotency
        let fingerprint = IdempotencyTable.fingerprint(request, body: body)
        let now = server.tally.clock.now()
        switch try table.begin(key: scoped, fingerprint: fingerprint, now: now) {
        case .replay(var answer):
            answer.headers[.idempotentReplayed] = "true"
            return answer
        case .proceed:
            break
        }
        // Not in memory: the store may have it from before a restart or from another process.
        let kept: StoredAnswer?
        do {
            kept = try await server.tally.store.answer(for: scoped)
        } catch {
            table.finish(key: scoped, nil)
            throw Problem(TallyError(.storeUnavailable, "the idempotency key could not be looked up; retry"))
        }
        if let kept {
            var answer = try table.adopt(key: scoped, kept, fingerprint: fingerprint)
            answer.headers[.idempotentReplayed] = "true"
            return answer
        }
        let answer: Answer
        do {
            answer = try await run()
        } catch let problem as Problem {
            answer = .problem(problem)
        } catch let error as TallyError {
            answer = .problem(Problem(error))
        } catch {
            table.finish(key: scoped, nil)
            throw error
        }
        if answer.status.code < 500 {
            do {
                try await server.tally.store.saveAnswer(StoredAnswer(
                    key: scoped, fingerprint: fingerprint, status: Int(answer.status.code), contentType: answer.contentType,
                    body: Array(answer.body.readableBytesView), created: now))
            } catch {
                // The operation is done and durable; only its replay after a restart is at risk.
                server.tally.logger.error("keeping an idempotent answer failed", metadata: ["error": "\(error)"])
            }
        }
        table.finish(key: scoped, answer.status.code >= 500 ? nil : answer)
        return answer
    }
}
