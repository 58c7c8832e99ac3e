import PropertyBased
import Testing
@testable import TallyCore

@Suite(.timeLimit(.minutes(5))) struct UpgradeRuleTests {
    let zone = Zone.beijing
    var basic: Edition { Shipped.version.editionsByItem["taishan/enterprise-basic"]! }
    var advanced: Edition { Shipped.version.editionsByItem["taishan/enterprise-advanced"]! }
    var premium: Edition { Shipped.version.editionsByItem["taishan/enterprise-premium"]! }

    /// The price list's example: 3 whole months used of a year, (998 − 598) × (1 − 1/4) = 300.
    @Test func priceListExample() {
        let fee = UpgradeRule.fee(from: basic, to: advanced, now: at("2026-04-01T00:00:00+08:00"),
                                  expiry: at("2027-01-01T00:00:00+08:00"), zone: zone)
        #expect(fee.description == "300.00")
    }

    /// Remaining time as whole calendar months plus the fraction of the next month, by days and seconds.
    @Test(arguments: [
        // now, expiry, whole-month numerator/denominator as (m·S + L)/S checked through the fee
        ("2026-04-16T00:00:00+08:00", "2027-01-01T00:00:00+08:00", "basic", "advanced", "283.87"),  // 400 × (8 + 16/31)/12
        ("2026-12-01T00:00:00+08:00", "2027-01-01T00:00:00+08:00", "basic", "advanced", "33.33"),   // one month: 400/12
        ("2026-12-31T12:00:00+08:00", "2027-01-01T00:00:00+08:00", "basic", "advanced", "0.54"),    // half a day of a 31-day month
        ("2026-01-01T00:00:00+08:00", "2027-01-01T00:00:00+08:00", "basic", "premium", "1400.00"),  // a whole year
        // Jan 31 + 1 month = Feb 28; the next month, anchored on Jan 31, runs Feb 28 → Mar 31 (31 days):
        // 1000 × (1 + 1/31) / 12 = 86.02.
        ("2026-01-31T00:00:00+08:00", "2026-03-01T00:00:00+08:00", "advanced", "premium", "86.02"),
        ("2027-01-01T00:00:00+08:00", "2027-01-01T00:00:00+08:00", "basic", "advanced", "0.00"),
    ])
    func prorationByMonthsAndDays(now: String, expiry: String, from: String, to: String, fee: String) {
        let editions = ["basic": basic, "advanced": advanced, "premium": premium]
        let result = UpgradeRule.fee(from: editions[from]!, to: editions[to]!, now: at(now), expiry: at(expiry), zone: zone)
        #expect(result.description == fee)
    }

    @Test func remainingMonthsCountsWholeCalendarMonthsFirst() {
        let (numerator, denominator) = UpgradeRule.remainingMonths(from: at("2026-04-01T00:00:00+08:00"), to: at("2027-01-01T00:00:00+08:00"), in: zone)
        #expect(numerator == 9 * denominator)
        let leap = UpgradeRule.remainingMonths(from: at("2028-01-31T00:00:00+08:00"), to: at("2028-02-29T00:00:00+08:00"), in: zone)
        #expect(leap.numerator == leap.denominator)   // Jan 31 + 1 month = Feb 29 in a leap year: exactly one month
    }
}

@Suite(.timeLimit(.minutes(5))) struct RefundWindowTests {
    let zone = Zone.beijing

    /// Through 23:59:59 Beijing time of the 7th day after the delivery date.
    @Test(arguments: [
        ("2026-07-01T10:00:00+08:00", "2026-07-08T23:59:59+08:00", true),
        ("2026-07-01T10:00:00+08:00", "2026-07-08T23:59:59.999999+08:00", true),
        ("2026-07-01T10:00:00+08:00", "2026-07-09T00:00:00+08:00", false),
        ("2026-07-01T23:59:59+08:00", "2026-07-08T15:59:59Z", true),
        ("2026-07-01T23:59:59+08:00", "2026-07-08T16:00:00Z", false),
        ("2026-06-30T16:30:00Z", "2026-07-08T23:00:00+08:00", true),    // delivered 2026-07-01 00:30 Beijing
        ("2026-12-28T09:00:00+08:00", "2027-01-04T23:59:59+08:00", true), // across the year end
        ("2028-02-25T09:00:00+08:00", "2028-03-03T23:59:59+08:00", true), // across a leap day
        ("2028-02-25T09:00:00+08:00", "2028-03-04T00:00:00+08:00", false),
    ])
    func windowEndsToTheSecond(delivered: String, asked: String, allowed: Bool) {
        let deadline = RefundRule.deadline(delivered: at(delivered), windowDays: 7, zone: zone)
        #expect((at(asked) <= deadline) == allowed)
    }
}

