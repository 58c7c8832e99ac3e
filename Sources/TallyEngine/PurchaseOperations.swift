import TallyCore

/// What a purchase, renewal or upgrade returns: the order as placed.
public typealias Receipt = Order

/// Activates a product that needs it (Image Tagging's 立即开通): from then on its calls are served,
/// and the month's free quota is granted at once.
public struct Activate: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let product: String

    public init(account: String, product: String) {
        self.account = account
        self.product = product
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        let holder = try state.tally.account(account)
        let version = state.tally.catalog.version(at: env.now)
        guard let offer = version.productsByID[product] else { throw TallyError(.unknownProduct, "there is no product \(product)") }
        guard offer.requiresActivation else {
            throw TallyError(.activationNotNeeded, "\(product) needs no activation: holding a package or membership is enough")
        }
        guard !holder.suspended else { throw TallyError(.accountSuspended, "the account is suspended for content violations") }
        guard holder.verified || !offer.requiresVerification else {
            throw TallyError(.notVerified, "activating \(product) needs a verified (real-name) account")
        }
        guard holder.activated[product] == nil else { throw TallyError(.alreadyActivated, "\(product) is activated already") }
        state.emit(.productActivated(account: account, product: product, at: env.now))
        state.grantFreeQuota(account: account, month: state.tally.zone.month(of: env.now), now: env.now, ids: env.ids)
    }
}

/// Buys packs (`count` of an API pack item) or a membership term (`months` or `years` of an edition).
/// Buying the edition one holds extends it from its current expiry.
public struct Buy: Operation {
    public var placement: Placement { .account(account) }
    public enum Quantity: Sendable, Hashable {
        case count(Int64)
        case months(Int64)
        case years(Int64)
    }

    public let account: String
    public let item: String
    public let quantity: Quantity
    public let ref: String?

