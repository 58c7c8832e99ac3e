/// Money, instants and ledger accounts are stored as bare JSON scalars (`5597200000`, not
/// `{"microyuan":5597200000}`): a bill fact holds a dozen of them, and each object was a container
/// for the encoder to open and close, more than a quarter of a bill run's encoding time and a
/// fifth of the bytes it wrote. Facts written before held the one-key objects; decoding reads both.
enum ScalarCoding {
    private struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// The bare scalar, or the value under `legacyKey` of a one-key object.
    static func decode<T: Decodable>(_ decoder: any Decoder, legacyKey: String) throws -> T {
        if let value = try? decoder.singleValueContainer().decode(T.self) { return value }
        return try decoder.container(keyedBy: Key.self).decode(T.self, forKey: Key(stringValue: legacyKey))
    }

    static func encode<T: Encodable>(_ value: T, _ encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

extension Money {
    public init(from decoder: any Decoder) throws { self.init(microyuan: try ScalarCoding.decode(decoder, legacyKey: "microyuan")) }
    public func encode(to encoder: any Encoder) throws { try ScalarCoding.encode(microyuan, encoder) }
}

extension Instant {
    public init(from decoder: any Decoder) throws { self.init(microseconds: try ScalarCoding.decode(decoder, legacyKey: "microseconds")) }
    public func encode(to encoder: any Encoder) throws { try ScalarCoding.encode(microseconds, encoder) }
}

extension LedgerAccount {
    public init(from decoder: any Decoder) throws { self.init(try ScalarCoding.decode(decoder, legacyKey: "name") as String) }
    public func encode(to encoder: any Encoder) throws { try ScalarCoding.encode(name, encoder) }
}
