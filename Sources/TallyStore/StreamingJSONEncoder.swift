import Dispatch
import Foundation
import Synchronization
import TallyCore

/// Writes an `Encodable` value as JSON straight into bytes, as its `encode(to:)` calls come, with
/// none of the intermediate tree that Foundation's `JSONEncoder` builds: that tree was 42% of the
/// CPU of a bill run, which stores every bill and notice as a JSON fact. What it writes is what
/// `JSONDecoder` reads back into an equal value (a test holds every kind of fact to it); keys come
/// in the order the value encodes them.
///
/// Containers are closed lazily: a write to a container first closes every container opened
/// deeper than it, and the top-level call closes the rest. That is how Codable's synthesized code
/// (and every type in TallyCore) uses containers: one after another, never interleaved.
/// Floating-point numbers are refused: money and time are integers here.
public enum StreamingJSONEncoder {
    public static func encode<T: Encodable>(_ value: T) throws -> [UInt8] {
        let sink = Sink()
        try value.encode(to: StreamEncoder(sink: sink))
        sink.close(above: 0)
        return sink.bytes
    }

    final class Sink {
        var bytes: [UInt8] = []
        /// The open containers: the byte that closes each, and whether it holds an element yet.
        var open: [(closer: UInt8, empty: Bool)] = []

        init() { bytes.reserveCapacity(256) }

        func close(above depth: Int) {
            while open.count > depth { bytes.append(open.removeLast().closer) }
        }

        /// Opens a container at the current depth.
        func begin(_ opener: UInt8, _ closer: UInt8) -> Int {
            bytes.append(opener)
            open.append((closer, true))
            return open.count
        }

        /// Starts an element of the container at `depth`: closes what is deeper, writes the comma.
        func element(at depth: Int) {
            close(above: depth)
            if depth > 0 {
                if !open[depth - 1].empty { bytes.append(UInt8(ascii: ",")) }
                open[depth - 1].empty = false
            }
        }

        func key(_ key: String, at depth: Int) {
            element(at: depth)
            string(key)
            bytes.append(UInt8(ascii: ":"))
        }

        func string(_ text: String) { JSONString.append(text, to: &bytes) }

        func literal(_ text: String) { bytes.append(contentsOf: text.utf8) }
        func write(_ flag: Bool) { literal(flag ? "true" : "false") }
        func write(_ number: Int64) { literal(String(number)) }
        func write(_ number: UInt64) { literal(String(number)) }

        static func floatingPoint(_ value: Any) -> EncodingError {
            EncodingError.invalidValue(value, .init(codingPath: [], debugDescription: "floating point is not written here"))
        }

        /// Writes one value: a primitive directly, anything else through its own `encode(to:)`.
        func value<T: Encodable>(_ value: T) throws {
            // Type identity, not dynamic casts: this runs for every value written.
            let type = T.self
            if type == String.self { return string(unsafeBitCast(value, to: String.self)) }
            if type == Int64.self { return write(unsafeBitCast(value, to: Int64.self)) }
            if type == Int.self { return write(Int64(unsafeBitCast(value, to: Int.self))) }
            if type == Bool.self { return write(unsafeBitCast(value, to: Bool.self)) }
            if type == Int32.self { return write(Int64(unsafeBitCast(value, to: Int32.self))) }
            if type == UInt64.self { return write(unsafeBitCast(value, to: UInt64.self)) }
            if type == Double.self || type == Float.self { throw Sink.floatingPoint(value) }
            let depth = open.count
            try value.encode(to: StreamEncoder(sink: self))
            close(above: depth)
        }
    }

    struct StreamEncoder: Encoder {
        let sink: Sink
        var codingPath: [any CodingKey] { [] }
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            KeyedEncodingContainer(Keyed<Key>(sink: sink, depth: sink.begin(UInt8(ascii: "{"), UInt8(ascii: "}"))))
        }

        func unkeyedContainer() -> any UnkeyedEncodingContainer {
            Unkeyed(sink: sink, depth: sink.begin(UInt8(ascii: "["), UInt8(ascii: "]")))
        }

