import AsyncHTTPClient
import Crypto
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Synchronization
import TallyCore
import TallyEngine

/// Delivers notices (SPEC 7) from the transactional outbox: a notice is a fact written in the same
/// batch as the change it reports, so none is lost and none is sent for a change that was rolled
/// back. Each is POSTed to every endpoint owed it, signed, until the endpoint answers 2xx; then a
/// delivery fact ends its retries. Delivery is at least once: a crash between the 2xx and that
/// fact sends it again, and the receiver dedupes on the `id`.
struct WebhookDelivery: Service {
    let server: ServerEnvironment
    let logger: Logger

    /// The most notices one pass sends; the rest wait for the next pass.
    static let passDeliveriesMax = 256
    /// Retries back off exponentially from 1 s up to this.
    static let backoffSecondsMax: Int64 = 3_600
    static let signatureHeader = "Tally-Signature"
    static let idHeader = "Tally-Webhook-Id"

    func run() async throws {
        let state = Retries()
        let interval = server.configuration.webhookIntervalMilliseconds
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                _ = await WebhookDelivery.pass(server, retries: state, logger: logger)
                try await Task.sleep(for: .milliseconds(interval))
            }
        }
    }

    /// When each failed (notice, endpoint) may be tried again, kept in memory: a restart retries
    /// at once, which is what an outbox owes.
    final class Retries: Sendable {
        let next = Mutex<[DeliveryKey: (attempts: Int64, at: Instant)]>([:])
        /// Per endpoint and partition, the index in the partition's notices of the first one not
        /// yet settled (delivered, or not its endpoint's): a pass starts there, so it does not
        /// rescan the whole outbox every second.
        let cursors = Mutex<[Cursor: Int]>([:])
    }

    struct Cursor: Hashable {
        let endpoint: String
        let partition: Int
    }

    /// What a receiver gets: the notice as JSON.
    static func body(_ notice: Notice, zone: Zone) -> String {
        var fields: [(String, JSON)] = [("id", .string(notice.id)), ("type", .string(notice.kind)),
                                        ("created", .string(notice.at.rfc3339(in: zone)))]
        if let account = notice.account { fields.append(("account", .string(account))) }
        fields.append(("data", .object(notice.details.keys.sorted().map { ($0, .string(notice.details[$0]!)) })))
        return JSON.object(fields).serialized()
    }

    /// `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the endpoint's secret>`, as
    /// Stripe signs: the timestamp in the signed text stops a replay of an old delivery.
    static func signature(secret: String, timestamp: Int64, body: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array("\(timestamp).\(body)".utf8), using: SymmetricKey(data: Array(secret.utf8)))
        return "t=\(timestamp),v1=" + Keys.hex(mac)
    }

    /// The (notice, endpoint) pairs of one partition's notices owed at `now`, oldest first, at
    /// most `budget`. An endpoint is owed the notices made at or after it was added.
    static func owed(_ state: TallyState, partition: Int, retries: Retries, now: Instant, budget: Int) -> [(Notice, WebhookEndpoint)] {
        let waiting = retries.next.withLock { $0 }
        var cursors = retries.cursors.withLock { $0 }
        var owed: [(Notice, WebhookEndpoint)] = []
        for endpoint in state.webhookEndpoints.values.sorted(by: { $0.id < $1.id }) {
            let cursor = Cursor(endpoint: endpoint.id, partition: partition)
            var index = cursors[cursor] ?? 0
            var settledThrough = index
            while index < state.notices.count, owed.count < budget {
                let notice = state.notices[index]
                index += 1
                let key = DeliveryKey(notice: notice.id, endpoint: endpoint.id)
                let settled = notice.at < endpoint.created || !endpoint.receives(notice) || state.deliveries.contains(key)
                if settled, settledThrough == index - 1 { settledThrough = index }
                guard !settled else { continue }
                if let retry = waiting[key], retry.at > now { continue }
                owed.append((notice, endpoint))
            }
            cursors[cursor] = settledThrough
        }
        retries.cursors.withLock { $0 = cursors }
        return owed
    }

    /// One pass: send what is owed, record what arrived. Returns how many arrived.
    static func pass(_ server: ServerEnvironment, retries: Retries, logger: Logger) async -> Int {
        let now = server.tally.clock.now()
        let zone = server.tally.readShared { $0.zone }
        var owed: [(Notice, WebhookEndpoint)] = []
        for partition in 0..<server.tally.partitioning.count where owed.count < passDeliveriesMax {
            owed += server.tally.read(partition: partition) { state in
                WebhookDelivery.owed(state, partition: partition, retries: retries, now: now, budget: passDeliveriesMax - owed.count)
            }
        }
        guard !owed.isEmpty else { return 0 }
        var delivered: [DeliveryKey] = []
        for (notice, endpoint) in owed {
            let key = DeliveryKey(notice: notice.id, endpoint: endpoint.id)
            let body = body(notice, zone: zone)
            var request = HTTPClientRequest(url: endpoint.url)
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            request.headers.add(name: idHeader, value: notice.id)
            request.headers.add(name: signatureHeader, value: signature(secret: endpoint.secret, timestamp: now.seconds, body: body))
            request.body = .bytes(ByteBuffer(string: body))
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(server.configuration.webhookTimeoutSeconds))
                guard (200..<300).contains(response.status.code) else { throw WebhookError(status: response.status.code) }
                delivered.append(key)
                retries.next.withLock { $0[key] = nil }
                server.metrics.webhooksDelivered.increment()
            } catch {
                server.metrics.webhookFailures.increment()
                retries.next.withLock { next in
                    let attempts = (next[key]?.attempts ?? 0) + 1
                    let wait = min(Int64(1) << min(attempts - 1, 20), backoffSecondsMax)
                    next[key] = (attempts, now.adding(seconds: wait))
                }
                logger.notice("webhook delivery failed; will retry", metadata: ["notice": "\(notice.id)", "endpoint": "\(endpoint.id)", "error": "\(error)"])
            }
        }
        if !delivered.isEmpty {
            do {
                try await server.tally.perform(RecordDeliveries(deliveries: delivered))
            } catch {
                logger.error("recording webhook deliveries failed; they will be sent again", metadata: ["error": "\(error)"])
            }
        }
        return delivered.count
    }

    struct WebhookError: Error { let status: UInt }
}
