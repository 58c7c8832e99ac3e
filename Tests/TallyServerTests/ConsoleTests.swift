import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TallyCore
import TallyEngine
@testable import TallyServer

@Suite("The customer console", .timeLimit(.minutes(5)))
struct ConsoleTests {
    /// Signs in with a key through the form and returns the session cookie.
    static func signIn(_ client: some TestClientProtocol, key: String) async throws -> String? {
        try await client.execute(uri: "/console/sign-in", method: .post, headers: [.contentType: "application/x-www-form-urlencoded"],
                                 body: ByteBuffer(string: "key=\(key)")) { response in
            response.headers[.setCookie].flatMap { $0.split(separator: ";").first.map(String.init) }
        }
    }

    static func get(_ client: some TestClientProtocol, _ path: String, cookie: String) async throws -> (HTTPResponse.Status, String) {
        try await client.execute(uri: path, method: .get, headers: [.cookie: cookie]) { ($0.status, String(buffer: $0.body)) }
    }

    @Test("A customer signs in, sees its usage chart and refunds a pack; an operator sees accounts in arrears")
    func customerAndOperator() async throws {
        let harness = try await Harness.make()
        let tally = harness.server.tally
        try await tally.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
        try await tally.perform(TopUp(account: "acme", cash: Money(yuan: 100)))
        try await tally.perform(Activate(account: "acme", product: "image-tagging"))
        try await tally.perform(RecordUsage(account: "acme", id: "u1", api: "image-tagging.general", calls: 1500, mode: .report))
        try await tally.perform(Buy(account: "acme", item: "image-tagging.general/10k", quantity: .count(1), ref: "o-1"))
        try await tally.perform(OpenAccount(account: "late-payer", subject: .personal, verified: true))
        try await tally.perform(Activate(account: "late-payer", product: "image-tagging"))
        try await tally.perform(RecordUsage(account: "late-payer", id: "u1", api: "image-tagging.general", calls: 50_000, mode: .report))
        let customer = try await harness.key(.customer, account: "acme")

        try await harness.app.test(.router) { client in
            let (status, signInPage) = try await client.execute(uri: "/console", method: .get) { ($0.status, String(buffer: $0.body)) }
            #expect(status == .ok)
            #expect(signInPage.contains("登录 Sign in"))
            #expect(try await ConsoleTests.signIn(client, key: "tk_cu_wrong") == nil, "an unknown key opens no session")

            let cookie = try #require(try await ConsoleTests.signIn(client, key: customer))
            let (pageStatus, page) = try await ConsoleTests.get(client, "/console/accounts/acme", cookie: cookie)
            #expect(pageStatus == .ok)
            #expect(page.contains("余额 Balance"))
            #expect(page.contains("70.00"), "100.00 less the 30.00 pack")
            #expect(page.contains("<svg class=\"chart\""))
            #expect(page.components(separatedBy: "<rect class=\"bar\"").count - 1 == 30, "one bar a day of November")
            #expect(page.contains("<title>2: 1500</title>"))
            #expect(page.contains("id=\"refund-o-1\""))
            #expect(try await ConsoleTests.get(client, "/console/accounts/late-payer", cookie: cookie).0 == .notFound, "another customer's account")

            let csrf = try #require(page.firstMatch(after: "name=\"csrf\" value=\"", until: "\""))
            let forged = try await client.execute(uri: "/console/accounts/acme/orders/o-1/refund", method: .post,
                                                  headers: [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"],
                                                  body: ByteBuffer(string: "csrf=forged")) { $0.headers[.location] }
            #expect(forged == "/console/accounts/acme?error=csrf")
            #expect(tally.read { $0.orders.values.first { $0.ref == "o-1" }?.refunded } == false)
            let refunded = try await client.execute(uri: "/console/accounts/acme/orders/o-1/refund", method: .post,
                                                    headers: [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"],
                                                    body: ByteBuffer(string: "csrf=\(csrf)")) { $0.headers[.location] }
            #expect(refunded == "/console/accounts/acme?refunded=30.00")
            #expect(tally.read { $0.accounts["acme"]!.cash } == Money(yuan: 100))
            let after = try await ConsoleTests.get(client, "/console/accounts/acme?refunded=30.00", cookie: cookie).1
            #expect(after.contains("已退款 Refunded"))
            #expect(!after.contains("id=\"refund-o-1\""))

            // The operator's page: accounts in arrears after November's bill run.
            try harness.clock.advance(to: Instant(rfc3339: "2026-12-01T02:00:00+08:00")!)
            try await Scheduler.tick(harness.server)
            #expect(tally.read { $0.accounts["late-payer"]!.inArrears })
            let operatorCookie = try #require(try await ConsoleTests.signIn(client, key: Harness.operatorKey))
            let arrears = try await ConsoleTests.get(client, "/console", cookie: operatorCookie).1
            #expect(arrears.contains("欠费账户 Accounts in arrears (1)"))
            #expect(arrears.contains("late-payer"))
            #expect(try await ConsoleTests.get(client, "/console/accounts/late-payer", cookie: operatorCookie).0 == .ok)

            // Revoking the key ends its sessions.
            try await tally.perform(RevokeKey(id: tally.read { $0.keyIDsByDigest[Keys.digest(customer)]! }))
            let revoked = try await client.execute(uri: "/console/accounts/acme", method: .get, headers: [.cookie: cookie]) { $0.headers[.location] }
            #expect(revoked == "/console")
        }
    }
}

extension String {
    /// The text between the first `start` and the next `end`.
    func firstMatch(after start: String, until end: String) -> String? {
        guard let from = range(of: start)?.upperBound, let to = self[from...].range(of: end)?.lowerBound else { return nil }
        return String(self[from..<to])
    }
}
