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
