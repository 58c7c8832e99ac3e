import Testing
@testable import TallyCore

@Suite(.timeLimit(.minutes(5))) struct MoneyTests {
    @Test(arguments: [
        ("0", 0), ("0.01", 10_000), ("5597.20", 5_597_200_000), ("840", 840_000_000), ("1.5", 1_500_000),
    ] as [(String, Int64)])
    func parsesMoney(text: String, microyuan: Int64) {
        #expect(Money(parsing: text)?.microyuan == microyuan)
    }

    @Test(arguments: ["", "-1.00", "+1", "1.001", "1e3", " 1", "1.", ".5", "1,000", "0x10", "١٢", "10000000000000"])
    func refusesMalformedMoney(text: String) {
        #expect(Money(parsing: text) == nil)
    }

    /// A refused amount is told what is wrong with it: its sign, its size, its decimals, or that
    /// it is no amount at all.
    @Test(arguments: [
        ("-100.00", "amount_out_of_range", "zero or more"), ("-1", "amount_out_of_range", "zero or more"),
        ("9000000000000.00", "amount_out_of_range", "largest amount"), ("10000000000000", "amount_out_of_range", "largest amount"),
        ("1000000000001", "amount_out_of_range", "largest amount"),
        ("1.005", "invalid_amount", "3 decimals"), ("12.5x", "invalid_amount", "decimal string"),
        ("abc", "invalid_amount", "decimal string"), ("", "invalid_amount", "decimal string"), ("1.", "invalid_amount", "decimal string"),
    ] as [(String, String, String)])
    func saysWhatIsWrongWithARefusedAmount(text: String, code: String, says: String) {
        #expect(Money(parsing: text) == nil)
        let error = Money.parsingError(text, field: "cash")
        #expect(error.code.rawValue == code)
        #expect(error.message.contains(says), "\(error.message)")
        #expect(error.message.hasPrefix("cash "))
    }

    @Test func unitPricesCarrySixDecimals() {
        #expect(Money(parsing: "0.0028", decimalsMax: 6)?.microyuan == 2_800)
        #expect(Money(parsing: "0.0000001", decimalsMax: 6) == nil)
        #expect(yuan("0.0028").unitPriceDescription == "0.0028")
        #expect(yuan("0.003").unitPriceDescription == "0.003")
        #expect(yuan("1").unitPriceDescription == "1.00")
    }

    @Test(arguments: [
        ("0.004999", "0.00"), ("0.005", "0.01"), ("0.014999", "0.01"), ("0.015", "0.02"), ("4757.2", "4757.20"),
        ("2.345", "2.35"), ("2.344999", "2.34"),
    ])
    func roundsHalfUpToTheFen(exact: String, rounded: String) {
        #expect(yuan(exact).roundedToFen().description == rounded)
        #expect((-yuan(exact)).roundedToFen().description == (rounded == "0.00" ? "0.00" : "-" + rounded))
    }

    @Test func prorationRoundsOnce() {
        // (998 − 598) × 9/12 = 300.00; 400 × 1/3 = 133.333… → 133.33; 0.02 × 1/4 = 0.005 → 0.01.
        #expect(yuan("400").prorated(9, over: 12).description == "300.00")
        #expect(yuan("400").prorated(1, over: 3).description == "133.33")
        #expect(yuan("0.02").prorated(1, over: 4).description == "0.01")
    }

    @Test func multiplicationReportsOverflow() {
        #expect(yuan("75000").multiplied(by: 1000)?.description == "75000000.00")
        #expect(Money(microyuan: Int64.max / 2).multiplied(by: 3) == nil)
    }

    @Test func formatsNegativeAmounts() {
        #expect(Money(microyuan: -10_000).description == "-0.01")
        #expect(Money(yuan: -5132, fen: -20).description == "-5132.20")
    }
}