        func singleValueContainer() -> any SingleValueEncodingContainer { Single(sink: sink) }
    }

    struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let sink: Sink
        let depth: Int
        var codingPath: [any CodingKey] { [] }

        mutating func encodeNil(forKey key: Key) throws {
            sink.key(key.stringValue, at: depth)
            sink.literal("null")
        }

        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            sink.key(key.stringValue, at: depth)
            try sink.value(value)
        }

        mutating func encode(_ value: Bool, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(value) }
        mutating func encode(_ value: String, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.string(value) }
        mutating func encode(_ value: Double, forKey key: Key) throws { throw Sink.floatingPoint(value) }
        mutating func encode(_ value: Float, forKey key: Key) throws { throw Sink.floatingPoint(value) }
        mutating func encode(_ value: Int, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(Int64(value)) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(Int64(value)) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(Int64(value)) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(Int64(value)) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(value) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { sink.key(key.stringValue, at: depth); sink.write(value) }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            sink.key(key.stringValue, at: depth)
            return StreamEncoder(sink: sink).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
            sink.key(key.stringValue, at: depth)
            return StreamEncoder(sink: sink).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder { superEncoder(forKey: Key(stringValue: "super")!) }

        mutating func superEncoder(forKey key: Key) -> any Encoder {
            sink.key(key.stringValue, at: depth)
            return StreamEncoder(sink: sink)
        }
    }

    struct Unkeyed: UnkeyedEncodingContainer {
        let sink: Sink
        let depth: Int
        var codingPath: [any CodingKey] { [] }
        private(set) var count = 0

        init(sink: Sink, depth: Int) {
            self.sink = sink
            self.depth = depth
        }

        mutating func encodeNil() throws {
            sink.element(at: depth)
            sink.literal("null")
            count += 1
        }

        mutating func encode<T: Encodable>(_ value: T) throws {
            sink.element(at: depth)
            try sink.value(value)
            count += 1
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            sink.element(at: depth)
            count += 1
            return StreamEncoder(sink: sink).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
            sink.element(at: depth)
            count += 1
            return StreamEncoder(sink: sink).unkeyedContainer()
        }

        mutating func superEncoder() -> any Encoder {
            sink.element(at: depth)
            count += 1
            return StreamEncoder(sink: sink)
        }
    }

    struct Single: SingleValueEncodingContainer {
        let sink: Sink
        var codingPath: [any CodingKey] { [] }

        mutating func encodeNil() throws { sink.literal("null") }
        mutating func encode<T: Encodable>(_ value: T) throws { try sink.value(value) }
        mutating func encode(_ value: Bool) throws { sink.write(value) }
        mutating func encode(_ value: String) throws { sink.string(value) }
        mutating func encode(_ value: Double) throws { throw Sink.floatingPoint(value) }
        mutating func encode(_ value: Float) throws { throw Sink.floatingPoint(value) }
        mutating func encode(_ value: Int) throws { sink.write(Int64(value)) }
        mutating func encode(_ value: Int8) throws { sink.write(Int64(value)) }
        mutating func encode(_ value: Int16) throws { sink.write(Int64(value)) }
        mutating func encode(_ value: Int32) throws { sink.write(Int64(value)) }
        mutating func encode(_ value: Int64) throws { sink.write(value) }
        mutating func encode(_ value: UInt) throws { sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt8) throws { sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt16) throws { sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt32) throws { sink.write(UInt64(value)) }
        mutating func encode(_ value: UInt64) throws { sink.write(value) }
    }
}

extension StreamingJSONEncoder {
    /// Whether a fact is stored as JSON: every fact but usage, which is stored as a row.
    public static func needsBody(_ fact: Fact) -> Bool { !fact.isUsage }

    /// The JSON bodies of a batch's facts, nil for usage facts (stored as rows, not JSON). A large
    /// batch (a bill run's chunk) is encoded on every core.
    public static func bodies(of batch: [Fact]) throws -> [[UInt8]?] {
        @Sendable func encode(_ range: Range<Int>) throws -> [[UInt8]?] {
            try batch[range].map { (fact: Fact) throws -> [UInt8]? in
                needsBody(fact) ? try StreamingJSONEncoder.encode(fact) : nil
            }
        }
        let workers = min(ProcessInfo.processInfo.activeProcessorCount, 8)
        let parallelMin = 512
        guard workers > 1, batch.count >= parallelMin else { return try encode(0..<batch.count) }
        let size = (batch.count + workers - 1) / workers
        let parts = Mutex<[Int: Result<[[UInt8]?], any Error>]>([:])
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let range = min(worker * size, batch.count)..<min((worker + 1) * size, batch.count)
            let result = Result { try encode(range) }
            parts.withLock { $0[worker] = result }
        }
        return try parts.withLock { parts in try (0..<workers).flatMap { try parts[$0]!.get() } }
    }
}
