import TallyCore

/// A usage event as the durable stores keep it: one compact row, not a JSON fact, because usage is
/// the bulk of all facts. Both stores write and read it through this type.
public struct UsageRow: Sendable {
    public let account: String, id: String, api: String, edition: String?, calls: Int64, at: Int64, recorded: Int64
    public let free: Int64, postpaid: Int64, refused: Int64, refusal: String?, draws: String, transaction: String?

    public init(account: String, id: String, api: String, edition: String?, calls: Int64, at: Int64, recorded: Int64,
                free: Int64, postpaid: Int64, refused: Int64, refusal: String?, draws: String, transaction: String?) {
        self.account = account; self.id = id; self.api = api; self.edition = edition; self.calls = calls; self.at = at
        self.recorded = recorded; self.free = free; self.postpaid = postpaid; self.refused = refused; self.refusal = refusal
        self.draws = draws; self.transaction = transaction
    }

    /// The pack draws of a settlement as stored: `pack:f|b:calls` joined by `;`.
    public static func encode(draws: [Settlement.PackDraw]) -> String {
        var text = ""
        for (index, draw) in draws.enumerated() {
            if index > 0 { text += ";" }
            text += draw.pack
            text += draw.isFree ? ":f:" : ":b:"
            text += String(draw.calls)
        }
        return text
    }

    /// The columns both stores read a usage row from, in the order `SQLiteStore.usageRow` and
    /// `PostgresStore.usageRow` take them.
    public static let columns = "seq, account, id, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn"

    /// The fact the row stands for, with its calls-ledger transaction rebuilt.
    public func fact() throws -> Fact {
        let record = try record()
        let ledger = transaction.map { id in
            LedgerTransaction(id: id, at: record.recorded, kind: "usage",
                              entries: record.settlement.draws.map { .calls(.pack($0.pack), -$0.calls) }
                                + [.calls(.callsConsumed(api), record.settlement.draws.reduce(0) { $0 + $1.calls })])
        }
        return .usageRecorded(record: record, transaction: ledger)
    }

    /// What the index keeps of the stored event, under its key.
    public func entry() throws -> (TallyState.UsageKey, UsageEntry) {
        (TallyState.usageKey(account: account, id: id), UsageEntry(try record()))
    }

    public func record() throws -> UsageRecord {
        var settlement = Settlement()
        settlement.free = free
        settlement.postpaid = postpaid
        settlement.refused = refused
        settlement.refusal = refusal.map { TallyError.Code(rawValue: $0) }
        for part in draws.split(separator: ";") {
            let fields = part.split(separator: ":")
            guard fields.count == 3, let calls = Int64(fields[2]) else {
                throw TallyError(.storeUnavailable, "a stored usage event has malformed draws: \(draws)")
            }
            settlement.draws.append(.init(pack: String(fields[0]), calls: calls, isFree: fields[1] == "f"))
        }
        return UsageRecord(account: account, id: id, api: api, edition: edition, calls: calls, at: Instant(microseconds: at),
                           recorded: Instant(microseconds: recorded), settlement: settlement)
    }
}

/// Merges the two ordered streams a durable store keeps (facts, usage rows) back into one, by
/// their shared sequence, without holding the usage rows: the other facts (far fewer) are read
/// first, then each usage row passes through as it is read.
public struct FactMerger {
    private let facts: [(Int64, Fact)]
    private var next = 0

    public init(facts: [(Int64, Fact)]) { self.facts = facts }

    /// Hands over the facts that come before usage row `seq`, then the row's own fact.
    public mutating func usage(_ seq: Int64, _ fact: Fact, _ body: (Int64, Fact) throws -> Void) rethrows {
        while next < facts.count, facts[next].0 < seq {
            try body(facts[next].0, facts[next].1)
            next += 1
        }
        try body(seq, fact)
    }

    /// Hands over the facts after the last usage row.
    public mutating func finish(_ body: (Int64, Fact) throws -> Void) rethrows {
        while next < facts.count {
            try body(facts[next].0, facts[next].1)
            next += 1
        }
    }
}
