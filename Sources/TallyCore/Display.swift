/// How people read amounts, counts and times: what the console shows. Pure formatting; the API
/// keeps its plain, machine-read forms ("18199.80", RFC 3339).
public enum Display {
    /// Digits in groups of three: "2,000,000".
    public static func count(_ value: Int64) -> String {
        let digits = String(value.magnitude)
        var grouped = ""
        for (index, digit) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { grouped.append(",") }
            grouped.append(digit)
        }
        return value < 0 ? "-" + grouped : grouped
    }

    /// Yuan with the currency and thousands separators: "¥18,199.80", "-¥3.00".
    public static func yuan(_ money: Money) -> String {
        let text = money.description
        let negative = text.hasPrefix("-")
        let unsigned = negative ? text.dropFirst() : Substring(text)
        let parts = unsigned.split(separator: ".", maxSplits: 1)
        let whole = Int64(parts[0]).map(count) ?? String(parts[0])
        return (negative ? "-¥" : "¥") + whole + (parts.count == 2 ? "." + parts[1] : "")
    }

    /// A local time to the minute, "2026-12-07 15:14", in the catalog's zone (named once on the
    /// page, `zoneName`).
    public static func time(_ instant: Instant, in zone: Zone) -> String {
        let date = zone.date(of: instant)
        let (seconds, _) = zone.timeOfDay(of: instant)
        func two(_ value: Int64) -> String { value < 10 ? "0\(value)" : String(value) }
        return "\(date.year)-\(two(Int64(date.month)))-\(two(Int64(date.day))) \(two(seconds / 3600)):\(two(seconds / 60 % 60))"
    }

    /// The zone as people call it: Beijing time for China's, else its name and offset.
    public static func zoneName(_ zone: Zone) -> String {
        if zone.offsetSeconds == 8 * 3600, ["Asia/Shanghai", "Asia/Chongqing", "PRC", "Beijing"].contains(zone.name) {
            return "北京时间 Beijing time"
        }
        let offset = zone.offsetSeconds.magnitude
        func two(_ value: UInt64) -> String { value < 10 ? "0\(value)" : String(value) }
        return "\(zone.name) (UTC\(zone.offsetSeconds < 0 ? "-" : "+")\(two(offset / 3600)):\(two(offset / 60 % 60)))"
    }
}
