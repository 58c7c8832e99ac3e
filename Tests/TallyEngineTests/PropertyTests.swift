import PropertyBased
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// Random sequences of operations keep the books straight.
@Suite(.timeLimit(.minutes(5))) struct PropertyTests {
    /// One random step, decoded from small integers so the generator shrinks well.
    static func operation(_ code: [Int], step: Int) -> (any Operation)? {
        let accounts = ["a", "b", "c"]
        let account = accounts[code[1] % accounts.count]
        let items = ["image-tagging.general/10k", "image-tagging.general/100k", "taishan.smart-cover/p1", "taishan.smart-cover/p2",
                     "taishan/enterprise-basic", "taishan/enterprise-advanced", "taishan/personal-pro"]
        let apis = ["image-tagging.general", "image-tagging.legacy", "taishan.smart-cover"]
        let api = apis[code[2] % apis.count]
        switch code[0] % 9 {
        case 0: return TopUp(account: account, cash: Money(yuan: Int64(code[3] % 5_000), fen: Int64(code[2] % 100) + 1))
        case 1: return Buy(account: account, item: items[code[2] % items.count], quantity: code[2] % items.count >= 4 ? .years(1) : .count(Int64(code[3] % 3) + 1), ref: "o\(step)")
        case 2, 3, 4:
            let mode: RecordUsage.Mode = code[3] % 2 == 0 ? .check : .report
            let calls = Int64(code[3] % 4 == 0 ? code[3] * 997 % 30_000 + 1 : code[3] % 7 + 1)
            // Ids repeat on purpose: every fourth event reuses an earlier id.
            let id = code[4] % 4 == 0 ? "e\(code[4] % 7)" : "e\(step)"
            return RecordUsage(account: account, id: id, api: api, edition: api.hasSuffix("legacy") ? "camera" : nil, calls: calls, mode: mode)
        case 5: return Refund(account: account, ref: "o\(max(0, step - 1 - code[3] % 4))")
        case 6: return GrantVoucher(account: account, amount: Money(yuan: Int64(code[3] % 50) + 1), expires: instant("2027-01-01T00:00:00+08:00"), product: code[2] % 2 == 0 ? nil : "image-tagging")
        case 7: return Upgrade(account: account, to: "taishan/enterprise-advanced")
        default: return code[3] % 5 == 0 ? Suspend(account: account, suspended: code[2] % 2 == 0) : TopUp(account: account, gift: Money(yuan: 3))
        }
    }

    static let steps = Gen.int(in: 0...10_000).array(of: 5).array(of: 5...60)

    @Test func randomSequencesKeepTheBooks() async throws {
        await propertyCheck(count: 60, input: Self.steps, Gen.int(in: 0...3)) { steps, closeAfter in
            do {
                try await Self.check(steps, closeAfter: closeAfter)
            } catch {
                Issue.record("harness failure: \(error)")
            }
        }
    }

    static func check(_ steps: [[Int]], closeAfter: Int) async throws {
        let h = try await Harness.make("2026-01-01T09:00:00+08:00")
        try await h.customer("a", cash: "20000.00", activate: ["image-tagging"])
        try await h.customer("b", cash: "500.00", activate: ["image-tagging"])
        try await h.customer("c", .personal, cash: "50.00")
        var counted: [String: Int64] = [:]   // accepted calls by account|id, first answer only
        for (index, code) in steps.enumerated() {
            try h.advance(instant("2026-01-01T09:00:00+08:00").adding(seconds: Int64(index) * 3_600 * 24 / Int64(max(steps.count, 1)) * Int64(closeAfter + 1)).rfc3339(in: .beijing))
            if h.clock.now >= instant("2026-02-01T01:00:00+08:00") {
                _ = try? await h.run(RunBills(month: Month(year: 2026, month: 1)))
            }
            guard let operation = operation(code, step: index) else { continue }
            let outcome: Any
            do { outcome = try await h.tally.perform(operation) } catch { continue }
            if let usage = outcome as? UsageOutcome, let op = operation as? RecordUsage {
                let key = "\(op.account)|\(op.id)"
                #expect(usage.accepted + usage.refused == op.calls || (usage.accepted == 0 && usage.refused == op.calls))
                if usage.duplicate {
                    #expect(counted[key] == usage.accepted, "a duplicate answered differently from the first time")
                } else if h.tally.read({ $0.usage[TallyState.usageKey(account: op.account, id: op.id)] != nil }) {
                    #expect(counted[key] == nil, "an event id was counted twice")
                    counted[key] = usage.accepted
                } else {
                    #expect(usage.accepted == 0, "accepted calls were not recorded")
                }
            }
        }
        let report = h.tally.read { Audit.run($0) }
        #expect(report.isClean, "\(report.mismatches.prefix(5)) \(report.unbalancedTransactions.prefix(5))")
        let books = h.tally.read { state in
            (balanced: state.ledgerBalances.unbalanced.isEmpty && state.ledger.allSatisfy(\.isBalanced),
             packsInRange: state.packs.values.allSatisfy { $0.left >= 0 && $0.left <= $0.size },
             accepted: state.usage.values.reduce(Int64(0)) { $0 + $1.accepted },
             monthly: state.monthly.values.reduce(Int64(0)) { $0 + $1.calls },
             split: state.monthly.values.reduce(Int64(0)) { $0 + $1.free + $1.pack + $1.postpaid })
        }
        #expect(books.balanced)
        #expect(books.packsInRange)
        #expect(books.accepted == books.monthly && books.monthly == books.split, "accepted calls ≠ free + pack + post-paid")
        #expect(books.accepted == counted.values.reduce(0, +))
        // Every bill is deducted in full, and the state rebuilt from the store is the same.
        let rebuilt = try await Tally.start(catalog: Repository.catalog, store: h.store, clock: h.clock.clock, ids: SequentialIDs())
        let original = try await Report.outcome(tally: h.tally, steps: [], now: h.clock.now)
        let recovered = try await Report.outcome(tally: rebuilt, steps: [], now: h.clock.now)
        #expect(original == recovered, "state rebuilt from the stored facts differs")
    }

    /// Many tasks drawing on one pack whose calls are fewer than the requests: exactly the pack's
    /// size is accepted, never below zero.
    @Test func concurrentDrawsNeverOverdraw() async throws {
        let h = try await Harness.make("2026-01-01T09:00:00+08:00")
        try await h.customer("x", cash: "6000.00")
        try await h.run(Buy(account: "x", item: "taishan.smart-cover/p1", quantity: .count(1)))   // 3,000 calls
        let accepted = try await withThrowingTaskGroup(of: Int64.self) { group in
            for worker in 0..<16 {
                group.addTask {
                    var mine: Int64 = 0
                    for call in 0..<250 {
                        // Report mode: QPS does not apply, so only the pack's size limits.
                        let outcome = try await h.tally.perform(RecordUsage(account: "x", id: "w\(worker)-\(call % 240)", api: "taishan.smart-cover", calls: 1, mode: .report))
                        if !outcome.duplicate { mine += outcome.accepted }
                    }
                    return mine
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(accepted == 3_000)
        #expect(h.tally.read { $0.packs.values.first { !$0.isFree }?.left } == 0)
        #expect(h.tally.read { $0.usage.count } == 16 * 240)
        h.expectCleanAudit()
    }
}
