import Crypto
import Hummingbird
import NIOCore
import Synchronization
import TallyCore
import TallyEngine
import TallyStore

/// `Idempotency-Key` on POST, with Stripe's semantics: the same key and body replay the first
/// answer; the same key with another request is refused (`idempotency_key_reused`); a request whose
/// key is still in flight is refused (`idempotency_key_in_use`). Keys are scoped to the API key
/// that sent them and live `lifetimeSeconds` (24 hours); the table holds at most `entriesMax`, and
/// when it is full of live keys a new key is refused with 429 rather than evicting one early.
///
/// The table in memory marks keys in flight and caches answers; the store keeps every answer for
/// a day and more (`TallyStore.saveAnswer`), so a restart, or another process on the same
/// PostgreSQL database, replays them too. The scheduler prunes the store after
/// `storeLifetimeSeconds`.
final class IdempotencyTable: Sendable {
    /// How long the store keeps answers: the promised day, and an hour's grace.
    static let storeLifetimeSeconds: Int64 = 25 * 3600
    static let keyLengthMax = 255
    static let lifetimeSeconds: Int64 = 24 * 3600
    static let entriesMax = 100_000

    typealias Stored = Answer

    private struct Entry {
        let fingerprint: [UInt8]
        let created: Instant
        var stored: Stored?
    }

    enum Begin {
        case proceed
        case replay(Stored)
    }

    private let entries = Mutex<(byKey: [String: Entry], order: [(String, Instant)], head: Int)>(([:], [], 0))

    static func fingerprint(_ request: Request, body: ByteBuffer) -> [UInt8] {
        var hasher = SHA256()
        hasher.update(data: Array("\(request.method) \(request.uri.path)?\(request.uri.query ?? "")\n".utf8))
        hasher.update(data: Array(body.readableBytesView))
        return Array(hasher.finalize())
    }

    func begin(key: String, fingerprint: [UInt8], now: Instant) throws(Problem) -> Begin {
        try entries.withLock { (table: inout (byKey: [String: Entry], order: [(String, Instant)], head: Int)) throws(Problem) -> Begin in
            IdempotencyTable.expire(&table, now: now)
            if let entry = table.byKey[key] {
                guard entry.fingerprint == fingerprint else {
                    throw Problem(TallyError(.idempotencyKeyReused, "this Idempotency-Key was used for a different request"))
                }
                guard let stored = entry.stored else {
                    throw Problem(TallyError(.idempotencyKeyInUse, "a request with this Idempotency-Key is still in progress; retry later"))
                }
                return .replay(stored)
            }
            guard table.byKey.count < IdempotencyTable.entriesMax else {
                var problem = Problem(TallyError(.limitExceeded, "too many idempotency keys are live; retry later"))
                problem.headers[.retryAfter] = "60"
                throw problem
            }
            table.byKey[key] = Entry(fingerprint: fingerprint, created: now, stored: nil)
            table.order.append((key, now))
            return .proceed
        }
    }

    /// Takes over an answer the store kept (from before a restart, or from another process) for a
    /// key this process had marked in flight, and says what the request gets.
    func adopt(key: String, _ stored: StoredAnswer, fingerprint: [UInt8]) throws(Problem) -> Stored {
        let answer = Answer(status: HTTPResponse.Status(code: stored.status), contentType: stored.contentType, body: ByteBuffer(bytes: stored.body))
        entries.withLock { table in table.byKey[key] = Entry(fingerprint: stored.fingerprint, created: stored.created, stored: answer) }
        guard stored.fingerprint == fingerprint else {
            throw Problem(TallyError(.idempotencyKeyReused, "this Idempotency-Key was used for a different request"))
        }
        return answer
    }

    /// Keeps the answer for replays; a server error is not kept, so the request may be retried.
    func finish(key: String, _ stored: Stored?) {
        entries.withLock { table in
            if let stored { table.byKey[key]?.stored = stored } else { table.byKey[key] = nil }
        }
    }

    private static func expire(_ table: inout (byKey: [String: Entry], order: [(String, Instant)], head: Int), now: Instant) {
        let horizon = now.adding(seconds: -lifetimeSeconds)
        while table.head < table.order.count, table.order[table.head].1 < horizon {
            let (key, created) = table.order[table.head]
            if table.byKey[key]?.created == created { table.byKey[key] = nil }
            table.head += 1
        }
        if table.head > 4_096, table.head * 2 > table.order.count {
            table.order.removeFirst(table.head)
            table.head = 0
        }
    }

    var count: Int { entries.withLock { $0.byKey.count } }
}