@Suite(.timeLimit(.minutes(5))) struct TokenBucketTests {
    @Test func startsFullAndRefillsAtQPS() {
        let start = at("2026-01-01T00:00:00+08:00")
        var bucket = TokenBucket(qps: 2, at: start)
        let took1 = bucket.take(1, at: start, qps: 2)
        #expect(took1)
        let took2 = bucket.take(1, at: start, qps: 2)
        #expect(took2)
        let took3 = bucket.take(1, at: start, qps: 2)
        #expect(!took3)
        let took4 = bucket.take(1, at: start.adding(microseconds: 499_999), qps: 2)
        #expect(!took4)
        let took5 = bucket.take(1, at: start.adding(microseconds: 500_000), qps: 2)
        #expect(took5)
        // Idle for a long time: the bucket holds at most its capacity.
        let later = start.adding(seconds: 3_600)
        let took6 = bucket.take(2, at: later, qps: 2)
        #expect(took6)
        let took7 = bucket.take(1, at: later, qps: 2)
        #expect(!took7)
    }

    /// Q calls a second for n seconds on a bucket of Q starting full: Q + Q·n pass (within one).
    @Test(arguments: [(Int64(100), Int64(200), Int64(5)), (2, 10, 3), (50, 50, 4), (200, 1000, 2)])
    func sustainedRateIsTheLimit(qps: Int64, rate: Int64, seconds: Int64) {
        let start = at("2026-01-01T00:00:00+08:00")
        var bucket = TokenBucket(qps: qps, at: start)
        var accepted: Int64 = 0
        for call in 0..<(rate * seconds) where bucket.take(1, at: start.adding(microseconds: call * 1_000_000 / rate), qps: qps) {
            accepted += 1
        }
        let expected = rate <= qps ? rate * seconds : qps + qps * seconds
        #expect(abs(accepted - expected) <= 1, "accepted \(accepted), expected about \(expected)")
    }
}

