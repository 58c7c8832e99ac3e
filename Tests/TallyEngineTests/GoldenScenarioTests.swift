import Foundation
import Testing
import TallyCore
import TallyEngine

/// The price lists' worked examples, each a scenario with its expected outcome, copied from the
/// planning repository into `Scenarios/`.
@Suite struct GoldenScenarioTests {
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

    @Test func matcherCatchesDifferences() throws {
        let expected = try JSON.parse(#"{"bills": [], "a": {"b": "1.00"}, "steps": [{"index": 1, "ok": true}], "note": "x"}"#)
        #expect(mismatches(expected: expected, actual: try JSON.parse(#"{"bills": [], "a": {"b": "1.00", "c": 2}, "steps": [{"index": 0}, {"index": 1, "ok": true}]}"#)).isEmpty)
        #expect(mismatches(expected: expected, actual: try JSON.parse(#"{"bills": [{}], "a": {"b": "1.00"}, "steps": [{"index": 1, "ok": true}]}"#)).count == 1)
        #expect(mismatches(expected: expected, actual: try JSON.parse(#"{"bills": [], "a": {"b": "1.01"}, "steps": [{"index": 1, "ok": false}]}"#)).count == 2)
    }
}
