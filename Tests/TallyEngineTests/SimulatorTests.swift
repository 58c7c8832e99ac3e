import Testing
import TallyCore
import TallyEngine

@Suite(.timeLimit(.minutes(5))) struct SimulatorTests {
    /// A broken scenario is refused whole, naming the step and the field, never crashing.
    @Test(arguments: [
        ("- {do: top_up, account: a, cash: \"-5\"}", "steps[1].cash"),
        ("- {do: top_up, account: a, cash: \"5.001\"}", "steps[1].cash"),
        ("- {do: buy, account: a, item: x, count: many}", "steps[1].count"),
        ("- {do: buy, account: a, item: x, count: 2, years: 1}", "steps[1]"),
        ("- {do: use, account: a, api: x, calls: 0}", "steps[1].calls"),
        ("- {do: use, account: a, api: x, calls: 5, mode: sideways}", "steps[1].mode"),
        ("- {do: use, account: a, api: x, calls: 5, rate: 10}", "steps[1].rate"),
        ("- {do: use, account: a, api: x, calls: 5, colour: red}", "steps[1].colour"),
        ("- {do: teleport, account: a}", "steps[1].do"),
        ("- {at: 2025-01-01T00:00:00+08:00, do: wait}", "steps[1].at"),
        ("- {at: 2026-01-02, do: wait}", "steps[1].at"),
        ("- {do: close_month, month: 2026-1}", "steps[1].month"),
        ("- {do: open_account, account: b, subject: alien}", "steps[1].subject"),
        ("- {do: suspend, account: a, reason: unpaid}", "steps[1].reason"),
        ("- {do: grant_voucher, account: a, amount: \"5.00\"}", "steps[1]"),
        ("- [not, a, mapping]", "steps[1]"),
    ])
    func brokenScenariosNameStepAndField(step: String, path: String) async {
        let yaml = """
        start: 2026-01-01T00:00:00+08:00
        steps:
          - {do: open_account, account: a, subject: enterprise, verified: true}
          \(step)
        """
        do {
            _ = try await simulate(yaml)
            Issue.record("accepted: \(step)")
        } catch let error as TallyError {
            #expect(error.code == .invalidScenario)
            #expect(error.message.contains(path), "\(error.message)")
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test(arguments: ["", "start: yesterday\nsteps: []", "steps: []", "start: 2026-01-01T00:00:00+08:00\nsteps: {}", ": : :", "\t- x"])
    func malformedDocumentsAreRefused(yaml: String) async {
        await #expect(throws: TallyError.self) { _ = try await simulate(yaml) }
    }

    /// A failed step records its code and the scenario goes on.
    @Test func failedStepsDoNotStopTheScenario() async throws {
        let outcome = try await simulate("""
        start: 2026-01-01T00:00:00+08:00
        steps:
          - {do: buy, account: ghost, item: taishan.smart-cover/p1}
          - {do: open_account, account: a, subject: enterprise, verified: true}
          - {do: top_up, account: a, cash: "6000.00"}
          - {do: buy, account: a, item: taishan.smart-cover/p1}
        """)
        let steps = try #require(outcome["steps"])
        guard case .array(let list) = steps else { Issue.record("no steps"); return }
        #expect(list[0]["ok"] == .bool(false) && list[0]["error"] == .string("account_not_found"))
        #expect(list[3]["ok"] == .bool(true))
    }

    /// SPEC 8: `id` makes a step one idempotent event; `time` backdates a report or runs ahead.
    @Test func idsAndTimes() async throws {
        let outcome = try await simulate("""
        start: 2026-03-01T10:00:00+08:00
        steps:
          - {do: open_account, account: a, subject: enterprise, verified: true}
          - {do: activate, account: a, product: image-tagging}
          - {do: use, account: a, api: image-tagging.general, calls: 1500, id: ev1}
          - {at: 2026-03-01T11:00:00+08:00, do: use, account: a, api: image-tagging.general, calls: 1500, id: ev1}
          - {do: use, account: a, api: image-tagging.general, calls: 1600, id: ev1}
          - {do: use, account: a, api: image-tagging.general, calls: 10, time: 2026-03-01T11:04:59+08:00}
          - {do: use, account: a, api: image-tagging.general, calls: 10, time: 2026-03-01T11:05:01+08:00}
          - {do: use, account: a, api: image-tagging.legacy, edition: album, calls: 7, time: 2026-02-28T23:00:00+08:00}
          - {at: 2026-04-01T01:00:00+08:00, do: close_month, month: 2026-03}
          - {do: close_month, month: 2026-03}
          - {do: use, account: a, api: image-tagging.general, calls: 1, time: 2026-03-31T23:00:00+08:00}
        """)
        guard case .array(let steps)? = outcome["steps"] else { Issue.record("no steps"); return }
        #expect(steps[2]["accepted"] == (try JSON.parse(#"{"free": 1000, "postpaid": 500}"#)))
        #expect(steps[3]["duplicate"] == .bool(true))
        #expect(steps[3]["accepted"] == (try JSON.parse(#"{"free": 1000, "postpaid": 500}"#)))
        #expect(steps[4]["error"] == .string("id_reused"))
        #expect(steps[5]["accepted"] == (try JSON.parse(#"{"postpaid": 10}"#)))
        #expect(steps[6]["refused"] == (try JSON.parse(#"{"timestamp_in_future": 10}"#)))
        #expect(steps[7]["accepted"] == (try JSON.parse(#"{"postpaid": 7}"#)))
        #expect(steps[8]["bills"] == .int(1))
        #expect(steps[9]["bills"] == .int(0) && steps[9]["existing"] == .int(1))
        #expect(steps[10]["refused"] == (try JSON.parse(#"{"period_closed": 1}"#)))
        guard case .array(let bills)? = outcome["bills"] else { Issue.record("no bills"); return }
        #expect(bills.count == 1)
        #expect(bills[0]["total"] == .string("1.53"))   // 510 × 0.003
    }

    /// Check mode spaces calls evenly at `rate` a second against the token bucket.
    @Test func checkModeAtARate() async throws {
        let outcome = try await simulate("""
        start: 2026-03-01T10:00:00+08:00
        steps:
          - {do: open_account, account: a, subject: enterprise, verified: true}
          - {do: top_up, account: a, cash: "6000.00"}
          - {do: buy, account: a, item: taishan.smart-cover/p1}
          - {do: use, account: a, api: taishan.smart-cover, calls: 20, rate: 2, mode: check}
          - {do: use, account: a, api: taishan.smart-cover, calls: 10, rate: 4, mode: check}
        """)
        guard case .array(let steps)? = outcome["steps"] else { Issue.record("no steps"); return }
        #expect(steps[3]["accepted"] == (try JSON.parse(#"{"pack": 20}"#)))
        // 10 calls at 4/s against 2 QPS: the bucket refilled while idle holds 2, then 2 a second.
        guard case .object(let refused)? = steps[4]["refused"], case .int(let limited)? = refused.first?.1 else {
            Issue.record("nothing refused"); return
        }
        #expect((4...6).contains(limited))
    }
}

@Suite(.timeLimit(.minutes(5))) struct QuoteViewTests {
    @Test func resolvesShortNamesAndPrintsThePlanShape() throws {
        let version = Repository.catalog.versions.last!
        #expect(try QuoteView.resolve("smart-cover", in: version).id == "taishan.smart-cover")
        #expect(try QuoteView.resolve("image-tagging", in: version).id == "image-tagging.general")
        #expect(try QuoteView.resolve("image-tagging.legacy", in: version).id == "image-tagging.legacy")
        #expect(try QuoteView.resolve("taishan", in: version).id == "taishan.smart-cover")
        #expect(throws: TallyError.self) { _ = try QuoteView.resolve("nothing", in: version) }
        let quote = try Advisor.quote(api: try QuoteView.resolve("smart-cover", in: version), calls: 500_000, months: 1, qps: 100)
        let json = QuoteView.json(quote)
        #expect(json["best"]?["items"] == (try JSON.parse(#"[{"item": "taishan.smart-cover/p5", "count": 1}]"#)))
        #expect(json["best"]?["postpaid_calls"] == .int(0))
        #expect(json["best"]?["total"] == .string("75000.00"))
        #expect(QuoteView.table(quote).contains("75000.00"))
    }

    /// `tally catalog`: every item on sale, by the name an order takes, how it is bought and its price.
    @Test func theCatalogTableListsEveryItem() {
        let version = Repository.catalog.versions.last!
        let table = CatalogView.table(version)
        let items = version.packsByItem.keys.sorted() + version.editionsByItem.keys.sorted()
        #expect(!items.isEmpty)
        for item in items { #expect(table.contains(item), "\(item)") }
        let row = CatalogView.rows(version).first { $0[0] == "image-tagging.general/10k" }
        #expect(row?[1] == "pack (count)" && row?[3] == "30.00")
        let membership = CatalogView.rows(version).first { $0[0] == "taishan/personal-pro" }
        #expect(membership?[1] == "membership (months or years)" && membership?[3] == "30.00 a month, 138.00 a year")
    }
}
