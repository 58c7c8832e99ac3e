import TallyCore

/// The bill run for a month (SPEC 4): closes the month to usage, then makes one bill per account
/// and product with post-paid calls, deducts it (gift, income, then cash, which may go negative)
/// and puts accounts left below zero in arrears. Running it again charges nothing twice.
public struct RunBills: AcrossPartitions {
    public var placement: Placement { .across }
    public let month: Month
    /// The accounts to bill in this call; nil for all. The command line bills in chunks so that it
    /// can show progress and restart where it stopped (bill ids are deterministic, so a chunk run
    /// twice charges nothing twice).
    public let accounts: [String]?

    /// Whether this part closes the month when it is still open: the first part does.
    let closesMonth: Bool

    public init(month: Month, accounts: [String]? = nil) {
        self.init(month: month, accounts: accounts, closesMonth: true)
    }

    init(month: Month, accounts: [String]?, closesMonth: Bool) {
        self.month = month
        self.accounts = accounts
        self.closesMonth = closesMonth
    }

    public func parts(_ partitioning: Partitioning) -> [(partition: Int, part: RunBills)] {
        guard let accounts else {
            return (0..<partitioning.count).map { ($0, RunBills(month: month, accounts: nil, closesMonth: $0 == 0)) }
        }
        let groups = partitioning.split(accounts)
        guard !groups.isEmpty else { return [(0, self)] }
        return groups.enumerated().map { ($1.partition, RunBills(month: month, accounts: $1.accounts, closesMonth: $0 == 0)) }
    }

    /// A run that closes its month holds every partition: no usage for the month is taken
    /// anywhere once it is closed.
    public func sharesFacts(_ global: GlobalState) -> Bool { global.closedThrough.map { month > $0 } ?? true }

    public func gather(_ parts: [(part: RunBills, output: Result)]) -> Result {
        let created = parts.flatMap(\.output.created).sorted { ($0.account, $0.product) < ($1.account, $1.product) }
        return Result(created: created, existing: parts.reduce(0) { $0 + $1.output.existing })
    }

    /// The accounts with usage in `month`, sorted: what a chunked bill run walks through.
    public static func accountsWithUsage(in month: Month, _ state: TallyState) -> [String] {
        Set(state.monthly.keys.lazy.filter { $0.month == month }.map(\.account)).sorted()
    }

    public var isBulk: Bool { true }

    public struct Result: Sendable {
        /// Bills made by this run, by account then product.
        public let created: [Bill]
        /// Bills that an earlier run had made already.
        public let existing: Int
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Result {
        let zone = state.tally.zone
        guard env.now >= zone.end(of: month) else {
            throw TallyError(.monthNotOver, "\(month) is not over yet; its bill run starts on the 1st of the next month")
        }
        if closesMonth, state.tally.closedThrough.map({ month > $0 }) ?? true {
            state.emit(.monthClosed(month: month, at: env.now))
        }
        var byAccount: [String: [String: MonthlyUsage]] = [:]
        if let accounts {
            let apis = Set(state.tally.catalog.versions.flatMap { $0.apisByID.keys })
            for account in accounts {
                for api in apis {
                    if let totals = state.tally.monthly[MonthlyKey(account: account, api: api, month: month)] {
                        byAccount[account, default: [:]][api] = totals
                    }
                }
            }
        } else {
            for (key, totals) in state.tally.monthly where key.month == month {
                byAccount[key.account, default: [:]][key.api] = totals
            }
        }
        var created: [Bill] = []
        var existing = 0
        let catalog = state.tally.catalog
        let version = catalog.version(at: zone.start(of: month))
        for account in byAccount.keys.sorted() {
            var byProduct: [String: [String: MonthlyUsage]] = [:]
            for (api, totals) in byAccount[account]! {
                let product = version.apisByID[api]?.product ?? catalog.versions.lazy.compactMap { $0.apisByID[api]?.product }.first ?? api
                byProduct[product, default: [:]][api] = totals
            }
            var billed = false
            for product in byProduct.keys.sorted() where byProduct[product]!.values.contains(where: { $0.postpaid > 0 }) {
                let id = "bill_\(account)_\(product)_\(month)"
                billed = true
                if state.tally.bills[id] != nil { existing += 1; continue }
                let lines = BillingRule.lines(account: account, product: product, month: month, usage: byProduct[product]!, catalog: catalog)
                let total = lines.reduce(Money.zero) { $0 + $1.amount }
                let holder = state.tally.accounts[account]!
                let paid = PaymentRule.deduct(total, from: holder)
                let bill = Bill(id: id, account: account, product: product, month: month, lines: lines, total: total, at: env.now, paid: paid)
                let transaction = LedgerTransaction(id: env.ids.next("txn"), at: env.now, kind: "bill",
                    entries: PaymentRule.debits(paid, account: account) + [.money(.revenue(product), total)])
                state.emit(.billPosted(bill: bill, transaction: transaction))
                state.notify(kind: "bill_created", account: account, at: env.now, ids: env.ids,
                             ["bill": id, "month": month.description, "total": total.description])
                created.append(bill)
            }
            // After the account's bills, new or found from an earlier run: a run that stopped
            // after a bill and before its arrears (a store that wrote them apart) is completed here.
            let after = state.tally.accounts[account]!
            if billed, after.balance.isNegative, !after.inArrears {
                state.emit(.statusChanged(account: account, change: .enteredArrears, at: env.now))
                state.notify(kind: "account_in_arrears", account: account, at: env.now, ids: env.ids,
                             ["balance": after.balance.description])
            }
        }
        return Result(created: created, existing: existing)
    }
}

/// Assigns a seat of the account's membership to a user (the premium edition has 6).
public struct AssignSeat: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let product: String?
    public let user: String

