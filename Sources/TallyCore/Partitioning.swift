/// How accounts are spread over partitions: each account belongs to one, by a hash of its id that
/// is the same in every process and every release (FNV-1a over the id's UTF-8, then SplitMix64's
/// finalizer), never Swift's seeded `Hasher`. The count is recorded in the store with the data, so
/// that it cannot change under existing data (docs/decisions.md, "Partitions").
public struct Partitioning: Sendable, Hashable {
    /// The partitions a new store is split into unless told otherwise.
    public static let countDefault = 64
    /// The most partitions a store may be split into.
    public static let countMax = 1_024

    public let count: Int

    public init(count: Int) throws(TallyError) {
        guard (1...Partitioning.countMax).contains(count) else {
            throw TallyError(.countOutOfRange, "the partitions are from 1 to \(Partitioning.countMax), got \(count)")
        }
        self.count = count
    }

    /// The positions of `accounts` grouped by partition, in partition order, each group in the
    /// accounts' order; partitions with none are left out.
    public func positions(of accounts: some Sequence<String>) -> [(partition: Int, positions: [Int])] {
        var groups = [[Int]](repeating: [], count: count)
        for (position, account) in accounts.enumerated() { groups[partition(of: account)].append(position) }
        return groups.indices.compactMap { groups[$0].isEmpty ? nil : ($0, groups[$0]) }
    }

    /// Accounts grouped by partition, in partition order; each group keeps the accounts' order.
    public func split(_ accounts: [String]) -> [(partition: Int, accounts: [String])] {
        positions(of: accounts).map { ($0.partition, $0.positions.map { accounts[$0] }) }
    }

    /// The partition an account belongs to.
    public func partition(of account: String) -> Int {
        Int(Partitioning.hash(account) % UInt64(count))
    }

    /// FNV-1a, 64 bits, then SplitMix64's finalizer so that ids differing in their last bytes
    /// spread over every partition: stable across processes, unlike Swift's seeded `Hasher`.
    public static func hash(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01b3
        }
        return Mix64.finalize(hash)
    }
}