    public init(account: String, item: String, quantity: Quantity, ref: String? = nil) {
        self.account = account
        self.item = item
        self.quantity = quantity
        self.ref = ref
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Receipt {
        let holder = try state.tally.account(account)
        if let ref {
            try Limits.identifier(ref, "an order reference")
            guard state.tally.order(account: account, ref: ref) == nil else {
                throw TallyError(.duplicateRef, "the account already has an order with reference \(ref)")
            }
        }
        guard !holder.suspended else { throw TallyError(.accountSuspended, "the account is suspended for content violations") }
        let version = state.tally.catalog.version(at: env.now)
        if let pack = version.packsByItem[item] {
            return try buyPacks(pack, holder: holder, version: version, &state, env)
        }
        if let edition = version.editionsByItem[item] {
            return try buyMembership(edition, holder: holder, version: version, &state, env)
        }
        throw TallyError(.unknownItem, "the catalog sells no item \(item)")
    }

    private func buyPacks(_ offer: PackOffer, holder: Account, version: CatalogVersion, _ state: inout EngineState, _ env: Environment) throws(TallyError) -> Receipt {
        guard case .count(let count) = quantity else { throw TallyError(.invalidRequest, "packs are bought by count, not by months or years") }
        try Limits.count(count, "the number of packs", max: Limits.packCountMax)
        let product = version.apisByID[offer.api]!.product
        try requireVerified(holder, product: version.productsByID[product]!)
        guard let amount = offer.price.multiplied(by: count), amount <= Money(yuan: Limits.amountYuanMax) else {
            throw TallyError(.amountOutOfRange, "the order's amount is over the limit of \(Money(yuan: Limits.amountYuanMax))")
        }
        let payment = try PaymentRule.plan(amount, product: product, account: holder, at: env.now)
        let orderID = env.ids.next("ord")
        let expires = offer.validity.expiry(from: env.now, in: state.tally.zone)
        let packs = (0..<count).map { index in
            Pack(id: env.ids.next("pk"), account: account, api: offer.api, item: offer.item, source: .bought(order: orderID),
                 size: offer.calls, left: offer.calls, qps: offer.qps, delivered: env.now, expires: expires,
                 sequence: state.tally.packSequence + index, refundable: offer.refundable,
                 promotionAllowsRefund: offer.promotionAllowsRefund)
        }
        let order = Order(id: orderID, ref: ref, account: account, product: product, kind: .packs(item: offer.item, count: count),
                          amount: amount, payment: payment, at: env.now, packs: packs.map(\.id))
        let transaction = LedgerTransaction(id: env.ids.next("txn"), at: env.now, kind: "purchase",
            entries: PaymentRule.debits(payment, account: account) + [.money(.revenue(product), amount)]
                + packs.map { .calls(.pack($0.id), $0.size) } + [.calls(.callsIssued, -offer.calls * count)])
        state.emit(.orderPlaced(order: order, packs: packs, membership: nil, transaction: transaction))
        return order
    }

    private func buyMembership(_ edition: Edition, holder: Account, version: CatalogVersion, _ state: inout EngineState, _ env: Environment) throws(TallyError) -> Receipt {
        let (period, count): (MembershipPeriod, Int64)
        switch quantity {
        case .months(let months):
            try Limits.count(months, "the number of months", max: Limits.membershipMonthsMax)
            (period, count) = (.month, months)
        case .years(let years):
            try Limits.count(years, "the number of years", max: Limits.membershipYearsMax)
            (period, count) = (.year, years)
        case .count:
            throw TallyError(.invalidRequest, "a membership is bought by months or years")
        }
        guard let unitPrice = edition.prices[period] else {
            throw TallyError(.periodNotOffered, "\(edition.item) is not sold by the \(period.rawValue)")
        }
        try requireVerified(holder, product: version.productsByID[edition.product]!)
        guard holder.subject == edition.subject else {
            throw TallyError(.wrongSubject, "\(edition.item) is for \(edition.subject.rawValue) accounts; this one is \(holder.subject.rawValue)")
        }
        var start = env.now
        if let current = holder.memberships[edition.product], current.isActive(at: env.now) {
            if current.edition == edition.item {
                start = current.expires
            } else if let held = version.editionsByItem[current.edition], held.rank > edition.rank {
                throw TallyError(.downgradeNotAllowed, "\(current.edition) is active until it expires; a downgrade is not allowed")
            } else {
                throw TallyError(.editionConflict, "\(current.edition) is active: upgrade it to \(edition.item) instead of buying a second edition")
            }
        }
        guard let amount = unitPrice.multiplied(by: count) else {
            throw TallyError(.amountOutOfRange, "the order's amount overflows")
        }
        let payment = try PaymentRule.plan(amount, product: edition.product, account: holder, at: env.now)
        let expires = state.tally.zone.adding(months: period.months * count, to: start)
        let previous = holder.memberships[edition.product]
        var membership = Membership(edition: edition.item, product: edition.product,
                                    started: previous?.isActive(at: env.now) == true ? previous!.started : env.now, expires: expires)
        membership.seats = previous?.isActive(at: env.now) == true ? previous!.seats : []
        let order = Order(id: env.ids.next("ord"), ref: ref, account: account, product: edition.product,
                          kind: .membership(item: edition.item, period: period, count: count),
                          amount: amount, payment: payment, at: env.now, packs: [])
        let transaction = LedgerTransaction(id: env.ids.next("txn"), at: env.now, kind: "purchase",
            entries: PaymentRule.debits(payment, account: account) + [.money(.revenue(edition.product), amount)])
        state.emit(.orderPlaced(order: order, packs: [], membership: membership, transaction: transaction))
        return order
    }

    private func requireVerified(_ holder: Account, product: Product) throws(TallyError) {
        guard holder.verified || !product.requiresVerification else {
            throw TallyError(.notVerified, "buying \(product.id) needs a verified (real-name) account")
        }
    }
}

/// Renews the membership one holds (or last held) of a product for more months or years.
public struct Renew: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let product: String
    public let quantity: Buy.Quantity
    public let ref: String?

