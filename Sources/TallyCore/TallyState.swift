/// Everything Tally knows, rebuilt from facts. Pure data: decisions read it, and `apply` is the
/// only thing that changes it.
public struct TallyState: Sendable {
    public private(set) var catalog: Catalog
    public private(set) var accounts: [String: Account] = [:]
    public private(set) var packs: [String: Pack] = [:]
    public private(set) var orders: [String: Order] = [:]
    /// Order ids by account and the caller's reference.
    public private(set) var orderRefs: [String: [String: String]] = [:]
    /// Usage events by (account, id): the idempotency index, compact (see `UsageEntry`). It holds
    /// the events recorded since `usageIndexedFrom`; older ones are left to the store.
    public private(set) var usage = UsageIndex()
    /// Events recorded before this instant are not in `usage` (nil: every event is). Memory then
    /// grows with the events of the retention window, not with all events ever recorded.
    public private(set) var usageIndexedFrom: Instant?
    /// Where the keys of events that are not (or no longer) in `usage` go, when the engine keeps
    /// track of them: it then finds an old id sent again before the store refuses it.
    public var retiredKeys: RetiredUsageKeys?
    /// With `retiredKeys`: the most events a generation of the index holds. When the current one
    /// fills, the previous generation's keys go to `retiredKeys`, so that the index keeps between
    /// one and two generations of the latest events (a gateway's retries are answered from
    /// memory) and every older id costs 2 bytes in the filter and one store read if it comes back.
    /// Nil: the index keeps every event of its window.
    public var usageCacheGeneration: Int?
    /// Every usage event applied, indexed or not.
    public private(set) var usageEvents: Int64 = 0
    public private(set) var monthly: [MonthlyKey: MonthlyUsage] = [:]
    public private(set) var bills: [String: Bill] = [:]
    /// Months whose bill run has started: usage for them (and earlier ones) is refused.
    public private(set) var closedThrough: Month?
    /// Every money transaction (top-ups, purchases, bills, refunds ...), in order. Pack draws by
    /// usage, one per event, are not kept here: memory would grow with every event; they are
    /// posted to `ledgerBalances` and kept by the store.
    public private(set) var ledger: [LedgerTransaction] = []
    /// Balances recomputed from every transaction's entries as it is applied, usage included:
    /// what the audit compares the state's own fields against.
    public private(set) var ledgerBalances = LedgerBalances()
    /// How many transactions have been applied, usage included.
    public private(set) var transactionCount = 0
    public private(set) var notices: [Notice] = []
    /// What each account owns in the tables above, so that one account's list reads its own rows
    /// rather than every account's (reads hold the engine's lock, and a gateway waits behind it).
    public private(set) var billIDsByAccount: [String: [String]] = [:]
    public private(set) var orderIDsByAccount: [String: [String]] = [:]
    /// Positions in `notices`.
    public private(set) var noticesByAccount: [String: [Int]] = [:]
    /// The keys of `monthly` of each account, in the order they first had usage.
    public private(set) var monthlyKeysByAccount: [String: [MonthlyKey]] = [:]
    /// Ids of notices sent, so that a notice owed once (pack expiring) is sent once.
    public private(set) var noticeIDs: Set<String> = []
    /// Catalog changes published, by effective instant, for the 30-day rule and its notices.
    public private(set) var publications: [Instant: Instant] = [:]
    /// Counts every pack created, so that packs bought in the same instant keep their order.
    public private(set) var packSequence: Int64 = 0
    public private(set) var factCount: Int64 = 0
    /// API keys by id, and key ids by digest for the lookup on every request.
    public private(set) var keys: [String: APIKey] = [:]
    public private(set) var keyIDsByDigest: [String: String] = [:]
    public private(set) var webhookEndpoints: [String: WebhookEndpoint] = [:]
    /// Notices delivered, per endpoint: what the webhook outbox no longer owes.
    public private(set) var deliveries: Set<DeliveryKey> = []

    /// The catalog as shipped, before any published change: what a rebuild from facts starts from.
    public let baseCatalog: Catalog

