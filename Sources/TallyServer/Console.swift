import Crypto
import Foundation
import Hummingbird
import Mustache
import NIOCore
import Synchronization
import TallyCore
import TallyEngine
import TallyStore

/// The customer console: server-rendered pages (swift-mustache, no JavaScript). A customer signs
/// in with its key and sees its balance and sub-accounts, this month's calls and estimated charges
/// per API with a daily chart (inline SVG), packs, the membership, bills, and orders with a refund
/// button where SPEC 5 allows one; an operator sees the accounts in arrears and any account.
/// Labels are in Chinese and English side by side.
///
/// A session is a random id in an HttpOnly, SameSite=Strict cookie, kept in the store by its digest
/// (a restart signs nobody out) and bound to the key: revoking the key ends its sessions. Every
/// form carries the session's CSRF token.
enum Console {
    static let sessionsMax = 10_000
    static let sessionLifetimeSeconds: Int64 = 12 * 3600
    static let arrearsShownMax = 500
    static let cookieName = "tally_session"
    /// A session cookie is 48 hex digits; a longer one is nobody's and is not looked up.
    static let cookieLengthMax = 64

    struct Session: Sendable {
        let keyID: String
        let csrf: String
        let expires: Instant
        /// The banner the next page shows, once: set by the server after an action, never read
        /// from the URL (a link anyone can write must not show a sentence of theirs).
        var flash: Flash?
    }

    /// A banner: ok or err, and its sentence.
    struct Flash: Sendable, Hashable {
        let kind: String
        let message: String
    }

    /// The sessions: kept in the store (by the digest of their cookie) so that a restart keeps
    /// everyone signed in, and held here with each one's banner. This process opens at most
    /// `sessionsMax` live sessions; a banner does not outlive a restart.
    final class Sessions: Sendable {
        let store: any TallyStore
        let table = Mutex<[String: Session]>([:])

        init(store: any TallyStore) { self.store = store }

        func open(keyID: String, now: Instant) async throws -> (id: String, session: Session)? {
            let id = Console.token(), session = Session(keyID: keyID, csrf: Console.token(), expires: now.adding(seconds: Console.sessionLifetimeSeconds))
            let room = table.withLock { table in
                table = table.filter { $0.value.expires > now }
                return table.count < Console.sessionsMax
            }
            guard room else { return nil }
            try await store.saveConsoleSession(StoredSession(digest: Sessions.digest(id), keyID: keyID, csrf: session.csrf, expires: session.expires))
            table.withLock { $0[id] = session }
            return (id, session)
        }

        /// The live session with this id, read from the store every time: a session opened before
        /// a restart, or by another process on the same database, is found, and one signed out
        /// anywhere is gone everywhere. This process keeps it beside its banner.
        func find(_ id: String, now: Instant) async throws -> Session? {
            guard let stored = try await store.consoleSession(digest: Sessions.digest(id)), stored.expires > now else {
                table.withLock { _ = $0.removeValue(forKey: id) }
                return nil
            }
            return table.withLock { table in
                if let known = table[id] { return known }
                let session = Session(keyID: stored.keyID, csrf: stored.csrf, expires: stored.expires)
                if table.count < Console.sessionsMax { table[id] = session }
                return session
            }
        }

        func close(_ id: String) async throws {
            table.withLock { _ = $0.removeValue(forKey: id) }
            try await store.endConsoleSession(digest: Sessions.digest(id))
        }

        /// Keeps a banner for the session's next page.
        func flash(_ id: String, _ flash: Flash) { table.withLock { $0[id]?.flash = flash } }

        /// The session's banner, if any, taken: it shows once.
        func takeFlash(_ id: String) -> Flash? {
            table.withLock { table in
                defer { table[id]?.flash = nil }
                return table[id]?.flash
            }
        }

        static func digest(_ id: String) -> [UInt8] { Array(SHA256.hash(data: Array(id.utf8))) }
    }

