/// An amount of yuan, held as an integer count of micro-yuan (1/10,000 fen).
///
/// Why micro-yuan: unit prices carry up to 6 decimals ("0.0028" yuan per call), so the smallest
/// unit that represents every price and every product of a price and a call count exactly is
/// 0.000001 yuan. Money never passes through binary floating point; the only rounding is
/// `roundedToFen()`, called explicitly where SPEC section 1 says a rounding happens.
/// Addition and subtraction trap on overflow (Swift's default); multiplication by a count reports
/// overflow as an error, because counts come from users.
public struct Money: Hashable, Comparable, Sendable, Codable {
    /// The amount in micro-yuan: 1 yuan is 1,000,000; 1 fen is 10,000.
    public let microyuan: Int64

    public static let microyuanPerYuan: Int64 = 1_000_000
    public static let microyuanPerFen: Int64 = 10_000
    public static let zero = Money(microyuan: 0)

    public init(microyuan: Int64) { self.microyuan = microyuan }

    /// Whole yuan and fen, for literals in tests and catalog defaults.
    public init(yuan: Int64, fen: Int64 = 0) {
        self.microyuan = yuan * Money.microyuanPerYuan + fen * Money.microyuanPerFen
    }

    public static func < (a: Money, b: Money) -> Bool { a.microyuan < b.microyuan }
    public static func + (a: Money, b: Money) -> Money { Money(microyuan: a.microyuan + b.microyuan) }
    public static func - (a: Money, b: Money) -> Money { Money(microyuan: a.microyuan - b.microyuan) }
    public static prefix func - (a: Money) -> Money { Money(microyuan: -a.microyuan) }
    public static func += (a: inout Money, b: Money) { a = a + b }
    public static func -= (a: inout Money, b: Money) { a = a - b }

    public var isNegative: Bool { microyuan < 0 }
    public var isPositive: Bool { microyuan > 0 }

    /// This amount times a count (calls, packs, months), or `nil` when the product overflows.
    public func multiplied(by count: Int64) -> Money? {
        let (product, overflow) = microyuan.multipliedReportingOverflow(by: count)
        return overflow ? nil : Money(microyuan: product)
    }

    /// Rounds half up (四舍五入) to the fen: 0.005 becomes 0.01. Negative amounts round half away
    /// from zero, so that a refund mirrors the charge it reverses.
    public func roundedToFen() -> Money {
        Money(microyuan: Money.divideRoundingHalfUp(Int128(microyuan), by: Int128(Money.microyuanPerFen))
            * Money.microyuanPerFen)
    }

    /// `self × numerator / denominator`, rounded half up to the fen, computed in 128 bits so that
    /// no intermediate product can overflow. Used for proration and refund shares.
    public func prorated(_ numerator: Int64, over denominator: Int64) -> Money {
        precondition(denominator > 0, "proration over a non-positive denominator")
        let fen = Money.divideRoundingHalfUp(
            Int128(microyuan) * Int128(numerator), by: Int128(denominator) * Int128(Money.microyuanPerFen))
        return Money(microyuan: fen * Money.microyuanPerFen)
    }

    public var isWholeFen: Bool { microyuan % Money.microyuanPerFen == 0 }

    static func divideRoundingHalfUp(_ value: Int128, by divisor: Int128) -> Int64 {
        let magnitude = value.magnitude
        let quotient = (magnitude + divisor.magnitude / 2) / divisor.magnitude
        let signed = value < 0 ? -Int128(quotient) : Int128(quotient)
        guard let result = Int64(exactly: signed) else { preconditionFailure("rounded amount overflows") }
        return result
    }
}

// MARK: - Text

extension Money: CustomStringConvertible {
    /// The amount with exactly two decimals ("5597.20"), as every interface shows money. Amounts
    /// are rounded where SPEC says before they reach an interface; an amount that is not whole fen
    /// (only ever seen in diagnostics) shows all six decimals rather than hiding the difference.
    public var description: String {
        Money.format(microyuan, decimals: isWholeFen ? 2 : 6)
    }

    /// A unit price: as many decimals as it needs, at least two ("0.0028", "0.003", "1.00").
    public var unitPriceDescription: String {
        var decimals = 6
        var value = microyuan
        while decimals > 2, value % 10 == 0 { value /= 10; decimals -= 1 }
        return Money.format(microyuan, decimals: decimals)
    }

    private static func format(_ microyuan: Int64, decimals: Int) -> String {
        let sign = microyuan < 0 ? "-" : ""
        let magnitude = microyuan.magnitude
        let whole = magnitude / UInt64(microyuanPerYuan)
        var fraction = String(magnitude % UInt64(microyuanPerYuan))
        fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
        return "\(sign)\(whole).\(fraction.prefix(decimals))"
    }

    /// Parses a non-negative decimal string with at most `decimalsMax` decimals ("840", "840.5",
    /// "840.00"); `nil` for anything else, including signs, exponents, spaces and amounts over
    /// `Money.parsedYuanMax`.
    public init?(parsing text: Substring, decimalsMax: Int = 2) {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let wholeText = parts.first, !wholeText.isEmpty, wholeText.count <= 13,
              wholeText.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        var fractionText = parts.count == 2 ? parts[1] : ""
        if parts.count == 2 && fractionText.isEmpty { return nil }
        guard fractionText.count <= decimalsMax, fractionText.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            return nil
        }
        guard let whole = Int64(wholeText), whole <= Money.parsedYuanMax else { return nil }
        fractionText += String(repeating: "0", count: 6 - fractionText.count)
        guard let fraction = Int64(fractionText) else { return nil }
        self.init(microyuan: whole * Money.microyuanPerYuan + fraction)
    }

    public init?(parsing text: String, decimalsMax: Int = 2) {
        self.init(parsing: Substring(text), decimalsMax: decimalsMax)
    }

    /// What is wrong with a text that `init?(parsing:)` refused, as the error to answer with: a
    /// sign, too large, too many decimals, or not an amount at all.
    public static func parsingError(_ text: String, field: String, decimalsMax: Int = 2) -> TallyError {
        let digits = { (part: Substring) in !part.isEmpty && part.allSatisfy { $0.isASCII && $0.isNumber } }
        let unsigned = text.hasPrefix("-") || text.hasPrefix("+") ? text.dropFirst() : Substring(text)
        let parts = unsigned.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        let wellFormed = digits(parts[0]) && (parts.count == 1 || digits(parts[1]))
        if wellFormed, text.hasPrefix("-"), unsigned.contains(where: { $0 != "0" && $0 != "." }) {
            return TallyError(.amountOutOfRange, "\(field) is \(text): an amount is zero or more, without a sign")
        }
        if wellFormed, parts[0].count > 13 || Int64(parts[0]).map({ $0 > parsedYuanMax }) ?? true {
            return TallyError(.amountOutOfRange, "\(field) is over the largest amount accepted, 1,000,000,000,000 yuan")
        }
        if wellFormed, parts.count == 2, parts[1].count > decimalsMax {
            return TallyError(.invalidAmount, "\(field) has \(parts[1].count) decimals; an amount in yuan has at most \(decimalsMax) (\"12.50\")")
        }
        return TallyError(.invalidAmount, "\(field) must be an amount in yuan as a decimal string, such as \"12.50\"")
    }

    /// The largest amount any interface accepts: one trillion yuan. Far above any real price or
    /// top-up, and well below the 9.2 trillion-yuan ceiling of `Int64` micro-yuan; products with
    /// counts are computed with `multiplied(by:)`, which reports overflow.
    public static let parsedYuanMax: Int64 = 1_000_000_000_000
}