    public init(account: String, product: String, quantity: Buy.Quantity, ref: String? = nil) {
        self.account = account
        self.product = product
        self.quantity = quantity
        self.ref = ref
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Receipt {
        guard let membership = try state.tally.account(account).memberships[product] else {
            throw TallyError(.noMembership, "the account holds no \(product) membership to renew")
        }
        return try Buy(account: account, item: membership.edition, quantity: quantity, ref: ref).execute(&state, env)
    }
}

/// Upgrades an active membership to a higher edition of the same subject, keeping its expiry and
/// charging the yearly price difference for the remaining term (SPEC 2.1).
public struct Upgrade: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let to: String
    public let ref: String?

    public init(account: String, to: String, ref: String? = nil) {
        self.account = account
        self.to = to
        self.ref = ref
    }

    /// The fee the upgrade would cost now, without buying: the price preview.
    public static func preview(account holder: Account, to target: Edition, state: TallyState, at instant: Instant) throws(TallyError) -> (from: Edition, fee: Money, expires: Instant) {
        guard let current = holder.memberships[target.product] else {
            throw TallyError(.noMembership, "the account holds no \(target.product) membership to upgrade")
        }
        guard current.isActive(at: instant) else {
            throw TallyError(.membershipExpired, "the membership has expired: buy \(target.item) instead")
        }
        let version = state.catalog.version(at: instant)
        guard let held = version.editionsByItem[current.edition] else { throw TallyError(.unknownEdition, "\(current.edition) is no longer sold") }
        guard held.subject == target.subject else {
            throw TallyError(.wrongSubject, "an upgrade stays within the \(held.subject.rawValue) editions")
        }
        guard target.rank > held.rank else {
            throw target.rank < held.rank
                ? TallyError(.downgradeNotAllowed, "\(held.item) is active until it expires; a downgrade is not allowed")
                : TallyError(.notAnUpgrade, "\(target.item) is not above \(held.item)")
        }
        let fee = UpgradeRule.fee(from: held, to: target, now: instant, expiry: current.expires, zone: state.zone)
        return (held, fee, current.expires)
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Receipt {
        let holder = try state.tally.account(account)
        if let ref {
            try Limits.identifier(ref, "an order reference")
            guard state.tally.order(account: account, ref: ref) == nil else {
                throw TallyError(.duplicateRef, "the account already has an order with reference \(ref)")
            }
        }
        guard !holder.suspended else { throw TallyError(.accountSuspended, "the account is suspended for content violations") }
        guard let target = state.tally.catalog.version(at: env.now).editionsByItem[to] else {
            throw TallyError(.unknownItem, "the catalog sells no edition \(to)")
        }
        let (held, fee, _) = try Upgrade.preview(account: holder, to: target, state: state.tally, at: env.now)
        let payment = try PaymentRule.plan(fee, product: target.product, account: holder, at: env.now)
        var membership = holder.memberships[target.product]!
        membership.edition = target.item
        let order = Order(id: env.ids.next("ord"), ref: ref, account: account, product: target.product,
                          kind: .upgrade(from: held.item, to: target.item), amount: fee, payment: payment, at: env.now, packs: [])
        let transaction = LedgerTransaction(id: env.ids.next("txn"), at: env.now, kind: "upgrade",
            entries: PaymentRule.debits(payment, account: account) + [.money(.revenue(target.product), fee)])
        state.emit(.orderPlaced(order: order, packs: [], membership: membership, transaction: transaction))
        return order
    }
}

/// Refunds an order of packs in full when SPEC 5 allows it: each sub-account gets back what it
/// paid (vouchers are not returned) and the packs are revoked.
public struct Refund: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let ref: String

    public init(account: String, ref: String) {
        self.account = account
        self.ref = ref
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Money {
        _ = try state.tally.account(account)
        guard let order = state.tally.order(account: account, ref: ref) else {
            throw TallyError(.orderNotFound, "the account has no order \(ref)")
        }
        try RefundRule.check(order: order, state: state.tally, at: env.now)
        let packs = order.packs.compactMap { state.tally.packs[$0] }
        let transaction = RefundRule.transaction(order: order, packs: packs, id: env.ids.next("txn"), at: env.now)
        state.emit(.orderRefunded(order: order.id, at: env.now, transaction: transaction))
        return order.payment.gift + order.payment.income + order.payment.cash
    }
}
