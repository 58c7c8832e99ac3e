/// Who an account belongs to: a person or a company (授权主体).
public enum Subject: String, Sendable, Hashable, Codable, CaseIterable {
    case personal, enterprise
}

/// How long something lasts: whole days (Smart Cover's "365 days") or calendar months with
/// end-of-month clamping (Image Tagging's "one year").
public enum Validity: Hashable, Sendable {
    case days(Int64)
    case months(Int64)

    public func expiry(from start: Instant, in zone: Zone) -> Instant {
        switch self {
        case .days(let days): return start.adding(seconds: days * 86_400)
        case .months(let months): return zone.adding(months: months, to: start)
        }
    }
}

/// A prepaid resource pack on sale: `item` is "API/pack", such as "image-tagging.general/100k".
public struct PackOffer: Hashable, Sendable {
    public var id: String
    public var item: String
    public var api: String
    public var name: String
    public var calls: Int64
    /// The QPS the pack grants while it is unexpired and not used up; nil for none.
    public var qps: Int64?
    public var validity: Validity
    public var price: Money
    public var refundable: Bool
    /// The promotion it was sold under, if any, and whether that promotion allows refunds.
    public var promotion: String?
    public var promotionAllowsRefund: Bool
}

/// An API that customers call.
public struct APIOffer: Sendable {
    public var id: String
    public var product: String
    public var name: String
    /// The editions of the API ("camera", "album", ...); empty when it has none. Each edition
    /// used is one billable call; all editions add up into the API's monthly volume.
    public var editions: [String]
    /// The post-paid pricing; nil for prepaid-only APIs, whose calls are refused once packs run out.
    public var postpaid: (any PricingModel)?
    /// The free calls granted each month to accounts with the product activated.
    public var freeMonthly: Int64
    public var packs: [PackOffer]
}

/// A feature an edition grants: included without limit, or limited to uses a month.
public enum Entitlement: Hashable, Sendable {
    case included
    case monthlyLimit(Int64)
}

/// The billing period of a membership purchase.
public enum MembershipPeriod: String, Hashable, Sendable, Codable {
    case month, year

    public var months: Int64 { self == .month ? 1 : 12 }
}

/// A membership edition (版本), such as "taishan/enterprise-basic".
public struct Edition: Sendable, Hashable {
    public var id: String
    public var item: String
    public var product: String
    public var name: String
    public var subject: Subject
    public var seats: Int64
    public var scope: [String]
    /// The position on the upgrade ladder within its subject: a higher rank is an upgrade.
    public var rank: Int64
    public var prices: [MembershipPeriod: Money]
    public var entitlements: [String: Entitlement]

    /// The yearly price used by upgrade proration: the year price, or twelve month prices.
    public var yearlyPrice: Money {
        if let year = prices[.year] { return year }
        return prices[.month].flatMap { $0.multiplied(by: 12) } ?? .zero
    }
}

/// A product: memberships, APIs, or both.
public struct Product: Sendable {
    public var id: String
    public var name: String
    /// Whether calls need the product activated first (Image Tagging) or holding a pack is enough
    /// (Smart Cover).
    public var requiresActivation: Bool
    /// Whether buying or activating needs a verified (real-name) account.
    public var requiresVerification: Bool
    /// Days after the delivery date through which an unused bought pack can be refunded in full;
    /// nil when the product refunds nothing.
    public var refundWindowDays: Int64?
    public var editions: [Edition]
    public var apis: [APIOffer]
}

/// One version of the catalog: every product, price and rule in force from `effective` on.
/// A class: settlement asks for the version in force on every event, and handing out one
/// reference costs one retain where a struct of lookup tables would cost many.
public final class CatalogVersion: Sendable {
    public let effective: Instant
    public let note: String
    public let products: [Product]
    public let productsByID: [String: Product]
    public let apisByID: [String: APIOffer]
    public let packsByItem: [String: PackOffer]
    public let editionsByItem: [String: Edition]
    /// The products whose APIs an account must activate before calling them (usage asks on every
    /// event; a set spares it a copy of the whole product).
    public let activationRequired: Set<String>

    public init(effective: Instant, note: String, products: [Product]) {
        self.effective = effective
        self.note = note
        self.products = products
        productsByID = Dictionary(products.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let apis = products.flatMap(\.apis)
        apisByID = Dictionary(apis.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        packsByItem = Dictionary(apis.flatMap(\.packs).map { ($0.item, $0) }, uniquingKeysWith: { a, _ in a })
        editionsByItem = Dictionary(products.flatMap(\.editions).map { ($0.item, $0) }, uniquingKeysWith: { a, _ in a })
        activationRequired = Set(products.filter(\.requiresActivation).map(\.id))
    }
}

/// The catalog: its time zone and its versions by effective date.
public struct Catalog: Sendable {
    public var name: String
    public let currency: String
    public let zone: Zone
    /// Sorted by `effective`, oldest first.
    public private(set) var versions: [CatalogVersion]

    public init(name: String, currency: String, zone: Zone, versions: [CatalogVersion]) {
        precondition(!versions.isEmpty, "a catalog has at least one version")
        self.name = name
        self.currency = currency
        self.zone = zone
        self.versions = versions.sorted { $0.effective < $1.effective }
    }

    /// The version in force at `instant`: the latest one effective at or before it (the oldest
    /// version stands for any earlier instant).
    public func version(at instant: Instant) -> CatalogVersion {
        versions.last(where: { $0.effective <= instant }) ?? versions[0]
    }

    /// Adds a version; one with the same effective instant replaces it.
    public mutating func add(_ version: CatalogVersion) {
        versions.removeAll { $0.effective == version.effective }
        versions.append(version)
        versions.sort { $0.effective < $1.effective }
    }
}
