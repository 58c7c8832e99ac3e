/// A voucher (代金券): an amount the customer may spend on purchases until it expires, optionally
/// only on one product; partly usable.
public struct Voucher: Hashable, Sendable, Codable {
    public let id: String
    public let account: String
    public let amount: Money
    public var remaining: Money
    public let expires: Instant
    /// The product it applies to; nil for any.
    public let product: String?
    public let grantedAt: Instant

    public func applies(to product: String, at instant: Instant) -> Bool {
        remaining.isPositive && instant < expires && (self.product == nil || self.product == product)
    }

    public init(id: String, account: String, amount: Money, remaining: Money, expires: Instant, product: String?, grantedAt: Instant) {
        self.id = id
        self.account = account
        self.amount = amount
        self.remaining = remaining
        self.expires = expires
        self.product = product
        self.grantedAt = grantedAt
    }
}

/// Where a pack came from: bought in an order, or the month's free quota.
public enum PackSource: Hashable, Sendable, Codable {
    case bought(order: String)
    case free(month: Month)
}

/// A pack of calls an account holds: bought, or granted free for a month.
public struct Pack: Hashable, Sendable, Codable {
    public let id: String
    public let account: String
    public let api: String
    /// The catalog item ("image-tagging.general/100k"), or "API/free" for a free pack.
    public let item: String
    public let source: PackSource
    public let size: Int64
    public var left: Int64
    public let qps: Int64?
    public let delivered: Instant
    public let expires: Instant
    /// The order in which packs were created, to break ties between equal expiries.
    public let sequence: Int64
    public let refundable: Bool
    public let promotionAllowsRefund: Bool
    public var revoked: Bool = false

    public var isFree: Bool { if case .free = source { return true } else { return false } }

    /// A pack can be drawn at `instant` when it was delivered by then, has not expired, holds calls
    /// and was not revoked by a refund.
    public func isUsable(at instant: Instant) -> Bool {
        !revoked && left > 0 && delivered <= instant && instant < expires
    }

    /// Pack lifecycle for display: active → exhausted or expired; refunded.
    public func state(at instant: Instant) -> String {
        if revoked { return "refunded" }
        if instant >= expires { return "expired" }
        return left == 0 ? "exhausted" : "active"
    }

    public init(id: String, account: String, api: String, item: String, source: PackSource, size: Int64, left: Int64, qps: Int64?, delivered: Instant, expires: Instant, sequence: Int64, refundable: Bool, promotionAllowsRefund: Bool, revoked: Bool = false) {
        self.id = id
        self.account = account
        self.api = api
        self.item = item
        self.source = source
        self.size = size
        self.left = left
        self.qps = qps
        self.delivered = delivered
        self.expires = expires
        self.sequence = sequence
        self.refundable = refundable
        self.promotionAllowsRefund = promotionAllowsRefund
        self.revoked = revoked
    }
}

/// How a purchase was paid, source by source (SPEC 3: vouchers, gift, income, cash).
public struct Payment: Hashable, Sendable, Codable {
    public var vouchers: [VoucherDraw] = []
    public var gift: Money = .zero
    public var income: Money = .zero
    public var cash: Money = .zero

    public struct VoucherDraw: Hashable, Sendable, Codable {
        public let voucher: String
        public let amount: Money

        public init(voucher: String, amount: Money) {
            self.voucher = voucher
            self.amount = amount
        }
    }

    public init() {}

    public var voucherTotal: Money { vouchers.reduce(.zero) { $0 + $1.amount } }
    public var total: Money { voucherTotal + gift + income + cash }
}

/// What an order bought.
public enum OrderKind: Hashable, Sendable, Codable {
    case packs(item: String, count: Int64)
    case membership(item: String, period: MembershipPeriod, count: Int64)
    case upgrade(from: String, to: String)
}

/// A purchase: packs, a membership term, or a membership upgrade.
public struct Order: Hashable, Sendable, Codable {
    public let id: String
    public let ref: String?
    public let account: String
    public let product: String
    public let kind: OrderKind
    public let amount: Money
    public let payment: Payment
    public let at: Instant
    public var packs: [String]
    public var refunded: Bool = false

    public init(id: String, ref: String?, account: String, product: String, kind: OrderKind, amount: Money, payment: Payment, at: Instant, packs: [String], refunded: Bool = false) {
        self.id = id
        self.ref = ref
        self.account = account
        self.product = product
        self.kind = kind
        self.amount = amount
        self.payment = payment
        self.at = at
        self.packs = packs
        self.refunded = refunded
    }
}

