/// Recomputes every balance, pack, usage total and bill from the ledger and the usage events, and
/// compares them with what the state claims. What `tally audit` prints; what the property tests
/// assert after every random sequence of operations.
public enum Audit {
    public struct Report: Sendable {
        public let accounts: Int
        public let transactions: Int
        public let mismatches: [String]
        public let unbalancedTransactions: [String]

        public var isClean: Bool { mismatches.isEmpty && unbalancedTransactions.isEmpty }
    }

    /// `recount` is the usage recomputed event by event; by default from the state's own index,
    /// which holds every event unless older ones were left to the store (then the caller streams
    /// them from there, as `tally audit` does).
    public static func run(_ state: TallyState, recount: UsageRecount? = nil) -> Report {
        let ledger = state.ledgerBalances
        var mismatches: [String] = []
        func compare<T: Equatable>(_ what: String, _ claimed: T, _ recomputed: T) {
            if claimed != recomputed { mismatches.append("\(what): state \(claimed), recomputed \(recomputed)") }
        }
        for (id, account) in state.accounts.sorted(by: { $0.key < $1.key }) {
            compare("\(id) cash", account.cash, ledger.money(.cash(id)))
            compare("\(id) income", account.income, ledger.money(.income(id)))
            compare("\(id) gift", account.gift, ledger.money(.gift(id)))
            for voucher in account.vouchers {
                compare("voucher \(voucher.id)", voucher.remaining, ledger.money(.voucher(voucher.id)))
            }
        }
        for (id, pack) in state.packs.sorted(by: { $0.key < $1.key }) {
            compare("pack \(id)", pack.revoked ? 0 : pack.left, ledger.calls(.pack(id)))
            if pack.left < 0 || pack.left > pack.size { mismatches.append("pack \(id) holds \(pack.left) of \(pack.size)") }
        }
        let recount = recount ?? UsageRecount(state)
        mismatches += recount.mismatches
        compare("usage events", state.usageEvents, recount.events)
        let monthly = recount.monthly
        for key in Set(monthly.keys).union(state.monthly.keys).sorted() {
            let claimed = state.monthly[key] ?? MonthlyUsage(), recomputed = monthly[key] ?? MonthlyUsage()
            compare("usage \(key.account) \(key.api) \(key.month)", [claimed.calls, claimed.free, claimed.pack, claimed.postpaid],
                    [recomputed.calls, recomputed.free, recomputed.pack, recomputed.postpaid])
        }
        for bill in state.bills.values.sorted(by: { $0.id < $1.id }) {
            let usage = monthly.filter { $0.key.account == bill.account && $0.key.month == bill.month }
                .filter { entry in state.catalog.versions.contains { $0.apisByID[entry.key.api]?.product == bill.product } }
            let lines = BillingRule.lines(account: bill.account, product: bill.product, month: bill.month,
                                          usage: Dictionary(uniqueKeysWithValues: usage.map { ($0.key.api, $0.value) }), catalog: state.catalog)
            compare("bill \(bill.id) lines", bill.lines, lines)
            compare("bill \(bill.id) total", bill.total, lines.reduce(.zero) { $0 + $1.amount })
            compare("bill \(bill.id) paid", bill.paid.total, bill.total)
        }
        return Report(accounts: state.accounts.count, transactions: state.transactionCount, mismatches: mismatches,
                      unbalancedTransactions: ledger.unbalanced)
    }
}

/// Usage totals recomputed event by event, with the events that do not add up.
public struct UsageRecount: Sendable {
    public let zone: Zone
    public private(set) var monthly: [MonthlyKey: MonthlyUsage] = [:]
    public private(set) var mismatches: [String] = []
    public private(set) var events: Int64 = 0

    public init(zone: Zone) { self.zone = zone }

    /// The recount of the state's own index: complete only if the state forgot no event.
    public init(_ state: TallyState) {
        self.init(zone: state.zone)
        for (event, entry) in state.usage { add(account: event.account, id: event.id, entry) }
    }

    public mutating func add(account: String, id: String, _ entry: UsageEntry) {
        events += 1
        if entry.accepted + entry.refused != entry.calls {
            mismatches.append("event \(account)/\(id): \(entry.accepted) accepted + \(entry.refused) refused ≠ \(entry.calls)")
        }
        let key = MonthlyKey(account: account, api: entry.api, month: zone.month(of: entry.at))
        UsageRecount.add(entry, to: &monthly[key, default: MonthlyUsage()])
    }

    private static func add(_ entry: UsageEntry, to totals: inout MonthlyUsage) {
        totals.calls += entry.accepted
        totals.free += entry.free
        totals.pack += entry.pack
        totals.postpaid += entry.postpaid
    }

    /// Adds a stored event, as a store streams them.
    public mutating func add(_ record: UsageRecord) {
        add(account: record.account, id: record.id, UsageEntry(record))
    }
}
