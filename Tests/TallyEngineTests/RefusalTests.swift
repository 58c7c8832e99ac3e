import Testing
import TallyCore
import TallyEngine

/// Bad input and refused requests: each gets its code and changes nothing.
@Suite(.timeLimit(.minutes(5))) struct RefusalTests {
    @Test func accountsAndMoney() async throws {
        let h = try await Harness.make()
        try await h.customer("acme", cash: "100.00")
        await h.expectRefusal(OpenAccount(account: "acme", subject: .enterprise, verified: true), .accountExists)
        await h.expectRefusal(OpenAccount(account: "bad id!", subject: .personal, verified: false), .invalidRequest)
        await h.expectRefusal(OpenAccount(account: String(repeating: "a", count: 65), subject: .personal, verified: false), .invalidRequest)
        await h.expectRefusal(TopUp(account: "nobody", cash: money("1.00")), .accountNotFound)
        await h.expectRefusal(TopUp(account: "acme"), .invalidAmount)
        await h.expectRefusal(TopUp(account: "acme", cash: Money(microyuan: 5)), .invalidAmount)
        await h.expectRefusal(TopUp(account: "acme", cash: Money(yuan: 2_000_000_000)), .amountOutOfRange)
        await h.expectRefusal(TopUp(account: "acme", cash: Money(yuan: -5)), .invalidAmount)
        await h.expectRefusal(GrantVoucher(account: "acme", amount: money("5.00"), expires: instant("2025-01-01T00:00:00+08:00"), product: nil), .invalidTimestamp)
        await h.expectRefusal(GrantVoucher(account: "acme", amount: money("5.00"), expires: instant("2027-01-01T00:00:00+08:00"), product: "nope"), .unknownProduct)
        h.expectCleanAudit()
    }

    @Test func purchases() async throws {
        let h = try await Harness.make()
        try await h.customer("corp", cash: "1000.00")
        try await h.customer("li", .personal, cash: "1000.00")
        try await h.run(OpenAccount(account: "anon", subject: .enterprise, verified: false))
        try await h.run(TopUp(account: "anon", cash: money("100000.00")))
        await h.expectRefusal(Buy(account: "corp", item: "image-tagging.general/1k", quantity: .count(1)), .unknownItem)
        await h.expectRefusal(Buy(account: "corp", item: "image-tagging.general/100k", quantity: .count(0)), .countOutOfRange)
        await h.expectRefusal(Buy(account: "corp", item: "image-tagging.general/100k", quantity: .count(1_001)), .countOutOfRange)
        await h.expectRefusal(Buy(account: "corp", item: "image-tagging.general/100k", quantity: .months(2)), .invalidRequest)
        await h.expectRefusal(Buy(account: "corp", item: "image-tagging.general/1m", quantity: .count(1)), .insufficientFunds)
        await h.expectRefusal(Buy(account: "anon", item: "image-tagging.general/100k", quantity: .count(1)), .notVerified)
        await h.expectRefusal(Buy(account: "anon", item: "taishan/enterprise-basic", quantity: .years(1)), .notVerified)
        await h.expectRefusal(Buy(account: "li", item: "taishan/enterprise-basic", quantity: .years(1)), .wrongSubject)
        await h.expectRefusal(Buy(account: "corp", item: "taishan/personal-pro", quantity: .months(1)), .wrongSubject)
        await h.expectRefusal(Buy(account: "corp", item: "taishan/enterprise-basic", quantity: .months(3)), .periodNotOffered)
        await h.expectRefusal(Buy(account: "corp", item: "taishan/enterprise-basic", quantity: .years(11)), .countOutOfRange)
        await h.expectRefusal(Activate(account: "corp", product: "taishan"), .activationNotNeeded)
        await h.expectRefusal(Activate(account: "anon", product: "image-tagging"), .notVerified)
        await h.expectRefusal(Activate(account: "corp", product: "nope"), .unknownProduct)
        try await h.run(Buy(account: "corp", item: "image-tagging.general/100k", quantity: .count(1), ref: "r1"))
        await h.expectRefusal(Buy(account: "corp", item: "image-tagging.general/10k", quantity: .count(1), ref: "r1"), .duplicateRef)
        h.expectCleanAudit()
    }

    @Test func usage() async throws {
        let h = try await Harness.make()
        try await h.customer("acme", cash: "100.00", activate: ["image-tagging"])
        try await h.customer("idle", cash: "100.00")
        func use(_ api: String, edition: String? = nil, calls: Int64 = 1, id: String = "e1", at: String? = nil, account: String = "acme") -> RecordUsage {
            RecordUsage(account: account, id: id, api: api, edition: edition, calls: calls, at: at.map(instant), mode: .report)
        }
        await h.expectRefusal(use("image-tagging.general", calls: 0), .countOutOfRange)
        await h.expectRefusal(use("image-tagging.general", calls: 1_000_000_001), .countOutOfRange)
        await h.expectRefusal(use("image-tagging.general", id: ""), .invalidRequest)
        await h.expectRefusal(use("image-tagging.general", account: "ghost"), .accountNotFound)
        // Refusals of the whole event are answers, not errors, and record nothing.
        let before = h.tally.read { $0.factCount }
        for (op, code) in [
            (use("image-tagging.nope"), TallyError.Code.unknownApi),
            (use("image-tagging.legacy"), .unknownEdition),
            (use("image-tagging.legacy", edition: "radio"), .unknownEdition),
            (use("image-tagging.general", edition: "camera"), .unknownEdition),
            (use("image-tagging.general", at: "2026-01-05T10:05:01+08:00"), .timestampInFuture),
            (use("image-tagging.general", account: "idle"), .notActivated),
            (use("taishan.smart-cover"), .quotaExhausted),
        ] {
            let outcome = try await h.run(op)
            #expect(outcome.refusal == code && outcome.accepted == 0, "\(op.api): \(String(describing: outcome.refusal))")
        }
        // A report nothing covers is recorded (its calls were served) but charges nothing.
        #expect(h.tally.read { $0.factCount } == before + 1)
        // Five minutes ahead is still accepted; the same id with another body is id_reused.
        let ahead = try await h.run(use("image-tagging.general", id: "ahead", at: "2026-01-05T10:05:00+08:00"))
        #expect(ahead.free == 1)
        await h.expectRefusal(use("image-tagging.general", calls: 2, id: "ahead"), .idReused)
        h.expectCleanAudit()
    }

    @Test func memberships() async throws {
        let h = try await Harness.make()
        try await h.customer("corp", cash: "10000.00")
        await h.expectRefusal(Upgrade(account: "corp", to: "taishan/enterprise-advanced"), .noMembership)
        try await h.run(Buy(account: "corp", item: "taishan/enterprise-advanced", quantity: .years(1)))
        await h.expectRefusal(Buy(account: "corp", item: "taishan/enterprise-basic", quantity: .years(1)), .downgradeNotAllowed)
        await h.expectRefusal(Upgrade(account: "corp", to: "taishan/enterprise-basic"), .downgradeNotAllowed)
        await h.expectRefusal(Upgrade(account: "corp", to: "taishan/enterprise-advanced"), .notAnUpgrade)
        await h.expectRefusal(Upgrade(account: "corp", to: "taishan/personal-pro"), .wrongSubject)
        await h.expectRefusal(Upgrade(account: "corp", to: "taishan/nope"), .unknownItem)
        await h.expectRefusal(Buy(account: "corp", item: "taishan/enterprise-premium", quantity: .years(1)), .editionConflict)
        try await h.run(AssignSeat(account: "corp", user: "u1"))
        await h.expectRefusal(AssignSeat(account: "corp", user: "u2"), .seatsFull)
        await h.expectRefusal(CheckEntitlement(account: "corp", feature: "team-collaboration"), .featureNotIncluded)
        await h.expectRefusal(CheckEntitlement(account: "corp", feature: "templates", user: "stranger"), .seatNotAssigned)
        h.expectCleanAudit()
    }

    @Test func refunds() async throws {
        let h = try await Harness.make()
        try await h.customer("acme", cash: "100000.00", activate: ["image-tagging"])
        try await h.run(Buy(account: "acme", item: "taishan.smart-cover/p1", quantity: .count(1), ref: "cover"))
        try await h.run(Buy(account: "acme", item: "taishan/enterprise-basic", quantity: .years(1), ref: "m"))
        try await h.run(Buy(account: "acme", item: "image-tagging.general/10k", quantity: .count(1), ref: "used"))
        try await h.run(Buy(account: "acme", item: "image-tagging.general/10k", quantity: .count(1), ref: "fresh"))
        try await h.run(RecordUsage(account: "acme", id: "e", api: "image-tagging.general", calls: 1_001, mode: .report))
        await h.expectRefusal(Refund(account: "acme", ref: "nope"), .orderNotFound)
        await h.expectRefusal(Refund(account: "acme", ref: "cover"), .notRefundable)
        await h.expectRefusal(Refund(account: "acme", ref: "m"), .notRefundable)
        await h.expectRefusal(Refund(account: "acme", ref: "used"), .packUsed)
        try await h.run(ReviewRefunds(account: "acme"))
        await h.expectRefusal(Refund(account: "acme", ref: "fresh"), .refundUnderReview)
        try await h.run(ReviewRefunds(account: "acme", hold: false))
        try await h.run(Suspend(account: "acme"))
        await h.expectRefusal(Refund(account: "acme", ref: "fresh"), .accountSuspended)
        try await h.run(Unsuspend(account: "acme"))
        try h.advance("2026-01-12T23:59:59+08:00")
        try await h.run(Refund(account: "acme", ref: "fresh"))
        await h.expectRefusal(Refund(account: "acme", ref: "fresh"), .alreadyRefunded)
        h.expectCleanAudit()
    }

    @Test func refundWindowCloses() async throws {
        let h = try await Harness.make()
        try await h.customer("acme", cash: "100.00")
        try await h.run(Buy(account: "acme", item: "image-tagging.general/10k", quantity: .count(1), ref: "p"))
        try h.advance("2026-01-13T00:00:00+08:00")
        await h.expectRefusal(Refund(account: "acme", ref: "p"), .refundWindowPassed)
    }

    @Test func billRunsAndCatalogChanges() async throws {
        let h = try await Harness.make()
        await h.expectRefusal(RunBills(month: Month(year: 2026, month: 1)), .monthNotOver)
        await h.expectRefusal(PublishCatalog(effective: instant("2026-01-20T00:00:00+08:00"),
                                             changes: "changes: [{api: image-tagging.general, free_monthly: 500}]"), .noticePeriodTooShort)
        await h.expectRefusal(PublishCatalog(effective: instant("2025-01-20T00:00:00+08:00"),
                                             changes: "changes: [{api: image-tagging.general, free_monthly: 5000}]"), .invalidTimestamp)
        await h.expectRefusal(PublishCatalog(effective: instant("2026-03-20T00:00:00+08:00"),
                                             changes: "changes: [{api: image-tagging.nope, free_monthly: 5000}]"), .invalidCatalog)
        await h.expectRefusal(PublishCatalog(effective: instant("2026-03-20T00:00:00+08:00"), changes: "changes: [{item: x}"), .invalidCatalog)
    }
}
