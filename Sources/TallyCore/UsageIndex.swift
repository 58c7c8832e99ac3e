/// The idempotency index of usage events by (account, id), kept in shards. A dictionary that
/// doubles rehashes every entry at once: at a few million events that is a pause of a fifth of a
/// second under the engine's lock, felt by every caller waiting on it. A shard holds 1/256 of
/// the events and grows on its own, so no single insert pays for more than its shard.
///
/// Entries are kept compact: the few texts they repeat (API ids, editions, refusal codes) are
/// numbered once in a table of the index's own, so a stored entry is plain numbers: no reference
/// to count when it is written or moved, and 72 bytes where a `UsageEntry` takes 112.
///
/// Two generations: new entries go into the current one; `rotate()` hands back the previous
/// generation's keys and makes the current one previous. A state that bounds its index rotates
/// when the current generation is full and sends the keys it hands back to the filter of retired
/// keys (`TallyState.usageCacheGeneration`), so memory holds between one and two generations of
/// the latest events, whatever the window.
public struct UsageIndex: Sendable, Sequence {
    public typealias Key = TallyState.UsageKey
    public typealias Element = (key: Key, value: UsageEntry)

    /// A `UsageEntry` with its texts as numbers in `texts` (0: none).
    struct Stored: Sendable {
        let api: UInt32
        let edition: UInt32
        let refusal: UInt32
        let calls: Int64
        let at: Instant
        let recorded: Instant
        let free: Int64
        let pack: Int64
        let postpaid: Int64
        let refused: Int64
    }

    static let shardBits = 8
    static let shardCount = 1 << shardBits
    /// The fewest entries a shard of a full generation holds: a smaller index takes fewer shards,
    /// or its shards would be dictionaries of a few entries, each grown from empty again at every
    /// rotation.
    static let shardEntriesMin = 512
    /// This index's shards: a power of two, at most `shardCount`.
    private let shardMask: Int
    private var shards: [[Key: Stored]]
    /// The generation before `shards`, empty until the first `rotate()`.
    private var previous: [[Key: Stored]] = []
    /// How many entries the current generation holds.
    public private(set) var currentCount = 0
    /// The texts entries name, by number; number 0 is no text.
    private var texts: [String] = [""]
    private var numbers: [String: UInt32] = [:]
    public private(set) var count = 0

    /// An index whose generations hold at most `generation` entries (nil: no bound), with as many
    /// shards as keep each at `shardEntriesMin` entries or more.
    public init(generation: Int? = nil) {
        var count = UsageIndex.shardCount
        if let generation {
            count = 1
            while count < UsageIndex.shardCount, count * 2 * UsageIndex.shardEntriesMin <= generation { count *= 2 }
        }
        shardMask = count - 1
        shards = Array(repeating: [:], count: count)
    }

    /// How many shards the index has.
    public var shardTotal: Int { shardMask + 1 }

    public var isEmpty: Bool { count == 0 }

    /// The shard: looked up by the top 16 bits of the key's seeded hash (the shard's dictionary
    /// hashes it again). Shards are not equal: shard i takes a share of the keys proportional to
    /// 256 + i, so their sizes spread over one doubling. Equal shards all reached their
    /// dictionaries' doubling points at the same moment, and the 256 resizes, each under the
    /// engine's lock, came together as one pause (a few hundred milliseconds at 4M events);
    /// spread over a doubling, the resizes are spread over the time the index takes to double.
    func shard(_ key: Key) -> Int { Int(UsageIndex.shardOfPrefix[Int(UInt64(UInt(bitPattern: key.digest)) >> 48)]) & shardMask }

    /// The shard of each 16-bit prefix: shard i owns a run of prefixes as long as its weight.
    /// A bare pointer, made once and never freed or written again: read on every lookup from
    /// every thread, an array's reference count would be counted each time.
    nonisolated(unsafe) static let shardOfPrefix: UnsafePointer<UInt8> = {
        let total = (0..<shardCount).reduce(0) { $0 + shardCount + $1 }
        let table = UnsafeMutablePointer<UInt8>.allocate(capacity: 1 << 16)
        var shard = 0, upTo = shardCount   // the cumulative weight through `shard`
        for prefix in 0..<(1 << 16) {
            // The prefix's place on the cumulative scale, in whole units of weight.
            while prefix * total >= upTo << 16, shard < shardCount - 1 {
                shard += 1
                upTo += shardCount + shard
            }
            table[prefix] = UInt8(shard)
        }
        return UnsafePointer(table)
    }()

