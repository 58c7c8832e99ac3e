/// What a ledger amount counts: money (in micro-yuan) or API calls (the contents of packs).
///
/// Why calls too: a pack is a prepaid balance of calls, and SPEC asks that pack balances be
/// recomputable from the ledger just like money balances. Each unit balances on its own.
public enum LedgerUnit: String, Sendable, Hashable, Codable {
    case microyuan
    case calls
}

/// A ledger account. Customer accounts are liabilities of the operator (what it owes the customer:
/// cash, income, gift, vouchers, pack calls); the others are the operator's books.
public struct LedgerAccount: Hashable, Sendable, Codable, Comparable, CustomStringConvertible {
    public let name: String
    public init(_ name: String) { self.name = name }
    public var description: String { name }
    public static func < (a: LedgerAccount, b: LedgerAccount) -> Bool { a.name < b.name }

    public static func cash(_ account: String) -> LedgerAccount { LedgerAccount("customer:\(account):cash") }
    public static func income(_ account: String) -> LedgerAccount { LedgerAccount("customer:\(account):income") }
    public static func gift(_ account: String) -> LedgerAccount { LedgerAccount("customer:\(account):gift") }
    public static func voucher(_ id: String) -> LedgerAccount { LedgerAccount("voucher:\(id)") }
    public static func pack(_ id: String) -> LedgerAccount { LedgerAccount("pack:" + id) }
    /// Money paid in from outside (bank transfers, card payments) for top-ups.
    public static let paymentsReceived = LedgerAccount("operator:payments-received")
    /// Gifts and vouchers the operator grants: a promotional expense.
    public static let promotions = LedgerAccount("operator:promotions")
    public static func revenue(_ product: String) -> LedgerAccount { LedgerAccount("operator:revenue:\(product)") }
    /// Calls the operator issues into packs (bought or free), and calls consumed from them.
    public static let callsIssued = LedgerAccount("operator:calls-issued")
    /// Built by concatenation, not interpolation: usage names one (and a pack) with every draw.
    public static func callsConsumed(_ api: String) -> LedgerAccount { LedgerAccount("operator:calls-consumed:" + api) }
}

/// One line of a transaction. A positive amount credits the account (raises what the operator
/// owes on it), a negative one debits it; each transaction's amounts sum to zero per unit.
public struct LedgerEntry: Hashable, Sendable, Codable {
    public let account: LedgerAccount
    public let unit: LedgerUnit
    public let amount: Int64

    public init(_ account: LedgerAccount, _ unit: LedgerUnit, _ amount: Int64) {
        self.account = account
        self.unit = unit
        self.amount = amount
    }

    public static func money(_ account: LedgerAccount, _ amount: Money) -> LedgerEntry {
        LedgerEntry(account, .microyuan, amount.microyuan)
    }

    public static func calls(_ account: LedgerAccount, _ count: Int64) -> LedgerEntry {
        LedgerEntry(account, .calls, count)
    }
}

/// A balanced double-entry transaction: one purchase, top-up, voucher grant, bill deduction,
/// refund or pack draw. Posted transactions are never changed.
public struct LedgerTransaction: Hashable, Sendable, Codable {
    public let id: String
    public let at: Instant
    public let kind: String
    public let entries: [LedgerEntry]

    public init(id: String, at: Instant, kind: String, entries: [LedgerEntry]) {
        self.id = id
        self.at = at
        self.kind = kind
        // Copied only when there is a zero line to leave out (a usage draw never has one).
        self.entries = entries.contains { $0.amount == 0 } ? entries.filter { $0.amount != 0 } : entries
        precondition(isBalanced, "an unbalanced transaction is a programmer error: \(kind) \(entries)")
    }

    /// True when the amounts of each unit sum to zero.
    public var isBalanced: Bool {
        var money: Int128 = 0, calls: Int128 = 0
        for entry in entries {
            switch entry.unit {
            case .microyuan: money += Int128(entry.amount)
            case .calls: calls += Int128(entry.amount)
            }
        }
        return money == 0 && calls == 0
    }
}

/// Balances recomputed from transactions alone: what `tally audit` compares the state against.
public struct LedgerBalances: Sendable, Hashable, Codable {
    /// One account's sums, a field per unit: posting an entry is one lookup of the account, not a
    /// second one of the unit in a table of its own.
    struct Sums: Sendable, Hashable, Codable {
        var microyuan: Int64 = 0
        var calls: Int64 = 0

        subscript(unit: LedgerUnit) -> Int64 {
            get { unit == .microyuan ? microyuan : calls }
            set { if unit == .microyuan { microyuan = newValue } else { calls = newValue } }
        }
    }

    private var sums: [LedgerAccount: Sums] = [:]
    public private(set) var unbalanced: [String] = []

    public init() {}

    public init<S: Sequence>(_ transactions: S) where S.Element == LedgerTransaction {
        for transaction in transactions { post(transaction) }
    }

    public mutating func post(_ transaction: LedgerTransaction) {
        if !transaction.isBalanced { unbalanced.append(transaction.id) }
        for entry in transaction.entries { sums[entry.account, default: Sums()][entry.unit] += entry.amount }
    }

    /// Adds another partition's balances: house accounts sum over partitions.
    public mutating func add(_ other: LedgerBalances) {
        sums.merge(other.sums) { Sums(microyuan: $0.microyuan + $1.microyuan, calls: $0.calls + $1.calls) }
        unbalanced.append(contentsOf: other.unbalanced)
    }

    public func money(_ account: LedgerAccount) -> Money { Money(microyuan: sums[account]?.microyuan ?? 0) }
    public func calls(_ account: LedgerAccount) -> Int64 { sums[account]?.calls ?? 0 }
}
