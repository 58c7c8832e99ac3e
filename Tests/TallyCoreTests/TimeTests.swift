import Testing
@testable import TallyCore

@Suite(.timeLimit(.minutes(5))) struct TimeTests {
    let zone = Zone.beijing

    @Test func parsesAndPrintsRFC3339() {
        let instant = at("2026-01-01T09:00:00+08:00")
        #expect(instant == at("2026-01-01T01:00:00Z"))
        #expect(instant.rfc3339(in: zone) == "2026-01-01T09:00:00+08:00")
        #expect(at("2026-01-01T09:00:00.250+08:00").rfc3339(in: zone) == "2026-01-01T09:00:00.25+08:00")
        #expect(instant.rfc3339(in: Zone(name: "UTC", offsetSeconds: 0)) == "2026-01-01T01:00:00Z")
    }

    @Test(arguments: ["2026-01-01", "2026-01-01T09:00:00", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
                      "2026-01-01T24:00:00Z", "2026-01-01T09:00:00+8:00", "2026-01-01T09:00:00.1234567Z", "x"])
    func refusesMalformedTimestamps(text: String) {
        #expect(Instant(rfc3339: text) == nil)
    }

    /// A month is a calendar month in Beijing time: 2026-01-31T16:00Z is already February there.
    @Test(arguments: [
        ("2026-01-31T15:59:59Z", "2026-01"), ("2026-01-31T16:00:00Z", "2026-02"),
        ("2026-02-01T00:00:00+08:00", "2026-02"), ("2026-01-31T23:59:59+08:00", "2026-01"),
        ("2025-12-31T16:00:00Z", "2026-01"), ("2026-01-01T00:00:00Z", "2026-01"),
    ])
    func monthEdgesInUTCAndBeijingTime(timestamp: String, month: String) {
        #expect(zone.month(of: at(timestamp)).description == month)
    }

    @Test(arguments: [
        ("2026-01-31T10:00:00+08:00", 1, "2026-02-28T10:00:00+08:00"),
        ("2028-01-31T10:00:00+08:00", 1, "2028-02-29T10:00:00+08:00"),
        ("2028-02-29T10:00:00+08:00", 12, "2029-02-28T10:00:00+08:00"),
        ("2026-03-31T00:00:00+08:00", 1, "2026-04-30T00:00:00+08:00"),
        ("2026-12-15T00:00:00+08:00", 1, "2027-01-15T00:00:00+08:00"),
        ("2026-01-01T09:00:00+08:00", 12, "2027-01-01T09:00:00+08:00"),
        ("2026-03-01T10:00:00+08:00", 24, "2028-03-01T10:00:00+08:00"),
        ("2026-05-31T23:30:00+08:00", -3, "2026-02-28T23:30:00+08:00"),
    ])
    func calendarMonthsClampToTheMonthEnd(start: String, months: Int64, expected: String) {
        #expect(zone.adding(months: months, to: at(start)).rfc3339(in: zone) == expected)
    }

    @Test(arguments: [(Int64(2024), true), (2025, false), (2000, true), (1900, false), (2100, false), (2400, true)])
    func leapYears(year: Int64, leap: Bool) {
        #expect(CivilDate.isLeap(year) == leap)
        #expect(CivilDate.daysIn(year: year, month: 2) == (leap ? 29 : 28))
    }

    @Test func daysRoundTripAcrossCenturies() {
        for days in stride(from: Int64(-800_000), through: 800_000, by: 997) {
            #expect(CivilDate(daysSinceEpoch: days).daysSinceEpoch == days)
        }
        #expect(CivilDate(year: 1970, month: 1, day: 1).daysSinceEpoch == 0)
        #expect(CivilDate(year: 2000, month: 3, day: 1).daysSinceEpoch == 11_017)
    }

    /// 365 days from a date in a leap year is not the same calendar day a year later.
    @Test func packValidityByDaysAndByMonths() {
        let bought = at("2027-07-01T10:00:00+08:00")
        #expect(Validity.days(365).expiry(from: bought, in: zone).rfc3339(in: zone) == "2028-06-30T10:00:00+08:00")
        #expect(Validity.months(12).expiry(from: bought, in: zone).rfc3339(in: zone) == "2028-07-01T10:00:00+08:00")
        #expect(Validity.days(365).expiry(from: at("2026-01-01T09:00:00+08:00"), in: zone).rfc3339(in: zone) == "2027-01-01T09:00:00+08:00")
    }

    @Test func monthsParseAndStep() {
        #expect(Month(parsing: "2026-12")?.next.description == "2027-01")
        #expect(Month(parsing: "2026-01")?.previous.description == "2025-12")
        #expect(Month(parsing: "2026-13") == nil)
        #expect(Month(parsing: "26-01") == nil)
        #expect(zone.start(of: Month(year: 2026, month: 2)).rfc3339(in: zone) == "2026-02-01T00:00:00+08:00")
        #expect(zone.end(of: Month(year: 2026, month: 2)).rfc3339(in: zone) == "2026-03-01T00:00:00+08:00")
    }
}
