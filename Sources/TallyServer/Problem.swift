import Hummingbird
import NIOCore
import TallyCore
import TallyEngine

/// An error as the API answers it: `application/problem+json` (RFC 9457) carrying the stable
/// snake_case `code` that programs act on and a sentence for people.
public struct Problem: HTTPResponseError, Sendable {
    public let status: HTTPResponse.Status
    public let error: TallyError
    /// Extra headers, such as `Retry-After` on a 429.
    public var headers: HTTPFields = [:]

    public init(_ status: HTTPResponse.Status, _ error: TallyError) {
        self.status = status
        self.error = error
    }

    public init(_ error: TallyError) {
        self.init(Problem.status(of: error.code), error)
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        Problem.response(status: status, error: error, headers: headers)
    }

    static func response(status: HTTPResponse.Status, error: TallyError, headers extra: HTTPFields = [:]) -> Response {
        var headers: HTTPFields = [.contentType: "application/problem+json"]
        headers.append(contentsOf: extra)
        return Response(status: status, headers: headers, body: .init(byteBuffer: body(status, error)))
    }

    static func body(_ status: HTTPResponse.Status, _ error: TallyError) -> ByteBuffer {
        let body = JSON.object([
            ("type", .string("https://tally.dev/problems/\(error.code.rawValue)")),
            ("title", .string(status.reasonPhrase)),
            ("status", .int(Int64(status.code))),
            ("code", .string(error.code.rawValue)),
            ("detail", .string(error.message)),
        ])
        return ByteBuffer(bytes: body.utf8())
    }

    /// The HTTP status for each code: 400 for malformed input, 404 for what is not there (or not
    /// yours), 409 for a clash with what exists, 413/422/429 for limits, 422 for a refusal the
    /// rules make (insufficient funds, refund window passed ...), 503 when the store is down.
    static func status(of code: TallyError.Code) -> HTTPResponse.Status {
        switch code {
        case .invalidRequest, .invalidAmount, .invalidTimestamp, .invalidCatalog, .invalidScenario, .countOutOfRange,
             .amountOutOfRange:
            return .badRequest
        case .unauthenticated: return .unauthorized
        case .forbidden: return .forbidden
        case .accountNotFound, .orderNotFound, .keyNotFound, .webhookEndpointNotFound, .notFound, .billNotFound,
             .unknownItem, .unknownProduct, .unknownApi:
            return .notFound
        case .methodNotAllowed: return .methodNotAllowed
        case .accountExists, .duplicateRef, .idReused, .idempotencyKeyReused, .idempotencyKeyInUse, .alreadyActivated,
             .alreadyRefunded:
            return .conflict
        case .bodyTooLarge: return .contentTooLarge
        case .unsupportedMediaType: return .unsupportedMediaType
        case .rateLimited, .limitExceeded: return .tooManyRequests
        case .storeUnavailable, .storeConflict: return .serviceUnavailable
        case .internalError: return .internalServerError
        default: return .unprocessableContent
        }
    }
}

/// Turns whatever a route throws into a problem: engine refusals keep their code; Hummingbird's
/// own errors (an unknown route, a body over the limit) get one; anything else is logged and
/// answered as `internal_error` without its details.
enum Readiness {
    /// What is answered whether or not the engine is ready.
    static let alwaysServed: Set<String> = ["/health", "/health/live", "/health/ready", "/metrics", "/openapi.yaml"]
    /// The Retry-After of an answer refused while the engine is not ready: a few of the engine's
    /// attempts to reload (`Tally.recoveryRetryMilliseconds`).
    static let retryAfterSeconds = 5
}

/// While the engine is not ready (a write the store refused, not yet reloaded), memory may hold
/// facts the store did not take: every request but the health checks, metrics and the document is
/// answered 503 `store_unavailable`, reads as well as writes, so that nothing unacknowledged is
/// ever shown.
struct ReadinessMiddleware<Context: RequestContext>: RouterMiddleware {
    let tally: Tally

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard tally.isReady || Readiness.alwaysServed.contains(request.uri.path) else {
            if request.uri.path.hasPrefix("/console") { return Console.unavailable(request) }
            var problem = Problem(TallyError(.storeUnavailable, "the store is unavailable; Tally serves again once it has reloaded from it"))
            problem.headers[.retryAfter] = String(Readiness.retryAfterSeconds)
            throw problem
        }
        return try await next(request, context)
    }
}

struct ProblemMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let problem as Problem {
            return Problem.response(status: problem.status, error: problem.error, headers: problem.headers)
        } catch let error as TallyError {
            return Problem.response(status: Problem.status(of: error.code), error: error)
        } catch let error as HTTPError {
            let code: TallyError.Code = switch error.status {
            case .notFound: .notFound
            case .methodNotAllowed: .methodNotAllowed
            case .contentTooLarge: .bodyTooLarge
            case .unsupportedMediaType: .unsupportedMediaType
            case .badRequest: .invalidRequest
            default: error.status.code >= 500 ? .internalError : .invalidRequest
            }
            let sentence = switch error.status {
            case .notFound: "there is nothing at \(request.uri.path)"
            case .contentTooLarge: "the request body is over the limit"
            default: error.body ?? error.status.reasonPhrase
            }
            return Problem.response(status: error.status, error: TallyError(code, sentence))
        } catch is NIOTooManyBytesError {
            return Problem.response(status: .contentTooLarge, error: TallyError(.bodyTooLarge, "the request body is over the limit"))
        } catch {
            context.logger.error("unexpected error", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
            return Problem.response(status: .internalServerError, error: TallyError(.internalError, "an unexpected error occurred; it has been logged"))
        }
    }
}