    public init(account: String, product: String? = nil, user: String) {
        self.account = account
        self.product = product
        self.user = user
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Int64 {
        try Limits.identifier(user, "a user id", lengthMax: Limits.seatUserLengthMax)
        let holder = try state.tally.account(account)
        let candidates = holder.memberships.values.filter { product == nil || $0.product == product }.sorted { $0.product < $1.product }
        guard let membership = candidates.first(where: { $0.isActive(at: env.now) }) else {
            throw candidates.isEmpty ? TallyError(.noMembership, "the account holds no membership")
                : TallyError(.membershipExpired, "the membership has expired")
        }
        guard let edition = state.tally.catalog.version(at: env.now).editionsByItem[membership.edition] else {
            throw TallyError(.unknownEdition, "\(membership.edition) is no longer in the catalog")
        }
        if membership.seats.contains(user) { return edition.seats - Int64(membership.seats.count) }
        guard Int64(membership.seats.count) < edition.seats else {
            throw TallyError(.seatsFull, "all \(edition.seats) seats of \(edition.item) are assigned")
        }
        state.emit(.seatAssigned(account: account, product: membership.product, user: user, at: env.now))
        return edition.seats - Int64(membership.seats.count) - 1
    }
}

/// Answers whether a user of an account may use a feature; with `use`, spends one of a limited
/// feature's monthly uses.
public struct CheckEntitlement: Operation {
    public var placement: Placement { .account(account) }
    public let account: String
    public let feature: String
    public let user: String?
    public let use: Bool

    public init(account: String, feature: String, user: String? = nil, use: Bool = false) {
        self.account = account
        self.feature = feature
        self.user = user
        self.use = use
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> EntitlementRule.Decision {
        try Limits.identifier(feature, "a feature", lengthMax: Limits.featureLengthMax)
        let holder = try state.tally.account(account)
        let decision = try EntitlementRule.check(account: holder, feature: feature, user: user, use: use,
                                                 catalog: state.tally.catalog, at: env.now)
        if let key = decision.useKey { state.emit(.entitlementUsed(account: account, key: key, at: env.now)) }
        return decision
    }
}

/// Publishes a catalog change (SPEC 2.4). A change that cuts a free quota or raises a price must
/// take effect at least 30 days after publishing unless forced; every affected account is told.
public struct PublishCatalog: AcrossPartitions {
    public var placement: Placement { .across }
    public let effective: Instant
    /// The change as YAML: `products: [...]` for a whole version or `changes: [...]` for edits.
    public let changes: String
    public let force: Bool

    /// Whether this part publishes the change (the first does); the others tell their accounts.
    let publishes: Bool

    public init(effective: Instant, changes: String, force: Bool = false) {
        self.init(effective: effective, changes: changes, force: force, publishes: true)
    }

    init(effective: Instant, changes: String, force: Bool, publishes: Bool) {
        self.effective = effective
        self.changes = changes
        self.force = force
        self.publishes = publishes
    }

    /// One part a partition; each judges the change against the catalog before it.
    public func parts(_ partitioning: Partitioning) -> [(partition: Int, part: PublishCatalog)] {
        (0..<partitioning.count).map { ($0, PublishCatalog(effective: effective, changes: changes, force: force, publishes: $0 == 0)) }
    }