    public init(catalog: Catalog) {
        self.catalog = catalog
        self.baseCatalog = catalog
    }

    public var zone: Zone { catalog.zone }

    public static func usageKey(account: String, id: String) -> UsageKey { UsageKey(account: account, id: id) }

    /// The idempotency key of a usage event. Its hash is taken once, with the process's seeded
    /// hasher, and kept: the index's shard and a dictionary's rehash as it grows then cost a
    /// word, not both texts again.
    public struct UsageKey: Hashable, Sendable {
        public let account: String
        public let id: String
        let digest: Int

        init(account: String, id: String) {
            self.account = account
            self.id = id
            var hasher = Hasher()
            hasher.combine(account)
            hasher.combine(id)
            digest = hasher.finalize()
        }

        public static func == (a: UsageKey, b: UsageKey) -> Bool { a.digest == b.digest && a.id == b.id && a.account == b.account }

        public func hash(into hasher: inout Hasher) { hasher.combine(digest) }

        /// What a dictionary asks for: the kept digest mixed with the dictionary's own seed by
        /// SplitMix64's finalizer, instead of a fresh SipHash of the digest (a tenth of the
        /// index's cost). The digest is already a seeded hash of the texts, so crafted ids still
        /// spread; the seed still gives each dictionary its own order.
        public func _rawHashValue(seed: Int) -> Int {
            Int(truncatingIfNeeded: Mix64.finalize(UInt64(truncatingIfNeeded: digest) ^ UInt64(truncatingIfNeeded: seed)))
        }
    }

    public func account(_ id: String) throws(TallyError) -> Account {
        guard let account = accounts[id] else { throw TallyError(.accountNotFound, "there is no account \(id)") }
        return account
    }

    public func order(account: String, ref: String) -> Order? {
        if let id = orderRefs[account]?[ref] { return orders[id] }
        if let order = orders[ref], order.account == account { return order }
        return nil
    }

    /// The account's packs of an API that can be drawn at `instant`, in drawing order: earliest
    /// expiry first, then the earliest created.
    public func drawablePacks(account: Account, api: String, at instant: Instant) -> [Pack] {
        var drawable = Array(usablePacks(account: account, api: api, at: instant))
        if drawable.count > 1 { drawable.sort { ($0.expires, $0.sequence) < ($1.expires, $1.sequence) } }
        return drawable
    }

    /// The account's open bought packs of an API usable at `instant`, in creation order, read as
    /// they are walked (nothing listed): what settlement draws on and the QPS limit reads.
    public func usablePacks(account: Account, api: String, at instant: Instant) -> some Sequence<Pack> {
        // The closure holds the pack table, not `self`: capturing the state copied all of it.
        let packs = self.packs
        return account.open.lazy.compactMap { packs[$0] }.filter { $0.api == api && $0.isUsable(at: instant) }
    }

    /// One account's bills, orders and notices, by id.
    public func bills(of account: String) -> [Bill] {
        (billIDsByAccount[account] ?? []).compactMap { bills[$0] }.sorted { $0.id < $1.id }
    }

    public func orders(of account: String) -> [Order] {
        (orderIDsByAccount[account] ?? []).compactMap { orders[$0] }.sorted { $0.id < $1.id }
    }

    public func notices(of account: String) -> [Notice] {
        (noticesByAccount[account] ?? []).map { notices[$0] }.sorted { $0.id < $1.id }
    }

    public func freePack(account: Account, api: String, month: Month) -> Pack? {
        account.freePacks[Account.FreeKey(api: api, month: month)].flatMap { packs[$0] }
    }

    // MARK: - Applying facts

