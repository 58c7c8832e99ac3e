import Synchronization

/// The usage keys that left the idempotency index while their ids still count (recorded within the
/// last `Tally.usageIndexDays` days), in Bloom filters kept by the day the event was recorded: a key
/// they do not hold was never stored, unless another process stored it. The engine asks them
/// before an event is applied; for a key they may hold, the engine reads the store first and puts
/// what the store has back into the index, so an old id sent again is answered as a duplicate
/// without the batch failing at the store's unique index and the engine reloading (docs/decisions.md).
///
/// 2 bytes a key (16 bits) and at most as much again unfilled, with about 0.13% of absent keys
/// answered "maybe" by each full segment: each of those costs one read of the store outside the
/// engine's lock, never a wrong answer. Each day's
/// filter starts sized from the day before and grows in segments (`add`), so that none is ever rehashed
/// (a Bloom filter keeps no keys to rehash), and a day is dropped whole once it is older than the
/// ids' window (`forget(recordedBefore:)`): memory follows the last 35 days' events, not all of them.
///
/// An event that carries its time was recorded no earlier than that time less the clock's
/// tolerance, so only the days from then on are asked: a gateway's recent event asks one or two.
///
/// Each partition has its own, hashed under a key of its own (`SipHash`, not the process's seeded
/// hasher), so that it can be written into the partition's snapshot and read back by the next
/// process.
///
/// Shared, not copied, by the states that hold it (a preview's copy adds nothing to it): adding a
/// key that was stored can only make the engine read the store once more.
public final class RetiredUsageKeys: Sendable {
    /// Days since the Unix epoch, in UTC, to a day's filter segments.
    private let days: Mutex<[Int64: [SplitBlockBloomFilter]]>
    /// The keys the first segment of a day is sized for at least; each later one of the day is
    /// sized for four times as many as the one before.
    let firstCapacity: Int
    /// The key of the filter's hash: random for a new filter, kept with it in a snapshot.
    let hashKey: (UInt64, UInt64)

    public init(firstCapacity: Int = 1 << 10) {
        precondition(firstCapacity > 0, "a filter holds at least one key")
        self.firstCapacity = firstCapacity
        var random = SystemRandomNumberGenerator()
        hashKey = (random.next(), random.next())
        days = Mutex([:])
    }

    /// A filter as an image left it.
    public init(_ image: Image) throws(TallyError) {
        guard image.firstCapacity > 0, image.hashKey.count == 2 else {
            throw TallyError(.snapshotUnusable, "the filter's image has no capacity or no key")
        }
        firstCapacity = image.firstCapacity
        hashKey = (image.hashKey[0], image.hashKey[1])
        var days: [Int64: [SplitBlockBloomFilter]] = [:]
        for day in image.days {
            days[day.day] = try day.segments.map { segment throws(TallyError) in try SplitBlockBloomFilter(segment) }
        }
        self.days = Mutex(days)
    }

    /// What the filter holds, as plain values: what a partition's snapshot keeps of it.
    public struct Image: Sendable, Hashable {
        public let firstCapacity: Int
        /// The hash's key: two words.
        public let hashKey: [UInt64]
        /// The days, in order.
        public let days: [Day]

        public init(firstCapacity: Int, hashKey: [UInt64], days: [Day]) {
            self.firstCapacity = firstCapacity
            self.hashKey = hashKey
            self.days = days
        }

        public struct Day: Sendable, Hashable {
            /// Days since the Unix epoch, in UTC.
            public let day: Int64
            public let segments: [Segment]

            public init(day: Int64, segments: [Segment]) {
                self.day = day
                self.segments = segments
            }
        }

        public struct Segment: Sendable, Hashable {
            public let capacity: Int
            public let count: Int
            /// The bits, eight 32-bit words a block.
            public let words: [UInt32]

            public init(capacity: Int, count: Int, words: [UInt32]) {
                self.capacity = capacity
                self.count = count
                self.words = words
            }
        }
    }

    /// Copied out of the lock (the segments are shared with the filter until it next changes).
    public var image: Image {
        let days = days.withLock { $0 }
        return Image(firstCapacity: firstCapacity, hashKey: [hashKey.0, hashKey.1],
                     days: days.keys.sorted().map { Image.Day(day: $0, segments: days[$0]!.map(\.image)) })
    }

