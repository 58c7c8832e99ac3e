import TallyCore

/// Every limit the engine enforces at its boundary, named with its unit last (TigerStyle).
public enum Limits {
    public static let identifierLengthMax = 64
    public static let eventIDLengthMax = 128
    /// The longest API id and edition a usage event may name, whichever way it comes in (JSON,
    /// gateway headers, an Envoy descriptor).
    public static let apiIDLengthMax = 128
    public static let editionLengthMax = 64
    /// The largest single top-up, voucher or payment: one billion yuan.
    public static let amountYuanMax: Int64 = 1_000_000_000
    public static let packCountMax: Int64 = 1_000
    public static let membershipMonthsMax: Int64 = 120
    public static let membershipYearsMax: Int64 = 10
    /// The most calls one usage event may carry.
    public static let eventCallsMax: Int64 = 1_000_000_000
    /// How far ahead of the clock an event's timestamp may be (SPEC 4: 5 minutes).
    public static let futureToleranceSeconds: Int64 = 300
    /// How far ahead of expiry the "expiring" notices go out (SPEC 7: 7 days).
    public static let expiringNoticeDays: Int64 = 7
    public static let seatUserLengthMax = 128
    public static let featureLengthMax = 64

    static func identifier(_ text: String, _ what: String, lengthMax: Int = identifierLengthMax) throws(TallyError) {
        let allowed = text.utf8.allSatisfy { byte in
            (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: ":")
                || byte == UInt8(ascii: "@")
        }
        guard !text.isEmpty, text.utf8.count <= lengthMax, allowed else {
            throw TallyError(.invalidRequest, "\(what) must be 1 to \(lengthMax) letters, digits or - _ . : @")
        }
    }

    static func amount(_ money: Money, _ what: String, allowZero: Bool = false) throws(TallyError) {
        guard money.isPositive || (allowZero && money == .zero) else {
            throw TallyError(.invalidAmount, "\(what) must be more than 0.00")
        }
        guard money <= Money(yuan: amountYuanMax) else {
            throw TallyError(.amountOutOfRange, "\(what) is over the limit of \(Money(yuan: amountYuanMax))")
        }
        guard money.isWholeFen else { throw TallyError(.invalidAmount, "\(what) must be whole fen (two decimals)") }
    }

    static func count(_ value: Int64, _ what: String, max: Int64) throws(TallyError) {
        guard (1...max).contains(value) else {
            throw TallyError(.countOutOfRange, "\(what) must be from 1 to \(max), got \(value)")
        }
    }
}
