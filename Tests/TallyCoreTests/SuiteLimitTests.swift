import Foundation
import Testing

/// A deadlocked test must fail CI within minutes and name itself, not run until CI's 90 minutes
/// are up: every suite of every test target carries a `.timeLimit`.
@Suite(.timeLimit(.minutes(5))) struct SuiteLimitTests {
    @Test func everySuiteHasATimeLimit() throws {
        let tests = Shipped.root.appendingPathComponent("Tests")
        let files = try #require(FileManager.default.enumerator(atPath: tests.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        var suites = 0
        var missing: [String] = []
        for file in files {
            let text = try String(contentsOf: tests.appendingPathComponent(file), encoding: .utf8)
            for line in text.split(separator: "\n") where line.hasPrefix("@Suite") {
                suites += 1
                if !line.contains(".timeLimit(") { missing.append("\(file): \(line)") }
            }
        }
        #expect(suites >= 30, "the scan found the suites")
        #expect(missing.isEmpty, "suites without a time limit: \(missing)")
    }
}