    static let microsecondsPerDay: Int64 = 86_400_000_000

    /// The day an instant falls on, counted in UTC from the Unix epoch.
    static func day(of instant: Instant) -> Int64 {
        let (quotient, remainder) = instant.microseconds.quotientAndRemainder(dividingBy: microsecondsPerDay)
        return remainder < 0 ? quotient - 1 : quotient
    }

    public func insert(_ key: TallyState.UsageKey, recorded: Instant) { insert(contentsOf: CollectionOfOne((key, recorded))) }

    /// Inserts keys with the instants their events were recorded.
    public func insert<Keys: Sequence>(contentsOf keys: Keys) where Keys.Element == (TallyState.UsageKey, Instant) {
        days.withLock { days in
            for (key, recorded) in keys {
                let day = RetiredUsageKeys.day(of: recorded)
                if days[day] == nil { days[day] = [SplitBlockBloomFilter(capacity: firstCapacity(of: day, among: days))] }
                // Changed in place: the day's segments are not copied out and back.
                RetiredUsageKeys.add(hash(key), to: &days[day]!, floor: firstCapacity)
            }
        }
    }

    /// A new day's first segment is sized for the keys of the latest day before it and an eighth
    /// more (at least `firstCapacity`): a day much like the one before then takes one segment, and
    /// a key sent with no time is looked for in about one block a day.
    private func firstCapacity(of day: Int64, among days: [Int64: [SplitBlockBloomFilter]]) -> Int {
        guard let before = days.keys.filter({ $0 < day }).max() else { return firstCapacity }
        let keys = days[before]!.reduce(0) { $0 + $1.count }
        return max(firstCapacity, keys + keys / 8)
    }

    /// False when the key was never inserted (recorded at or after `from`, when given); true when
    /// it was, or by chance.
    public func mightContain(_ key: TallyState.UsageKey, recordedFrom from: Instant? = nil) -> Bool {
        days.withLock { mayHold(key, from: from.map(RetiredUsageKeys.day), $0) }
    }

    /// The keys in `keys` the filters may hold, each asked of the days from its earliest possible
    /// recording on (nil: every day), in one pass under the lock.
    public func suspects<Keys: Sequence>(among keys: Keys) -> [TallyState.UsageKey] where Keys.Element == (TallyState.UsageKey, Instant?) {
        days.withLock { days in
            guard !days.isEmpty else { return [] }
            return keys.filter { mayHold($0.0, from: $0.1.map(RetiredUsageKeys.day), days) }.map(\.0)
        }
    }

    /// Drops the days wholly before `cutoff`'s day: their ids no longer count in memory (the store's
    /// unique index still refuses them). Returns how many keys went.
    @discardableResult
    public func forget(recordedBefore cutoff: Instant) -> Int {
        let first = RetiredUsageKeys.day(of: cutoff)
        return days.withLock { days in
            let old = days.keys.filter { $0 < first }
            var dropped = 0
            for day in old { dropped += days.removeValue(forKey: day)!.reduce(0) { $0 + $1.count } }
            return dropped
        }
    }

    /// Adds to the day's last segment, or to a new one when it is full. A new segment doubles
    /// the day's capacity, so that a day holds at most twice the bits its keys need (1.4 times on
    /// average over day sizes; four times the last segment gave 2.1) and a day grown from the
    /// floor to 150,000 keys is asked in nine segments. After a first segment sized from the day
    /// before (larger than `floor`), the second is a quarter of it: a day a little busier than the
    /// one before adds a quarter of its filter, not as much again.
    private static func add(_ hash: UInt64, to segments: inout [SplitBlockBloomFilter], floor: Int) {
        let last = segments[segments.count - 1]
        if last.count >= last.capacity {
            let capacity = segments.count == 1 && last.capacity > floor
                ? max(floor, last.capacity / 4)
                : segments.reduce(0) { $0 + $1.capacity }
            segments.append(SplitBlockBloomFilter(capacity: capacity))
        }
        segments[segments.count - 1].insert(hash)
    }

