/// A point in time: microseconds since 1970-01-01T00:00:00Z.
///
/// Why microseconds: check-and-record spaces calls a few milliseconds apart and the token bucket
/// refills continuously, so seconds are too coarse; an `Int64` of microseconds spans ±292,000 years.
public struct Instant: Hashable, Comparable, Sendable, Codable {
    public let microseconds: Int64

    public static let microsecondsPerSecond: Int64 = 1_000_000

    public init(microseconds: Int64) { self.microseconds = microseconds }
    public init(seconds: Int64) { self.microseconds = seconds * Instant.microsecondsPerSecond }

    public static func < (a: Instant, b: Instant) -> Bool { a.microseconds < b.microseconds }

    public func adding(seconds: Int64) -> Instant { Instant(microseconds: microseconds + seconds * Instant.microsecondsPerSecond) }
    public func adding(microseconds delta: Int64) -> Instant { Instant(microseconds: microseconds + delta) }

    /// Whole seconds since the epoch, rounded toward the past.
    public var seconds: Int64 { Instant.floorDivide(microseconds, Instant.microsecondsPerSecond) }

    static func floorDivide(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }
}

/// A calendar date.
public struct CivilDate: Hashable, Comparable, Sendable {
    public let year: Int64
    public let month: Int64
    public let day: Int64

    public init(year: Int64, month: Int64, day: Int64) {
        self.year = year; self.month = month; self.day = day
    }

