import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization
import Testing
import TallyCore
import TallyEngine
@testable import TallyServer

@Suite("Background services: the scheduler and webhook delivery", .timeLimit(.minutes(5)))
struct ServiceTests {
    @Test("A server that was down bills every month it missed, oldest first, once")
    func catchUp() async throws {
        let harness = try await Harness.make(start: "2026-09-10T09:00:00+08:00")
        try await harness.server.tally.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
        try await harness.server.tally.perform(Activate(account: "acme", product: "image-tagging"))
        for (index, time) in ["2026-09-10T10:00:00+08:00", "2026-10-10T10:00:00+08:00"].enumerated() {
            try harness.clock.advance(to: Instant(rfc3339: time)!)
            try await harness.server.tally.perform(RecordUsage(account: "acme", id: "u\(index)", api: "image-tagging.general", calls: 3000, mode: .report))
        }
        try harness.clock.advance(to: Instant(rfc3339: "2026-12-05T00:00:00+08:00")!)
        let tick = try await Scheduler.tick(harness.server)
        #expect(tick.billed == [Month(year: 2026, month: 9), Month(year: 2026, month: 10)])
        #expect(harness.server.tally.read { $0.bills.count } == 2)
        #expect(try await Scheduler.tick(harness.server).billed == [])
        // December's free quota was granted by the tick.
        #expect(harness.server.tally.read { state in
            state.freePack(account: state.accounts["acme"]!, api: "image-tagging.general", month: Month(year: 2026, month: 12)) != nil
        })
    }

    @Test("Webhooks: signed, with an id, delivered once on 2xx, retried with backoff otherwise")
    func webhooks() async throws {
        let harness = try await Harness.make()
        let received = Mutex<[(id: String, signature: String, body: String)]>([])
        let failing = Mutex(true)
        let router = Router()
        router.post("/hook") { request, _ -> HTTPResponse.Status in
            var request = request
            let body = String(buffer: try await request.collectBody(upTo: 1 << 20))
            received.withLock { $0.append((request.headers[HTTPField.Name("Tally-Webhook-Id")!] ?? "",
                                           request.headers[HTTPField.Name("Tally-Signature")!] ?? "", body)) }
            return failing.withLock { $0 } ? .internalServerError : .ok
        }
        let receiver = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        try await receiver.test(.live) { receiverClient in
            let port = try #require(receiverClient.port)
            let tally = harness.server.tally
            try await tally.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
            let endpoint = try await tally.perform(AddWebhookEndpoint(url: "http://127.0.0.1:\(port)/hook", secret: "whsec_test", account: nil))
            try await tally.perform(Activate(account: "acme", product: "image-tagging"))
            try await tally.perform(RecordUsage(account: "acme", id: "u", api: "image-tagging.general", calls: 1000, mode: .report))
            let notice = try #require(tally.read { $0.notices.last })
            #expect(notice.kind == "free_quota_used_up")

            let retries = WebhookDelivery.Retries()
            let logger = Logger(label: "test")
            #expect(await WebhookDelivery.pass(harness.server, retries: retries, logger: logger) == 0, "a 500 is not a delivery")
            #expect(retries.next.withLock { $0[DeliveryKey(notice: notice.id, endpoint: endpoint.id)]?.attempts } == 1)
            #expect(await WebhookDelivery.pass(harness.server, retries: retries, logger: logger) == 0)
            #expect(received.withLock { $0.count } == 1, "backing off: no second attempt within the first second")

            failing.withLock { $0 = false }
            try harness.clock.advance(to: harness.clock.now.adding(seconds: 2))
            #expect(await WebhookDelivery.pass(harness.server, retries: retries, logger: logger) == 1)
            #expect(await WebhookDelivery.pass(harness.server, retries: retries, logger: logger) == 0, "delivered once")
            #expect(tally.read { $0.deliveries.contains(DeliveryKey(notice: notice.id, endpoint: endpoint.id)) })
            let cursor = WebhookDelivery.Cursor(endpoint: endpoint.id, partition: tally.partitioning.partition(of: "acme"))
            #expect(retries.cursors.withLock { $0[cursor] } == tally.read(account: "acme") { $0.notices.count },
                    "later passes start after what is settled in the account's partition")

            let last = try #require(received.withLock { $0.last })
            #expect(last.id == notice.id)
            let body = try JSON.parse(last.body)
            #expect(body["id"] == .string(notice.id))
            #expect(body["type"] == .string("free_quota_used_up"))
            // The receiver's check: HMAC-SHA256 over "<t>.<body>" with the endpoint's secret.
            let parts = Dictionary(uniqueKeysWithValues: last.signature.split(separator: ",").map { part in
                let pair = part.split(separator: "=", maxSplits: 1)
                return (String(pair[0]), String(pair[1]))
            })
            let timestamp = try #require(parts["t"])
            let mac = HMAC<SHA256>.authenticationCode(for: Array("\(timestamp).\(last.body)".utf8), using: SymmetricKey(data: Array("whsec_test".utf8)))
            #expect(parts["v1"] == mac.map { String(format: "%02x", $0) }.joined())
        }
    }
}
