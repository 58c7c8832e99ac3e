/// The pure rules of SPEC sections 3 to 5: who pays, how much, and whether a refund is allowed.
/// Each takes state and returns a decision; the engine turns decisions into facts.

// MARK: - Paying for a purchase (SPEC 3)

public enum PaymentRule {
    /// Plans how a purchase of `amount` for `product` is paid: applicable vouchers (earliest
    /// expiry first, then earliest granted), gift, income, then cash. Refused with
    /// `insufficient_funds` unless fully covered; a negative cash balance pays nothing.
    public static func plan(_ amount: Money, product: String, account: Account, at instant: Instant) throws(TallyError) -> Payment {
        var payment = Payment()
        var due = amount
        let vouchers = account.vouchers.filter { $0.applies(to: product, at: instant) }
            .sorted { ($0.expires, $0.grantedAt, $0.id) < ($1.expires, $1.grantedAt, $1.id) }
        for voucher in vouchers where due.isPositive {
            let used = min(voucher.remaining, due)
            payment.vouchers.append(.init(voucher: voucher.id, amount: used))
            due -= used
        }
        payment.gift = min(max(account.gift, .zero), due); due -= payment.gift
        payment.income = min(max(account.income, .zero), due); due -= payment.income
        payment.cash = min(max(account.cash, .zero), due); due -= payment.cash
        guard !due.isPositive else {
            throw TallyError(.insufficientFunds, "the balance and vouchers cover \(amount - due) of \(amount); \(due) more is needed")
        }
        return payment
    }

    /// Plans a bill deduction: gift, income, then cash, which may go negative (SPEC 4).
    public static func deduct(_ amount: Money, from account: Account) -> Payment {
        var payment = Payment()
        var due = amount
        payment.gift = min(max(account.gift, .zero), due); due -= payment.gift
        payment.income = min(max(account.income, .zero), due); due -= payment.income
        payment.cash = due
        return payment
    }

    /// The ledger entries that take a payment from the customer's sub-accounts.
    public static func debits(_ payment: Payment, account: String) -> [LedgerEntry] {
        payment.vouchers.map { .money(.voucher($0.voucher), -$0.amount) } + [
            .money(.gift(account), -payment.gift),
            .money(.income(account), -payment.income),
            .money(.cash(account), -payment.cash),
        ]
    }
}

// MARK: - Upgrades (SPEC 2.1)

public enum UpgradeRule {
    /// The time from `now` to `expiry` as whole calendar months `m` plus the fraction of the next
    /// calendar month the leftover covers, as the exact ratio (m × S + L) / S where S is the
    /// length of that next month in seconds and L the leftover.
    public static func remainingMonths(from now: Instant, to expiry: Instant, in zone: Zone) -> (numerator: Int64, denominator: Int64) {
        guard expiry > now else { return (0, 1) }
        var whole: Int64 = 0
        while zone.adding(months: whole + 1, to: now) <= expiry { whole += 1 }
        let monthStart = zone.adding(months: whole, to: now)
        let monthEnd = zone.adding(months: whole + 1, to: now)
        let length = monthEnd.microseconds - monthStart.microseconds
        let leftover = expiry.microseconds - monthStart.microseconds
        return (whole * length + leftover, length)
    }

    /// `(new yearly − old yearly) × remaining years`, rounded half up to the fen once.
    public static func fee(from old: Edition, to new: Edition, now: Instant, expiry: Instant, zone: Zone) -> Money {
        let (numerator, denominator) = remainingMonths(from: now, to: expiry, in: zone)
        let difference = new.yearlyPrice - old.yearlyPrice
        return difference.prorated(numerator, over: denominator * 12)
    }
}

// MARK: - Refunds (SPEC 5)

public enum RefundRule {
    /// The last instant a pack delivered at `delivered` may be refunded: through 23:59:59 of the
    /// `windowDays`-th day after the delivery date, in the catalog's zone.
    public static func deadline(delivered: Instant, windowDays: Int64, zone: Zone) -> Instant {
        zone.startOfDay(windowDays + 1, after: delivered).adding(microseconds: -1)
    }

    /// Checks every condition of SPEC 5 for refunding `order`; throws the first that fails.
    public static func check(order: Order, state: TallyState, at instant: Instant) throws(TallyError) {
        let account = try state.account(order.account)
        guard !order.refunded else { throw TallyError(.alreadyRefunded, "order \(order.id) was refunded already") }
        guard case .packs = order.kind else {
            throw TallyError(.notRefundable, "memberships and upgrades are never refunded")
        }
        let product = state.catalog.version(at: order.at).productsByID[order.product]
        guard let windowDays = product?.refundWindowDays else {
            throw TallyError(.notRefundable, "\(order.product) packages are never refunded")
        }
        let packs = order.packs.compactMap { state.packs[$0] }
        guard packs.allSatisfy(\.refundable) else { throw TallyError(.notRefundable, "this pack is not refundable") }
        guard packs.allSatisfy(\.promotionAllowsRefund) else {
            throw TallyError(.promotionForbidsRefund, "the promotion this pack was sold under allows no refunds")
        }
        guard !account.suspended else {
            throw TallyError(.accountSuspended, "the account is suspended for content violations; nothing it holds can be refunded")
        }
        guard !account.refundReview else {
            throw TallyError(.refundUnderReview, "refunds for this account are on hold for review")
        }
        guard packs.allSatisfy({ $0.left == $0.size }) else {
            throw TallyError(.packUsed, "calls have been drawn from this order's packs; a used pack is not refunded")
        }
        let deadline = deadline(delivered: order.at, windowDays: windowDays, zone: state.zone)
        guard instant <= deadline else {
            throw TallyError(.refundWindowPassed, "refunds end at \(deadline.adding(microseconds: 1).adding(seconds: -1).rfc3339(in: state.zone))")
        }
    }

    /// The transaction that returns to each sub-account what it paid (vouchers are not returned)
    /// and takes the revoked packs' calls back.
    public static func transaction(order: Order, packs: [Pack], id: String, at instant: Instant) -> LedgerTransaction {
        let returned = order.payment.gift + order.payment.income + order.payment.cash
        let calls = packs.reduce(Int64(0)) { $0 + $1.left }
        return LedgerTransaction(id: id, at: instant, kind: "refund", entries: [
            .money(.gift(order.account), order.payment.gift),
            .money(.income(order.account), order.payment.income),
            .money(.cash(order.account), order.payment.cash),
            .money(.revenue(order.product), -returned),
            .calls(.callsIssued, calls),
        ] + packs.map { .calls(.pack($0.id), -$0.left) })
    }
}
