/// Settling usage (SPEC 2.2, 2.3 and 4): who pays for each call.
public enum SettlementRule {
    /// Settles `calls` of `api` for `account` as of `instant`: the month's free pack, then bought
    /// packs (earliest expiry, then earliest bought), then post-paid. What nothing covers is refused:
    /// `account_in_arrears` where post-paid would pay but the account is in arrears,
    /// `quota_exhausted` where the API has no post-paid. With `allOrNothing` (check-and-record, one
    /// gateway decision) a partly covered event is refused whole and draws nothing.
    public static func settle(
        calls: Int64, api: APIOffer, account: Account, state: TallyState, at instant: Instant, allOrNothing: Bool
    ) -> Settlement {
        var settlement = Settlement()
        var remaining = calls
        if let free = state.freePack(account: account, api: api.id, month: state.zone.month(of: instant)),
           free.isUsable(at: instant) {
            let drawn = min(free.left, remaining)
            settlement.free = drawn
            settlement.draws.append(.init(pack: free.id, calls: drawn, isFree: true))
            remaining -= drawn
        }
        // Listing the packs sorts them: skipped when free quota covered the calls.
        if remaining > 0 {
            for pack in state.drawablePacks(account: account, api: api.id, at: instant) where remaining > 0 {
                let drawn = min(pack.left, remaining)
                settlement.draws.append(.init(pack: pack.id, calls: drawn, isFree: false))
                remaining -= drawn
            }
        }
        if remaining > 0 {
            if api.postpaid == nil {
                settlement.refusal = .quotaExhausted
            } else if account.inArrears {
                settlement.refusal = .accountInArrears
            } else {
                settlement.postpaid = remaining
                remaining = 0
            }
        }
        settlement.refused = remaining
        if allOrNothing, remaining > 0 {
            var refused = Settlement()
            refused.refused = calls
            refused.refusal = settlement.refusal
            return refused
        }
        return settlement
    }

    /// The account's QPS limit on an API: the highest QPS of its packs that are unexpired and not
    /// used up; nil (no limit) when none of them carries one.
    public static func qpsLimit(account: Account, api: String, state: TallyState, at instant: Instant) -> Int64? {
        // Asked on every check: one pass over the account's open packs, nothing listed or sorted.
        state.usablePacks(account: account, api: api, at: instant).compactMap(\.qps).max()
    }
}

/// A token bucket: capacity Q, refilled at Q tokens a second, starting full (SPEC 2.2).
/// Tokens are counted in millionths so that refills over microseconds stay exact integers.
public struct TokenBucket: Sendable, Hashable {
    public private(set) var microtokens: Int64
    public private(set) var updated: Instant
    public private(set) var qps: Int64

    public init(qps: Int64, at instant: Instant) {
        self.qps = qps
        self.microtokens = qps * 1_000_000
        self.updated = instant
    }

    /// Takes `count` tokens at `instant` if the bucket holds them; a refused take draws nothing.
    /// A change of limit keeps the tokens, clamped to the new capacity.
    public mutating func take(_ count: Int64, at instant: Instant, qps newQPS: Int64) -> Bool {
        let capacity = newQPS * 1_000_000
        if instant > updated {
            let elapsed = instant.microseconds - updated.microseconds
            let (refill, overflow) = elapsed.multipliedReportingOverflow(by: qps)
            microtokens = overflow ? capacity : min(capacity, microtokens + min(refill, capacity))
            updated = instant
        }
        qps = newQPS
        microtokens = min(microtokens, capacity)
        let cost = count * 1_000_000
        guard microtokens >= cost else { return false }
        microtokens -= cost
        return true
    }
}

// MARK: - Bills (SPEC 4)

public enum BillingRule {
    /// The lines of account's bill for `product` in `month`: one per API of the product with calls,
    /// priced by the catalog version in force at the start of the month.
    public static func lines(account: String, product: String, month: Month, usage: [String: MonthlyUsage], catalog: Catalog) -> [BillLine] {
        let version = catalog.version(at: catalog.zone.start(of: month))
        return usage.keys.sorted().compactMap { api -> BillLine? in
            guard let totals = usage[api], totals.calls > 0 else { return nil }
            let pricing = version.apisByID[api]?.postpaid
            let priced = pricing?.price(MonthlyCalls(all: totals.calls, postpaid: totals.postpaid))
                ?? PricedLine(tier: 1, unitPrice: .zero, amount: .zero)
            return BillLine(api: api, calls: totals.calls, free: totals.free, pack: totals.pack, postpaid: totals.postpaid,
                            tier: priced.tier, unitPrice: priced.unitPrice, amount: priced.amount)
        }
    }

    /// The estimated charge of one API's month so far, at this month's prices.
    public static func estimate(api: String, month: Month, totals: MonthlyUsage, catalog: Catalog) -> PricedLine? {
        catalog.version(at: catalog.zone.start(of: month)).apisByID[api]?.postpaid?
            .price(MonthlyCalls(all: totals.calls, postpaid: totals.postpaid))
    }
}

// MARK: - Entitlements (SPEC 2.1)

public enum EntitlementRule {
    public struct Decision: Hashable, Sendable {
        public let edition: String
        /// Uses left this month after this check, for limited features; nil when unlimited.
        public let remaining: Int64?
        public let useKey: String?
    }

    /// Whether `user` (nil: the account holder) of `account` may use `feature` at `instant`.
    /// A named user other than the holder must hold a seat. Limited features count uses per user
    /// and month; `use` asks to spend one.
    public static func check(account: Account, feature: String, user: String?, use: Bool, catalog: Catalog, at instant: Instant) throws(TallyError) -> Decision {
        guard !account.suspended else { throw TallyError(.accountSuspended, "the account is suspended for content violations") }
        guard !account.memberships.isEmpty else { throw TallyError(.noMembership, "the account holds no membership") }
        let active = account.memberships.values.filter { $0.isActive(at: instant) }.sorted { $0.product < $1.product }
        guard !active.isEmpty else { throw TallyError(.membershipExpired, "the membership has expired; every entitlement ended with it") }
        let version = catalog.version(at: instant)
        for membership in active {
            guard let edition = version.editionsByItem[membership.edition] ?? catalog.versions.lazy.compactMap({ $0.editionsByItem[membership.edition] }).first,
                  let entitlement = edition.entitlements[feature] else { continue }
            if let user, user != account.id, !membership.seats.contains(user) {
                throw TallyError(.seatNotAssigned, "\(user) holds no seat of \(edition.item)")
            }
            switch entitlement {
            case .included:
                return Decision(edition: edition.item, remaining: nil, useKey: nil)
            case .monthlyLimit(let limit):
                let key = "\(feature)|\(user ?? account.id)|\(catalog.zone.month(of: instant))"
                let used = account.entitlementUses[key] ?? 0
                guard used < limit else {
                    throw TallyError(.monthlyLimitReached, "\(feature) is limited to \(limit) uses a month, all used")
                }
                return Decision(edition: edition.item, remaining: limit - used - (use ? 1 : 0), useKey: use ? key : nil)
            }
        }
        throw TallyError(.featureNotIncluded, "no active membership of the account includes \(feature)")
    }
}