    /// The filter's hash of a key, under the filter's own key: the same in every process.
    private func hash(_ key: TallyState.UsageKey) -> UInt64 {
        var hasher = SipHash(key: hashKey)
        hasher.combine(key.account)
        hasher.combine(key.id)
        return hasher.finalize()
    }

    private func mayHold(_ key: TallyState.UsageKey, from: Int64?, _ days: [Int64: [SplitBlockBloomFilter]]) -> Bool {
        let hash = hash(key)
        // One mask for every segment: only the block differs.
        let mask = SplitBlockBloomFilter.mask(hash)
        return days.contains { day, segments in day >= (from ?? .min) && segments.contains { $0.mightContain(hash, mask: mask) } }
    }

    public var isEmpty: Bool { days.withLock { $0.isEmpty } }
    /// How many insertions were made (a key inserted twice counts twice).
    public var count: Int { days.withLock { $0.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } } } }
    /// How many days have a filter.
    public var dayCount: Int { days.withLock { $0.count } }
    public var segmentCount: Int { days.withLock { $0.values.reduce(0) { $0 + $1.count } } }
    public var bytes: Int { days.withLock { $0.values.reduce(0) { $0 + $1.reduce(0) { $0 + $1.bytes } } } }
}

/// Parquet's split-block Bloom filter: each key sets one bit in each of the eight 32-bit words of
/// one 256-bit block, so a lookup touches one cache line. Sized at 16 bits a key.
struct SplitBlockBloomFilter: Sendable {
    static let bitsPerKey = 16
    /// Parquet's salts: odd constants that spread one 32-bit hash over eight bit positions.
    static let salt: SIMD8<UInt32> = [0x47b6_137b, 0x4497_4d91, 0x8824_ad5b, 0xa2b7_289d, 0x7054_95c7, 0x2df1_424b, 0x9efc_4947, 0x5c6b_fb31]

    private var blocks: [SIMD8<UInt32>]
    let capacity: Int
    private(set) var count = 0

    init(capacity: Int) {
        self.capacity = capacity
        blocks = Array(repeating: .zero, count: max(1, (capacity * SplitBlockBloomFilter.bitsPerKey + 255) / 256))
    }

    var bytes: Int { blocks.count * MemoryLayout<SIMD8<UInt32>>.stride }

    var image: RetiredUsageKeys.Image.Segment {
        // A block is eight 32-bit words side by side: the bits are copied as they lie.
        let words = blocks.withUnsafeBytes { Array($0.bindMemory(to: UInt32.self)) }
        return RetiredUsageKeys.Image.Segment(capacity: capacity, count: count, words: words)
    }

    init(_ image: RetiredUsageKeys.Image.Segment) throws(TallyError) {
        guard image.capacity > 0, image.count >= 0, image.count <= image.capacity,
              image.words.count == 8 * max(1, (image.capacity * SplitBlockBloomFilter.bitsPerKey + 255) / 256) else {
            throw TallyError(.snapshotUnusable, "a segment of the filter's image does not match its capacity")
        }
        capacity = image.capacity
        count = image.count
        // The words as they lie, eight to a block.
        let blockCount = image.words.count / 8
        blocks = [SIMD8<UInt32>](unsafeUninitializedCapacity: blockCount) { buffer, initialized in
            image.words.withUnsafeBytes { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: $0) }
            initialized = blockCount
        }
    }

    /// The block: the hash's upper half scaled to the block count (no division).
    private func block(_ hash: UInt64) -> Int { Int(((hash >> 32) &* UInt64(blocks.count)) >> 32) }

    /// One bit in each word, chosen by the hash's lower half times the word's salt.
    @inline(__always)
    static func mask(_ hash: UInt64) -> SIMD8<UInt32> {
        let positions = (SIMD8(repeating: UInt32(truncatingIfNeeded: hash)) &* salt) &>> 27
        return SIMD8(repeating: 1) &<< positions
    }

    mutating func insert(_ hash: UInt64) {
        blocks[block(hash)] |= SplitBlockBloomFilter.mask(hash)
        count += 1
    }

    /// With the hash's `mask`, worked out once for all the segments asked.
    @inline(__always)
    func mightContain(_ hash: UInt64, mask: SIMD8<UInt32>) -> Bool { blocks[block(hash)] & mask == mask }
}
