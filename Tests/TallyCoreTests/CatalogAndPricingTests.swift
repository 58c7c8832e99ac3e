import Testing
@testable import TallyCore

/// The price lists' numbers, written out here independently of the catalog file, so that a typo in
/// either shows up as a failure.
@Suite(.timeLimit(.minutes(5))) struct CatalogAndPricingTests {
    static let generalTiers: [(Int64, String)] = [(0, "0.003"), (1_000_000, "0.0028"), (3_000_000, "0.0025"), (15_000_000, "0.002")]
    static let legacyTiers: [(Int64, String)] = [(0, "0.0025"), (1_000_000, "0.0022"), (3_000_000, "0.002"), (15_000_000, "0.0015")]

    static let packs: [(String, Int64, Int64?, String)] = [
        ("taishan.smart-cover/p1", 3_000, 2, "6000.00"), ("taishan.smart-cover/p2", 10_000, 10, "10000.00"),
        ("taishan.smart-cover/p3", 50_000, 50, "30000.00"), ("taishan.smart-cover/p4", 100_000, 50, "40000.00"),
        ("taishan.smart-cover/p5", 500_000, 100, "75000.00"), ("taishan.smart-cover/p6", 1_000_000, 100, "100000.00"),
        ("taishan.smart-cover/p7", 2_000_000, 200, "140000.00"), ("taishan.smart-cover/p8", 5_000_000, 200, "200000.00"),
        ("image-tagging.general/10k", 10_000, nil, "30.00"), ("image-tagging.general/100k", 100_000, nil, "280.00"),
        ("image-tagging.general/1m", 1_000_000, nil, "2750.00"), ("image-tagging.general/5m", 5_000_000, nil, "9300.00"),
        ("image-tagging.general/15m", 15_000_000, nil, "24000.00"), ("image-tagging.general/50m", 50_000_000, nil, "75000.00"),
    ]

    static let editions: [(String, Subject, Int64, String?, String)] = [
        ("taishan/personal-pro", .personal, 1, "30.00", "138.00"),
        ("taishan/enterprise-basic", .enterprise, 1, nil, "598.00"),
        ("taishan/enterprise-advanced", .enterprise, 1, nil, "998.00"),
        ("taishan/enterprise-premium", .enterprise, 6, nil, "1998.00"),
    ]

    @Test(arguments: packs)
    func everyPackMatchesThePriceList(item: String, calls: Int64, qps: Int64?, price: String) throws {
        let pack = try #require(Shipped.version.packsByItem[item])
        #expect(pack.calls == calls)
        #expect(pack.qps == qps)
        #expect(pack.price.description == price)
        #expect(pack.validity == (item.hasPrefix("taishan") ? .days(365) : .months(12)))
        #expect(pack.refundable == item.hasPrefix("image-tagging"))
    }

    @Test(arguments: editions)
    func everyEditionMatchesThePriceList(item: String, subject: Subject, seats: Int64, month: String?, year: String) throws {
        let edition = try #require(Shipped.version.editionsByItem[item])
        #expect(edition.subject == subject)
        #expect(edition.seats == seats)
        #expect(edition.prices[.month]?.description == month)
        #expect(edition.prices[.year]?.description == year)
    }

    @Test func entitlementsFollowTheLadder() throws {
        let v = Shipped.version
        #expect(v.editionsByItem["taishan/personal-pro"]?.entitlements["templates"] == .monthlyLimit(20))
        let basic = try #require(v.editionsByItem["taishan/enterprise-basic"]).entitlements
        let advanced = try #require(v.editionsByItem["taishan/enterprise-advanced"]).entitlements
        let premium = try #require(v.editionsByItem["taishan/enterprise-premium"]).entitlements
        #expect(Set(basic.keys) == ["ape-image-library"])
        #expect(Set(basic.keys).isSubset(of: Set(advanced.keys)) && Set(advanced.keys).isSubset(of: Set(premium.keys)))
        #expect(advanced["designer-templates"] == .included && advanced["templates"] == .included)
        #expect(premium["team-collaboration"] == .included && premium["tencent-premium-templates"] == .included)
    }

    @Test func freeQuotasAndPostpaidAvailability() throws {
        let v = Shipped.version
        #expect(v.apisByID["image-tagging.general"]?.freeMonthly == 1_000)
        #expect(v.apisByID["image-tagging.legacy"]?.freeMonthly == 0)
        #expect(v.apisByID["image-tagging.legacy"]?.editions == ["camera", "album", "web", "news"])
        #expect(v.apisByID["taishan.smart-cover"]?.postpaid == nil)
        #expect(v.productsByID["image-tagging"]?.refundWindowDays == 7)
        #expect(v.productsByID["taishan"]?.refundWindowDays == nil)
        #expect(Shipped.catalog.zone.offsetSeconds == 8 * 3600)
    }

    /// Every tier of both APIs at its edges: one call short of the tier, and exactly on it.
    @Test(arguments: [("image-tagging.general", generalTiers), ("image-tagging.legacy", legacyTiers)])
    func tierEdges(api: String, tiers: [(Int64, String)]) throws {
        let pricing = try #require(Shipped.version.apisByID[api]?.postpaid)
        for (index, (from, price)) in tiers.enumerated() {
            for calls in [from, from + 1] where calls > 0 {
                let line = pricing.price(MonthlyCalls(all: calls, postpaid: calls))
                #expect(line.tier == index + 1, "\(api) \(calls)")
                #expect(line.unitPrice == yuan(price), "\(api) \(calls)")
                #expect(line.amount == (yuan(price).multiplied(by: calls)!).roundedToFen())
            }
            if from > 0 {
                let below = pricing.price(MonthlyCalls(all: from - 1, postpaid: from - 1))
                #expect(below.tier == index, "\(api) \(from - 1)")
            }
        }
    }

    @Test func priceListExamples() throws {
        let general = try #require(Shipped.version.apisByID["image-tagging.general"]?.postpaid)
        let legacy = try #require(Shipped.version.apisByID["image-tagging.legacy"]?.postpaid)
        #expect(general.price(MonthlyCalls(all: 2_000_000, postpaid: 1_999_000)).amount.description == "5597.20")
        #expect(legacy.price(MonthlyCalls(all: 300_000, postpaid: 300_000)).amount.description == "750.00")
        // 999,999 calls stay in tier 1; the millionth reaches tier 2 for every post-paid call.
        #expect(general.price(MonthlyCalls(all: 999_999, postpaid: 998_999)).amount.description == "2997.00")
        #expect(general.price(MonthlyCalls(all: 1_000_000, postpaid: 999_000)).amount.description == "2797.20")
    }

    @Test func tierBasisIsASetting() {
        let tiers = Self.generalTiers.map { Tier(from: $0.0, unitPrice: yuan($0.1)) }
        let calls = MonthlyCalls(all: 1_500_000, postpaid: 600_000)
        #expect(TierReachedPricing(tiers: tiers, basis: .allCalls).price(calls).unitPrice == yuan("0.0028"))
        #expect(TierReachedPricing(tiers: tiers, basis: .postpaidCalls).price(calls).unitPrice == yuan("0.003"))
    }

    @Test func graduatedPackageAndFlatModels() {
        let tiers = [Tier(from: 0, unitPrice: yuan("0.01")), Tier(from: 100, unitPrice: yuan("0.005"))]
        // Post-paid calls are the month's last: positions 50..<250 → 50 × 0.01 + 150 × 0.005 = 1.25.
        let graduated = GraduatedPricing(tiers: tiers, basis: .allCalls).price(MonthlyCalls(all: 250, postpaid: 200))
        #expect(graduated.amount.description == "1.25")
        #expect(graduated.tier == 2)
        #expect(GraduatedPricing(tiers: tiers, basis: .postpaidCalls).price(MonthlyCalls(all: 250, postpaid: 200)).amount.description == "1.50")
        let package = PackagePricing(callsPerPackage: 1_000, packagePrice: yuan("5.00"))
        #expect(package.price(MonthlyCalls(all: 1_001, postpaid: 1_001)).amount.description == "10.00")
        #expect(package.price(MonthlyCalls(all: 1_000, postpaid: 1_000)).amount.description == "5.00")
        #expect(FlatPricing(unitPrice: yuan("0.0033")).price(MonthlyCalls(all: 5, postpaid: 5)).amount.description == "0.02")
    }

    @Test func raisesAreDetected() {
        let base = Self.generalTiers.map { Tier(from: $0.0, unitPrice: yuan($0.1)) }
        var raised = base
        raised[2] = Tier(from: 3_000_000, unitPrice: yuan("0.0026"))
        let old = TierReachedPricing(tiers: base, basis: .allCalls)
        #expect(TierReachedPricing(tiers: raised, basis: .allCalls).charges(moreThan: old))
        #expect(!old.charges(moreThan: TierReachedPricing(tiers: raised, basis: .allCalls)))
        #expect(!old.charges(moreThan: old))
    }

    /// Malformed catalogs are refused with the path of the offending field.
    @Test(arguments: [
        (#"price: "280.00""#, #"price: "280.001""#, "apis[0].packs[1].price"),
        (#"{from: 1000000, unit_price: "0.0028"}"#, #"{from: 1000000, unit_price: "-0.0028"}"#, "tiers[1].unit_price"),
        ("basis: all-calls", "basis: some-calls", "postpaid.basis"),
        ("valid: {months: 12}", "valid: {weeks: 12}", "packs[0].valid.weeks"),
        ("seats: 6", "seats: six", "editions[3].seats"),
        ("subject: personal", "subject: robot", "editions[0].subject"),
        ("{from: 3000000,", "{from: 900000,", "tiers[2].from"),
        ("model: tier-reached   #", "model: staircase   #", "postpaid.model"),
        ("free_monthly: 1000", "free_monthly: lots", "apis[0].free_monthly"),
        ("activation: required", "activation: maybe", "products[1].activation"),
        (#"utc_offset: "+08:00""#, #"utc_offset: "Asia/Shanghai""#, "time_zone.utc_offset"),
        ("id: p2,", "id: p1,", "packs[1]"),
    ])
    func malformedCatalogsNameTheField(original: String, broken: String, path: String) {
        let text = Shipped.text.replacingFirst(original, with: broken)
        #expect(text != Shipped.text, "the test's original text \(original) is not in the catalog")
        do {
            _ = try CatalogFile.parse(text)
            Issue.record("a catalog with \(broken) was accepted")
        } catch {
            #expect(error.code == .invalidCatalog)
            #expect(error.message.contains(path), "\(error.message)")
        }
    }

    @Test func catalogVersionsPickByEffectiveDate() throws {
        var catalog = Shipped.catalog
        let later = try CatalogChange.apply("changes: [{api: image-tagging.general, free_monthly: 500}]",
                                            to: catalog.versions[0], effective: at("2027-01-01T00:00:00+08:00"))
        catalog.add(later)
        #expect(catalog.version(at: at("2026-12-31T23:59:59+08:00")).apisByID["image-tagging.general"]?.freeMonthly == 1_000)
        #expect(catalog.version(at: at("2027-01-01T00:00:00+08:00")).apisByID["image-tagging.general"]?.freeMonthly == 500)
        #expect(CatalogChange.adverseChanges(from: catalog.versions[0], to: later)["image-tagging"]?.isEmpty == false)
    }
}

extension String {
    func replacingFirst(_ target: String, with replacement: String) -> String {
        guard let range = range(of: target) else { return self }
        return replacingCharacters(in: range, with: replacement)
    }
}

import Foundation
