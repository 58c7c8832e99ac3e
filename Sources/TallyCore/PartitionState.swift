/// What every partition shares, and is the same in all of them: the catalog and its publications,
/// API keys, webhook endpoints and deliveries, and the months closed. Read on nearly every request
/// and written rarely (docs/decisions.md, "Partitions").
public struct GlobalState: Sendable {
    public fileprivate(set) var catalog: Catalog
    /// The catalog as shipped, before any published change: what a rebuild from facts starts from.
    public let baseCatalog: Catalog
    /// Catalog changes published, by effective instant, for the 30-day rule and its notices.
    public fileprivate(set) var publications: [Instant: Instant] = [:]
    /// Months whose bill run has started: usage for them (and earlier ones) is refused.
    public fileprivate(set) var closedThrough: Month?
    /// API keys by id, and key ids by digest for the lookup on every request.
    public fileprivate(set) var keys: [String: APIKey] = [:]
    public fileprivate(set) var keyIDsByDigest: [String: String] = [:]
    public fileprivate(set) var webhookEndpoints: [String: WebhookEndpoint] = [:]
    /// Notices delivered, per endpoint: what the webhook outbox no longer owes.
    public fileprivate(set) var deliveries: Set<DeliveryKey> = []
    /// The shared facts applied.
    public fileprivate(set) var factCount: Int64 = 0

    public var zone: Zone { catalog.zone }

    init(catalog: Catalog) {
        self.catalog = catalog
        baseCatalog = catalog
    }

    /// Applies a fact if it is one of the shared ones; false for a partition's fact.
    mutating func apply(_ fact: Fact) -> Bool {
        switch fact {
        case .monthClosed(let month, _):
            if closedThrough.map({ month > $0 }) ?? true { closedThrough = month }
        case .catalogPublished(let effective, let changes, let at):
            // The change was validated before the fact was made; a fact that no longer applies
            // (impossible unless the file was edited by hand) is skipped rather than crashing recovery.
            if let version = try? CatalogChange.apply(changes, to: catalog.version(at: effective), effective: effective) {
                catalog.add(version)
                publications[effective] = at
            }
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
        default:
            return false
        }
        factCount += 1
        return true
    }
}

/// A partition's own state: its accounts and everything they own (packs, orders, bills, monthly
/// totals, the ledger's transactions and balances, the usage index and its filter, notices).
/// Today there is one, holding every account.
public struct PartitionState: Sendable {
    /// The catalog's time zone: the month and day usage falls on.
    public let zone: Zone
    public fileprivate(set) var accounts: [String: Account] = [:]
    public fileprivate(set) var packs: [String: Pack] = [:]
    public fileprivate(set) var orders: [String: Order] = [:]
    /// Order ids by account and the caller's reference.
    public fileprivate(set) var orderRefs: [String: [String: String]] = [:]
    /// Usage events by (account, id): the idempotency index, compact (see `UsageEntry`). It holds
    /// the events recorded since `usageIndexedFrom`; older ones are left to the store.
    public fileprivate(set) var usage = UsageIndex()
    /// Events recorded before this instant are not in `usage` (nil: every event is). Memory then
    /// grows with the events of the retention window, not with all events ever recorded.
    public fileprivate(set) var usageIndexedFrom: Instant?
    /// Where the keys of events that left `usage` while their ids still count go, when the engine keeps
    /// track of them: it then finds an old id sent again before the store refuses it.
    public var retiredKeys: RetiredUsageKeys?
    /// With `retiredKeys`: the most events a generation of the index holds. When the current one
    /// fills, the previous generation's keys go to `retiredKeys`, so that the index keeps between
    /// one and two generations of the latest events (a gateway's retries are answered from
    /// memory) and every older id costs 2 bytes in the filter and one store read if it comes back.
    /// Nil: the index keeps every event of its window.
    public var usageCacheGeneration: Int? {
        didSet { if usage.isEmpty { usage = UsageIndex(generation: usageCacheGeneration) } }
    }
    /// Whether a full generation waits for `rotateIfFull` rather than rotating as an event is
    /// recorded: the engine's states do, so that no id leaves the index in the middle of an
    /// operation, after the operation looked for the ids it may repeat (a rebuild rotates as
    /// it goes).
    public var holdsRotation = false
    /// Every usage event applied, indexed or not.
    public fileprivate(set) var usageEvents: Int64 = 0
    public fileprivate(set) var monthly: [MonthlyKey: MonthlyUsage] = [:]
    public fileprivate(set) var bills: [String: Bill] = [:]
    /// Every money transaction (top-ups, purchases, bills, refunds ...), in order. Pack draws by
    /// usage, one per event, are not kept here: memory would grow with every event; they are
    /// posted to `ledgerBalances` and kept by the store.
    public fileprivate(set) var ledger: [LedgerTransaction] = []
    /// Balances recomputed from every transaction's entries as it is applied, usage included:
    /// what the audit compares the state's own fields against.
    public fileprivate(set) var ledgerBalances = LedgerBalances()
    /// How many transactions have been applied, usage included.
    public fileprivate(set) var transactionCount = 0
    public fileprivate(set) var notices: [Notice] = []
    /// What each account owns in the tables above, so that one account's list reads its own rows
    /// rather than every account's (reads hold the engine's lock, and a gateway waits behind it).
    public fileprivate(set) var billIDsByAccount: [String: [String]] = [:]
    public fileprivate(set) var orderIDsByAccount: [String: [String]] = [:]
    /// Positions in `notices`.
    public fileprivate(set) var noticesByAccount: [String: [Int]] = [:]
    /// The keys of `monthly` of each account, in the order they first had usage.
    public fileprivate(set) var monthlyKeysByAccount: [String: [MonthlyKey]] = [:]
    /// Ids of notices sent, so that a notice owed once (pack expiring) is sent once.
    public fileprivate(set) var noticeIDs: Set<String> = []
    /// Counts every pack created, so that packs bought in the same instant keep their order.
    public fileprivate(set) var packSequence: Int64 = 0
    /// The partition's facts applied.
    public fileprivate(set) var factCount: Int64 = 0