    public subscript(key: Key) -> UsageEntry? {
        get {
            let shard = self.shard(key)
            if let found = shards[shard][key] { return entry(found) }
            return previous.isEmpty ? nil : previous[shard][key].map(entry)
        }
        set {
            let shard = self.shard(key)
            if !previous.isEmpty, previous[shard].removeValue(forKey: key) != nil { count -= 1 }
            if let newValue {
                if shards[shard].updateValue(stored(newValue), forKey: key) == nil {
                    count += 1
                    currentCount += 1
                }
            } else if shards[shard].removeValue(forKey: key) != nil {
                count -= 1
                currentCount -= 1
            }
        }
    }

    /// Drops the previous generation and returns its keys, each with when its event was recorded;
    /// the current generation becomes the previous one and a new, empty one starts.
    public mutating func rotate() -> [(Key, Instant)] {
        var dropped: [(Key, Instant)] = []
        dropped.reserveCapacity(count - currentCount)
        for shard in previous {
            for (key, entry) in shard { dropped.append((key, entry.recorded)) }
        }
        previous = shards
        shards = Array(repeating: [:], count: shardMask + 1)
        count = currentCount
        currentCount = 0
        return dropped
    }

    private mutating func number(_ text: String?) -> UInt32 {
        guard let text else { return 0 }
        if let number = numbers[text] { return number }
        let number = UInt32(texts.count)
        texts.append(text)
        numbers[text] = number
        return number
    }

    private mutating func stored(_ entry: UsageEntry) -> Stored {
        Stored(api: number(entry.api), edition: number(entry.edition), refusal: number(entry.refusal?.rawValue), calls: entry.calls,
               at: entry.at, recorded: entry.recorded, free: entry.free, pack: entry.pack, postpaid: entry.postpaid, refused: entry.refused)
    }

    private func entry(_ stored: Stored) -> UsageEntry {
        UsageEntry(api: texts[Int(stored.api)], edition: stored.edition == 0 ? nil : texts[Int(stored.edition)], calls: stored.calls,
                   at: stored.at, recorded: stored.recorded, free: stored.free, pack: stored.pack, postpaid: stored.postpaid,
                   refused: stored.refused, refusal: stored.refusal == 0 ? nil : texts[Int(stored.refusal)])
    }

    public var values: some Sequence<UsageEntry> { lazy.map(\.value) }

    /// Keeps the entries recorded at or after `cutoff` (what `TallyState.forgetUsage` trims by);
    /// returns the keys of the others.
    @discardableResult
    public mutating func keep(recordedFrom cutoff: Instant) -> [Key] {
        var dropped: [Key] = []
        func trim(_ generation: inout [[Key: Stored]]) -> Int {
            var kept = 0
            for shard in generation.indices {
                for (key, entry) in generation[shard] where entry.recorded < cutoff { dropped.append(key) }
                generation[shard] = generation[shard].filter { $0.value.recorded >= cutoff }
                kept += generation[shard].count
            }
            return kept
        }
        currentCount = trim(&shards)
        count = currentCount + trim(&previous)
        return dropped
    }

    /// Adds the entries whose keys are not in the index; those that are keep their entry.
    public mutating func merge(_ entries: [Key: UsageEntry]) {
        for (key, entry) in entries where self[key] == nil { self[key] = entry }
    }

    /// Each generation's entries, in key order: what a partition's snapshot keeps of the index.
    public var generations: (current: [IndexedUsage], previous: [IndexedUsage]) {
        func listed(_ generation: [[Key: Stored]]) -> [IndexedUsage] {
            generation.joined().map { IndexedUsage(account: $0.key.account, id: $0.key.id, entry: entry($0.value)) }
                .sorted { ($0.account, $0.id) < ($1.account, $1.id) }
        }
        return (listed(shards), listed(previous))
    }

    /// An index holding these generations, as `generations` gave them.
    public init(generation: Int?, current: [IndexedUsage], previous: [IndexedUsage]) {
        self.init(generation: generation)
        for usage in previous { self[TallyState.usageKey(account: usage.account, id: usage.id)] = usage.entry }
        if !previous.isEmpty { _ = rotate() }
        for usage in current { self[TallyState.usageKey(account: usage.account, id: usage.id)] = usage.entry }
    }

    /// How many entries each shard of the current generation holds (for tests of the spread).
    public var shardSizes: [Int] { shards.map(\.count) }

    public func makeIterator() -> Iterator { Iterator(index: self, shards: (shards + previous).joined().makeIterator()) }

    public struct Iterator: IteratorProtocol {
        let index: UsageIndex
        var shards: FlattenSequence<[[Key: Stored]]>.Iterator

        public mutating func next() -> Element? {
            shards.next().map { (key: $0.key, value: index.entry($0.value)) }
        }
    }
}

/// An entry of the index with its key's texts: how a snapshot lists the index.
public struct IndexedUsage: Sendable, Hashable {
    public let account: String
    public let id: String
    public let entry: UsageEntry

    public init(account: String, id: String, entry: UsageEntry) {
        self.account = account
        self.id = id
        self.entry = entry
    }
}
