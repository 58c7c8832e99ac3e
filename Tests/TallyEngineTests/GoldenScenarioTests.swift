import Foundation
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// The price lists' worked examples, each a scenario with its expected outcome, copied from the
/// planning repository into `Scenarios/`.
@Suite(.timeLimit(.minutes(5))) struct GoldenScenarioTests {
    static let names: [String] = {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: Repository.scenarios.path)) ?? []
        return files.filter { $0.hasSuffix(".yaml") }.map { String($0.dropLast(5)) }.sorted()
    }()

    @Test func everyScenarioHasAnExpectedOutcome() {
        #expect(Self.names.count >= 6)
        for name in Self.names {
            #expect(FileManager.default.fileExists(atPath: Repository.scenarios.appendingPathComponent("\(name).expected.json").path), "\(name)")
        }
    }

    @Test(arguments: names) func scenarioReproducesItsExpectedOutcome(name: String) async throws {
        let yaml = Repository.read(Repository.scenarios.appendingPathComponent("\(name).yaml"))
        let expected = try JSON.parse(Repository.read(Repository.scenarios.appendingPathComponent("\(name).expected.json")))
        let actual = try await simulate(yaml)
        let found = mismatches(expected: expected, actual: actual)
        #expect(found.isEmpty, "\(name): \(found.joined(separator: "\n"))")
    }

    /// Each account's bills, orders, notices, monthly totals and open packs are read through
    /// per-account lists kept beside the global tables; after every scenario, rebuilt from its
    /// facts, the lists hold exactly what a scan of the tables finds.
    @Test(arguments: names) func perAccountListsMatchAScan(name: String) async throws {
        let scenario = try Scenario.parse(Repository.read(Repository.scenarios.appendingPathComponent("\(name).yaml")))
        let store = InMemoryStore()
        _ = try await Simulator(catalog: Repository.catalog, store: store).run(scenario)
        let tally = try await Tally.start(catalog: Repository.catalog, store: store, clock: VirtualClock(start: scenario.start).clock,
                                          ids: SequentialIDs())
        let state = tally.read { $0 }
        var listed = 0
        for account in state.accounts.keys {
            let bills = state.bills(of: account).map(\.id), orders = state.orders(of: account).map(\.id)
            let notices = state.notices(of: account).map(\.id)
            #expect(bills == state.bills.values.filter { $0.account == account }.map(\.id).sorted())
            #expect(orders == state.orders.values.filter { $0.account == account }.map(\.id).sorted())
            #expect(notices == state.notices.filter { $0.account == account }.map(\.id).sorted())
            let keys = state.monthlyKeysByAccount[account] ?? []
            #expect(Set(keys).count == keys.count)
            #expect(Set(keys) == Set(state.monthly.keys.filter { $0.account == account }))
            let open = state.accounts[account]!.packs.filter { id in
                state.packs[id].map { !$0.isFree && !$0.revoked && $0.left > 0 } ?? false
            }
            #expect(state.accounts[account]!.open == open)
            listed += bills.count + orders.count + notices.count + keys.count + open.count
        }
        #expect(listed > 0, "the scenario lists something")
    }

    @Test func matcherCatchesDifferences() throws {
        let expected = try JSON.parse(#"{"bills": [], "a": {"b": "1.00"}, "steps": [{"index": 1, "ok": true}], "note": "x"}"#)
        #expect(mismatches(expected: expected, actual: try JSON.parse(#"{"bills": [], "a": {"b": "1.00", "c": 2}, "steps": [{"index": 0}, {"index": 1, "ok": true}]}"#)).isEmpty)
        #expect(mismatches(expected: expected, actual: try JSON.parse(#"{"bills": [{}], "a": {"b": "1.00"}, "steps": [{"index": 1, "ok": true}]}"#)).count == 1)
        #expect(mismatches(expected: expected, actual: try JSON.parse(#"{"bills": [], "a": {"b": "1.01"}, "steps": [{"index": 1, "ok": false}]}"#)).count == 2)
    }
}
