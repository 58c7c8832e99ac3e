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
