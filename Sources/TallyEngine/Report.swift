import TallyCore

/// The JSON views of the state that the simulator prints (and the server will answer with).
public enum Report {
    public static func outcome(tally: Tally, steps: [JSON], now: Instant) async throws -> JSON {
        tally.read { state in
            .object([
                ("steps", .array(steps)),
                ("accounts", .object(state.accounts.keys.sorted().map { ($0, account(state.accounts[$0]!, state, now: now)) })),
                ("bills", .array(bills(state))),
                ("notifications", .array(state.notices.map(notice(state.zone)))),
            ])
        }
    }

    public static func money(_ amount: Money) -> JSON { .string(amount.description) }

    public static func order(_ order: Order) -> JSON {
        var fields: [(String, JSON)] = [("id", .string(order.id))]
        if let ref = order.ref { fields.append(("ref", .string(ref))) }
        switch order.kind {
        case .packs(let item, let count): fields += [("item", .string(item)), ("count", .int(count))]
        case .membership(let item, let period, let count): fields += [("item", .string(item)), (period == .month ? "months" : "years", .int(count))]
        case .upgrade(let from, let to): fields += [("from", .string(from)), ("item", .string(to))]
        }
        fields.append(("amount", money(order.amount)))
        fields.append(("paid", .object([
            ("voucher", money(order.payment.voucherTotal)), ("gift", money(order.payment.gift)),
            ("income", money(order.payment.income)), ("cash", money(order.payment.cash)),
        ])))
        if order.refunded { fields.append(("refunded", .bool(true))) }
        return .object(fields)
    }

    /// An account as its holder sees it: status, balance, packs still holding calls (by expiry, then
    /// purchase order), this month's free quota, and the membership.
    public static func account(_ account: Account, _ state: TallyState, now: Instant) -> JSON {
        let zone = state.zone
        var fields: [(String, JSON)] = [
            ("status", .string(account.status)),
            ("subject", .string(account.subject.rawValue)),
            ("verified", .bool(account.verified)),
            ("balance", .object([
                ("cash", money(account.cash)), ("income", money(account.income)), ("gift", money(account.gift)),
                ("total", money(account.balance)),
            ])),
        ]
        let vouchers = account.vouchers.filter { $0.remaining.isPositive && now < $0.expires }
        if !vouchers.isEmpty {
            fields.append(("vouchers", .array(vouchers.map { voucher in
                var v: [(String, JSON)] = [("id", .string(voucher.id)), ("remaining", money(voucher.remaining)),
                                           ("expires", .string(voucher.expires.rfc3339(in: zone)))]
                if let product = voucher.product { v.append(("product", .string(product))) }
                return .object(v)
            })))
        }
        let packs = account.packs.compactMap { state.packs[$0] }
            .filter { !$0.isFree && $0.isUsable(at: now) }
            .sorted { ($0.expires, $0.sequence) < ($1.expires, $1.sequence) }
        fields.append(("packs", .array(packs.map { pack in
            .object([("id", .string(pack.id)), ("item", .string(pack.item)), ("size", .int(pack.size)), ("left", .int(pack.left)),
                     ("expires", .string(pack.expires.rfc3339(in: zone)))])
        })))
        let month = zone.month(of: now)
        let free = account.freePacks.keys.sorted().compactMap { key -> (String, JSON)? in
            guard let pack = state.packs[account.freePacks[key]!], case .free(let packMonth) = pack.source, packMonth == month else { return nil }
            return (pack.api, .object([("month", .string(month.description)), ("size", .int(pack.size)), ("left", .int(pack.left))]))
        }
        if !free.isEmpty { fields.append(("free", .object(free))) }
        let memberships = account.memberships.values.sorted { $0.product < $1.product }
        if let first = memberships.first(where: { $0.isActive(at: now) }) ?? memberships.first {
            fields.append(("membership", membership(first, zone: zone, now: now)))
        }
        return .object(fields)
    }

    public static func membership(_ membership: Membership, zone: Zone, now: Instant) -> JSON {
        var fields: [(String, JSON)] = [
            ("product", .string(membership.product)),
            ("edition", .string(String(membership.edition.split(separator: "/").last ?? ""))),
            ("item", .string(membership.edition)),
            ("expires", .string(membership.expires.rfc3339(in: zone))),
            ("active", .bool(membership.isActive(at: now))),
        ]
        if !membership.seats.isEmpty { fields.append(("seats", .array(membership.seats.map { .string($0) }))) }
        return .object(fields)
    }

    /// Every bill, by month, account, then product.
    public static func bills(_ state: TallyState) -> [JSON] {
        state.bills.values.sorted { ($0.month, $0.account, $0.product) < ($1.month, $1.account, $1.product) }.map(bill)
    }

    public static func bill(_ bill: Bill) -> JSON {
        .object([
            ("id", .string(bill.id)), ("account", .string(bill.account)), ("month", .string(bill.month.description)),
            ("product", .string(bill.product)), ("total", money(bill.total)),
            ("lines", .array(bill.lines.map { line in
                .object([("api", .string(line.api)), ("calls", .int(line.calls)), ("free", .int(line.free)),
                         ("pack", .int(line.pack)), ("postpaid", .int(line.postpaid)), ("tier", .int(Int64(line.tier))),
                         ("unit_price", .string(line.unitPrice.unitPriceDescription)), ("amount", money(line.amount))])
            })),
            ("paid", .object([("gift", money(bill.paid.gift)), ("income", money(bill.paid.income)), ("cash", money(bill.paid.cash))])),
        ])
    }

    /// One account's usage in a month, per API: calls, what paid for them, and the estimated
    /// post-paid amount at the tier reached so far (the bill's own rule, so the estimate on the
    /// last day equals the bill). `daily` adds accepted calls per day, for the console's chart.
    public static func usage(account: String, month: Month, _ state: TallyState, daily: Bool = false) -> [(String, JSON)] {
        // The account's own keys: the totals of other accounts are never scanned.
        (state.monthlyKeysByAccount[account] ?? []).filter { $0.month == month }.sorted().map { key in
            let totals = state.monthly[key]!
            let estimate = BillingRule.estimate(api: key.api, month: month, totals: totals, catalog: state.catalog)
            var fields: [(String, JSON)] = [
                ("calls", .int(totals.calls)), ("free", .int(totals.free)), ("pack", .int(totals.pack)),
                ("postpaid", .int(totals.postpaid)), ("refused", .int(totals.refused)),
                ("estimated_amount", money(estimate?.amount ?? .zero)),
            ]
            if daily {
                fields.append(("daily", .array(totals.callsByDay.keys.sorted().map { day in
                    .object([("day", .int(day)), ("calls", .int(totals.callsByDay[day]!))])
                })))
            }
            return (key.api, .object(fields))
        }
    }

    /// Every account's usage in a month, as `tally report` prints it.
    public static func usage(month: Month, _ state: TallyState) -> JSON {
        let accounts = Set(state.monthly.keys.lazy.filter { $0.month == month }.map(\.account)).sorted()
        return .object([("month", .string(month.description)),
                        ("accounts", .object(accounts.map { ($0, .object(usage(account: $0, month: month, state))) }))])
    }

    public static func notice(_ zone: Zone) -> (Notice) -> JSON {
        { notice in
            var fields: [(String, JSON)] = [("id", .string(notice.id)), ("kind", .string(notice.kind))]
            if let account = notice.account { fields.append(("account", .string(account))) }
            fields.append(("at", .string(notice.at.rfc3339(in: zone))))
            fields.append(contentsOf: notice.details.keys.sorted().map { ($0, .string(notice.details[$0]!)) })
            return .object(fields)
        }
    }
}
