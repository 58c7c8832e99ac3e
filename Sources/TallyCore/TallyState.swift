/// Everything Tally knows, rebuilt from facts. Pure data: decisions read it, and `apply` is the
/// only thing that changes it.
///
/// It is the pair of what every partition shares (`GlobalState`: the catalog, keys, webhook
/// endpoints, the months closed) and a partition's own state (`PartitionState`: accounts and
/// everything they own). Today there is one partition, behind the engine's one lock; the
/// properties below read through to the part that holds them (docs/decisions.md, "Partitions").
public struct TallyState: Sendable {
    public private(set) var global: GlobalState
    public private(set) var partition: PartitionState

    public init(catalog: Catalog) {
        global = GlobalState(catalog: catalog)
        partition = PartitionState(zone: catalog.zone)
    }

    /// A partition's state (loaded from its snapshot) beside the shared part.
    public init(global: GlobalState, partition: PartitionState) {
        self.global = global
        self.partition = partition
    }

    // MARK: What every partition shares

    public var catalog: Catalog { _read { yield global.catalog } }
    /// The catalog as shipped, before any published change: what a rebuild from facts starts from.
    public var baseCatalog: Catalog { global.baseCatalog }
    /// Months whose bill run has started: usage for them (and earlier ones) is refused.
    public var closedThrough: Month? { global.closedThrough }
    /// Catalog changes published, by effective instant, for the 30-day rule and its notices.
    public var publications: [Instant: Instant] { _read { yield global.publications } }
    /// API keys by id, and key ids by digest for the lookup on every request.
    public var keys: [String: APIKey] { _read { yield global.keys } }
    public var keyIDsByDigest: [String: String] { _read { yield global.keyIDsByDigest } }
    public var webhookEndpoints: [String: WebhookEndpoint] { _read { yield global.webhookEndpoints } }
    /// Notices delivered, per endpoint: what the webhook outbox no longer owes.
    public var deliveries: Set<DeliveryKey> { _read { yield global.deliveries } }

    // MARK: The partition's own

    public var accounts: [String: Account] { _read { yield partition.accounts } }
    public var packs: [String: Pack] { _read { yield partition.packs } }
    public var orders: [String: Order] { _read { yield partition.orders } }
    /// Order ids by account and the caller's reference.
    public var orderRefs: [String: [String: String]] { _read { yield partition.orderRefs } }
    /// Usage events by (account, id): the idempotency index (see `PartitionState.usage`).
    public var usage: UsageIndex { _read { yield partition.usage } }
    public var usageIndexedFrom: Instant? { partition.usageIndexedFrom }
    public var retiredKeys: RetiredUsageKeys? {
        get { partition.retiredKeys }
        set { partition.retiredKeys = newValue }
    }
    public var usageCacheGeneration: Int? {
        get { partition.usageCacheGeneration }
        set { partition.usageCacheGeneration = newValue }
    }
    public var holdsRotation: Bool {
        get { partition.holdsRotation }
        set { partition.holdsRotation = newValue }
    }
    public var usageEvents: Int64 { partition.usageEvents }
    public var monthly: [MonthlyKey: MonthlyUsage] { _read { yield partition.monthly } }
    public var bills: [String: Bill] { _read { yield partition.bills } }
    public var ledger: [LedgerTransaction] { _read { yield partition.ledger } }
    public var ledgerBalances: LedgerBalances { _read { yield partition.ledgerBalances } }
    public var transactionCount: Int { partition.transactionCount }
    public var notices: [Notice] { _read { yield partition.notices } }
    public var billIDsByAccount: [String: [String]] { _read { yield partition.billIDsByAccount } }
    public var orderIDsByAccount: [String: [String]] { _read { yield partition.orderIDsByAccount } }
    public var noticesByAccount: [String: [Int]] { _read { yield partition.noticesByAccount } }
    public var monthlyKeysByAccount: [String: [MonthlyKey]] { _read { yield partition.monthlyKeysByAccount } }
    public var noticeIDs: Set<String> { _read { yield partition.noticeIDs } }
    public var packSequence: Int64 { partition.packSequence }
    /// Every fact applied: the shared ones and the partition's.
    public var factCount: Int64 { global.factCount + partition.factCount }

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

    /// Applies a fact to the part that holds what it changes. `usageKey`, for a usage fact, is its
    /// index key when the caller has made it already (the engine does, to look for a duplicate):
    /// the texts are then hashed once an event.
    public mutating func apply(_ fact: Fact, usageKey: UsageKey? = nil) {
        if !global.apply(fact) { partition.apply(fact, usageKey: usageKey) }
    }

    /// Leaves out of the idempotency index every event recorded before `cutoff` (see
    /// `PartitionState.forgetUsage`).
    public mutating func forgetUsage(recordedBefore cutoff: Instant) { partition.forgetUsage(recordedBefore: cutoff) }

    /// See `PartitionState.rotateIfFull`.
    public mutating func rotateIfFull() { partition.rotateIfFull() }

    /// Puts events the store still holds back into the index (see `PartitionState.remember`).
    public mutating func remember(_ entries: [UsageKey: UsageEntry]) { partition.remember(entries) }

    // MARK: - Several partitions

    /// Takes the shared part another partition's state holds after a shared fact: every
    /// partition's state holds the same `GlobalState` value (its tables shared, copy on write).
    public mutating func adopt(_ global: GlobalState) { self.global = global }

    /// Several partitions' states as one: what readers of every account at once look at (the
    /// audit, an operator's lists, the command line, tests), at the cost of a copy of every
    /// partition's tables. Not for the request path, which reads one account's partition. Notices
    /// are in the order they were made (by instant; within one, by partition).
    public static func merged(_ parts: [TallyState]) -> TallyState {
        precondition(!parts.isEmpty, "no partitions to merge")
        var whole = parts[0]
        guard parts.count > 1 else { return whole }
        for part in parts.dropFirst() { whole.partition.absorb(part.partition) }
        whole.partition.orderNotices()
        return whole
    }
}

/// Something a stream of facts builds: a state of one partition or of several. What a store's
/// rebuild folds its facts into.
public protocol FactFolding: Sendable {
    /// Applies a fact; `position` is its place in the store's order.
    mutating func fold(_ fact: Fact, at position: Int64)
}

extension TallyState: FactFolding {
    public mutating func fold(_ fact: Fact, at position: Int64) { apply(fact) }
}