    /// Applies a fact. `usageKey`, for a usage fact, is its index key when the caller has made it
    /// already (the engine does, to look for a duplicate): the texts are then hashed once an event.
    public mutating func apply(_ fact: Fact, usageKey: UsageKey? = nil) {
        factCount += 1
        if let transaction = fact.transaction {
            ledgerBalances.post(transaction)
            transactionCount += 1
            if transaction.kind != "usage" { ledger.append(transaction) }
        }
        switch fact {
        case .accountOpened(let id, let subject, let verified, let at):
            accounts[id] = Account(id: id, subject: subject, verified: verified, opened: at)
        case .accountVerified(let id, let subject, _):
            accounts[id]?.verified = true
            accounts[id]?.subject = subject
        case .moneyCredited(let id, let transaction):
            credit(id, transaction)
        case .voucherGranted(let voucher, _):
            accounts[voucher.account]?.vouchers.append(voucher)
        case .productActivated(let id, let product, let at):
            accounts[id]?.activated[product] = at
        case .packGranted(let pack, _):
            add(pack)
            if case .free(let month) = pack.source {
                accounts[pack.account]?.freePacks[Account.FreeKey(api: pack.api, month: month)] = pack.id
            }
        case .orderPlaced(let order, let newPacks, let membership, _):
            if orders.updateValue(order, forKey: order.id) == nil { orderIDsByAccount[order.account, default: []].append(order.id) }
            if let ref = order.ref { orderRefs[order.account, default: [:]][ref] = order.id }
            pay(order.account, order.payment)
            newPacks.forEach { add($0) }
            if let membership { accounts[order.account]?.memberships[membership.product] = membership }
        case .usageRecorded(let usageRecord, _):
            recordUsage(usageRecord, key: usageKey ?? TallyState.usageKey(account: usageRecord.account, id: usageRecord.id))
        case .monthClosed(let month, _):
            if closedThrough.map({ month > $0 }) ?? true { closedThrough = month }
        case .billPosted(let bill, _):
            if bills.updateValue(bill, forKey: bill.id) == nil { billIDsByAccount[bill.account, default: []].append(bill.id) }
            pay(bill.account, bill.paid)
        case .orderRefunded(let id, _, let transaction):
            guard let order = orders[id] else { return }
            orders[id]?.refunded = true
            order.packs.forEach { packs[$0]?.revoked = true }
            accounts[order.account]?.open.removeAll { order.packs.contains($0) }
            credit(order.account, transaction)
        case .statusChanged(let id, let change, _):
            switch change {
            case .enteredArrears: accounts[id]?.inArrears = true
            case .restored: accounts[id]?.inArrears = false
            case .suspended: accounts[id]?.suspended = true
            case .unsuspended: accounts[id]?.suspended = false
            case .refundReviewOn: accounts[id]?.refundReview = true
            case .refundReviewOff: accounts[id]?.refundReview = false
            }
        case .seatAssigned(let id, let product, let user, _):
            accounts[id]?.memberships[product]?.seats.append(user)
        case .entitlementUsed(let id, let key, _):
            accounts[id]?.entitlementUses[key, default: 0] += 1
        case .catalogPublished(let effective, let changes, let at):
            // The change was validated before the fact was made; a fact that no longer applies
            // (impossible unless the file was edited by hand) is skipped rather than crashing recovery.
            if let version = try? CatalogChange.apply(changes, to: catalog.version(at: effective), effective: effective) {
                catalog.add(version)
                publications[effective] = at
            }
        case .notified(let notice):
            if let account = notice.account { noticesByAccount[account, default: []].append(notices.count) }
            notices.append(notice)
            noticeIDs.insert(notice.id)
        case .keyIssued(let key):
            keys[key.id] = key
            keyIDsByDigest[key.digest] = key.id
        case .keyRevoked(let id, let at):
            keys[id]?.revoked = at
        case .webhookEndpointAdded(let endpoint):
            webhookEndpoints[endpoint.id] = endpoint
        case .webhookEndpointRemoved(let id, _):
            webhookEndpoints[id] = nil
        case .webhookDelivered(let delivery, _):
            deliveries.insert(delivery)
        }
    }

    private mutating func add(_ pack: Pack) {
        packSequence += 1
        packs[pack.id] = pack
        accounts[pack.account]?.packs.append(pack.id)
        if !pack.isFree, !pack.revoked, pack.left > 0 { accounts[pack.account]?.open.append(pack.id) }
    }

