import Foundation
import TallyCore

/// A partition's snapshot as a store keeps it: the partition, the position of the last fact it
/// covers (the store's sequence: every fact of the partition at or before it is in the snapshot,
/// none after it), when it was taken, and its bytes (`SnapshotCodec`).
public struct StoredSnapshot: Sendable, Hashable {
    public let partition: Int
    public let position: Int64
    public let taken: Instant
    public let bytes: [UInt8]

    /// How many snapshots of a partition a store keeps: the newest, and the one before it should
    /// the newest be unusable.
    public static let keptPerPartition = 2

    public init(partition: Int, position: Int64, taken: Instant, bytes: [UInt8]) {
        self.partition = partition
        self.position = position
        self.taken = taken
        self.bytes = bytes
    }
}

/// What the durable stores' SQL says of the shared facts (`FactRoute.sharedKinds`): the condition
/// of the partial index that finds them, and of the query that reads them whatever the snapshots.
public enum SharedFacts {
    public static let condition = "kind IN (\(FactRoute.sharedKinds.map { "'\($0)'" }.joined(separator: ", ")))"
}

/// The bytes of a partition's snapshot: whole or refused. Format 2 keeps the filter of retired ids
/// by day (format 1, in one piece, is refused and the partition replayed). A header (a magic word, the format,
/// a checksum of everything after it), then the partition's records as JSON, then the usage
/// index and the filter of retired ids as plain binary (they are most of a snapshot's bytes,
/// and JSON would triple them).
///
/// A snapshot of another format, or whose checksum does not match, or whose contents do not
/// parse, is refused (`snapshot_unusable`): the engine then replays the partition from its facts.
public enum SnapshotCodec {
    /// The format written. A change to what a partition's state holds, or to how it is written,
    /// takes a new number; a snapshot of another number is ignored, never read.
    public static let format: UInt32 = 2
    /// The most days of a filter a snapshot may hold: far more than the ids' window (a damaged
    /// count is refused before it reserves memory).
    static let filterDaysMax = 10_000
    static let magic: UInt32 = 0x544C_5953   // "TLYS"
    /// Magic, format, checksum.
    static let headerBytes = 16
    /// The checksum's fixed key: it finds damage, it does not authenticate.
    static let checksumKey: (UInt64, UInt64) = (0x7461_6C6C_7973_6E61, 0x7073_686F_7473_756D)

    public static func encode(_ image: PartitionState.Image) throws -> [UInt8] {
        var writer = ByteWriter()
        writer.u32(magic)
        writer.u32(format)
        writer.u64(0)   // the checksum, written last
        let records = try StreamingJSONEncoder.encode(image.records)
        writer.u64(UInt64(records.count))
        writer.bytes.append(contentsOf: records)
        for generation in [image.usageCurrent, image.usagePrevious] {
            writer.u64(UInt64(generation.count))
            for usage in generation { writer.usage(usage) }
        }
        if let retired = image.retired {
            writer.u8(1)
            writer.u64(UInt64(retired.firstCapacity))
            writer.u64(retired.hashKey[0])
            writer.u64(retired.hashKey[1])
            writer.u64(UInt64(retired.days.count))
            for day in retired.days {
                writer.i64(day.day)
                writer.u64(UInt64(day.segments.count))
                for segment in day.segments {
                    writer.u64(UInt64(segment.capacity))
                    writer.u64(UInt64(segment.count))
                    writer.u64(UInt64(segment.words.count))
                    writer.words(segment.words)
                }
            }
        } else {
            writer.u8(0)
        }
        let sum = checksum(writer.bytes[headerBytes...])
        withUnsafeBytes(of: sum.littleEndian) { writer.bytes.replaceSubrange(8..<16, with: $0) }
        return writer.bytes
    }

    public static func decode(_ bytes: [UInt8]) throws(TallyError) -> PartitionState.Image {
        var reader = ByteReader(bytes)
        guard try reader.u32() == magic else { throw unusable("it is not a snapshot") }
        let found = try reader.u32()
        guard found == format else { throw unusable("it is of format \(found), and this Tally reads format \(format)") }
        let sum = try reader.u64()
        guard sum == checksum(bytes[headerBytes...]) else { throw unusable("its checksum does not match its contents") }
        let recordBytes = try reader.take(Int(clamping: try reader.u64()))
        let records: PartitionState.Records
        do {
            records = try JSONDecoder().decode(PartitionState.Records.self, from: Data(recordBytes))
        } catch {
            throw unusable("its records do not parse: \(error)")
        }
        var generations: [[IndexedUsage]] = []
        for _ in 0..<2 {
            let count = try reader.count(atMost: bytes.count)
            var generation: [IndexedUsage] = []
            generation.reserveCapacity(count)
            for _ in 0..<count { generation.append(try reader.usage()) }
            generations.append(generation)
        }
        var retired: RetiredUsageKeys.Image?
        if try reader.u8() == 1 {
            let firstCapacity = Int(clamping: try reader.u64())
            let hashKey = [try reader.u64(), try reader.u64()]
            var days: [RetiredUsageKeys.Image.Day] = []
            for _ in 0..<(try reader.count(atMost: SnapshotCodec.filterDaysMax)) {
                let day = try reader.i64()
                var segments: [RetiredUsageKeys.Image.Segment] = []
                for _ in 0..<(try reader.count(atMost: 64)) {
                    let capacity = Int(clamping: try reader.u64()), count = Int(clamping: try reader.u64())
                    let words = try reader.words(try reader.count(atMost: bytes.count / 4))
                    segments.append(RetiredUsageKeys.Image.Segment(capacity: capacity, count: count, words: words))
                }
                days.append(RetiredUsageKeys.Image.Day(day: day, segments: segments))
            }
            retired = RetiredUsageKeys.Image(firstCapacity: firstCapacity, hashKey: hashKey, days: days)
        }
        guard reader.atEnd else { throw unusable("it has bytes after its end") }
        return PartitionState.Image(records: records, usageCurrent: generations[0], usagePrevious: generations[1], retired: retired)
    }

