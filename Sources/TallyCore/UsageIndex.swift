/// The idempotency index of usage events by (account, id), kept in shards. A dictionary that
/// doubles rehashes every entry at once: at a few million events that is a pause of a fifth of a
/// second under the engine's lock, felt by every caller waiting on it. A shard holds 1/256 of
/// the events and grows on its own, so no single insert pays for more than its shard.
public struct UsageIndex: Sendable, Sequence {
    public typealias Key = TallyState.UsageKey
    public typealias Element = (key: Key, value: UsageEntry)

    static let shardBits = 8
    static let shardCount = 1 << shardBits
    private var shards: [[Key: UsageEntry]] = Array(repeating: [:], count: UsageIndex.shardCount)
    public private(set) var count = 0

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// The shard: the top bits of the key's seeded hash (the shard's dictionary hashes it again).
    static func shard(_ key: Key) -> Int { Int(UInt(bitPattern: key.digest) >> (UInt.bitWidth - shardBits)) }

    public subscript(key: Key) -> UsageEntry? {
        get { shards[UsageIndex.shard(key)][key] }
        set {
            let shard = UsageIndex.shard(key)
            if let newValue {
                if shards[shard].updateValue(newValue, forKey: key) == nil { count += 1 }
            } else if shards[shard].removeValue(forKey: key) != nil {
                count -= 1
            }
        }
    }

    public var values: some Sequence<UsageEntry> { lazy.map(\.value) }

    /// Keeps the entries that satisfy `isIncluded`.
    public mutating func keep(where isIncluded: (UsageEntry) -> Bool) {
        count = 0
        for shard in shards.indices {
            shards[shard] = shards[shard].filter { isIncluded($0.value) }
            count += shards[shard].count
        }
    }

    /// Adds the entries whose keys are not in the index; those that are keep their entry.
    public mutating func merge(_ entries: [Key: UsageEntry]) {
        for (key, entry) in entries where self[key] == nil { self[key] = entry }
    }

    /// How many entries each shard holds (for tests of the spread).
    public var shardSizes: [Int] { shards.map(\.count) }

    public func makeIterator() -> FlattenSequence<[[Key: UsageEntry]]>.Iterator { shards.joined().makeIterator() }
}

/// SplitMix64's finalizer: a bijection of 64-bit words whose every output bit depends on every
/// input bit. Ids scramble a counter with it; the usage index mixes a kept digest with it.
public enum Mix64 {
    @inlinable
    public static func finalize(_ word: UInt64) -> UInt64 {
        var z = word
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