/// An account's membership of a product's edition.
public struct Membership: Hashable, Sendable, Codable {
    public var edition: String
    public let product: String
    public let started: Instant
    public var expires: Instant
    public var seats: [String] = []

    public func isActive(at instant: Instant) -> Bool { instant < expires }

    public init(edition: String, product: String, started: Instant, expires: Instant, seats: [String] = []) {
        self.edition = edition
        self.product = product
        self.started = started
        self.expires = expires
        self.seats = seats
    }
}

/// A customer account.
public struct Account: Hashable, Sendable, Codable {
    public let id: String
    public var subject: Subject
    public var verified: Bool
    public let opened: Instant
    /// Suspended by an operator for content violations: every call refused, nothing refundable.
    public var suspended = false
    /// A bill left the balance below zero: post-paid calls refused until a top-up restores it.
    public var inArrears = false
    /// Put on refund review by an operator (suspected abuse): refunds refused.
    public var refundReview = false
    public var cash: Money = .zero
    public var income: Money = .zero
    public var gift: Money = .zero
    public var vouchers: [Voucher] = []
    /// Products activated, with the instant of activation.
    public var activated: [String: Instant] = [:]
    /// Every pack the account ever held, in creation order.
    public var packs: [String] = []
    /// The bought packs not yet used up or revoked, in creation order: what settlement and the QPS
    /// limit look through on every event (free packs are found by month in `freePacks`). Expiry
    /// does not remove a pack here: a report may be dated before it.
    public var open: [String] = []
    /// The free pack of each API for each month.
    public var freePacks: [FreeKey: String] = [:]
    public var memberships: [String: Membership] = [:]
    /// Uses of limited entitlements, by "feature|user|month".
    public var entitlementUses: [String: Int64] = [:]

    public init(id: String, subject: Subject, verified: Bool, opened: Instant) {
        self.id = id
        self.subject = subject
        self.verified = verified
        self.opened = opened
    }

    public var balance: Money { cash + income + gift }

    /// The status SPEC 3 names: suspended wins over arrears.
    public var status: String { suspended ? "suspended" : inArrears ? "arrears" : "active" }

    /// Which free pack: an API and a month. A struct, not a formatted string, because settlement
    /// looks it up for every event.
    public struct FreeKey: Hashable, Sendable, Codable, Comparable {
        public let api: String
        public let month: Month

        public static func < (a: FreeKey, b: FreeKey) -> Bool { (a.api, a.month) < (b.api, b.month) }
    }
}

/// The month's usage of one API by one account.
public struct MonthlyUsage: Hashable, Sendable, Codable {
    public var calls: Int64 = 0
    public var free: Int64 = 0
    public var pack: Int64 = 0
    public var postpaid: Int64 = 0
    public var refused: Int64 = 0
    /// Calls by edition, for APIs with editions.
    public var byEdition: [String: Int64] = [:]
    /// Post-paid calls by day of the month (1-based), for the console's chart.
    public var postpaidByDay: [Int64: Int64] = [:]
    /// Accepted calls by day of the month (1-based), for the console's daily chart.
    public var callsByDay: [Int64: Int64] = [:]

    public init() {}
}

public struct MonthlyKey: Hashable, Sendable, Codable, Comparable {
    public let account: String
    public let api: String
    public let month: Month

    public static func < (a: MonthlyKey, b: MonthlyKey) -> Bool {
        (a.month, a.account, a.api) < (b.month, b.account, b.api)
    }

    public init(account: String, api: String, month: Month) {
        self.account = account
        self.api = api
        self.month = month
    }
}

/// How one usage event was settled (SPEC 4): free → packs → post-paid, or refused.
public struct Settlement: Hashable, Sendable, Codable {
    public var free: Int64 = 0
    public var draws: [PackDraw] = []
    public var postpaid: Int64 = 0
    public var refused: Int64 = 0
    public var refusal: TallyError.Code?

    public struct PackDraw: Hashable, Sendable, Codable {
        public let pack: String
        public let calls: Int64
        public let isFree: Bool

        public init(pack: String, calls: Int64, isFree: Bool) {
            self.pack = pack
            self.calls = calls
            self.isFree = isFree
        }
    }

    public init() {}

    public var pack: Int64 { draws.reduce(0) { $1.isFree ? $0 : $0 + $1.calls } }
    public var accepted: Int64 { free + pack + postpaid }
}

/// One recorded usage event: the idempotency key (account, id), its body and its settlement.
public struct UsageRecord: Hashable, Sendable, Codable {
    public let account: String
    public let id: String
    public let api: String
    public let edition: String?
    public let calls: Int64
    public let at: Instant
    public let recorded: Instant
    public let settlement: Settlement

