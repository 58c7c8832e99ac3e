import Testing
import TallyCore
import TallyEngine

/// Accounts, packs, memberships and months through their lifecycles.
@Suite(.timeLimit(.minutes(5))) struct LifecycleTests {
    /// A bill that leaves the balance below zero puts the account in arrears: post-paid calls are
    /// refused, free and pack calls still go through; a top-up to zero or above restores it at once.
    @Test func arrearsAndRestore() async throws {
        let h = try await Harness.make("2026-01-01T08:00:00+08:00")
        try await h.customer("x", cash: "10.00", activate: ["image-tagging"])
        try await h.run(TopUp(account: "x", gift: money("5.00")))
        try await h.run(RecordUsage(account: "x", id: "jan", api: "image-tagging.general", calls: 11_000, mode: .report))
        try h.advance("2026-02-01T01:00:00+08:00")
        try await h.run(GrantFreeQuota())
        let result = try await h.run(RunBills(month: Month(year: 2026, month: 1)))
        #expect(result.created.map(\.total.description) == ["30.00"])   // 10,000 post-paid × 0.003
        #expect(result.created[0].paid.gift.description == "5.00" && result.created[0].paid.cash.description == "25.00")
        #expect(h.account("x").status == "arrears")
        #expect(h.account("x").balance.description == "-15.00")
        let again = try await h.run(RunBills(month: Month(year: 2026, month: 1)))
        #expect(again.created.isEmpty && again.existing == 1)
        #expect(h.account("x").balance.description == "-15.00")

        let free = try await h.run(RecordUsage(account: "x", id: "f", api: "image-tagging.general", calls: 1_000, mode: .check))
        #expect(free.free == 1_000)
        let refused = try await h.run(RecordUsage(account: "x", id: "p", api: "image-tagging.general", calls: 1, mode: .check))
        #expect(refused.refusal == .accountInArrears)
        try await h.run(TopUp(account: "x", cash: money("14.99")))
        #expect(h.account("x").status == "arrears")
        try await h.run(TopUp(account: "x", cash: money("0.01")))
        #expect(h.account("x").status == "active")
        let served = try await h.run(RecordUsage(account: "x", id: "p", api: "image-tagging.general", calls: 1, mode: .check))
        #expect(served.postpaid == 1)
        let kinds = h.tally.read { $0.notices.map(\.kind) }
        #expect(kinds.contains("account_in_arrears") && kinds.contains("account_restored") && kinds.contains("bill_created"))
        h.expectCleanAudit()
    }

    @Test func contentSuspensionRefusesEveryCall() async throws {
        let h = try await Harness.make()
        try await h.customer("x", cash: "100000.00", activate: ["image-tagging"])
        try await h.run(Buy(account: "x", item: "taishan.smart-cover/p1", quantity: .count(1)))
        try await h.run(Suspend(account: "x"))
        #expect(h.account("x").status == "suspended")
        for api in ["image-tagging.general", "taishan.smart-cover"] {
            let outcome = try await h.run(RecordUsage(account: "x", id: api, api: api, calls: 1, mode: .check))
            #expect(outcome.refusal == .accountSuspended)
        }
        await h.expectRefusal(Buy(account: "x", item: "taishan.smart-cover/p1", quantity: .count(1)), .accountSuspended)
        try await h.run(Unsuspend(account: "x"))
        #expect(try await h.run(RecordUsage(account: "x", id: "ok", api: "taishan.smart-cover", calls: 1, mode: .check)).pack == 1)
    }

    /// Free packs are granted at 00:00 on the 1st to activated accounts, at activation mid-month,
    /// once per month, and expire with the month.
    @Test func freeQuotaGrants() async throws {
        let h = try await Harness.make("2026-01-20T15:00:00+08:00")
        try await h.customer("x", activate: ["image-tagging"])
        try await h.customer("idle")
        var free = h.tally.read { state in state.freePack(account: state.accounts["x"]!, api: "image-tagging.general", month: Month(year: 2026, month: 1)) }
        #expect(free?.size == 1_000 && free?.delivered == instant("2026-01-20T15:00:00+08:00"))
        #expect(free?.expires == instant("2026-02-01T00:00:00+08:00"))
        try h.advance("2026-02-01T00:00:00+08:00")
        #expect(try await h.run(GrantFreeQuota()) == 1)
        #expect(try await h.run(GrantFreeQuota()) == 0)
        free = h.tally.read { state in state.freePack(account: state.accounts["x"]!, api: "image-tagging.general", month: Month(year: 2026, month: 2)) }
        #expect(free?.delivered == instant("2026-02-01T00:00:00+08:00"))
        #expect(h.account("idle").freePacks.isEmpty)
        // No legacy free quota since 2022-10-24.
        #expect(h.account("x").freePacks.keys.allSatisfy { $0.api == "image-tagging.general" })
    }

    /// Usage grants the month's free pack itself when the scheduler has not (it was down), and
    /// events that go back and forth between two months each draw on their own month's pack.
    @Test func usageGrantsEachMonthsFreePackWithoutTheScheduler() async throws {
        let h = try await Harness.make("2026-01-31T23:00:00+08:00")
        try await h.customer("x", cash: "100.00", activate: ["image-tagging"])
        let january = try await h.run(RecordUsage(account: "x", id: "j1", api: "image-tagging.general", calls: 10, mode: .report))
        #expect(january.free == 10)
        try h.advance("2026-02-01T00:30:00+08:00")
        let february = try await h.run(RecordUsage(account: "x", id: "f1", api: "image-tagging.general", calls: 995, mode: .report))
        #expect(february.free == 995)
        let late = try await h.run(RecordUsage(account: "x", id: "j2", api: "image-tagging.general", calls: 992,
                                               at: instant("2026-01-31T23:59:59+08:00"), mode: .report))
        #expect(late.free == 990 && late.postpaid == 2)
        let again = try await h.run(RecordUsage(account: "x", id: "f2", api: "image-tagging.general", calls: 7, mode: .report))
        #expect(again.free == 5 && again.postpaid == 2)
        #expect(try await h.run(GrantFreeQuota()) == 0)
        #expect(h.account("x").freePacks.count == 2)
        h.expectCleanAudit()
    }

    /// A late report settles as of its own time: January's free pack, January's usage, before the bill run.
    @Test func lateReportsSettleInTheirOwnMonth() async throws {
        let h = try await Harness.make("2026-01-31T23:00:00+08:00")
        try await h.customer("x", cash: "100.00", activate: ["image-tagging"])
        try h.advance("2026-02-01T00:30:00+08:00")
        try await h.run(GrantFreeQuota())
        let late = try await h.run(RecordUsage(account: "x", id: "late", api: "image-tagging.general", calls: 1_500,
                                               at: instant("2026-01-31T23:59:59+08:00"), mode: .report))
        #expect(late.free == 1_000 && late.postpaid == 500)
        let usage = h.tally.read { $0.monthly[MonthlyKey(account: "x", api: "image-tagging.general", month: Month(year: 2026, month: 1))] }
        #expect(usage?.calls == 1_500)
        try h.advance("2026-02-01T01:00:00+08:00")
        try await h.run(RunBills(month: Month(year: 2026, month: 1)))
        let closed = try await h.run(RecordUsage(account: "x", id: "later", api: "image-tagging.general", calls: 1,
                                                 at: instant("2026-01-31T23:59:59+08:00"), mode: .report))
        #expect(closed.refusal == .periodClosed)
        // The same id again is a duplicate, even after the month closed: the original answer.
        let duplicate = try await h.run(RecordUsage(account: "x", id: "late", api: "image-tagging.general", calls: 1_500,
                                                    at: instant("2026-01-31T23:59:59+08:00"), mode: .report))
        #expect(duplicate.duplicate && duplicate.postpaid == 500)
        h.expectCleanAudit()
    }

    /// Packs draw earliest expiry first, then earliest bought; expired packs are void.
    @Test func packsDrawInExpiryOrderAndExpire() async throws {
        let h = try await Harness.make("2026-01-01T09:00:00+08:00")
        try await h.customer("x", cash: "1000000.00")
        try await h.run(Buy(account: "x", item: "taishan.smart-cover/p2", quantity: .count(1)))
        try h.advance("2026-03-01T09:00:00+08:00")
        try await h.run(Buy(account: "x", item: "taishan.smart-cover/p1", quantity: .count(1)))
        let first = try await h.run(RecordUsage(account: "x", id: "a", api: "taishan.smart-cover", calls: 10_001, mode: .report))
        #expect(first.pack == 10_001)
        let lefts = h.tally.read { state in state.accounts["x"]!.packs.compactMap { state.packs[$0]?.left } }
        #expect(lefts == [0, 2_999])
        // p2 expired on 2027-01-01 09:00 (365 days); p1 lasts until 2027-03-01 09:00.
        try h.advance("2027-03-01T08:59:59+08:00")
        #expect(try await h.run(RecordUsage(account: "x", id: "b", api: "taishan.smart-cover", calls: 1, mode: .report)).pack == 1)
        try h.advance("2027-03-01T09:00:00+08:00")
        let expired = try await h.run(RecordUsage(account: "x", id: "c", api: "taishan.smart-cover", calls: 1, mode: .check))
        #expect(expired.refusal == .quotaExhausted)
        h.expectCleanAudit()
    }

    /// The QPS limit is the highest QPS of usable packs; it falls when that pack is used up.
    @Test func qpsFollowsUsablePacks() async throws {
        let h = try await Harness.make("2026-01-01T09:00:00+08:00")
        try await h.customer("x", cash: "1000000.00")
        try await h.run(Buy(account: "x", item: "taishan.smart-cover/p1", quantity: .count(1)))   // 2 QPS
        let now = instant("2026-01-01T09:00:00+08:00")
        var accepted = 0
        for call in 0..<5 {
            let outcome = try await h.run(RecordUsage(account: "x", id: "q\(call)", api: "taishan.smart-cover", calls: 1, at: now, mode: .check))
            if outcome.accepted == 1 { accepted += 1 } else { #expect(outcome.refusal == .rateLimited) }
        }
        #expect(accepted == 2)
        // Rate-limited calls draw nothing; report mode ignores QPS.
        #expect(h.tally.read { $0.packs.values.first!.left } == 2_998)
        let report = try await h.run(RecordUsage(account: "x", id: "r", api: "taishan.smart-cover", calls: 100, at: now, mode: .report))
        #expect(report.pack == 100)
    }

    @Test func membershipsExtendUpgradeAndExpire() async throws {
        let h = try await Harness.make("2026-01-31T12:00:00+08:00")
        try await h.customer("li", .personal, cash: "1000.00")
        try await h.run(Buy(account: "li", item: "taishan/personal-pro", quantity: .months(1)))
        #expect(h.account("li").memberships["taishan"]?.expires == instant("2026-02-28T12:00:00+08:00"))
        try await h.run(Renew(account: "li", product: "taishan", quantity: .months(1)))
        #expect(h.account("li").memberships["taishan"]?.expires == instant("2026-03-28T12:00:00+08:00"))
        // Limited templates: 20 a month per user.
        for _ in 0..<20 { try await h.run(CheckEntitlement(account: "li", feature: "templates", use: true)) }
        await h.expectRefusal(CheckEntitlement(account: "li", feature: "templates", use: true), .monthlyLimitReached)
        await h.expectRefusal(CheckEntitlement(account: "li", feature: "ape-image-library"), .featureNotIncluded)
        try h.advance("2026-02-01T00:00:00+08:00")
        let fresh = try await h.run(CheckEntitlement(account: "li", feature: "templates", use: true))
        #expect(fresh.remaining == 19)
        try h.advance("2026-03-28T12:00:00+08:00")
        await h.expectRefusal(CheckEntitlement(account: "li", feature: "templates"), .membershipExpired)
        // After expiry, buying starts a new term from now.
        try await h.run(Buy(account: "li", item: "taishan/personal-pro", quantity: .years(1)))
        #expect(h.account("li").memberships["taishan"]?.expires == instant("2027-03-28T12:00:00+08:00"))
        h.expectCleanAudit()
    }

    @Test func premiumSeats() async throws {
        let h = try await Harness.make()
        try await h.customer("corp", cash: "2000.00")
        try await h.run(Buy(account: "corp", item: "taishan/enterprise-premium", quantity: .years(1)))
        for user in 1...6 { try await h.run(AssignSeat(account: "corp", user: "u\(user)")) }
        await h.expectRefusal(AssignSeat(account: "corp", user: "u7"), .seatsFull)
        #expect(try await h.run(CheckEntitlement(account: "corp", feature: "team-collaboration", user: "u3")).edition == "taishan/enterprise-premium")
        await h.expectRefusal(CheckEntitlement(account: "corp", feature: "team-collaboration", user: "u7"), .seatNotAssigned)
    }

    /// SPEC 3: vouchers (earliest expiry first, product-scoped), gift, income, cash; refunds return
    /// each sub-account what it paid, never the vouchers.
    @Test func paymentOrderAndRefundShares() async throws {
        let h = try await Harness.make("2026-01-05T10:00:00+08:00")
        try await h.customer("x", cash: "300.00")
        try await h.run(TopUp(account: "x", income: money("30.00"), gift: money("20.00")))
        try await h.run(GrantVoucher(account: "x", amount: money("50.00"), expires: instant("2026-12-31T00:00:00+08:00"), product: "taishan"))
        try await h.run(GrantVoucher(account: "x", amount: money("15.00"), expires: instant("2026-06-30T00:00:00+08:00"), product: nil))
        try await h.run(GrantVoucher(account: "x", amount: money("5.00"), expires: instant("2026-03-30T00:00:00+08:00"), product: "image-tagging"))
        let order = try await h.run(Buy(account: "x", item: "image-tagging.general/100k", quantity: .count(1), ref: "p"))
        #expect(order.payment.vouchers.map(\.amount.description) == ["5.00", "15.00"])
        #expect(order.payment.gift.description == "20.00" && order.payment.income.description == "30.00")
        #expect(order.payment.cash.description == "210.00")
        try await h.run(Refund(account: "x", ref: "p"))
        let x = h.account("x")
        #expect(x.cash.description == "300.00" && x.income.description == "30.00" && x.gift.description == "20.00")
        #expect(x.vouchers.map(\.remaining.description) == ["50.00", "0.00", "0.00"])
        #expect(h.tally.read { $0.packs[order.packs[0]]?.revoked } == true)
        h.expectCleanAudit()
    }

    /// SPEC 2.4: a free-quota grant uses the version in force when granted; a month's post-paid
    /// prices the version in force at the month's start; affected accounts are told.
    @Test func publishedChangesTakeEffectOnTheirDate() async throws {
        let h = try await Harness.make("2026-01-05T10:00:00+08:00")
        try await h.customer("x", cash: "1000.00", activate: ["image-tagging"])
        try await h.customer("bystander", cash: "1.00")
        let affected = try await h.run(PublishCatalog(effective: instant("2026-03-01T00:00:00+08:00"), changes: """
            changes:
              - {api: image-tagging.general, free_monthly: 500}
              - {api: image-tagging.general, postpaid: {model: flat, unit_price: "0.004"}}
            """))
        #expect(affected == ["x"])
        #expect(h.tally.read { $0.notices.last?.kind } == "catalog_change_scheduled")
        try h.advance("2026-02-28T23:59:59+08:00")
        try await h.run(RecordUsage(account: "x", id: "feb", api: "image-tagging.general", calls: 2_000, mode: .report))
        try h.advance("2026-03-01T00:00:00+08:00")
        try await h.run(GrantFreeQuota())
        try await h.run(RecordUsage(account: "x", id: "mar", api: "image-tagging.general", calls: 2_000, mode: .report))
        try h.advance("2026-04-01T01:00:00+08:00")
        let feb = try await h.run(RunBills(month: Month(year: 2026, month: 2)))
        let mar = try await h.run(RunBills(month: Month(year: 2026, month: 3)))
        #expect(feb.created.first?.total.description == "3.00")   // 1,000 × 0.003
        #expect(mar.created.first?.total.description == "6.00")   // (2,000 − 500) × 0.004
        // A cut that helps customers needs no notice; a forced adverse change is allowed.
        try await h.run(PublishCatalog(effective: instant("2026-04-02T00:00:00+08:00"), changes: "changes: [{api: image-tagging.general, free_monthly: 2000}]"))
        try await h.run(PublishCatalog(effective: instant("2026-04-03T00:00:00+08:00"), changes: "changes: [{item: image-tagging.general/100k, price: \"300.00\"}]", force: true))
        h.expectCleanAudit()
    }
}

@Suite(.timeLimit(.minutes(5))) struct ChunkedBillRunTests {
    /// The bill run the command line and the bench share: every account billed once, a second run
    /// charges nothing, and a month without usage is still closed.
    @Test func billsInChunksAndRestartsSafely() async throws {
        let h = try await Harness.make("2026-01-05T10:00:00+08:00")
        for n in 0..<3 {
            try await h.customer("c\(n)", cash: "100.00", activate: ["image-tagging"])
            try await h.run(RecordUsage(account: "c\(n)", id: "e", api: "image-tagging.general", calls: 2_000, mode: .report))
        }
        try h.advance("2026-03-01T01:00:00+08:00")
        var steps: [(Int, Int)] = []
        let first = try await h.tally.runBills(month: Month(year: 2026, month: 1)) { steps.append(($0, $1)) }
        #expect(first.accounts == 3 && first.created == 3 && first.existing == 0)
        #expect(first.total.description == "9.00")   // 3 × 1,000 post-paid × 0.003
        #expect(steps.last.map { $0.0 == 3 && $0.1 == 3 } == true)
        let again = try await h.tally.runBills(month: Month(year: 2026, month: 1))
        #expect(again.created == 0 && again.existing == 3 && again.total == .zero)
        let empty = try await h.tally.runBills(month: Month(year: 2026, month: 2))
        #expect(empty.accounts == 0 && empty.created == 0)
        #expect(h.tally.read { $0.closedThrough } == Month(year: 2026, month: 2))
        h.expectCleanAudit()
    }
}

import Synchronization

/// The bounded runner a bill run keeps its chunks under way with.
@Suite(.timeLimit(.minutes(5))) struct BoundedTests {
    @Test func runsEveryItemOnceAndNeverMoreThanTheLimitAtOnce() async throws {
        let running = Mutex((now: 0, most: 0))
        var results: [Int] = []
        try await forEach(Array(0..<40), atMost: 3) { item in
            running.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
            try await Task.sleep(for: .milliseconds(1 + item % 3))
            running.withLock { $0.now -= 1 }
            return item * 10
        } finished: { results.append($0) }
        #expect(results.sorted() == (0..<40).map { $0 * 10 })
        #expect(running.withLock { $0.most } == 3)
    }

    @Test func theFirstErrorStopsIt() async throws {
        struct Stop: Error {}
        let started = Mutex(0)
        await #expect(throws: Stop.self) {
            try await forEach(Array(0..<100), atMost: 2) { item in
                started.withLock { $0 += 1 }
                if item == 5 { throw Stop() }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        #expect(started.withLock { $0 } < 100)
    }
}

@Suite(.timeLimit(.minutes(5))) struct RandomIDTests {
    /// A counter scrambled by a bijection: never the same id twice from one source, always the
    /// prefix and 16 hex digits, and another source (another process) starts elsewhere.
    @Test func idsAreDistinctAndWellFormed() {
        let ids = RandomIDs()
        let made = (0..<200_000).map { _ in ids.next("txn") }
        #expect(Set(made).count == made.count)
        let hex = Set("0123456789abcdef")
        #expect(made.allSatisfy { $0.hasPrefix("txn_") && $0.count == 20 && $0.dropFirst(4).allSatisfy(hex.contains) })
        let other = RandomIDs()
        #expect(Set((0..<1_000).map { _ in other.next("txn") }).isDisjoint(with: made))
    }
}
