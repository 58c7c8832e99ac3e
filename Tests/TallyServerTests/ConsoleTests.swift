import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing
import TallyCore
import TallyEngine
import TallySQLite
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
            #expect(page.contains("¥70.00"), "100.00 less the 30.00 pack, with the currency")
            #expect(page.contains("1,500"), "counts have separators")
            #expect(page.contains("北京时间 Beijing time"))
            #expect(page.contains("1万次 (image-tagging.general/10k)"), "items by the catalog's name, the id second")
            #expect(page.contains("可用 Active"), "states read as sentences")
            #expect(page.contains("id=\"running-bill\"") && page.contains("an estimate until the bill run"), "the month's running bill, marked as an estimate")
            #expect(page.contains("日 Day of the month") && page.contains("调用 Calls"), "the chart's axes are labelled")
            // The money history, newest first: the pack bought, then the top-up.
            let history = try #require(page.firstMatch(after: "id=\"history\"", until: "</section>"))
            #expect(history.contains("购买 Purchase") && history.contains("-¥30.00"))
            #expect(history.contains("充值 Top-up") && history.contains("+¥100.00"))
            #expect(history.range(of: "购买 Purchase")!.lowerBound < history.range(of: "充值 Top-up")!.lowerBound)
            #expect(!page.contains("T00:00:00"), "no RFC 3339 times on the page")
            #expect(page.contains("<svg class=\"chart\""))
            #expect(page.components(separatedBy: "<rect class=\"bar\"").count - 1 == 30, "one bar a day of November")
            #expect(page.contains("<title>2: 1500</title>"))
            #expect(page.contains("id=\"refund-o-1\""))
            #expect(try await ConsoleTests.get(client, "/console/accounts/late-payer", cookie: cookie).0 == .notFound, "another customer's account")

            let csrf = try #require(page.firstMatch(after: "name=\"csrf\" value=\"", until: "\""))
            let forged = try await client.execute(uri: "/console/accounts/acme/orders/o-1/refund", method: .post,
                                                  headers: [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"],
                                                  body: ByteBuffer(string: "csrf=forged")) { $0.headers[.location] }
            #expect(forged == "/console/accounts/acme")
            #expect(try await ConsoleTests.get(client, "/console/accounts/acme", cookie: cookie).1.contains("The form had expired"))
            #expect(tally.read { $0.orders.values.first { $0.ref == "o-1" }?.refunded } == false)
            // The refund button asks first: a page saying what comes back, nothing refunded yet.
            let asked = try await client.execute(uri: "/console/accounts/acme/orders/o-1/refund", method: .post,
                                                 headers: [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"],
                                                 body: ByteBuffer(string: "csrf=\(csrf)")) { ($0.status, String(buffer: $0.body)) }
            #expect(asked.0 == .ok)
            #expect(asked.1.contains("确认退款 Confirm the refund") && asked.1.contains("¥30.00") && asked.1.contains("name=\"confirm\" value=\"yes\""))
            #expect(tally.read { $0.orders.values.first { $0.ref == "o-1" }?.refunded } == false)
            let refunded = try await client.execute(uri: "/console/accounts/acme/orders/o-1/refund", method: .post,
                                                    headers: [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"],
                                                    body: ByteBuffer(string: "csrf=\(csrf)&confirm=yes")) { $0.headers[.location] }
            #expect(refunded == "/console/accounts/acme")
            #expect(tally.read { $0.accounts["acme"]!.cash } == Money(yuan: 100))
            let after = try await ConsoleTests.get(client, "/console/accounts/acme", cookie: cookie).1
            #expect(after.contains("已退款 Refunded ¥30.00"))
            #expect(!after.contains("id=\"refund-o-1\""))
            // The banner shows once, and a URL never makes one: a link anyone can write shows none.
            let again = try await ConsoleTests.get(client, "/console/accounts/acme", cookie: cookie).1
            #expect(!again.contains("id=\"flash\""))
            let forgedBanner = try await ConsoleTests.get(client, "/console/accounts/acme?refunded=99999.00&error=Call%20us%20at%20555", cookie: cookie).1
            #expect(!forgedBanner.contains("99999") && !forgedBanner.contains("Call us") && !forgedBanner.contains("id=\"flash\""))

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

extension ConsoleTests {
    @Test("A session survives a restart of the server; signing out ends it for every process; the store keeps no cookie")
    func sessionsSurviveARestart() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tally-console-\(UUID().uuidString).sqlite").path
        let clock = VirtualClock(start: Instant(rfc3339: "2026-11-02T09:00:00+08:00")!)
        let before = try await Harness.make(store: try SQLiteStore(path: path), clock: clock)
        try await before.server.tally.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
        let customer = try await before.key(.customer, account: "acme")
        let cookie = try await before.app.test(.router) { client in try #require(try await ConsoleTests.signIn(client, key: customer)) }
        let token = String(cookie.dropFirst("\(Console.cookieName)=".count))
        #expect(try await before.server.tally.store.consoleSession(digest: Console.Sessions.digest(token))?.keyID != nil)
        #expect(try await before.server.tally.store.consoleSession(digest: Array(token.utf8)) == nil, "the store keeps a digest, not the cookie")

        let after = try await Harness.make(store: try SQLiteStore(path: path), clock: clock)
        try await after.app.test(.router) { client in
            let (status, page) = try await ConsoleTests.get(client, "/console/accounts/acme", cookie: cookie)
            #expect(status == .ok)
            #expect(page.contains("余额 Balance"), "still signed in after the restart")
            let csrf = try #require(page.firstMatch(after: "name=\"csrf\" value=\"", until: "\""))
            _ = try await client.execute(uri: "/console/sign-out", method: .post,
                                         headers: [.cookie: cookie, .contentType: "application/x-www-form-urlencoded"],
                                         body: ByteBuffer(string: "csrf=\(csrf)")) { $0.status }
            let signedOut = try await client.execute(uri: "/console/accounts/acme", method: .get, headers: [.cookie: cookie]) { $0.headers[.location] }
            #expect(signedOut == "/console")
        }
        let third = try await Harness.make(store: try SQLiteStore(path: path), clock: clock)
        try await third.app.test(.router) { client in
            let location = try await client.execute(uri: "/console/accounts/acme", method: .get, headers: [.cookie: cookie]) { $0.headers[.location] }
            #expect(location == "/console", "a session signed out stays out after another restart")
        }
        // Twelve hours on, the session has expired and the scheduler forgets it.
        let other = try await third.app.test(.router) { client in try #require(try await ConsoleTests.signIn(client, key: customer)) }
        let otherDigest = Console.Sessions.digest(String(other.dropFirst("\(Console.cookieName)=".count)))
        #expect(try await third.server.tally.store.consoleSession(digest: otherDigest) != nil)
        try clock.advance(to: clock.now.adding(seconds: Console.sessionLifetimeSeconds + 1))
        try await Scheduler.tick(third.server)
        #expect(try await third.server.tally.store.consoleSession(digest: otherDigest) == nil)
    }
}

extension String {
    /// The text between the first `start` and the next `end`.
    func firstMatch(after start: String, until end: String) -> String? {
        guard let from = range(of: start)?.upperBound, let to = self[from...].range(of: end)?.lowerBound else { return nil }
        return String(self[from..<to])
    }
}