    static func unusable(_ why: String) -> TallyError { TallyError(.snapshotUnusable, "the snapshot cannot be used: \(why)") }

    /// SipHash-1-3 of the bytes, eight at a time.
    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        var hasher = SipHash(key: checksumKey)
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset + 8 <= raw.count {
                hasher.combine(word: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
                offset += 8
            }
            hasher.combine(bytes: raw[offset...])
        }
        return hasher.finalize()
    }
}

/// Little-endian numbers and length-prefixed texts into bytes.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }

    mutating func text(_ text: String?) {
        guard let text else { return u32(UInt32.max) }
        u32(UInt32(text.utf8.count))
        bytes.append(contentsOf: text.utf8)
    }

    mutating func words(_ words: [UInt32]) {
        #if _endian(little)
        words.withUnsafeBytes { bytes.append(contentsOf: $0) }
        #else
        for word in words { u32(word) }
        #endif
    }

    mutating func usage(_ usage: IndexedUsage) {
        let entry = usage.entry
        text(usage.account)
        text(usage.id)
        text(entry.api)
        text(entry.edition)
        text(entry.refusal?.rawValue)
        for number in [entry.calls, entry.at.microseconds, entry.recorded.microseconds, entry.free, entry.pack, entry.postpaid, entry.refused] {
            i64(number)
        }
    }
}

/// Reads what `ByteWriter` wrote; running out of bytes, or a length past them, is a damaged
/// snapshot.
struct ByteReader {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { offset == bytes.count }

    mutating func take(_ count: Int) throws(TallyError) -> ArraySlice<UInt8> {
        guard count >= 0, count <= bytes.count - offset else { throw SnapshotCodec.unusable("it ends early") }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    mutating func u8() throws(TallyError) -> UInt8 { try take(1).first! }

    mutating func u32() throws(TallyError) -> UInt32 { UInt32(littleEndian: try load(UInt32.self)) }

    mutating func u64() throws(TallyError) -> UInt64 { UInt64(littleEndian: try load(UInt64.self)) }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws(TallyError) -> T {
        try take(MemoryLayout<T>.size).withUnsafeBytes { $0.loadUnaligned(as: T.self) }
    }

    mutating func i64() throws(TallyError) -> Int64 { Int64(bitPattern: try u64()) }

    /// A count of things that follow, refused past `limit` (a damaged length would reserve memory
    /// for billions).
    mutating func count(atMost limit: Int) throws(TallyError) -> Int {
        let count = try u64()
        guard count <= UInt64(limit) else { throw SnapshotCodec.unusable("a count of \(count) is past its bytes") }
        return Int(count)
    }

    mutating func text() throws(TallyError) -> String? {
        let length = try u32()
        if length == UInt32.max { return nil }
        return String(decoding: try take(Int(length)), as: UTF8.self)
    }

    mutating func words(_ count: Int) throws(TallyError) -> [UInt32] {
        let raw = try take(count * 4)
        return [UInt32](unsafeUninitializedCapacity: count) { buffer, initialized in
            raw.withUnsafeBytes { source in
                #if _endian(little)
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: source)
                #else
                for index in 0..<count { buffer[index] = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)) }
                #endif
            }
            initialized = count
        }
    }

    mutating func usage() throws(TallyError) -> IndexedUsage {
        guard let account = try text(), let id = try text(), let api = try text() else { throw SnapshotCodec.unusable("an index entry lacks its key or API") }
        let edition = try text(), refusal = try text()
        let calls = try i64(), at = try i64(), recorded = try i64(), free = try i64(), pack = try i64(), postpaid = try i64(), refused = try i64()
        return IndexedUsage(account: account, id: id, entry: UsageEntry(
            api: api, edition: edition, calls: calls, at: Instant(microseconds: at), recorded: Instant(microseconds: recorded),
            free: free, pack: pack, postpaid: postpaid, refused: refused, refusal: refusal))
    }
}