    init(zone: Zone) { self.zone = zone }

    /// Applies one of the partition's facts (the shared ones go to `GlobalState`).
    mutating func apply(_ fact: Fact, usageKey: TallyState.UsageKey?) {
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
        case .notified(let notice):
            if let account = notice.account { noticesByAccount[account, default: []].append(notices.count) }
            notices.append(notice)
            noticeIDs.insert(notice.id)
        case .monthClosed, .catalogPublished, .keyIssued, .keyRevoked, .webhookEndpointAdded, .webhookEndpointRemoved, .webhookDelivered:
            preconditionFailure("a shared fact applied to a partition: \(fact.kind)")
        }
    }

    /// Adds another partition's accounts and everything they own (`TallyState.merged`).
    mutating func absorb(_ other: PartitionState) {
        func first<T>(_ a: T, _: T) -> T { a }
        accounts.merge(other.accounts, uniquingKeysWith: first)
        packs.merge(other.packs, uniquingKeysWith: first)
        orders.merge(other.orders, uniquingKeysWith: first)
        orderRefs.merge(other.orderRefs, uniquingKeysWith: first)
        usage.merge(Dictionary(other.usage.lazy.map { ($0.key, $0.value) }, uniquingKeysWith: first))
        usageEvents += other.usageEvents
        monthly.merge(other.monthly, uniquingKeysWith: first)
        bills.merge(other.bills, uniquingKeysWith: first)
        ledger.append(contentsOf: other.ledger)
        ledgerBalances.add(other.ledgerBalances)
        transactionCount += other.transactionCount
        notices.append(contentsOf: other.notices)
        noticeIDs.formUnion(other.noticeIDs)
        billIDsByAccount.merge(other.billIDsByAccount, uniquingKeysWith: first)
        orderIDsByAccount.merge(other.orderIDsByAccount, uniquingKeysWith: first)
        monthlyKeysByAccount.merge(other.monthlyKeysByAccount, uniquingKeysWith: first)
        packSequence = max(packSequence, other.packSequence)
        factCount += other.factCount
    }

    /// Puts the notices in the order they were made (stable within an instant) and indexes them
    /// by account again.
    mutating func orderNotices() {
        notices = notices.enumerated().sorted { ($0.element.at, $0.offset) < ($1.element.at, $1.offset) }.map(\.element)
        noticesByAccount = [:]
        for (position, notice) in notices.enumerated() {
            if let account = notice.account { noticesByAccount[account, default: []].append(position) }
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

    /// Leaves out of memory every event id recorded before `cutoff`, now and as facts are applied
    /// later (a rebuild sets it before replaying): out of the index, and the filter's days before
    /// it. Totals, packs and balances keep every event; only the per-event entries go, and the
    /// store's unique index still refuses an id sent again. The cutoff never moves back.
    public mutating func forgetUsage(recordedBefore cutoff: Instant) {
        if let from = usageIndexedFrom, from >= cutoff { return }
        usageIndexedFrom = cutoff
        if !usage.isEmpty { _ = usage.keep(recordedFrom: cutoff) }
        retiredKeys?.forget(recordedBefore: cutoff)
    }

    /// Rotates the index's generations when the current one is full: the previous generation's
    /// keys go to the filter of retired keys.
    public mutating func rotateIfFull() {
        if let generation = usageCacheGeneration, let retiredKeys, usage.currentCount >= generation {
            retiredKeys.insert(contentsOf: usage.rotate())
        }
    }

    /// Puts events the store still holds back into the index, whatever their age: what the engine
    /// does when an id older than the index comes back (`StoreConflict.known`).
    public mutating func remember(_ entries: [TallyState.UsageKey: UsageEntry]) {
        usage.merge(entries)
    }

    private mutating func recordUsage(_ record: UsageRecord, key: TallyState.UsageKey) {
        assert(key.account == record.account && key.id == record.id, "a usage fact applied under another event's key")
        usageEvents += 1
        if usageIndexedFrom.map({ record.recorded >= $0 }) ?? true {
            usage[key] = UsageEntry(record)
            if !holdsRotation { rotateIfFull() }
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

// MARK: - Images: what a snapshot keeps

extension PartitionState {
    /// Everything a partition's state holds, as plain values: what its snapshot keeps. The
    /// catalog's zone, the bound on the index and the rest of the engine's settings are not in
    /// it: they come from the engine that loads it.
    public struct Image: Sendable, Hashable {
        public var records: Records
        /// The usage index's two generations, in key order.
        public var usageCurrent: [IndexedUsage]
        public var usagePrevious: [IndexedUsage]
        /// The filter of the ids that left the index, when the partition keeps one.
        public var retired: RetiredUsageKeys.Image?

        public init(records: Records, usageCurrent: [IndexedUsage], usagePrevious: [IndexedUsage], retired: RetiredUsageKeys.Image?) {
            self.records = records
            self.usageCurrent = usageCurrent
            self.usagePrevious = usagePrevious
            self.retired = retired
        }
    }

    /// The partition's tables and counters, the usage index and its filter aside.
    public struct Records: Sendable, Hashable, Codable {
        public var accounts: [String: Account]
        public var packs: [String: Pack]
        public var orders: [String: Order]
        public var orderRefs: [String: [String: String]]
        public var usageIndexedFrom: Instant?
        public var usageEvents: Int64
        public var monthly: [MonthlyKey: MonthlyUsage]
        public var bills: [String: Bill]
        public var ledger: [LedgerTransaction]
        public var ledgerBalances: LedgerBalances
        public var transactionCount: Int
        public var notices: [Notice]
        public var billIDsByAccount: [String: [String]]
        public var orderIDsByAccount: [String: [String]]
        public var noticesByAccount: [String: [Int]]
        public var monthlyKeysByAccount: [String: [MonthlyKey]]
        public var noticeIDs: Set<String>
        public var packSequence: Int64
        public var factCount: Int64
    }

    /// The state's image.
    public var image: Image { image(retired: retiredKeys?.image) }

    /// The state's image with its filter's as given: a snapshot takes the filter's while no
    /// operation adds to it, and the rest from a copy of the state, later (the tables are shared
    /// with the copy until either changes).
    public func image(retired: RetiredUsageKeys.Image?) -> Image {
        let generations = usage.generations
        return Image(records: Records(accounts: accounts, packs: packs, orders: orders, orderRefs: orderRefs, usageIndexedFrom: usageIndexedFrom,
                                      usageEvents: usageEvents, monthly: monthly, bills: bills, ledger: ledger, ledgerBalances: ledgerBalances,
                                      transactionCount: transactionCount, notices: notices, billIDsByAccount: billIDsByAccount,
                                      orderIDsByAccount: orderIDsByAccount, noticesByAccount: noticesByAccount,
                                      monthlyKeysByAccount: monthlyKeysByAccount, noticeIDs: noticeIDs, packSequence: packSequence,
                                      factCount: factCount),
                     usageCurrent: generations.current, usagePrevious: generations.previous, retired: retired)
    }

    /// A partition's state as its image left it: `zone` is the catalog's, `usageCacheGeneration`
    /// the bound on the index's generations the engine runs with.
    public init(image: Image, zone: Zone, usageCacheGeneration: Int?) throws(TallyError) {
        self.zone = zone
        let records = image.records
        accounts = records.accounts
        packs = records.packs
        orders = records.orders
        orderRefs = records.orderRefs
        usageIndexedFrom = records.usageIndexedFrom
        usageEvents = records.usageEvents
        monthly = records.monthly
        bills = records.bills
        ledger = records.ledger
        ledgerBalances = records.ledgerBalances
        transactionCount = records.transactionCount
        notices = records.notices
        billIDsByAccount = records.billIDsByAccount
        orderIDsByAccount = records.orderIDsByAccount
        noticesByAccount = records.noticesByAccount
        monthlyKeysByAccount = records.monthlyKeysByAccount
        noticeIDs = records.noticeIDs
        packSequence = records.packSequence
        factCount = records.factCount
        retiredKeys = try image.retired.map { image throws(TallyError) in try RetiredUsageKeys(image) }
        usage = UsageIndex(generation: usageCacheGeneration, current: image.usageCurrent, previous: image.usagePrevious)
        self.usageCacheGeneration = usageCacheGeneration
    }
}