    /// Posts the customer sub-account entries of a transaction to the account's balances.
    private mutating func credit(_ id: String, _ transaction: LedgerTransaction) {
        for entry in transaction.entries where entry.unit == .microyuan {
            let amount = Money(microyuan: entry.amount)
            if entry.account == .cash(id) {
                accounts[id]?.cash += amount
            } else if entry.account == .income(id) {
                accounts[id]?.income += amount
            } else if entry.account == .gift(id) {
                accounts[id]?.gift += amount
            }
        }
    }

    private mutating func pay(_ id: String, _ payment: Payment) {
        guard var account = accounts[id] else { return }
        for draw in payment.vouchers {
            if let index = account.vouchers.firstIndex(where: { $0.id == draw.voucher }) {
                account.vouchers[index].remaining -= draw.amount
            }
        }
        account.gift -= payment.gift
        account.income -= payment.income
        account.cash -= payment.cash
        accounts[id] = account
    }

    /// Leaves out of the idempotency index every event recorded before `cutoff`, now and as facts
    /// are applied later (a rebuild sets it before replaying). Totals, packs and balances keep
    /// every event; only the per-event entries go. The cutoff never moves back.
    public mutating func forgetUsage(recordedBefore cutoff: Instant) {
        if let from = usageIndexedFrom, from >= cutoff { return }
        usageIndexedFrom = cutoff
        if !usage.isEmpty {
            let dropped = usage.keep(recordedFrom: cutoff)
            retiredKeys?.insert(contentsOf: dropped)
        }
    }

    /// Puts events the store still holds back into the index, whatever their age: what the engine
    /// does when an id older than the index comes back (`StoreConflict.known`).
    public mutating func remember(_ entries: [UsageKey: UsageEntry]) {
        usage.merge(entries)
    }

    private mutating func recordUsage(_ record: UsageRecord, key: UsageKey) {
        assert(key.account == record.account && key.id == record.id, "a usage fact applied under another event's key")
        usageEvents += 1
        if usageIndexedFrom.map({ record.recorded >= $0 }) ?? true {
            usage[key] = UsageEntry(record)
            if let generation = usageCacheGeneration, let retiredKeys, usage.currentCount >= generation {
                retiredKeys.insert(contentsOf: usage.rotate())
            }
        } else {
            retiredKeys?.insert(key)
        }
        for draw in record.settlement.draws {
            guard let index = packs.index(forKey: draw.pack) else { continue }
            packs.values[index].left -= draw.calls
            if packs.values[index].left == 0, !packs.values[index].isFree { accounts[record.account]?.open.removeAll { $0 == draw.pack } }
        }
        let month = zone.month(of: record.at)
        let totalsKey = MonthlyKey(account: record.account, api: record.api, month: month)
        // Changed in place: a copy taken out and written back would copy its daily tables too.
        if Self.add(record, zone: zone, to: &monthly[totalsKey, default: MonthlyUsage()]) {
            monthlyKeysByAccount[record.account, default: []].append(totalsKey)
        }
    }

    /// Adds the record to the totals; true when they were new (every event counts calls accepted
    /// or refused, so totals that have seen one are never all zero).
    private static func add(_ record: UsageRecord, zone: Zone, to totals: inout MonthlyUsage) -> Bool {
        let new = totals.calls == 0 && totals.refused == 0
        let settlement = record.settlement
        totals.calls += settlement.accepted
        totals.free += settlement.free
        totals.pack += settlement.pack
        totals.postpaid += settlement.postpaid
        totals.refused += settlement.refused
        if let edition = record.edition { totals.byEdition[edition, default: 0] += settlement.accepted }
        if settlement.accepted > 0 { totals.callsByDay[zone.date(of: record.at).day, default: 0] += settlement.accepted }
        if settlement.postpaid > 0 { totals.postpaidByDay[zone.date(of: record.at).day, default: 0] += settlement.postpaid }
        return new
    }
}