    static func token() -> String {
        var generator = SystemRandomNumberGenerator()
        return Keys.hex((0..<24).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    static let library: MustacheLibrary = {
        var library = MustacheLibrary()
        for name in ["layout-head", "layout-foot", "sign-in", "account", "arrears", "confirm-refund", "unavailable"] {
            guard let url = Bundle.module.url(forResource: name, withExtension: "mustache", subdirectory: "Resources/console"),
                  let text = try? String(contentsOf: url, encoding: .utf8) else {
                preconditionFailure("the console template \(name) is missing from the module's resources")
            }
            do { try library.register(text, named: name) } catch { preconditionFailure("the console template \(name) does not parse: \(error)") }
        }
        return library
    }()

    static func routes(_ router: Router<BasicRequestContext>, _ server: ServerEnvironment) {
        let sessions = Sessions(store: server.tally.store)
        router.get("/console") { request, _ in
            guard let (_, session, principal) = try await signedIn(request, server, sessions) else { return page("sign-in", ["title": "登录 Sign in"], request) }
            if let account = principal.account { return redirect("/console/accounts/\(account)") }
            return arrears(server, session: session, request)
        }
        router.post("/console/sign-in") { request, _ in
            var request = request
            let form = try await Console.form(&request)
            let now = server.tally.clock.now()
            guard let secret = form["key"], let principal = try? await Keys.authenticate("Bearer \(secret)", tally: server.tally), principal.role != .gateway else {
                return page("sign-in", ["title": "登录 Sign in", "flash": ["kind": "err", "message": "密钥无效 The key is unknown, revoked or a gateway key."]],
                            request, status: .unauthorized)
            }
            guard let (id, _) = try await sessions.open(keyID: principal.keyID, now: now) else {
                return page("sign-in", ["title": "登录 Sign in", "flash": ["kind": "err", "message": "登录人数已满 Too many sessions; try later."]],
                            request, status: .tooManyRequests)
            }
            var response = redirect("/console")
            response.headers[.setCookie] = "\(cookieName)=\(id); Path=/console; HttpOnly; SameSite=Strict; Max-Age=\(sessionLifetimeSeconds)"
            return response
        }
        router.post("/console/sign-out") { request, _ in
            var request = request
            let form = try await Console.form(&request)
            if let (id, session, _) = try await signedIn(request, server, sessions), form["csrf"] == session.csrf { try await sessions.close(id) }
            var response = redirect("/console")
            response.headers[.setCookie] = "\(cookieName)=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"
            return response
        }
        router.get("/console/find") { request, _ in
            guard let (_, _, principal) = try await signedIn(request, server, sessions), principal.role == .operator else { return redirect("/console") }
            let id = request.uri.queryParameters.get("account") ?? ""
            return redirect("/console/accounts/\(id.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? "")")
        }
        router.get("/console/accounts/{account}") { request, context in
            guard let (sessionID, session, principal) = try await signedIn(request, server, sessions) else { return redirect("/console") }
            let id = context.parameters.get("account") ?? ""
            return account(id, server, principal: principal, session: session, flash: sessions.takeFlash(sessionID), request)
        }
        router.get("/console/accounts/{account}/bills/{bill}") { request, context in
            guard let (_, _, principal) = try await signedIn(request, server, sessions) else { return redirect("/console") }
            let account = context.parameters.get("account") ?? "", billID = context.parameters.get("bill") ?? ""
            guard principal.mayTouch(account), let (bill, zone) = server.tally.read(account: account, { state in state.bills[billID].map { ($0, state.zone) } }),
                  bill.account == account else {
                return notFound(request)
            }
            return Answer.text(BillDocuments.html(bill, zone: zone), contentType: "text/html; charset=utf-8").response
        }
        router.post("/console/accounts/{account}/orders/{order}/refund") { request, context in
            var request = request
            let form = try await Console.form(&request)
            guard let (id, session, principal) = try await signedIn(request, server, sessions) else { return redirect("/console") }
            let account = context.parameters.get("account") ?? "", order = context.parameters.get("order") ?? ""
            guard form["csrf"] == session.csrf else {
                sessions.flash(id, Flash(kind: "err", message: "表单已过期，请重试 The form had expired; try again."))
                return redirect("/console/accounts/\(account)")
            }
            guard principal.mayTouch(account) else { return notFound(request) }
            // A refund asks first: the button leads to a page that says what comes back, whose
            // own button (confirm=yes) refunds.
            guard form["confirm"] == "yes" else {
                let state = server.tally.read(account: account) { $0 }
                guard let placed = state.order(account: account, ref: order) else { return notFound(request) }
                return page("confirm-refund", ["title": "确认退款 Confirm the refund", "signedIn": true, "csrf": session.csrf,
                                               "accountID": account, "ref": order, "amount": Display.yuan(placed.amount),
                                               "at": Display.time(placed.at, in: state.zone), "zoneName": Display.zoneName(state.zone)], request)
            }
            do {
                let amount = try await server.tally.perform(Refund(account: account, ref: order))
                sessions.flash(id, Flash(kind: "ok", message: "已退款 Refunded ¥\(amount)"))
            } catch let error as TallyError {
                sessions.flash(id, Flash(kind: "err", message: "未能退款 The refund was refused: \(error.message)"))
            }
            return redirect("/console/accounts/\(account)")
        }
    }

    // MARK: Pages

    static func account(_ id: String, _ server: ServerEnvironment, principal: Principal, session: Session, flash: Flash?,
                        _ request: Request) -> Response {
        let now = server.tally.clock.now()
        // A copy of the account's partition (copy-on-write: references only) so the page renders
        // outside the lock.
        let state = server.tally.read(account: id) { $0 }
        guard principal.mayTouch(id), let holder = state.accounts[id] else { return notFound(request) }
        var values = accountContext(holder, state, now: now)
        values["csrf"] = session.csrf
        values["signedIn"] = true
        values["title"] = "账户 Account \(id)"
        if let flash { values["flash"] = ["kind": flash.kind, "message": flash.message] }
        let pageNumber = request.uri.queryParameters.get("page").flatMap { Int($0) }.map { min(max($0, 1), Console.historyPagesMax) } ?? 1
        let (rows, hasMore) = history(id, state, page: pageNumber)
        values["history"] = rows
        values["hasHistory"] = !rows.isEmpty
        if pageNumber > 1 { values["previousPage"] = pageNumber - 1 }
        if hasMore { values["nextPage"] = pageNumber + 1 }
        return page("account", values, request)
    }

    /// Transactions a page of the money history shows, and the most pages it may be asked for.
    static let historyPageSize = 20
    static let historyPagesMax = 1_000

    /// One page of the account's money history, newest first, from the ledger: top-ups,
    /// purchases, refunds, bills and their payments, each with what it did to the balance.
    static func history(_ id: String, _ state: TallyState, page: Int) -> (rows: [[String: Any]], hasMore: Bool) {
        let own: Set<LedgerAccount> = [.cash(id), .income(id), .gift(id)]
        let skip = (page - 1) * historyPageSize
        var matched = 0
        var rows: [[String: Any]] = []
        for transaction in state.ledger.reversed() {
            let entries = transaction.entries.filter { $0.unit == .microyuan && own.contains($0.account) }
            guard !entries.isEmpty else { continue }
            matched += 1
            if matched <= skip { continue }
            if rows.count == historyPageSize { return (rows, true) }
            let change = Money(microyuan: entries.reduce(0) { $0 + $1.amount })
            rows.append(["at": Display.time(transaction.at, in: state.zone), "kind": sentence(transaction.kind), "id": transaction.id,
                         "change": change.isPositive ? "+" + Display.yuan(change) : Display.yuan(change)])
        }
        return (rows, false)
    }

    static func accountContext(_ holder: Account, _ state: TallyState, now: Instant) -> [String: Any] {
        let zone = state.zone
        let month = zone.month(of: now)
        let version = state.catalog.version(at: now)
        // The month's lines and their estimates, priced once: the table's rows and the running bill.
        let priced = Report.usage(account: holder.id, month: month, state).map { api, totals in
            (api, totals["estimated_amount"].flatMap { if case .string(let text) = $0 { Money(parsing: text) } else { nil } } ?? .zero)
        }
        let running = priced.reduce(Money.zero) { $0 + $1.1 }
        let usage: [[String: Any]] = priced.map { api, estimated in
            let line = state.monthly[MonthlyKey(account: holder.id, api: api, month: month)] ?? MonthlyUsage()
            return ["api": Console.apiName(api, version), "calls": Display.count(line.calls), "free": Display.count(line.free), "pack": Display.count(line.pack),
                    "postpaid": Display.count(line.postpaid), "estimated": Display.yuan(estimated),
                    "chart": Chart.daily(line.callsByDay, days: CivilDate.daysIn(year: month.year, month: month.month), label: api)]
        }
        // Expired free quota folds away: a month's free pack is of no use once the month is over.
        let allPacks = holder.packs.compactMap { state.packs[$0] }.sorted { ($0.expires, $0.sequence) < ($1.expires, $1.sequence) }
        let packRow = { (pack: Pack) -> [String: Any] in
            let left = pack.revoked ? 0 : pack.left
            let used = pack.size - left
            return ["item": Console.itemName(pack.item, version), "itemID": pack.item, "api": Console.apiName(pack.api, version),
                    "left": Display.count(left), "size": Display.count(pack.size), "used": Display.count(used),
                    "usedPercent": pack.size > 0 ? used * 100 / pack.size : 0,
                    "expires": Display.time(pack.expires, in: zone), "state": Console.sentence(pack.state(at: now))]
        }
        let packs = allPacks.filter { !($0.isFree && $0.state(at: now) == "expired") }.map(packRow)
        let expiredFree = allPacks.filter { $0.isFree && $0.state(at: now) == "expired" }.map(packRow)
        let bills: [[String: Any]] = state.bills(of: holder.id).reversed()
            .map { ["id": $0.id, "month": $0.month.description, "product": Console.productName($0.product, version), "total": Display.yuan($0.total)] }
        let orders: [[String: Any]] = state.orders(of: holder.id).sorted { $0.at > $1.at }.map { order in
            var reason = ""
            do throws(TallyError) { try RefundRule.check(order: order, state: state, at: now) } catch { reason = Console.sentence(error.code.rawValue) }
            let item: String = switch order.kind {
            case .packs(let item, let count): "\(Console.itemName(item, version)) × \(count)"
            case .membership(let item, let period, let count): "\(Console.itemName(item, version)) × \(count) \(period.rawValue)"
            case .upgrade(let from, let to): "\(Console.itemName(from, version)) → \(Console.itemName(to, version))"
            }
            return ["ref": order.ref ?? order.id, "at": Display.time(order.at, in: zone), "item": item, "amount": Display.yuan(order.amount),
                    "refunded": order.refunded, "refundable": reason.isEmpty, "reason": reason]
        }
        let vouchers: [[String: Any]] = holder.vouchers.filter { $0.remaining.isPositive && now < $0.expires }.map { voucher in
            var fields: [String: Any] = ["id": voucher.id, "remaining": Display.yuan(voucher.remaining), "expires": Display.time(voucher.expires, in: zone)]
            if let product = voucher.product { fields["product"] = Console.productName(product, version) }
            return fields
        }
        var context: [String: Any] = [
            "accountID": holder.id,
            "account": ["id": holder.id, "status": Console.sentence(holder.status), "verified": holder.verified, "cash": Display.yuan(holder.cash),
                        "income": Display.yuan(holder.income), "gift": Display.yuan(holder.gift), "total": Display.yuan(holder.balance),
                        "vouchers": vouchers] as [String: Any],
            "zoneName": Display.zoneName(zone),
            "runningBill": Display.yuan(running),
            "expiredFree": expiredFree, "hasExpiredFree": !expiredFree.isEmpty, "expiredFreeCount": expiredFree.count,
            "hasVouchers": !vouchers.isEmpty,
            "month": month.description,
            "usage": usage, "hasUsage": !usage.isEmpty,
            "packs": packs, "hasPacks": !packs.isEmpty,
            "bills": bills, "hasBills": !bills.isEmpty,
            "orders": orders, "hasOrders": !orders.isEmpty,
        ]
        if let membership = holder.memberships.values.sorted(by: { $0.product < $1.product }).first {
            context["membership"] = ["item": Console.itemName(membership.edition, version),
                                     "expires": Display.time(membership.expires, in: zone), "active": membership.isActive(at: now)]
        }
        return context
    }

    /// State and refusal codes as the console says them, in both languages; a code with no
    /// sentence here shows as itself.
    static let sentences: [String: String] = [
        "active": "可用 Active", "exhausted": "已用完 Used up", "expired": "已过期 Expired", "refunded": "已退款 Refunded",
        "arrears": "欠费 In arrears", "suspended": "已停用 Suspended",
        "top_up": "充值 Top-up", "purchase": "购买 Purchase", "refund": "退款 Refund", "bill": "账单扣款 Bill paid",
        "upgrade": "升级 Upgrade", "voucher_grant": "代金券 Voucher",
        "already_refunded": "已退款 Already refunded",
        "not_refundable": "不支持退款 Not refundable",
        "promotion_forbids_refund": "促销商品不退款 Sold under a promotion without refunds",
        "account_suspended": "账户已停用 The account is suspended",
        "refund_under_review": "退款审核中 Refunds are on hold for review",
        "pack_used": "资源包已使用 The pack has been used",
        "refund_window_passed": "已过退款期限 The refund period is over",
    ]

    static func sentence(_ code: String) -> String { sentences[code] ?? code }

    /// An item by the catalog's own name, the id second: "1万次 (image-tagging.general/10k)".
    static func itemName(_ item: String, _ version: CatalogVersion) -> String {
        named(item, version.packsByItem[item]?.name ?? version.editionsByItem[item]?.name)
    }

    /// An API by the catalog's own name, the id second.
    static func apiName(_ api: String, _ version: CatalogVersion) -> String { named(api, version.apisByID[api]?.name) }

    /// A product by the catalog's own name, the id second.
    static func productName(_ product: String, _ version: CatalogVersion) -> String { named(product, version.productsByID[product]?.name) }

    /// "name (id)", or the id alone when the catalog has no other name for it.
    static func named(_ id: String, _ name: String?) -> String {
        guard let name, name != id else { return id }
        return "\(name) (\(id))"
    }

    static func arrears(_ server: ServerEnvironment, session: Session, _ request: Request) -> Response {
        let accounts: [[String: Any]] = server.tally.readEach { $0.accounts.values.filter(\.inArrears) }.joined()
            .sorted { $0.id < $1.id }.map { ["id": $0.id, "subject": $0.subject.rawValue, "total": $0.balance.description] }
        let shown = Array(accounts.prefix(arrearsShownMax))
        return page("arrears", ["title": "欠费账户 Accounts in arrears", "signedIn": true, "csrf": session.csrf, "accounts": shown,
                                "hasAccounts": !shown.isEmpty, "count": accounts.count, "more": accounts.count > shown.count,
                                "shown": shown.count], request)
    }

    // MARK: Plumbing

    static func signedIn(_ request: Request, _ server: ServerEnvironment, _ sessions: Sessions) async throws -> (String, Session, Principal)? {
        guard let id = request.cookies[cookieName]?.value, id.utf8.count <= cookieLengthMax,
              let session = try await sessions.find(id, now: server.tally.clock.now()) else { return nil }
        guard let key = server.tally.readShared({ $0.keys[session.keyID] }), key.revoked == nil else {
            try await sessions.close(id)
            return nil
        }
        return (id, session, Principal(keyID: key.id, role: key.role, account: key.account))
    }

    /// An `application/x-www-form-urlencoded` body, at most 4 KB.
    static func form(_ request: inout Request) async throws -> [String: String] {
        let body = try await Endpoint.collect(&request, limit: 4_096)
        var fields: [String: String] = [:]
        for pair in String(buffer: body).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let decode = { (text: Substring) in String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? "" }
            fields[decode(parts[0])] = parts.count == 2 ? decode(parts[1]) : ""
        }
        return fields
    }

    static func page(_ name: String, _ values: [String: Any], _ request: Request, status: HTTPResponse.Status = .ok) -> Response {
        let html = library.render(values, withTemplate: name) ?? ""
        var response = Answer.text(html, contentType: "text/html; charset=utf-8", status: status).response
        response.headers[.contentSecurityPolicy] = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'"
        response.headers[.cacheControl] = "no-store"
        return response
    }

    /// What a console page says while the engine is not ready (`ReadinessMiddleware`): a page, not
    /// a problem document, asking to come back in a minute.
    static func unavailable(_ request: Request) -> Response {
        var response = page("unavailable", ["title": "暂时无法服务 Temporarily unavailable"], request, status: .serviceUnavailable)
        response.headers[.retryAfter] = String(Readiness.retryAfterSeconds)
        return response
    }

    static func notFound(_ request: Request) -> Response {
        page("sign-in", ["title": "未找到 Not found", "flash": ["kind": "err", "message": "没有这个账户 There is no such account."]], request, status: .notFound)
    }

    static func redirect(_ location: String) -> Response {
        Response(status: .seeOther, headers: [.location: location])
    }
}

/// The console's daily chart: one bar a day, as inline SVG (numbers only, nothing from input
/// but the label, which is escaped).
enum Chart {
    static func daily(_ calls: [Int64: Int64], days: Int64, label: String) -> String {
        let width: Int64 = 620, height: Int64 = 160, left: Int64 = 48, bottom: Int64 = 20
        let peak = max(calls.values.max() ?? 0, 1)
        let slot = (width - left) / days
        var bars = ""
        for day in 1...days {
            let value = calls[day] ?? 0
            let barHeight = value * (height - bottom - 10) / peak
            let x = left + (day - 1) * slot
            bars += "<rect class=\"bar\" x=\"\(x + 1)\" y=\"\(height - bottom - barHeight)\" width=\"\(max(slot - 2, 1))\" height=\"\(barHeight)\" fill=\"#3b82f6\"><title>\(day): \(value)</title></rect>"
            if day == 1 || day % 5 == 0 { bars += "<text x=\"\(x + slot / 2)\" y=\"\(height - 5)\" font-size=\"10\" text-anchor=\"middle\">\(day)</text>" }
        }
        // As wide as the section (the viewBox scales), with both axes labelled.
        return "<svg class=\"chart\" role=\"img\" aria-label=\"\(BillDocuments.escape(label)) 每日调用 calls per day\" style=\"width:100%;height:auto\" viewBox=\"0 0 \(width) \(height + 14)\" xmlns=\"http://www.w3.org/2000/svg\">"
            + "<text x=\"0\" y=\"12\" font-size=\"10\">\(Display.count(peak))</text>"
            + "<text class=\"axis\" x=\"0\" y=\"\(height / 2)\" font-size=\"10\">调用 Calls</text>"
            + "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width)\" y2=\"\(height - bottom)\" stroke=\"#999\"/>"
            + "<line x1=\"\(left)\" y1=\"10\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"#999\"/>"
            + bars + "<text class=\"axis\" x=\"\(left + (width - left) / 2)\" y=\"\(height + 10)\" font-size=\"10\" text-anchor=\"middle\">日 Day of the month</text></svg>"
    }
}
