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

/// Lowercase hexadecimal digits, for everything that writes bytes as hex (ids, key digests,
/// webhook signatures, JSON's `\u00XX` escapes).
public enum Hex {
    public static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    /// The digit of the low four bits of `nibble`.
    @inlinable
    public static func digit(_ nibble: some BinaryInteger) -> UInt8 { digits[Int(nibble & 0xF)] }
}

/// A text as a JSON string literal, in UTF-8: what the API's JSON and the stores' fact bodies both
/// write. UTF-8 passes through (JSON text is UTF-8); quotes, backslashes and control characters
/// are escaped.
public enum JSONString {
    public static func append(_ text: String, to out: inout [UInt8]) {
        var text = text
        text.withUTF8 { utf8 in
            out.append(UInt8(ascii: "\""))
            // Most texts (ids, codes, amounts) need no escaping: copied in one go.
            if utf8.allSatisfy({ $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }) {
                out.append(contentsOf: utf8)
            } else {
                for byte in utf8 { escape(byte, into: &out) }
            }
            out.append(UInt8(ascii: "\""))
        }
    }

    private static func escape(_ byte: UInt8, into out: inout [UInt8]) {
        switch byte {
        case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
        case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
        case UInt8(ascii: "\n"): out.append(contentsOf: #"\n"#.utf8)
        case UInt8(ascii: "\r"): out.append(contentsOf: #"\r"#.utf8)
        case UInt8(ascii: "\t"): out.append(contentsOf: #"\t"#.utf8)
        case ..<0x20:
            out.append(contentsOf: #"\u00"#.utf8)
            out.append(Hex.digit(byte >> 4))
            out.append(Hex.digit(byte))
        default: out.append(byte)
        }
    }
}

/// SipHash under a key of two words. SipHash-1-3 (the default) is the hash Swift's own `Hasher`
/// uses, but with a key of ours rather than the process's random seed, so that what it hashes can
/// be written down and read back by another process (the filter of retired usage keys in a
/// snapshot). A secret key keeps ids chosen to collide from lining up.
public struct SipHash: Sendable {
    private var v0: UInt64, v1: UInt64, v2: UInt64, v3: UInt64
    private let compressionRounds: Int, finalizationRounds: Int
    /// Bytes not yet in a full word, and how many in all.
    private var tail: UInt64 = 0
    private var length = 0

    /// `rounds`: SipHash-c-d's c and d (2 and 4 for the reference's test vectors).
    public init(key: (UInt64, UInt64), rounds: (compression: Int, finalization: Int) = (1, 3)) {
        compressionRounds = rounds.compression
        finalizationRounds = rounds.finalization
        v0 = key.0 ^ 0x736f_6d65_7073_6575
        v1 = key.1 ^ 0x646f_7261_6e64_6f6d
        v2 = key.0 ^ 0x6c79_6765_6e65_7261
        v3 = key.1 ^ 0x7465_6462_7974_6573
    }

    @inline(__always)
    private mutating func round() {
        v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
        v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
    }

    @inline(__always)
    private mutating func compress(_ word: UInt64) {
        v3 ^= word
        for _ in 0..<compressionRounds { round() }
        v0 ^= word
    }

    public mutating func combine(_ byte: UInt8) {
        tail |= UInt64(byte) << (UInt64(length & 7) * 8)
        length += 1
        if length & 7 == 0 {
            compress(tail)
            tail = 0
        }
    }

    /// Eight bytes at once, little-endian: only between whole words (a checksum's loop).
    public mutating func combine(word: UInt64) {
        precondition(length & 7 == 0, "a word combined after a partial one")
        compress(word)
        length += 8
    }

    public mutating func combine(bytes: some Sequence<UInt8>) {
        for byte in bytes { combine(byte) }
    }

    /// A text's UTF-8 bytes, then a byte no UTF-8 text holds (0xFF), so that ("ab", "c") and
    /// ("a", "bc") hash apart.
    public mutating func combine(_ text: String) {
        var text = text
        text.withUTF8 { combine(bytes: $0) }
        combine(0xFF)
    }

    public consuming func finalize() -> UInt64 {
        compress(tail | UInt64(truncatingIfNeeded: length) << 56)
        v2 ^= 0xFF
        for _ in 0..<finalizationRounds { round() }
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inline(__always)
    func rotatedLeft(_ count: UInt64) -> UInt64 { (self << count) | (self >> (64 - count)) }
}