    public static func < (a: CivilDate, b: CivilDate) -> Bool { a.daysSinceEpoch < b.daysSinceEpoch }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    public var daysSinceEpoch: Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = Instant.floorDivide(y, 400)
        let yearOfEra = y - era * 400
        let shiftedMonth = month > 2 ? month - 3 : month + 9
        let dayOfYear = (153 * shiftedMonth + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    public init(daysSinceEpoch days: Int64) {
        let z = days + 719_468
        let era = Instant.floorDivide(z, 146_097)
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        self.init(year: yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month: month, day: day)
    }

    public static func isLeap(_ year: Int64) -> Bool { (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 }

    public static func daysIn(year: Int64, month: Int64) -> Int64 {
        switch month {
        case 2: return isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// The same day `count` calendar months later, clamped to the month's last day
    /// (Jan 31 + 1 month = Feb 28, or Feb 29 in a leap year).
    public func adding(months count: Int64) -> CivilDate {
        let index = year * 12 + (month - 1) + count
        let newYear = Instant.floorDivide(index, 12)
        let newMonth = index - newYear * 12 + 1
        return CivilDate(year: newYear, month: newMonth, day: min(day, CivilDate.daysIn(year: newYear, month: newMonth)))
    }

    public func adding(days count: Int64) -> CivilDate { CivilDate(daysSinceEpoch: daysSinceEpoch + count) }
}

/// A calendar month, the unit of free quotas, usage periods and bills.
public struct Month: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    public let year: Int64
    public let month: Int64

    public init(year: Int64, month: Int64) {
        precondition((1...12).contains(month), "month out of range")
        self.year = year; self.month = month
    }

    public static func < (a: Month, b: Month) -> Bool { (a.year, a.month) < (b.year, b.month) }

    public var next: Month { month == 12 ? Month(year: year + 1, month: 1) : Month(year: year, month: month + 1) }
    public var previous: Month { month == 1 ? Month(year: year - 1, month: 12) : Month(year: year, month: month - 1) }
    public var firstDay: CivilDate { CivilDate(year: year, month: month, day: 1) }

    public var description: String {
        let y = String(year), m = month < 10 ? "0\(month)" : String(month)
        return "\(String(repeating: "0", count: max(0, 4 - y.count)))\(y)-\(m)"
    }

    /// Parses "YYYY-MM".
    public init?(parsing text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2,
              let y = Int64(parts[0]), let m = Int64(parts[1]), (1...12).contains(m) else { return nil }
        self.init(year: y, month: m)
    }
}

/// The billing time zone: a fixed offset from UTC.
///
/// Why fixed: the shipped catalog bills in Beijing time (UTC+8, no daylight saving). A zone with
/// daylight saving would need a time-zone database, which the pure core does not read; the catalog
/// loader refuses anything but a fixed offset (docs/decisions.md).
public struct Zone: Hashable, Sendable {
    public let name: String
    public let offsetSeconds: Int64

    public init(name: String, offsetSeconds: Int64) {
        self.name = name; self.offsetSeconds = offsetSeconds
    }

    public static let beijing = Zone(name: "Asia/Shanghai", offsetSeconds: 8 * 3600)

    public func date(of instant: Instant) -> CivilDate {
        CivilDate(daysSinceEpoch: Instant.floorDivide(instant.seconds + offsetSeconds, 86_400))
    }

    /// Seconds since local midnight, with the microseconds that follow.
    func timeOfDay(of instant: Instant) -> (seconds: Int64, microseconds: Int64) {
        let local = instant.microseconds + offsetSeconds * Instant.microsecondsPerSecond
        let dayMicro = 86_400 * Instant.microsecondsPerSecond
        let inDay = local - Instant.floorDivide(local, dayMicro) * dayMicro
        return (inDay / Instant.microsecondsPerSecond, inDay % Instant.microsecondsPerSecond)
    }

    public func month(of instant: Instant) -> Month {
        let d = date(of: instant)
        return Month(year: d.year, month: d.month)
    }

    /// The instant at which a local date and time of day begins.
    public func instant(_ date: CivilDate, secondsIntoDay: Int64 = 0, microseconds: Int64 = 0) -> Instant {
        Instant(microseconds: (date.daysSinceEpoch * 86_400 + secondsIntoDay - offsetSeconds) * Instant.microsecondsPerSecond + microseconds)
    }

    public func start(of month: Month) -> Instant { instant(month.firstDay) }
    public func end(of month: Month) -> Instant { start(of: month.next) }

    /// `count` calendar months after `instant`, at the same local time of day, with end-of-month
    /// clamping.
    public func adding(months count: Int64, to instant: Instant) -> Instant {
        let (seconds, micro) = timeOfDay(of: instant)
        return self.instant(date(of: instant).adding(months: count), secondsIntoDay: seconds, microseconds: micro)
    }

    /// The start of the local day `days` after the day of `instant`.
    public func startOfDay(_ days: Int64, after instant: Instant) -> Instant {
        self.instant(date(of: instant).adding(days: days))
    }
}

// MARK: - RFC 3339

extension Instant {
    /// Parses RFC 3339 with a mandatory offset ("2026-01-01T09:00:00+08:00", "...Z", with up to
    /// six fractional digits); `nil` for anything else.
    public init?(rfc3339 text: String) {
        let b = Array(text.utf8)
        func digits(_ from: Int, _ count: Int) -> Int64? {
            guard from + count <= b.count else { return nil }
            var v: Int64 = 0
            for i in from..<from + count {
                guard b[i] >= 48, b[i] <= 57 else { return nil }
                v = v * 10 + Int64(b[i] - 48)
            }
            return v
        }
        guard b.count >= 20, b[4] == UInt8(ascii: "-"), b[7] == UInt8(ascii: "-"),
              b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
              b[13] == UInt8(ascii: ":"), b[16] == UInt8(ascii: ":"),
              let year = digits(0, 4), let month = digits(5, 2), let day = digits(8, 2),
              let hour = digits(11, 2), let minute = digits(14, 2), let second = digits(17, 2),
              (1...12).contains(month), day >= 1, day <= CivilDate.daysIn(year: year, month: month),
              hour < 24, minute < 60, second < 60 else { return nil }
        var i = 19
        var micro: Int64 = 0
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            var count = 0
            while i < b.count, b[i] >= 48, b[i] <= 57 {
                guard count < 6 else { return nil }
                micro = micro * 10 + Int64(b[i] - 48); count += 1; i += 1
            }
            guard count > 0 else { return nil }
            for _ in count..<6 { micro *= 10 }
        }
        guard i < b.count else { return nil }
        var offset: Int64 = 0
        if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
            guard i + 1 == b.count else { return nil }
        } else {
            guard b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-"), i + 6 == b.count, b[i + 3] == UInt8(ascii: ":"),
                  let oh = digits(i + 1, 2), let om = digits(i + 4, 2), oh < 24, om < 60 else { return nil }
            offset = (oh * 3600 + om * 60) * (b[i] == UInt8(ascii: "-") ? -1 : 1)
        }
        let zone = Zone(name: "", offsetSeconds: offset)
        self = zone.instant(CivilDate(year: year, month: month, day: day),
                            secondsIntoDay: hour * 3600 + minute * 60 + second, microseconds: micro)
    }

    /// RFC 3339 in the given zone ("2027-01-01T09:00:00+08:00"); fractional seconds only when
    /// there are any.
    public func rfc3339(in zone: Zone) -> String {
        let date = zone.date(of: self)
        let (seconds, micro) = zone.timeOfDay(of: self)
        func two(_ v: Int64) -> String { v < 10 ? "0\(v)" : String(v) }
        var text = "\(date.year)-\(two(date.month))-\(two(date.day))T\(two(seconds / 3600)):\(two(seconds / 60 % 60)):\(two(seconds % 60))"
        if micro != 0 {
            var fraction = String(micro)
            fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += "." + fraction
        }
        let offset = zone.offsetSeconds
        if offset == 0 { return text + "Z" }
        let sign = offset < 0 ? "-" : "+"
        return text + "\(sign)\(two(abs(offset) / 3600)):\(two(abs(offset) / 60 % 60))"
    }
}
