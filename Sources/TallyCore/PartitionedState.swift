/// The states of every partition, as a rebuild from the store folds them: each fact goes to the
/// partition of the account it belongs to, and a shared fact to every partition's shared part
/// (`GlobalState`, one value that every partition's state holds alike).
public struct PartitionedState: FactFolding {
    public let partitioning: Partitioning
    public private(set) var parts: [TallyState]
    /// The position each partition's state covers already (its snapshot's; 0: none): a fact of
    /// the partition at or before it is skipped. Shared facts are always applied: the shared part
    /// is not in snapshots, and is rebuilt from every shared fact.
    public let covered: [Int64]

    /// `parts`: one state per partition, in partition order, each empty or loaded from a snapshot
    /// that covers the facts through `covered` (nil: every state is empty).
    public init(_ parts: [TallyState], partitioning: Partitioning, covered: [Int64]? = nil) {
        precondition(parts.count == partitioning.count, "one state per partition")
        precondition(covered.map { $0.count == parts.count } ?? true, "one position per partition")
        self.parts = parts
        self.partitioning = partitioning
        self.covered = covered ?? Array(repeating: 0, count: parts.count)
    }

    public mutating func fold(_ fact: Fact, at position: Int64) {
        switch FactRoute(fact) {
        case .account(let id):
            apply(fact, at: position, to: partitioning.partition(of: id))
        case .order(let id):
            // A refund names its order, which lives in its account's partition.
            apply(fact, at: position, to: parts.firstIndex { $0.orders[id] != nil } ?? 0)
        case .everyone:
            guard FactRoute.isShared(fact) else {
                // A notice to no account (none is made today) is kept by the first partition.
                return apply(fact, at: position, to: 0)
            }
            parts[0].apply(fact)
            let global = parts[0].global
            for index in parts.indices.dropFirst() { parts[index].adopt(global) }
        }
    }

    private mutating func apply(_ fact: Fact, at position: Int64, to partition: Int) {
        if position > covered[partition] { parts[partition].apply(fact) }
    }
}
