/// The states of every partition, as a rebuild from the store folds them: each fact goes to the
/// partition of the account it belongs to, and a shared fact to every partition's shared part
/// (`GlobalState`, one value that every partition's state holds alike).
public struct PartitionedState: FactFolding {
    public let partitioning: Partitioning
    public private(set) var parts: [TallyState]

    /// `parts`: one empty state per partition, in partition order.
    public init(_ parts: [TallyState], partitioning: Partitioning) {
        precondition(parts.count == partitioning.count, "one state per partition")
        self.parts = parts
        self.partitioning = partitioning
    }

    public mutating func fold(_ fact: Fact) {
        switch FactRoute(fact) {
        case .account(let id):
            parts[partitioning.partition(of: id)].apply(fact)
        case .order(let id):
            // A refund names its order, which lives in its account's partition.
            parts[parts.firstIndex { $0.orders[id] != nil } ?? 0].apply(fact)
        case .everyone:
            // A notice to no account (none is made today) is kept by the first partition.
            parts[0].apply(fact)
            guard FactRoute.isShared(fact) else { return }
            let global = parts[0].global
            for index in parts.indices.dropFirst() { parts[index].adopt(global) }
        }
    }
}