    /// Whether another request with the same id carries the same body. Time is left out: a
    /// gateway that retries may stamp the retry anew (docs/decisions.md).
    public func sameBody(api: String, edition: String?, calls: Int64) -> Bool {
        self.api == api && self.edition == edition && self.calls == calls
    }

    public init(account: String, id: String, api: String, edition: String?, calls: Int64, at: Instant, recorded: Instant, settlement: Settlement) {
        self.account = account
        self.id = id
        self.api = api
        self.edition = edition
        self.calls = calls
        self.at = at
        self.recorded = recorded
        self.settlement = settlement
    }
}

/// What the state keeps of a recorded usage event, under its key (account, id): enough to answer
/// a duplicate, refuse a reused id, and recompute the month's totals. The full record (its pack
/// draws) stays in the store. The usage index keeps it as plain numbers, its repeated texts (the
/// API, the edition, the refusal code) numbered in a table of the index's own (`UsageIndex`).
public struct UsageEntry: Hashable, Sendable {
    public let api: String
    public let edition: String?
    public let calls: Int64
    public let at: Instant
    /// When the event was recorded: how long its id stays in memory (`TallyState.forgetUsage`).
    public let recorded: Instant
    public let free: Int64
    public let pack: Int64
    public let postpaid: Int64
    public let refused: Int64
    private let refusalCode: String?

    public init(api: String, edition: String?, calls: Int64, at: Instant, recorded: Instant, free: Int64, pack: Int64, postpaid: Int64,
                refused: Int64, refusal: String?) {
        self.api = api
        self.edition = edition
        self.calls = calls
        self.at = at
        self.recorded = recorded
        self.free = free
        self.pack = pack
        self.postpaid = postpaid
        self.refused = refused
        self.refusalCode = refusal
    }

    public var accepted: Int64 { free + pack + postpaid }
    public var refusal: TallyError.Code? { refusalCode.map(TallyError.Code.init(rawValue:)) }

    /// Whether another request with the same id carries the same body. Time is left out: a
    /// gateway that retries may stamp the retry anew (docs/decisions.md).
    public func sameBody(api: String, edition: String?, calls: Int64) -> Bool {
        self.api == api && self.edition == edition && self.calls == calls
    }
}

extension UsageEntry {
    /// The entry of a full record, its texts not shared.
    public init(_ record: UsageRecord) {
        let s = record.settlement
        self.init(api: record.api, edition: record.edition, calls: record.calls, at: record.at, recorded: record.recorded,
                  free: s.free, pack: s.pack, postpaid: s.postpaid, refused: s.refused, refusal: s.refusal?.rawValue)
    }
}

/// One line of a bill: one API's month.
public struct BillLine: Hashable, Sendable, Codable {
    public let api: String
    public let calls: Int64
    public let free: Int64
    public let pack: Int64
    public let postpaid: Int64
    public let tier: Int
    public let unitPrice: Money
    public let amount: Money

    public init(api: String, calls: Int64, free: Int64, pack: Int64, postpaid: Int64, tier: Int, unitPrice: Money, amount: Money) {
        self.api = api
        self.calls = calls
        self.free = free
        self.pack = pack
        self.postpaid = postpaid
        self.tier = tier
        self.unitPrice = unitPrice
        self.amount = amount
    }
}

/// A monthly bill for one account and product.
public struct Bill: Hashable, Sendable, Codable {
    public let id: String
    public let account: String
    public let product: String
    public let month: Month
    public let lines: [BillLine]
    public let total: Money
    public let at: Instant
    /// How the deduction fell on the sub-accounts (gift, income, then cash).
    public let paid: Payment

    public init(id: String, account: String, product: String, month: Month, lines: [BillLine], total: Money, at: Instant, paid: Payment) {
        self.id = id
        self.account = account
        self.product = product
        self.month = month
        self.lines = lines
        self.total = total
        self.at = at
        self.paid = paid
    }
}

/// A notification for webhooks (SPEC 7), kept in the state as an outbox.
public struct Notice: Hashable, Sendable, Codable {
    public let id: String
    public let kind: String
    public let account: String?
    public let at: Instant
    /// Plain key-value details, all strings, for the webhook body.
    public let details: [String: String]

    public init(id: String, kind: String, account: String?, at: Instant, details: [String: String]) {
        self.id = id
        self.kind = kind
        self.account = account
        self.at = at
        self.details = details
    }
}
