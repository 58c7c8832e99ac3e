import Synchronization

/// The usage keys that left the idempotency index (recorded before its window), in a Bloom
/// filter: a key it does not hold was never stored, unless another process stored it. The engine
/// asks it before an event reaches the lock; for a key it may hold, the engine reads the store
/// first and puts what the store has back into the index, so an old id sent again is answered as
/// a duplicate without the batch failing at the store's unique index and the engine reloading
/// everything (docs/decisions.md).
///
/// About 2 bytes a key (16 bits), with about 0.1-0.3% of absent keys answered "maybe": each of
/// those costs one read of the store outside the engine's lock, never a wrong answer. It grows
/// with every event that leaves the index, in segments four times the size of the one before, so
/// that no segment is ever rehashed (a Bloom filter keeps no keys to rehash).
///
/// Each partition has its own, hashed under a key of its own (`SipHash`, not the process's seeded
/// hasher), so that it can be written into the partition's snapshot and read back by the next
/// process.
///
/// Shared, not copied, by the states that hold it (a preview's copy adds nothing to it): adding a
/// key that was stored can only make the engine read the store once more.
public final class RetiredUsageKeys: Sendable {
    private let segments: Mutex<[SplitBlockBloomFilter]>
    /// The keys the first segment is sized for; each later one is sized for four times as many.
    let firstCapacity: Int
    /// The key of the filter's hash: random for a new filter, kept with it in a snapshot.
    let hashKey: (UInt64, UInt64)

    public init(firstCapacity: Int = 1 << 20) {
        precondition(firstCapacity > 0, "a filter holds at least one key")
        self.firstCapacity = firstCapacity
        var random = SystemRandomNumberGenerator()
        hashKey = (random.next(), random.next())
        segments = Mutex([])
    }

    /// A filter as an image left it.
    public init(_ image: Image) throws(TallyError) {
        guard image.firstCapacity > 0, image.hashKey.count == 2 else {
            throw TallyError(.snapshotUnusable, "the filter's image has no capacity or no key")
        }
        firstCapacity = image.firstCapacity
        hashKey = (image.hashKey[0], image.hashKey[1])
        segments = Mutex(try image.segments.map { segment throws(TallyError) in try SplitBlockBloomFilter(segment) })
    }

    /// What the filter holds, as plain values: what a partition's snapshot keeps of it.
    public struct Image: Sendable, Hashable {
        public let firstCapacity: Int
        /// The hash's key: two words.
        public let hashKey: [UInt64]
        public let segments: [Segment]

        public init(firstCapacity: Int, hashKey: [UInt64], segments: [Segment]) {
            self.firstCapacity = firstCapacity
            self.hashKey = hashKey
            self.segments = segments
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

    /// The filter's image: a copy of its bits, taken under its lock.
    /// Copied out of the lock (the segments are shared with the filter until it next changes).
    public var image: Image {
        Image(firstCapacity: firstCapacity, hashKey: [hashKey.0, hashKey.1], segments: segments.withLock { $0 }.map(\.image))
    }

    public func insert(_ key: TallyState.UsageKey) { insert(contentsOf: CollectionOfOne(key)) }

    public func insert<Keys: Sequence>(contentsOf keys: Keys) where Keys.Element == TallyState.UsageKey {
        segments.withLock { segments in
            for key in keys {
                if segments.last.map({ $0.count >= $0.capacity }) ?? true {
                    segments.append(SplitBlockBloomFilter(capacity: segments.last.map { $0.capacity * 4 } ?? firstCapacity))
                }
                segments[segments.count - 1].insert(hash(key))
            }
        }
    }

    /// False when the key was never inserted; true when it was, or by chance.
    public func mightContain(_ key: TallyState.UsageKey) -> Bool {
        segments.withLock { mayHold(key, $0) }
    }

    /// The keys in `keys` the filter may hold, in one pass under its lock.
    public func suspects<Keys: Sequence>(among keys: Keys) -> [TallyState.UsageKey] where Keys.Element == TallyState.UsageKey {
        segments.withLock { segments in
            guard !segments.isEmpty else { return [] }
            return keys.filter { mayHold($0, segments) }
        }
    }

    /// The filter's hash of a key, under the filter's own key: the same in every process.
    private func hash(_ key: TallyState.UsageKey) -> UInt64 {
        var hasher = SipHash(key: hashKey)
        hasher.combine(key.account)
        hasher.combine(key.id)
        return hasher.finalize()
    }

    private func mayHold(_ key: TallyState.UsageKey, _ segments: [SplitBlockBloomFilter]) -> Bool {
        let hash = hash(key)
        return segments.contains { $0.mightContain(hash) }
    }

    public var isEmpty: Bool { segments.withLock { $0.isEmpty } }
    /// How many insertions were made (a key inserted twice counts twice).
    public var count: Int { segments.withLock { $0.reduce(0) { $0 + $1.count } } }
    public var segmentCount: Int { segments.withLock { $0.count } }
    public var bytes: Int { segments.withLock { $0.reduce(0) { $0 + $1.bytes } } }
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
        blocks = stride(from: 0, to: image.words.count, by: 8).map { SIMD8(image.words[$0..<$0 + 8]) }
    }

    /// The block: the hash's upper half scaled to the block count (no division).
    private func block(_ hash: UInt64) -> Int { Int(((hash >> 32) &* UInt64(blocks.count)) >> 32) }

    /// One bit in each word, chosen by the hash's lower half times the word's salt.
    private static func mask(_ hash: UInt64) -> SIMD8<UInt32> {
        let positions = (SIMD8(repeating: UInt32(truncatingIfNeeded: hash)) &* salt) &>> 27
        return SIMD8(repeating: 1) &<< positions
    }

    mutating func insert(_ hash: UInt64) {
        blocks[block(hash)] |= SplitBlockBloomFilter.mask(hash)
        count += 1
    }

    func mightContain(_ hash: UInt64) -> Bool {
        let mask = SplitBlockBloomFilter.mask(hash)
        return blocks[block(hash)] & mask == mask
    }
}
