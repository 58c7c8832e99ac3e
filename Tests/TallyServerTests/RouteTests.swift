import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import Yams
import TallyCore
import TallyEngine
import TallySQLite
import TallyStore
@testable import TallyServer

@Suite("The HTTP API, route by route", .timeLimit(.minutes(5)))
struct RouteTests {
    @Test("A customer's month through the API: activate, calls, a pack bought and refunded, the bill", arguments: StoreKind.available)
    func month(kind: StoreKind) async throws {
        let harness = try await Harness.make(kind)
        try await harness.app.test(.router) { client in
            #expect(try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"enterprise","verified":true}"#).status == .created)
            let topUp = try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"1000.00"}"#)
            #expect(topUp["balance"] == .string("1000.00"))
            let customer = try await harness.key(.customer, account: "acme")
            let gateway = try await harness.key(.gateway)

            let activated = try await client.call(.post, "/v1/accounts/acme/activations", key: customer, json: #"{"product":"image-tagging"}"#)
            #expect(activated.status == .created)
            #expect(activated["free"]?["image-tagging.general"]?["left"] == .int(1000))

            let first = try await client.call(.post, "/v1/usage/check", key: gateway, json: #"{"account":"acme","id":"e1","api":"image-tagging.general"}"#)
            #expect(first["accepted"] == .bool(true))
            #expect(first["source"] == .string("free"))
            let again = try await client.call(.post, "/v1/usage/check", key: gateway, json: #"{"account":"acme","id":"e1","api":"image-tagging.general"}"#)
            #expect(again["duplicate"] == .bool(true))
            let reused = try await client.call(.post, "/v1/usage/check", key: gateway, json: #"{"account":"acme","id":"e1","api":"image-tagging.general","calls":2}"#)
            #expect(reused.status == .conflict)
            #expect(reused.code == "id_reused")

            let report = try await client.call(.post, "/v1/usage/report", key: gateway,
                                               json: #"{"events":[{"account":"acme","id":"r1","api":"image-tagging.general","calls":1500},{"account":"acme","id":"r2","api":"no-such-api"}]}"#)
            #expect(report["accepted"] == .int(1))
            #expect(report["refused"] == .int(1))
            #expect(report["results"] == .array([
                .object([("id", .string("r1")), ("accepted", .bool(true)), ("source", .string("postpaid")), ("free", .int(999)), ("pack", .int(0)),
                         ("postpaid", .int(501)), ("refused", .int(0)), ("duplicate", .bool(false))]),
                .object([("id", .string("r2")), ("accepted", .bool(false)), ("reason", .string("unknown_api")), ("free", .int(0)), ("pack", .int(0)),
                         ("postpaid", .int(0)), ("refused", .int(1)), ("duplicate", .bool(false))]),
            ]))

            let preview = try await client.call(.post, "/v1/accounts/acme/orders/preview", key: customer, json: #"{"item":"image-tagging.general/10k","count":2}"#)
            #expect(preview["amount"] == .string("60.00"))
            #expect(try await client.call(.get, "/v1/accounts/acme", key: customer)["balance"]?["total"] == .string("1000.00"), "a preview changes nothing")
            let order = try await client.call(.post, "/v1/accounts/acme/orders", key: customer, json: #"{"item":"image-tagging.general/10k","count":2,"ref":"o-1"}"#)
            #expect(order.status == .created)
            #expect(order["amount"] == preview["amount"])
            #expect(order["paid"] == preview["paid"])
            #expect(order["refund"]?["allowed"] == .bool(true))
            #expect(try await client.call(.get, "/v1/accounts/acme", key: customer)["balance"]?["total"] == .string("940.00"))

            let refund = try await client.call(.post, "/v1/accounts/acme/orders/o-1/refund", key: customer)
            #expect(refund["refunded"] == .string("60.00"))
            #expect(refund["order"]?["refund"]?["reason"] == .string("already_refunded"))
            let twice = try await client.call(.post, "/v1/accounts/acme/orders/o-1/refund", key: customer)
            #expect(twice.code == "already_refunded")

            let usage = try await client.call(.get, "/v1/accounts/acme/usage?month=2026-11", key: customer)
            let line = try #require(usage["apis"]?["image-tagging.general"])
            #expect(line["calls"] == .int(1501))
            #expect(line["postpaid"] == .int(501))
            #expect(line["daily"] == .array([.object([("day", .int(2)), ("calls", .int(1501))])]))

            // The scheduler bills November at 01:00 on 1 December, not before, and only once.
            try harness.clock.advance(to: Instant(rfc3339: "2026-12-01T00:59:59+08:00")!)
            #expect(try await Scheduler.tick(harness.server).billed == [])
            try harness.clock.advance(to: Instant(rfc3339: "2026-12-01T01:00:00+08:00")!)
            #expect(try await Scheduler.tick(harness.server).billed == [Month(year: 2026, month: 11)])
            #expect(try await Scheduler.tick(harness.server).billed == [])

            let bills = try await client.call(.get, "/v1/accounts/acme/bills", key: customer)
            guard case .array(let list)? = bills["data"], list.count == 1, case .string(let billID)? = list[0]["id"] else {
                Issue.record("one bill expected: \(bills.text)"); return
            }
            #expect(list[0]["total"] == line["estimated_amount"], "the month's estimate is the bill")
            let csv = try await client.call(.get, "/v1/bills/\(billID)?format=csv", key: customer)
            #expect(csv.headers[.contentType] == "text/csv; charset=utf-8")
            #expect(csv.text.hasPrefix("bill,account,month,product,api,calls,free,pack,postpaid,tier,unit_price,amount\r\n"))
            #expect(csv.text.contains(",image-tagging.general,1501,1000,0,501,"))
            let html = try await client.call(.get, "/v1/bills/\(billID)?format=html", key: customer)
            #expect(html.text.contains("账单 Bill"))
            let late = try await client.call(.post, "/v1/usage/report", key: gateway,
                                             json: #"{"events":[{"account":"acme","id":"late","api":"image-tagging.general","time":"2026-11-30T12:00:00+08:00"}]}"#)
            #expect(late["results"] == .array([.object([("id", .string("late")), ("accepted", .bool(false)), ("reason", .string("period_closed")),
                                                        ("free", .int(0)), ("pack", .int(0)), ("postpaid", .int(0)), ("refused", .int(1)),
                                                        ("duplicate", .bool(false))])]))
        }
    }

    @Test("A membership through the API: buy, renewal and upgrade previews that match what is charged, seats, entitlements")
    func membership() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"corp","subject":"enterprise","verified":true}"#)
            _ = try await client.call(.post, "/v1/accounts/corp/top-ups", json: #"{"cash":"10000.00"}"#)
            let customer = try await harness.key(.customer, account: "corp")
            let gateway = try await harness.key(.gateway)
            let bought = try await client.call(.post, "/v1/accounts/corp/orders", key: customer, json: #"{"item":"taishan/enterprise-basic","years":1}"#)
            #expect(bought.status == .created, "\(bought.text)")
            #expect(bought["amount"] == .string("598.00"))
            #expect(bought["refund"]?["reason"] == .string("not_refundable"))

            let renewal = try await client.call(.post, "/v1/accounts/corp/renewals/preview", key: customer, json: #"{"product":"taishan","years":1}"#)
            let renewed = try await client.call(.post, "/v1/accounts/corp/renewals", key: customer, json: #"{"product":"taishan","years":1}"#)
            #expect(renewal["amount"] == .string("598.00"))
            #expect(renewed["amount"] == renewal["amount"])

            try harness.clock.advance(to: Instant(rfc3339: "2027-05-02T09:00:00+08:00")!)
            let upgrade = try await client.call(.post, "/v1/accounts/corp/upgrades/preview", key: customer, json: #"{"to":"taishan/enterprise-premium"}"#)
            let upgraded = try await client.call(.post, "/v1/accounts/corp/upgrades", key: customer, json: #"{"to":"taishan/enterprise-premium"}"#)
            #expect(upgrade["preview"] == .bool(true))
            #expect(upgraded["amount"] == upgrade["amount"])
            #expect(upgraded["paid"] == upgrade["paid"])
            #expect(try await client.call(.post, "/v1/accounts/corp/upgrades", key: customer, json: #"{"to":"taishan/enterprise-basic"}"#).code == "downgrade_not_allowed")

            let seat = try await client.call(.post, "/v1/accounts/corp/seats", key: customer, json: #"{"user":"designer-1"}"#)
            #expect(seat["seats_left"] == .int(5), "premium has 6 seats for assigned users (docs/decisions.md)")
            let allowed = try await client.call(.post, "/v1/accounts/corp/entitlements/check", key: gateway,
                                                json: #"{"feature":"team-collaboration","user":"designer-1"}"#)
            #expect(allowed["allowed"] == .bool(true))
            let stranger = try await client.call(.post, "/v1/accounts/corp/entitlements/check", key: gateway,
                                                 json: #"{"feature":"team-collaboration","user":"someone-else"}"#)
            #expect(stranger["allowed"] == .bool(false))
            #expect(stranger["reason"] == .string("seat_not_assigned"))
        }
    }

    @Test("Idempotency-Key: the same request replays, another body is refused, keys are per API key")
    func idempotency() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"personal"}"#)
            let key: HTTPFields = [.idempotencyKey: "pay-1"]
            let first = try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"10.00"}"#, headers: key)
            let second = try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"10.00"}"#, headers: key)
            #expect(first.status == .created)
            #expect(second.status == .created)
            #expect(second.text == first.text)
            #expect(second.headers[.idempotentReplayed] == "true")
            #expect(harness.server.tally.read { $0.accounts["acme"]!.cash } == Money(yuan: 10), "credited once")

            let other = try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"20.00"}"#, headers: key)
            #expect(other.status == .conflict)
            #expect(other.code == "idempotency_key_reused")

            // A refusal is an answer too: replayed, not retried.
            let refused = try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"personal"}"#, headers: [.idempotencyKey: "open-1"])
            let replayed = try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"personal"}"#, headers: [.idempotencyKey: "open-1"])
            #expect(refused.code == "account_exists")
            #expect(replayed.text == refused.text)

            // Another API key's same Idempotency-Key is another request.
            let secondOperator = try await harness.key(.operator)
            let fresh = try await client.call(.post, "/v1/accounts/acme/top-ups", key: secondOperator, json: #"{"cash":"20.00"}"#, headers: key)
            #expect(fresh.status == .created)
            #expect(fresh["balance"] == .string("30.00"))
        }
        // A key whose request is still running is refused.
        let table = IdempotencyTable()
        let now = Instant(seconds: 1_000)
        _ = try table.begin(key: "k", fingerprint: [1], now: now)
        #expect(throws: Problem.self) { try table.begin(key: "k", fingerprint: [1], now: now) }
        do {
            _ = try table.begin(key: "k", fingerprint: [1], now: now)
        } catch {
            #expect(error.error.code == .idempotencyKeyInUse)
        }
        // After 24 hours the key is forgotten and may be used again.
        #expect(throws: Never.self) { _ = try table.begin(key: "k", fingerprint: [2], now: now.adding(seconds: IdempotencyTable.lifetimeSeconds + 1)) }
    }

    @Test("Idempotency-Key answers survive a restart: replayed from the store, credited once")
    func idempotencyAcrossRestart() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tally-idem-\(UUID().uuidString).sqlite").path
        let clock = VirtualClock(start: Instant(rfc3339: "2026-11-02T09:00:00+08:00")!)
        let before = try await Harness.make(store: try SQLiteStore(path: path), clock: clock)
        let key: HTTPFields = [.idempotencyKey: "pay-7"]
        let first = try await before.app.test(.router) { client in
            _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"personal"}"#)
            return try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"10.00"}"#, headers: key)
        }
        let after = try await Harness.make(store: try SQLiteStore(path: path), clock: clock)
        try await after.app.test(.router) { client in
            let replay = try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"10.00"}"#, headers: key)
            #expect(replay.text == first.text)
            #expect(replay.status == first.status)
            #expect(replay.headers[.idempotentReplayed] == "true")
            #expect(try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"99.00"}"#, headers: key).code == "idempotency_key_reused")
        }
        #expect(after.server.tally.read { $0.accounts["acme"]!.cash } == Money(yuan: 10), "credited once across the restart")
        // After a day and an hour the scheduler forgets the key.
        try clock.advance(to: clock.now.adding(seconds: IdempotencyTable.storeLifetimeSeconds + 1))
        try await Scheduler.tick(after.server)
        #expect(try await after.server.tally.store.answer(for: "\(after.server.tally.read { $0.keyIDsByDigest[Keys.digest(Harness.operatorKey)]! }):pay-7") == nil)
    }

    @Test("Limits and malformed input answer 4xx with a code, never 500, and change nothing")
    func limits() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"personal"}"#)
            let before = harness.server.tally.read { $0.factCount }
            let huge = "{\"cash\":\"" + String(repeating: "1", count: harness.server.configuration.bodyBytesMax) + "\"}"
            let cases: [(HTTPRequest.Method, String, String?, HTTPResponse.Status, String)] = [
                (.post, "/v1/accounts/acme/top-ups", huge, .contentTooLarge, "body_too_large"),
                (.post, "/v1/accounts/acme/top-ups", #"{"cash":"1.005"}"#, .badRequest, "invalid_amount"),
                (.post, "/v1/accounts/acme/top-ups", #"{"cash":"-100.00"}"#, .badRequest, "amount_out_of_range"),
                (.post, "/v1/accounts/acme/top-ups", #"{"cash":"9000000000000.00"}"#, .badRequest, "amount_out_of_range"),
                (.post, "/v1/accounts/acme/top-ups", #"{"cash":1.5}"#, .badRequest, "invalid_request"),
                (.post, "/v1/accounts/acme/top-ups", #"{"cash":"1.00","bonus":"1.00"}"#, .badRequest, "invalid_request"),
                (.post, "/v1/accounts/acme/top-ups", #"{"cash":"1.00","cash":"2.00"}"#, .badRequest, "invalid_request"),
                (.post, "/v1/accounts/acme/top-ups", "{" + (0...Fields.countMax).map { #""f\#($0)":1"# }.joined(separator: ",") + "}",
                 .badRequest, "invalid_request"),
                (.post, "/v1/accounts/acme/top-ups", #"{"cash":"1.00""#, .badRequest, "invalid_request"),
                (.post, "/v1/accounts/acme/top-ups", #"[]"#, .badRequest, "invalid_request"),
                (.get, "/v1/accounts?limit=0", nil, .unprocessableContent, "page_size_out_of_range"),
                (.get, "/v1/accounts?limit=1001", nil, .unprocessableContent, "page_size_out_of_range"),
                (.get, "/v1/accounts/acme/usage?month=2026-13", nil, .badRequest, "invalid_request"),
                (.get, "/v1/no-such-route", nil, .notFound, "not_found"),
            ]
            for (method, path, body, status, code) in cases {
                let reply = try await client.call(method, path, json: body)
                #expect(reply.status == status, "\(method) \(path)")
                #expect(reply.code == code, "\(method) \(path)")
                #expect(reply.headers[.contentType] == "application/problem+json")
            }
            let events = (0...RecordUsageBatch.eventsMax).map { #"{"account":"acme","id":"e\#($0)","api":"image-tagging.general"}"# }
            let batch = try await client.call(.post, "/v1/usage/report", json: #"{"events":[\#(events.joined(separator: ","))]}"#)
            #expect(batch.status == .contentTooLarge)
            #expect(batch.code == "batch_too_large")
            let checks = try await client.call(.post, "/v1/usage/check-batch",
                                               json: #"{"events":[\#(events.prefix(UsageRoutes.checkBatchEventsMax + 1).joined(separator: ","))]}"#)
            #expect(checks.code == "batch_too_large")
            let form = try await client.execute(uri: "/v1/accounts/acme/top-ups", method: .post,
                                                headers: [.authorization: "Bearer \(Harness.operatorKey)", .contentType: "application/x-www-form-urlencoded"],
                                                body: ByteBuffer(string: "cash=1.00")) { $0.status }
            #expect(form == .unsupportedMediaType)
            // An order without its quantity is told what the item takes.
            let pack = try await client.call(.post, "/v1/accounts/acme/orders", json: #"{"item":"image-tagging.general/10k"}"#)
            #expect(pack.code == "invalid_request")
            #expect(pack.json["detail"] == .string("image-tagging.general/10k is a pack: give count, the number of packs to buy"))
            let membership = try await client.call(.post, "/v1/accounts/acme/orders", json: #"{"item":"taishan/personal-pro"}"#)
            #expect(membership.json["detail"] == .string("taishan/personal-pro is a membership: give one of months or years"))
            let unsold = try await client.call(.post, "/v1/accounts/acme/orders", json: #"{"item":"no-such/item"}"#)
            #expect(unsold.code == "unknown_item")
            // A body that is not JSON is told so, not what the parser expected next.
            let notJSON = try await client.call(.post, "/v1/accounts/acme/top-ups", json: "name=acme")
            #expect(notJSON.code == "invalid_request")
            #expect(notJSON.json["detail"].map { "\($0)".contains("the request body is not JSON") } == true, "\(notJSON.json)")
            let negative = try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"cash":"-100.00"}"#)
            #expect(negative.json["detail"] == .string("cash is -100.00: an amount is zero or more, without a sign"))
            // The refusal of unknown fields names them, in order.
            let unknown = try await client.call(.post, "/v1/accounts/acme/top-ups", json: #"{"zeta":1,"cash":"1.00","alpha":2}"#)
            #expect(unknown.json["detail"] == .string("unknown field alpha, zeta"))
            #expect(harness.server.tally.read { $0.factCount } == before, "nothing changed")
        }
    }

    @Test("A large report is read and answered off the cooperative pool: one result per event, in order, across slices")
    func largeReport() async throws {
        let harness = try await Harness.make(.sqlite)
        try await harness.app.test(.router) { client in
            #expect(try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"enterprise","verified":true}"#).status == .created)
            #expect(try await client.call(.post, "/v1/accounts/acme/activations", json: #"{"product":"image-tagging"}"#).status == .created)
            let count = 2_000
            var events = (0..<count).map { #"{"account":"acme","id":"e\#($0)","api":"image-tagging.general"}"# }
            events[700] = #"{"account":"acme","id":"bad","api":"image-tagging.general","calls":"x"}"#
            events[1_500] = #"{"account":"acme","id":"e3","api":"image-tagging.general"}"#
            let body = #"{"events":[\#(events.joined(separator: ","))]}"#
            #expect(body.utf8.count >= OffPool.bodyBytesMin && count >= OffPool.batchEventsMin)
            let report = try await client.call(.post, "/v1/usage/report", json: body)
            #expect(report.status == .ok)
            #expect(report["accepted"] == .int(Int64(count - 2)))
            #expect(report["refused"] == .int(1))
            #expect(report["duplicates"] == .int(1))
            guard case .array(let results)? = report["results"] else {
                Issue.record("no results")
                return
            }
            #expect(results.count == count)
            #expect(results[699]["id"] == .string("e699") && results[701]["id"] == .string("e701"))
            #expect(results[700]["id"] == .string("bad") && results[700]["accepted"] == .bool(false))
            #expect(results[1_500]["id"] == .string("e3") && results[1_500]["duplicate"] == .bool(true))
            #expect(results[1_999]["id"] == .string("e1999"))
            #expect(harness.server.tally.read { $0.usageEvents } == Int64(count - 2))
        }
    }

    @Test("Each API key has a request rate; over it, 429 with Retry-After, and the bucket refills")
    func requestRate() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"personal"}"#)
            let customer = try await harness.key(.customer, account: "acme")
            let rate = harness.server.configuration.requestsPerSecondMax[.customer]!
            for _ in 0..<rate { #expect(try await client.call(.get, "/v1/accounts/acme", key: customer).status == .ok) }
            let over = try await client.call(.get, "/v1/accounts/acme", key: customer)
            #expect(over.status == .tooManyRequests)
            #expect(over.code == "rate_limited")
            #expect(over.headers[.retryAfter] == "1")
            #expect(try await client.call(.get, "/v1/accounts/acme").status == .ok, "another key has its own bucket")
            try harness.clock.advance(to: harness.clock.now.adding(seconds: 1))
            #expect(try await client.call(.get, "/v1/accounts/acme", key: customer).status == .ok, "refilled after a second")
        }
    }

    @Test("Pages: limit and starting_after walk a list once")
    func pages() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            // Opened out of order: the page is chosen from an unordered table, not a sorted list.
            let ids = (0..<23).map { "a" + String($0 + 100) }
            for id in ids.shuffled() { _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"\#(id)","subject":"personal"}"#) }
            for (limit, filter) in [(2, ""), (4, "&status=active"), (23, ""), (100, "")] {
                var seen: [String] = []
                var cursor: String?
                for _ in 0..<30 {
                    let page = try await client.call(.get, "/v1/accounts?limit=\(limit)\(filter)" + (cursor.map { "&starting_after=\($0)" } ?? ""))
                    guard case .array(let items)? = page["data"] else { Issue.record("no data"); return }
                    let pageIDs = items.compactMap { if case .string(let id)? = $0["id"] { id } else { nil } }
                    #expect(pageIDs.count <= limit)
                    seen += pageIDs
                    cursor = pageIDs.last
                    if page["has_more"] != .bool(true) { break }
                }
                #expect(seen == ids, "limit \(limit)")
            }
            let suspendedOnly = try await client.call(.get, "/v1/accounts?status=suspended")
            #expect(suspendedOnly["data"] == .array([]))
        }
    }

    @Test("/metrics counts decisions by reason; /openapi.yaml and /health need no key")
    func metrics() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"m1","subject":"personal"}"#)
            _ = try await client.call(.post, "/v1/usage/check", json: #"{"account":"m1","id":"x","api":"image-tagging.general"}"#)
            let metrics = try await client.call(.get, "/metrics", key: nil)
            #expect(metrics.status == .ok)
            #expect(metrics.text.contains(#"tally_usage_decisions_total{reason="not_activated",protocol="http"}"#))
            #expect(metrics.text.contains(#"tally_decision_seconds_bucket{protocol="http""#))
            // A call refused before settlement is a decision too.
            _ = try await client.call(.post, "/v1/usage/check", json: #"{"account":"nobody","id":"x","api":"image-tagging.general"}"#)
            _ = try await client.call(.post, "/v1/usage/check", key: "tk_gw_not_a_key", json: #"{"account":"acme","id":"y","api":"image-tagging.general"}"#)
            let after = try await client.call(.get, "/metrics", key: nil)
            // (One registry a process, shared by the suites running beside this one: present, not counted exactly.)
            #expect(after.text.contains(#"tally_usage_decisions_total{reason="account_not_found",protocol="http"} "#), "\(after.text)")
            #expect(after.text.contains(#"tally_usage_decisions_total{reason="unauthenticated",protocol="http"} "#))
            #expect(metrics.text.contains("tally_store_flush_batch_facts_count"))
            #expect(metrics.text.contains("# HELP tally_usage_events_total "))
            #expect(metrics.text.contains("tally_bill_run_accounts_planned") && !metrics.text.contains("tally_bill_run_accounts_total"))
            #expect(try await client.call(.get, "/health", key: nil).status == .ok)
            let served = try await client.call(.get, "/openapi.yaml", key: nil).text
            #expect(served == TallyServer.openAPIDocument(for: harness.server.tally.read { $0.catalog.version(at: harness.clock.now) }))
        }
    }

    @Test("/openapi.yaml names the catalog's items, products and APIs where the document marks them")
    func openAPIDocumentNamesTheCatalog() async throws {
        let harness = try await Harness.make()
        let version = harness.server.tally.read { $0.catalog.version(at: harness.clock.now) }
        let served = TallyServer.openAPIDocument(for: version)
        #expect(TallyServer.openAPIDocument.contains("x-tally-enum: pack-items"))
        #expect(!served.contains("x-tally-enum"), "every mark filled")
        let packs = version.packsByItem.keys.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
        #expect(served.contains("enum: [\(packs)]"))
        #expect(served.contains(#"enum: ["image-tagging"]"#), "the products that need activating")
        let document = try #require(try Yams.load(yaml: served) as? [String: Any])
        let schemas = try #require((document["components"] as? [String: Any])?["schemas"] as? [String: Any])
        let event = try #require((schemas["UsageEvent"] as? [String: Any])?["properties"] as? [String: Any])
        #expect((event["api"] as? [String: Any])?["enum"] as? [String] == version.apisByID.keys.sorted())
    }

    @Test("A catalog change may be sent as a JSON list of changes as well as a YAML document")
    func catalogChangesAsJSON() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            let published = try await client.call(.post, "/v1/catalog/versions", json: #"""
                {"effective":"2027-06-01T00:00:00+08:00","changes":[{"api":"image-tagging.general","free_monthly":2000},
                 {"item":"image-tagging.general/100k","price":"300.00"}]}
                """#)
            #expect(published.status == .created, "\(published.text)")
            let refused = try await client.call(.post, "/v1/catalog/versions", json: #"{"effective":"2027-07-01T00:00:00+08:00","changes":[{"api":"nope","free_monthly":1}]}"#)
            #expect(refused.code == "invalid_catalog")
            #expect(try await client.call(.post, "/v1/catalog/versions", json: #"{"effective":"2027-07-01T00:00:00+08:00","changes":7}"#).code == "invalid_request")
        }
        let later = harness.server.tally.read { $0.catalog.version(at: Instant(rfc3339: "2027-06-02T00:00:00+08:00")!) }
        #expect(later.apisByID["image-tagging.general"]?.freeMonthly == 2000)
        #expect(later.packsByItem["image-tagging.general/100k"]?.price == Money(yuan: 300))
    }
}
