import Testing
@testable import TallyCore

/// The console's forms: amounts with the currency and separators, counts with separators, times
/// to the minute in the catalog's zone, the zone by the name people use.
@Suite(.timeLimit(.minutes(5))) struct DisplayTests {
    @Test(arguments: [(0, "0"), (7, "7"), (999, "999"), (1_000, "1,000"), (2_000_000, "2,000,000"), (-12_345, "-12,345"),
                      (Int64.max, "9,223,372,036,854,775,807")] as [(Int64, String)])
    func countsHaveSeparators(value: Int64, shown: String) {
        #expect(Display.count(value) == shown)
    }

    @Test(arguments: [("18199.80", "¥18,199.80"), ("0", "¥0.00"), ("999.99", "¥999.99"), ("1000000", "¥1,000,000.00")] as [(String, String)])
    func amountsHaveTheCurrencyAndSeparators(text: String, shown: String) {
        #expect(Display.yuan(Money(parsing: text)!) == shown)
    }

    @Test func negativeAmountsKeepTheirSign() {
        #expect(Display.yuan(Money.zero - Money(parsing: "1234.50")!) == "-¥1,234.50")
    }

    @Test func timesReadToTheMinuteInTheZone() {
        let instant = Instant(rfc3339: "2026-12-07T07:14:59.123456Z")!
        #expect(Display.time(instant, in: .beijing) == "2026-12-07 15:14")
        #expect(Display.zoneName(.beijing) == "北京时间 Beijing time")
        #expect(Display.zoneName(Zone(name: "UTC", offsetSeconds: 0)) == "UTC (UTC+00:00)")
        #expect(Display.zoneName(Zone(name: "America/Bogota", offsetSeconds: -5 * 3600)) == "America/Bogota (UTC-05:00)")
    }
}
