/// One month of one API's usage, as the pricing models see it.
public struct MonthlyCalls: Hashable, Sendable {
    /// Every call of the month, however it was settled (free, pack or post-paid).
    public let all: Int64
    /// The calls that fell through to post-paid and are billed.
    public let postpaid: Int64

    public init(all: Int64, postpaid: Int64) {
        precondition(all >= postpaid && postpaid >= 0, "post-paid calls are part of all calls")
        self.all = all
        self.postpaid = postpaid
    }
}

/// What a pricing model charges for one bill line.
public struct PricedLine: Hashable, Sendable {
    /// 1-based index of the tier reached (1 for models without tiers).
    public let tier: Int
    /// The unit price shown on the line: the tier's price, or the price per call of a package.
    public let unitPrice: Money
    /// The line's amount, rounded half up to the fen once.
    public let amount: Money
}

/// Which count picks the tier: SPEC 2.3's "tier reached" counts every call of the month
/// (`all-calls`, as the shipped price list does); `postpaid-calls` counts only the billed ones.
public enum TierBasis: String, Sendable, Hashable, CaseIterable {
    case allCalls = "all-calls"
    case postpaidCalls = "postpaid-calls"

    func count(_ calls: MonthlyCalls) -> Int64 { self == .allCalls ? calls.all : calls.postpaid }
}

/// A volume tier: from `from` calls a month on, `unitPrice` per call.
public struct Tier: Hashable, Sendable {
    public let from: Int64
    public let unitPrice: Money

    public init(from: Int64, unitPrice: Money) {
        self.from = from
        self.unitPrice = unitPrice
    }
}

/// Prices a month of post-paid calls. One small type per model, picked by the catalog
/// (as lago-api's charge_models do), so that adding a model touches no other.
public protocol PricingModel: Sendable {
    /// The catalog's name of the model.
    var name: String { get }
    func price(_ calls: MonthlyCalls) -> PricedLine
    /// The unit price at the lowest tier, for display and estimates.
    var basePrice: Money { get }
    /// True when charging `calls` may exceed the old model's charge: the 30-day notice rule.
    func charges(moreThan other: any PricingModel) -> Bool
}

extension PricingModel {
    public func charges(moreThan other: any PricingModel) -> Bool {
        // Probe the tier edges of both models and a spread of volumes: a raise anywhere counts.
        var probes: Set<Int64> = [1, 1_000, 1_000_000, 100_000_000]
        for model in [self as any PricingModel, other] {
            if let tiered = model as? TieredModel {
                for tier in tiered.tiers { probes.formUnion([tier.from, tier.from + 1, max(1, tier.from - 1)]) }
            }
        }
        return probes.contains { calls in
            let volume = MonthlyCalls(all: calls, postpaid: calls)
            return price(volume).amount > other.price(volume).amount
        }
    }
}

/// Models with a tier table.
protocol TieredModel {
    var tiers: [Tier] { get }
}

/// Exact amount of `calls × unitPrice`, rounded half up to the fen.
func lineAmount(calls: Int64, unitPrice: Money) -> Money {
    let exact = Int128(calls) * Int128(unitPrice.microyuan)
    return Money(microyuan: Money.divideRoundingHalfUp(exact, by: Int128(Money.microyuanPerFen)) * Money.microyuanPerFen)
}

func tierIndex(_ tiers: [Tier], for count: Int64) -> Int {
    tiers.lastIndex(where: { $0.from <= count }) ?? 0
}

/// Tier reached (阶梯到达, volume pricing): the month's count picks one tier, and every post-paid
/// call of the month is priced at that tier's unit price.
public struct TierReachedPricing: PricingModel, TieredModel {
    public let tiers: [Tier]
    public let basis: TierBasis
    public var name: String { "tier-reached" }

    public init(tiers: [Tier], basis: TierBasis) {
        precondition(!tiers.isEmpty && tiers[0].from == 0, "tiers start at 0")
        self.tiers = tiers
        self.basis = basis
    }

    public var basePrice: Money { tiers[0].unitPrice }

    public func price(_ calls: MonthlyCalls) -> PricedLine {
        let index = tierIndex(tiers, for: basis.count(calls))
        let unit = tiers[index].unitPrice
        return PricedLine(tier: index + 1, unitPrice: unit, amount: lineAmount(calls: calls.postpaid, unitPrice: unit))
    }
}

/// Graduated pricing: each call is priced at the tier its position in the month falls in.
/// With the `all-calls` basis the post-paid calls are the month's last ones (free and pack calls
/// come first in the settlement order), so they occupy positions `all − postpaid ..< all`.
public struct GraduatedPricing: PricingModel, TieredModel {
    public let tiers: [Tier]
    public let basis: TierBasis
    public var name: String { "graduated" }

    public init(tiers: [Tier], basis: TierBasis) {
        precondition(!tiers.isEmpty && tiers[0].from == 0, "tiers start at 0")
        self.tiers = tiers
        self.basis = basis
    }

    public var basePrice: Money { tiers[0].unitPrice }

    public func price(_ calls: MonthlyCalls) -> PricedLine {
        let end = basis.count(calls)
        let start = end - calls.postpaid
        var exact: Int128 = 0
        for (index, tier) in tiers.enumerated() {
            let upper = index + 1 < tiers.count ? tiers[index + 1].from : Int64.max
            let lo = max(start, tier.from), hi = min(end, upper)
            if hi > lo { exact += Int128(hi - lo) * Int128(tier.unitPrice.microyuan) }
        }
        let index = tierIndex(tiers, for: max(0, end - 1))
        let amount = Money(microyuan: Money.divideRoundingHalfUp(exact, by: Int128(Money.microyuanPerFen)) * Money.microyuanPerFen)
        return PricedLine(tier: index + 1, unitPrice: tiers[index].unitPrice, amount: amount)
    }
}

/// Package pricing: a price per started block of calls ("5.00 per 1,000 calls").
public struct PackagePricing: PricingModel {
    public let callsPerPackage: Int64
    public let packagePrice: Money
    public var name: String { "package" }

    public init(callsPerPackage: Int64, packagePrice: Money) {
        precondition(callsPerPackage > 0, "a package holds calls")
        self.callsPerPackage = callsPerPackage
        self.packagePrice = packagePrice
    }

    public var basePrice: Money { Money(microyuan: packagePrice.microyuan / callsPerPackage) }

    public func price(_ calls: MonthlyCalls) -> PricedLine {
        let packages = (calls.postpaid + callsPerPackage - 1) / callsPerPackage
        return PricedLine(tier: 1, unitPrice: basePrice, amount: lineAmount(calls: packages, unitPrice: packagePrice))
    }
}

/// Flat pricing: one unit price for every post-paid call.
public struct FlatPricing: PricingModel {
    public let unitPrice: Money
    public var name: String { "flat" }

    public init(unitPrice: Money) { self.unitPrice = unitPrice }

    public var basePrice: Money { unitPrice }

    public func price(_ calls: MonthlyCalls) -> PricedLine {
        PricedLine(tier: 1, unitPrice: unitPrice, amount: lineAmount(calls: calls.postpaid, unitPrice: unitPrice))
    }
}