    public func sharesFacts(_ global: GlobalState) -> Bool { true }

    public func gather(_ parts: [(part: PublishCatalog, output: [String])]) -> [String] {
        parts.flatMap(\.output).sorted()
    }

    /// It walks every account for its notices.
    public var isBulk: Bool { true }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> [String] {
        guard changes.utf8.count <= 1_000_000 else { throw TallyError(.invalidCatalog, "a catalog change is at most 1 MB") }
        guard effective >= env.now else { throw TallyError(.invalidTimestamp, "a catalog change cannot take effect in the past") }
        let old = state.tally.catalog.version(at: effective)
        let new = try CatalogChange.apply(changes, to: old, effective: effective)
        let adverse = CatalogChange.adverseChanges(from: old, to: new)
        let noticeEnd = env.now.adding(seconds: CatalogChange.noticeDaysMin * 86_400)
        if !adverse.isEmpty, effective < noticeEnd, !force {
            let reasons = adverse.values.flatMap { $0 }.sorted().joined(separator: "; ")
            throw TallyError(.noticePeriodTooShort,
                             "a change that cuts a free quota or raises a price takes effect at least \(CatalogChange.noticeDaysMin) days after publishing (\(reasons))")
        }
        if publishes { state.emit(.catalogPublished(effective: effective, changes: changes, at: env.now)) }
        let zone = state.tally.zone
        var affected: [String] = []
        for id in state.tally.accounts.keys.sorted() {
            let holder = state.tally.accounts[id]!
            let holds = Set(holder.activated.keys).union(holder.memberships.keys)
                .union(holder.packs.compactMap { state.tally.packs[$0].flatMap { old.apisByID[$0.api]?.product } })
            let touched = adverse.keys.filter { holds.contains($0) }.sorted()
            guard !touched.isEmpty else { continue }
            affected.append(id)
            state.notify(kind: "catalog_change_scheduled", account: id, at: env.now, ids: env.ids,
                         ["effective": effective.rfc3339(in: zone), "products": touched.joined(separator: ","),
                          "changes": touched.flatMap { adverse[$0]! }.sorted().joined(separator: "; ")])
        }
        return affected
    }
}

extension Tally {
    /// What a whole bill run did.
    public struct BillRunTotals: Sendable {
        public let accounts: Int
        public let created: Int
        public let existing: Int
        public let total: Money
    }

    /// Accounts billed per step: a step is one pass through the engine's gate and one store
    /// transaction (the journal never cuts an entry), so a check waits for at most one step, and
    /// a stopped run resumes between two steps (docs/decisions.md, "Bounded lock holds").
    public static let billRunChunkAccounts = 256
    /// Steps under way at once: while one step's bills are written, the next is settled and encoded.
    public static let billRunChunksInFlight = 4

    /// The bill run for `month` over every account with usage, in chunks of accounts, so that a
    /// caller can show progress and a stopped run resumes where it stopped (bill ids are
    /// deterministic, and each chunk is durable on its own). The first step closes the month even
    /// when no account had usage.
    public func runBills(month: Month, progress: (_ done: Int, _ of: Int) -> Void = { _, _ in }) async throws(TallyError) -> BillRunTotals {
        // The month is closed first, holding every partition; then each partition's accounts are
        // billed in steps of its own.
        let closing = try await perform(RunBills(month: month, accounts: []))
        let byPartition = readEach { RunBills.accountsWithUsage(in: month, $0) }
        let accounts = byPartition.flatMap { $0 }
        let chunks = byPartition.flatMap { $0.chunks(of: Tally.billRunChunkAccounts) }
        var created = closing.created.count, existing = closing.existing, done = 0
        var total = Money.zero
        do {
            try await forEach(chunks, atMost: Tally.billRunChunksInFlight) { chunk in
                (chunk.count, try await self.perform(RunBills(month: month, accounts: chunk)))
            } finished: { count, result in
                created += result.created.count
                existing += result.existing
                total += result.created.reduce(.zero) { $0 + $1.total }
                done += count
                progress(done, accounts.count)
            }
        } catch let error as TallyError {
            throw error
        } catch {
            throw TallyError(.internalError, "the bill run stopped: \(error)")
        }
        return BillRunTotals(accounts: accounts.count, created: created, existing: existing, total: total)
    }
}