@Suite(.timeLimit(.minutes(5))) struct AdvisorTests {
    var smartCover: APIOffer { Shipped.version.apisByID["taishan.smart-cover"]! }
    var general: APIOffer { Shipped.version.apisByID["image-tagging.general"]! }

    @Test func priceListExamples() throws {
        let p5 = try Advisor.quote(api: smartCover, calls: 500_000, months: 1, qps: 100)
        #expect(p5.best.items == [.init(item: "taishan.smart-cover/p5", count: 1)])
        #expect(p5.best.total.description == "75000.00")
        let p3 = try Advisor.quote(api: smartCover, calls: 45_000, months: 1, qps: 50)
        #expect(p3.best.items == [.init(item: "taishan.smart-cover/p3", count: 1)])
        #expect(p3.best.total.description == "30000.00")
    }

    /// 300,000 calls over a year: the price list buys 3 × 100k for 840.00; with the 1,000 free calls
    /// a month and post-paid for the rest, 2 × 100k plus 88,000 post-paid calls cost 824.00.
    @Test func imageTaggingFindsACheaperMix() throws {
        let quote = try Advisor.quote(api: general, calls: 300_000, months: 12, qps: nil)
        #expect(quote.best.total.description == "824.00")
        #expect(quote.best.items == [.init(item: "image-tagging.general/100k", count: 2)])
        #expect(quote.best.postpaidCalls == 88_000)
        let byName = Dictionary(uniqueKeysWithValues: quote.options.map { ($0.name, $0) })
        // Packs for the 288,000 calls after the free quota: 2 × 100k + 9 × 10k, not the price
        // list's 3 × 100k for every call.
        #expect(byName["packs-only"]?.total.description == "830.00")
        #expect(byName["packs-only"]?.items == [.init(item: "image-tagging.general/10k", count: 9),
                                                 .init(item: "image-tagging.general/100k", count: 2)])
        #expect(byName["postpaid-only"]?.total.description == "864.00")
        #expect(quote.options.allSatisfy { $0.total >= quote.best.total })
    }

    /// Over a grid of volumes and periods, every option is the cheapest of its kind and never
    /// cheaper than the best: packs-only pays nothing post-paid and is the best whenever the best
    /// pays nothing post-paid; post-paid-only buys no pack.
    @Test(arguments: [1, 999, 1_000, 12_001, 300_000, 2_000_000, 24_000_000, 500_000_000, 5_000_000_000] as [Int64],
          [1, 2, 7, 12, 13, 36, 120] as [Int64])
    func everyOptionIsTheCheapestOfItsKind(calls: Int64, months: Int64) throws {
        let quote = try Advisor.quote(api: general, calls: calls, months: months, qps: nil)
        let byName = Dictionary(uniqueKeysWithValues: quote.options.map { ($0.name, $0) })
        #expect(quote.options.allSatisfy { $0.total >= quote.best.total })
        let packsOnly = try #require(byName["packs-only"])
        #expect(packsOnly.postpaidCalls == 0 && packsOnly.postpaid == .zero)
        if quote.best.postpaidCalls == 0 { #expect(packsOnly.total == quote.best.total, "\(packsOnly) \(quote.best)") }
        let postpaidOnly = try #require(byName["postpaid-only"])
        #expect(postpaidOnly.items.isEmpty)
        if quote.best.items.isEmpty { #expect(postpaidOnly.total == quote.best.total) }
        #expect(packsOnly.freeCalls + packsOnly.packCalls == calls)
    }

    @Test func higherVolumesUseTheirTierAndBigPacks() throws {
        // 24M calls in one month: tier 4 post-paid is 0.002; the 15m pack is 0.0016 a call.
        let quote = try Advisor.quote(api: general, calls: 24_000_000, months: 1, qps: nil)
        #expect(quote.options.allSatisfy { $0.total >= quote.best.total })
        #expect(quote.best.total < (quote.options.first { $0.name == "postpaid-only" }!.total))
    }

    @Test func impossibleAndOversizedRequestsAreRefused() {
        #expect(throws: TallyError.self) { try Advisor.quote(api: smartCover, calls: 1_000, months: 1, qps: 500) }
        #expect(throws: TallyError.self) { try Advisor.quote(api: smartCover, calls: 0, months: 1, qps: nil) }
        #expect(throws: TallyError.self) { try Advisor.quote(api: general, calls: 1_000, months: 0, qps: nil) }
        do {
            _ = try Advisor.quote(api: smartCover, calls: 900_000_000_000, months: 1, qps: nil)
            Issue.record("an oversized search was accepted")
        } catch {
            #expect(error.code == .quoteTooLarge)
        }
    }

    /// A small made-up API, so that brute force over every combination of packs stays cheap.
    static let toy = APIOffer(
        id: "toy.api", product: "toy", name: "toy", editions: [],
        postpaid: TierReachedPricing(tiers: [Tier(from: 0, unitPrice: Money(yuan: 1)), Tier(from: 40, unitPrice: Money(yuan: 0, fen: 70))], basis: .allCalls),
        freeMonthly: 3,
        packs: [
            PackOffer(id: "a", item: "toy.api/a", api: "toy.api", name: "a", calls: 4, qps: 1, validity: .months(12), price: Money(yuan: 3), refundable: false, promotion: nil, promotionAllowsRefund: true),
            PackOffer(id: "b", item: "toy.api/b", api: "toy.api", name: "b", calls: 10, qps: 5, validity: .months(12), price: Money(yuan: 8), refundable: false, promotion: nil, promotionAllowsRefund: true),
            PackOffer(id: "c", item: "toy.api/c", api: "toy.api", name: "c", calls: 26, qps: 3, validity: .months(12), price: Money(yuan: 19), refundable: false, promotion: nil, promotionAllowsRefund: true),
        ])

    /// The advisor's best plan costs exactly what brute force over every pack combination finds.
    @Test func matchesBruteForce() async {
        await propertyCheck(count: 150, input: Gen.int(in: 1...120), Gen.int(in: 1...4), Gen.int(in: 0...5)) { calls, months, qps in
            let needQPS: Int64? = qps == 0 ? nil : Int64(qps)
            guard let quote = try? Advisor.quote(api: Self.toy, calls: Int64(calls), months: Int64(months), qps: needQPS) else {
                Issue.record("no quote for \(calls) calls over \(months) months at \(qps) QPS")
                return
            }
            #expect(quote.best.total == Self.bruteForce(calls: Int64(calls), months: Int64(months), qps: needQPS))
        }
    }

    static func bruteForce(calls: Int64, months: Int64, qps: Int64?) -> Money {
        let perMonth = (0..<months).map { calls / months + ($0 < calls % months ? 1 : 0) }
        var best = Int64.max
        for a in 0...35 {
            for b in 0...14 {
                for c in 0...6 {
                    let counts = [Int64(a), Int64(b), Int64(c)]
                    if let qps, !zip(toy.packs, counts).contains(where: { $1 > 0 && ($0.qps ?? 0) >= qps }) { continue }
                    var left = zip(toy.packs, counts).reduce(Int64(0)) { $0 + $1.0.calls * $1.1 }
                    var cost = zip(toy.packs, counts).reduce(Int64(0)) { $0 + $1.0.price.microyuan * $1.1 }
                    for month in perMonth {
                        let rest = month - min(month, toy.freeMonthly)
                        let drawn = min(left, rest)
                        left -= drawn
                        cost += toy.postpaid!.price(MonthlyCalls(all: month, postpaid: rest - drawn)).amount.microyuan
                    }
                    best = min(best, cost)
                }
            }
        }
        return Money(microyuan: best)
    }
}

/// The sharded index of usage ids behaves as one dictionary.
@Suite(.timeLimit(.minutes(5))) struct UsageIndexTests {
    @Test func behavesAsOneDictionary() {
        var index = UsageIndex()
        var plain: [TallyState.UsageKey: UsageEntry] = [:]
        // The index numbers the texts it keeps (APIs, editions, refusal codes): every mix of
        // them, absent ones included, must come back as it went in.
        func entry(_ calls: Int64, recorded: Int64) -> UsageEntry {
            let refused = recorded % 3 == 0
            return UsageEntry(api: recorded % 2 == 0 ? "a" : "image-tagging.legacy", edition: recorded % 5 == 0 ? nil : "edition\(recorded % 4)",
                              calls: calls, at: Instant(microseconds: recorded * 7), recorded: Instant(microseconds: recorded),
                              free: refused ? 0 : calls, pack: 0, postpaid: 0, refused: refused ? calls : 0,
                              refusal: refused ? (recorded % 2 == 0 ? "quota_exhausted" : "account_in_arrears") : nil)
        }
        for n in 0..<5_000 {
            let key = TallyState.usageKey(account: "acct\(n % 37)", id: "e\(n)")
            index[key] = entry(Int64(n % 7) + 1, recorded: Int64(n))
            plain[key] = entry(Int64(n % 7) + 1, recorded: Int64(n))
        }
        // Overwriting and removing keep the count right.
        let first = TallyState.usageKey(account: "acct0", id: "e0")
        index[first] = entry(99, recorded: 0)
        plain[first] = entry(99, recorded: 0)
        index[TallyState.usageKey(account: "acct1", id: "e1")] = nil
        plain[TallyState.usageKey(account: "acct1", id: "e1")] = nil
        index[TallyState.usageKey(account: "nobody", id: "none")] = nil
        #expect(index.count == plain.count && index.count == 4_999)
        #expect(Dictionary(uniqueKeysWithValues: index.map { ($0.key, $0.value) }) == plain)
        #expect(index[TallyState.usageKey(account: "acct0", id: "e0")]?.calls == 99)
        #expect(index[TallyState.usageKey(account: "acct1", id: "e0")] == nil)

        let dropped = index.keep(recordedFrom: Instant(microseconds: 2_500))
        #expect(index.count == 2_500 && index.values.allSatisfy { $0.recorded.microseconds >= 2_500 })
        // What was dropped is handed back, key for key (e1 had been removed before).
        #expect(Set(dropped) == Set(plain.keys.filter { plain[$0]!.recorded.microseconds < 2_500 }) && dropped.count == 2_499)
        // Merging adds what is missing (the first key was dropped above) and keeps what is there.
        let kept = TallyState.usageKey(account: "acct\(2_600 % 37)", id: "e2600")
        index.merge([first: entry(1, recorded: 0), kept: entry(50, recorded: 0)])
        #expect(index.count == 2_501 && index[first]?.calls == 1)
        #expect(index[kept]?.calls == Int64(2_600 % 7) + 1)
    }

    @Test func keysWithEqualTextsAreEqualAndSpreadOverShards() {
        let a = TallyState.usageKey(account: "x", id: "1"), b = TallyState.usageKey(account: "x", id: "1")
        #expect(a == b && a.hashValue == b.hashValue)
        #expect(TallyState.usageKey(account: "x1", id: "") != TallyState.usageKey(account: "x", id: "1"))
        var index = UsageIndex()
        for n in 0..<10_000 {
            index[TallyState.usageKey(account: "a", id: "\(n)")] = UsageEntry(
                api: "a", edition: nil, calls: 1, at: Instant(microseconds: 0), recorded: Instant(microseconds: 0),
                free: 1, pack: 0, postpaid: 0, refused: 0, refusal: nil)
        }
        #expect(index.count == 10_000)
        #expect(index.shardSizes.count(where: { $0 > 0 }) > 200)
        #expect(index.shardSizes.max()! < 120)
    }

    /// A bounded index takes as many shards as keep a full generation's shards at 512 entries or
    /// more (a partition's small index is not 256 dictionaries of a few entries each); an unbounded
    /// one takes all 256.
    @Test func shardsFollowTheGeneration() {
        #expect(UsageIndex().shardTotal == 256)
        #expect(UsageIndex(generation: 131_072).shardTotal == 256)
        #expect(UsageIndex(generation: 2_048).shardTotal == 4)
        #expect(UsageIndex(generation: 100).shardTotal == 1)
        var index = UsageIndex(generation: 2_048)
        for n in 0..<3_000 {
            index[TallyState.usageKey(account: "a", id: "\(n)")] = UsageEntry(api: "x", edition: nil, calls: 1, at: Instant(microseconds: 0),
                                                                             recorded: Instant(microseconds: 0), free: 1, pack: 0, postpaid: 0, refused: 0, refusal: nil)
        }
        #expect(index.count == 3_000 && index[TallyState.usageKey(account: "a", id: "2999")] != nil)
    }

    /// Shard i takes a share proportional to 256 + i: the last shards hold about twice what the
    /// first hold, so they do not all grow their tables at the same moment.
    @Test func shardSizesSpreadOverOneDoubling() {
        let table = UnsafeBufferPointer(start: UsageIndex.shardOfPrefix, count: 1 << 16)
        let runs = (0..<UsageIndex.shardCount).map { shard in table.count(where: { Int($0) == shard }) }
        #expect(runs.allSatisfy { $0 > 0 } && runs.reduce(0, +) == 1 << 16)
        // Each run is its weight's share of the 65,536 prefixes, to within one prefix.
        for (shard, run) in runs.enumerated() {
            let exact = Double(65_536 * (256 + shard)) / Double(98_176)
            #expect(abs(Double(run) - exact) <= 1, "shard \(shard): \(run) prefixes, \(exact) expected")
        }
        var index = UsageIndex()
        for n in 0..<100_000 {
            index[TallyState.usageKey(account: "a\(n % 7)", id: "\(n)")] = UsageEntry(
                api: "a", edition: nil, calls: 1, at: Instant(microseconds: 0), recorded: Instant(microseconds: 0),
                free: 1, pack: 0, postpaid: 0, refused: 0, refusal: nil)
        }
        let sizes = index.shardSizes
        let first = sizes.prefix(32).reduce(0, +), last = sizes.suffix(32).reduce(0, +)
        #expect(Double(last) / Double(first) > 1.6 && Double(last) / Double(first) < 2.2, "\(first) in the first 32 shards, \(last) in the last")
    }
}

/// An index bounded by generations: memory holds the latest events, and every key it lets go is in
/// the filter, so no recorded id is ever answered as unknown.
@Suite(.timeLimit(.minutes(5))) struct BoundedUsageIndexTests {
    @Test func keepsOneToTwoGenerationsAndRetiresTheRest() {
        let retired = RetiredUsageKeys(firstCapacity: 1_000)
        var index = UsageIndex()
        var kept: [TallyState.UsageKey] = []
        for n in 0..<1_050 {
            let key = TallyState.usageKey(account: "a", id: "e\(n)")
            index[key] = UsageEntry(api: "x", edition: nil, calls: 1, at: Instant(microseconds: Int64(n)), recorded: Instant(microseconds: Int64(n)),
                                    free: 1, pack: 0, postpaid: 0, refused: 0, refusal: nil)
            kept.append(key)
            if index.currentCount >= 100 { retired.insert(contentsOf: index.rotate()) }
        }
        // 1,050 events: ten rotations; the previous generation holds 100, the current one 50.
        #expect(index.count == 150 && index.currentCount == 50)
        #expect(retired.count == 900)
        for (n, key) in kept.enumerated() {
            if n >= 900 {
                #expect(index[key]?.at.microseconds == Int64(n), "e\(n) answered from memory")
            } else {
                #expect(index[key] == nil && retired.mightContain(key), "e\(n) left to the filter")
            }
        }
        // A key put back (found in the store) moves into the current generation, counted once.
        index[kept[10]] = index[kept[950]]
        #expect(index.count == 151 && index.currentCount == 51)
        index[kept[950]] = index[kept[950]]
        #expect(index.count == 151 && index.currentCount == 52, "moved from the previous generation to the current one")
    }
}

/// The filter of ids older than the index: never a false "no", few false "maybe"s, kept by day.
@Suite(.timeLimit(.minutes(5))) struct RetiredUsageKeysTests {
    static let noon = Instant(rfc3339: "2026-03-10T12:00:00Z")!

    @Test func holdsEveryKeyInsertedAcrossSegments() {
        let retired = RetiredUsageKeys(firstCapacity: 10_000)
        #expect(retired.isEmpty && !retired.mightContain(TallyState.usageKey(account: "a", id: "0")))
        let keys = (0..<60_000).map { TallyState.usageKey(account: "acct\($0 % 97)", id: "e\($0)") }
        retired.insert(contentsOf: keys[..<30_000].map { ($0, Self.noon) })
        for key in keys[30_000...] { retired.insert(key, recorded: Self.noon) }
        // A first segment of the floor's size: each later one doubles the day's capacity (10,000,
        // 10,000, 20,000 and 40,000, 20,000 of it used).
        #expect(retired.segmentCount == 4 && retired.count == 60_000 && retired.dayCount == 1)
        #expect(retired.bytes == 80_000 * 16 / 8)
        #expect(keys.allSatisfy { retired.mightContain($0) })
        #expect(retired.suspects(among: keys.map { ($0, nil) }).count == 60_000)
    }

    /// A day is dropped whole once it is before the cutoff, so memory follows the window, not all
    /// history; an event's time bounds the days asked (it was recorded no earlier than that).
    @Test func keepsDaysAndDropsThoseBeforeTheWindow() {
        let retired = RetiredUsageKeys(firstCapacity: 1_000)
        let day: Int64 = 86_400
        for d in 0..<40 {
            retired.insert(contentsOf: (0..<100).map { (TallyState.usageKey(account: "a", id: "d\(d)-\($0)"), Self.noon.adding(seconds: Int64(d) * day)) })
        }
        #expect(retired.dayCount == 40 && retired.count == 4_000)
        let early = TallyState.usageKey(account: "a", id: "d0-7"), late = TallyState.usageKey(account: "a", id: "d39-7")
        #expect(retired.mightContain(early) && retired.mightContain(late))
        // Asked only from day 30 on: a key recorded on day 0 is not among those days.
        #expect(!retired.mightContain(early, recordedFrom: Self.noon.adding(seconds: 30 * day)))
        #expect(retired.mightContain(late, recordedFrom: Self.noon.adding(seconds: 30 * day)))
        // 35 days back from day 39's noon: days 0 to 3 go, day 4 (part inside the window) stays.
        let bytes = retired.bytes
        #expect(retired.forget(recordedBefore: Self.noon.adding(seconds: 39 * day - 35 * day)) == 400)
        #expect(retired.dayCount == 36 && retired.count == 3_600 && retired.bytes < bytes)
        #expect(!retired.mightContain(early) && retired.mightContain(TallyState.usageKey(account: "a", id: "d4-0")))
    }

    /// A day is sized from the day before it: one like it takes one segment, and one a little
    /// busier adds a quarter, not four times as much.
    @Test func aDayIsSizedFromTheDayBefore() {
        let retired = RetiredUsageKeys(firstCapacity: 1_000)
        func day(_ d: Int64, keys: Int) {
            retired.insert(contentsOf: (0..<keys).map { (TallyState.usageKey(account: "a", id: "d\(d)-\($0)"), Self.noon.adding(seconds: d * 86_400)) })
        }
        // No day before: 1,000, 1,000, 2,000, 4,000, 8,000 and 16,000 keys, each doubling the day.
        day(0, keys: 20_000)
        // 32,000 keys' bits, each segment rounded up to whole 32-byte blocks.
        #expect(retired.segmentCount == 6 && (32_000 * 16 / 8..<32_000 * 16 / 8 + 6 * 32).contains(retired.bytes))
        // 20,000 and an eighth: one segment of 22,500 holds 21,000.
        day(1, keys: 21_000)
        #expect(retired.segmentCount == 7)
        // 23,625, then a quarter of it for the rest: 2 bytes and a little a key, not 4.
        let before = retired.bytes
        day(2, keys: 25_000)
        #expect(retired.segmentCount == 9)
        #expect(Double(retired.bytes - before) / 25_000 < 2.5)
    }

    @Test func answersFewAbsentKeysMaybe() {
        let retired = RetiredUsageKeys(firstCapacity: 100_000)
        retired.insert(contentsOf: (0..<100_000).map { (TallyState.usageKey(account: "acct\($0 % 13)", id: "old\($0)"), Self.noon) })
        let absent = (0..<200_000).map { (TallyState.usageKey(account: "acct\($0 % 13)", id: "new\($0)"), Optional<Instant>.none) }
        let maybes = retired.suspects(among: absent).count
        // 16 bits a key, eight bits set in one 256-bit block: about 0.1-0.3% expected.
        #expect(maybes < 1_000, "\(maybes) of 200,000 absent keys answered maybe")
        #expect(retired.bytes == 100_000 * 16 / 8)
    }
}

/// The QPS limit of check-and-record: the highest QPS of the account's usable bought packs of that
/// API; packs used up, expired, revoked, free or of another API do not count.
@Suite(.timeLimit(.minutes(5))) struct QPSLimitTests {
    @Test func theHighestQPSOfUsablePacksOfTheAPI() {
        let now = at("2026-03-10T12:00:00+08:00")
        var state = TallyState(catalog: Shipped.catalog)
        var sequence: Int64 = 0
        state.apply(.accountOpened(account: "acme", subject: .enterprise, verified: true, at: now.adding(seconds: -86_400)))
        func grant(_ id: String, api: String = "taishan.smart-cover", qps: Int64?, left: Int64 = 10, expires: Int64 = 86_400,
                   revoked: Bool = false, free: Bool = false) {
            let pack = Pack(id: id, account: "acme", api: api, item: "\(api)/x", source: free ? .free(month: Shipped.catalog.zone.month(of: now)) : .bought(order: "o"),
                            size: 10, left: left, qps: qps, delivered: now.adding(seconds: -60), expires: now.adding(seconds: expires),
                            sequence: sequence, refundable: true, promotionAllowsRefund: false, revoked: revoked)
            sequence += 1
            state.apply(.packGranted(pack: pack, transaction: LedgerTransaction(id: "t-\(id)", at: now, kind: "test", entries: [
                .calls(.pack(id), 10), .calls(.callsIssued, -10),
            ])))
        }
        let account = { state.accounts["acme"]! }
        #expect(SettlementRule.qpsLimit(account: account(), api: "taishan.smart-cover", state: state, at: now) == nil)
        grant("none", qps: nil)
        #expect(SettlementRule.qpsLimit(account: account(), api: "taishan.smart-cover", state: state, at: now) == nil)
        grant("low", qps: 50)
        grant("used-up", qps: 500, left: 0)
        grant("expired", qps: 400, expires: -1)
        grant("revoked", qps: 300, revoked: true)
        grant("free", qps: 200, free: true)
        grant("other-api", api: "image-tagging.general", qps: 250)
        #expect(SettlementRule.qpsLimit(account: account(), api: "taishan.smart-cover", state: state, at: now) == 50)
        grant("high", qps: 100)
        #expect(SettlementRule.qpsLimit(account: account(), api: "taishan.smart-cover", state: state, at: now) == 100)
        // The packs drawn, in order: earliest expiry first, only the usable ones of the API.
        grant("sooner", qps: nil, expires: 3_600)
        #expect(state.drawablePacks(account: account(), api: "taishan.smart-cover", at: now).map(\.id) == ["sooner", "none", "low", "high"])
    }
}

/// The keyed hash a snapshot's filter is written with: SipHash as its reference defines it, and
/// a filter brought back from its image answers as the one it was taken from.
@Suite(.timeLimit(.minutes(5))) struct KeyedHashTests {
    /// The reference's vectors (SipHash-2-4, key 00..0f, messages 00..(n-1)).
    @Test func sipHashMatchesTheReference() {
        func hash(_ length: Int) -> UInt64 {
            var hasher = SipHash(key: (0x0706_0504_0302_0100, 0x0F0E_0D0C_0B0A_0908), rounds: (2, 4))
            hasher.combine(bytes: (0..<UInt8(length)))
            return hasher.finalize()
        }
        #expect(hash(0) == 0x726F_DB47_DD0E_0E31)
        #expect(hash(15) == 0xA129_CA61_49BE_45E5)
    }

    @Test func aFilterComesBackFromItsImage() throws {
        let retired = RetiredUsageKeys(firstCapacity: 500)
        let keys = (0..<3_000).map { TallyState.usageKey(account: "acct\($0 % 7)", id: "e\($0)") }
        // Over three days.
        retired.insert(contentsOf: keys.enumerated().map { ($1, RetiredUsageKeysTests.noon.adding(seconds: Int64($0 % 3) * 86_400)) })
        let again = try RetiredUsageKeys(retired.image)
        #expect(again.image == retired.image && again.count == 3_000 && again.segmentCount == retired.segmentCount && again.dayCount == 3)
        #expect(keys.allSatisfy { again.mightContain($0) })
        let absent = (0..<3_000).map { (TallyState.usageKey(account: "acct\($0 % 7)", id: "new\($0)"), Optional<Instant>.none) }
        #expect(again.suspects(among: absent) == retired.suspects(among: absent))
        // Two new filters hash under different keys: a crafted set of ids cannot target them all.
        #expect(RetiredUsageKeys().image.hashKey != RetiredUsageKeys().image.hashKey)
    }
}
