import TallyCore

/// Opens an account.
public struct OpenAccount: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let subject: Subject
    public let verified: Bool

    public init(account: String, subject: Subject, verified: Bool) {
        self.account = account
        self.subject = subject
        self.verified = verified
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        try Limits.identifier(account, "an account id")
        guard state.tally.accounts[account] == nil else { throw TallyError(.accountExists, "the account \(account) exists already") }
        state.emit(.accountOpened(account: account, subject: subject, verified: verified, at: env.now))
    }
}

/// Records real-name verification (实名认证), optionally correcting the subject type.
public struct Verify: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let subject: Subject?

    public init(account: String, subject: Subject? = nil) {
        self.account = account
        self.subject = subject
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        let current = try state.tally.account(account)
        state.emit(.accountVerified(account: account, subject: subject ?? current.subject, at: env.now))
    }
}

/// Adds money to the sub-accounts: cash (a payment), income (收益转入) or gift (赠送).
/// A top-up that brings an account in arrears back to zero or above restores service at once.
public struct TopUp: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let cash: Money
    public let income: Money
    public let gift: Money

    public init(account: String, cash: Money = .zero, income: Money = .zero, gift: Money = .zero) {
        self.account = account
        self.cash = cash
        self.income = income
        self.gift = gift
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Money {
        let before = try state.tally.account(account)
        try Limits.amount(cash, "cash", allowZero: true)
        try Limits.amount(income, "income", allowZero: true)
        try Limits.amount(gift, "gift", allowZero: true)
        guard (cash + income + gift).isPositive else { throw TallyError(.invalidAmount, "a top-up adds more than 0.00") }
        let transaction = LedgerTransaction(id: env.ids.next("txn"), at: env.now, kind: "top_up", entries: [
            .money(.cash(account), cash), .money(.income(account), income), .money(.gift(account), gift),
            .money(.paymentsReceived, -(cash + income)), .money(.promotions, -gift),
        ])
        state.emit(.moneyCredited(account: account, transaction: transaction))
        let after = try state.tally.account(account)
        if before.inArrears, !after.balance.isNegative {
            state.emit(.statusChanged(account: account, change: .restored, at: env.now))
            state.notify(kind: "account_restored", account: account, at: env.now, ids: env.ids, ["balance": after.balance.description])
        }
        return after.balance
    }
}

/// Grants a voucher (代金券).
public struct GrantVoucher: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let amount: Money
    public let expires: Instant
    public let product: String?

    public init(account: String, amount: Money, expires: Instant, product: String?) {
        self.account = account
        self.amount = amount
        self.expires = expires
        self.product = product
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Voucher {
        _ = try state.tally.account(account)
        try Limits.amount(amount, "a voucher's amount")
        guard expires > env.now else { throw TallyError(.invalidTimestamp, "a voucher must expire after it is granted") }
        if let product, state.tally.catalog.version(at: env.now).productsByID[product] == nil {
            throw TallyError(.unknownProduct, "there is no product \(product)")
        }
        let voucher = Voucher(id: env.ids.next("vch"), account: account, amount: amount, remaining: amount,
                              expires: expires, product: product, grantedAt: env.now)
        let transaction = LedgerTransaction(id: env.ids.next("txn"), at: env.now, kind: "voucher_grant", entries: [
            .money(.voucher(voucher.id), amount), .money(.promotions, -amount),
        ])
        state.emit(.voucherGranted(voucher: voucher, transaction: transaction))
        return voucher
    }
}

/// Suspends an account for content violations, or lifts the suspension.
public struct Suspend: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let suspended: Bool

    public init(account: String, suspended: Bool = true) {
        self.account = account
        self.suspended = suspended
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        let current = try state.tally.account(account)
        guard current.suspended != suspended else { return }
        state.emit(.statusChanged(account: account, change: suspended ? .suspended : .unsuspended, at: env.now))
    }
}

/// Lifts a content suspension.
public struct Unsuspend: Operation {
    public var placement: Placement { .account(account) }
    public let account: String

    public init(account: String) { self.account = account }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        try Suspend(account: account, suspended: false).execute(&state, env)
    }
}

/// Puts an account's refunds on hold for review (suspected abuse), or releases the hold.
public struct ReviewRefunds: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let hold: Bool

    public init(account: String, hold: Bool = true) {
        self.account = account
        self.hold = hold
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        let current = try state.tally.account(account)
        guard current.refundReview != hold else { return }
        state.emit(.statusChanged(account: account, change: hold ? .refundReviewOn : .refundReviewOff, at: env.now))
    }
}

extension EngineState {
    /// Emits a notification for the webhook outbox. `once` gives a notice owed only once its
    /// stable id, so that it is never sent twice.
    mutating func notify(kind: String, account: String?, at instant: Instant, ids: any IDSource, once: String? = nil, _ details: [String: String] = [:]) {
        if let once, tally.noticeIDs.contains(once) { return }
        emit(.notified(notice: Notice(id: once ?? ids.next("ntc"), kind: kind, account: account, at: instant, details: details)))
    }
}
