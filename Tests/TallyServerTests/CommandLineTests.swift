import Foundation
import Testing

/// The command line's errors for a `--db` it cannot use: the README's form (`error: <code>:
/// <sentence>`, exit 2), at once, and nothing created.
@Suite(.timeLimit(.minutes(5))) struct CommandLineTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// The binary `swift build --build-tests` makes beside the tests.
    static let binary = root.appendingPathComponent(".build/debug/tally").path

    /// Runs `tally` with `arguments`; returns its exit status and standard error.
    static func tally(_ arguments: [String]) throws -> (status: Int32, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments + ["--catalog", root.appendingPathComponent("catalogs/tally.yaml").path]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = Pipe()
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func theBinaryIsThere() {
        #expect(FileManager.default.isExecutableFile(atPath: Self.binary), "build the tests with swift build --build-tests")
    }

    /// `--db mysql://…` is refused for its scheme, not with an SQLite error.
    @Test(arguments: [["audit"], ["report", "--month", "2026-11"], ["bill-run", "--month", "2026-11"]])
    func aSchemeThatIsNoStoreIsRefused(command: [String]) throws {
        let (status, stderr) = try Self.tally(command + ["--db", "mysql://root@127.0.0.1/tally"])
        #expect(status == 2)
        #expect(stderr.hasPrefix("error: unsupported_store: "), "\(stderr)")
        #expect(stderr.contains("mysql"))
    }

    /// A mistyped path never looks like a clean audit: commands that only read refuse a file that
    /// is not there, and create none.
    @Test(arguments: [["audit"], ["report", "--month", "2026-11"]])
    func aReadOnlyCommandRefusesAMissingFile(command: [String]) throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tally-typo-\(UUID().uuidString)/a.sqlite").path
        for db in ["sqlite:\(path)", path] {
            let (status, stderr) = try Self.tally(command + ["--db", db])
            #expect(status == 2)
            #expect(stderr.hasPrefix("error: store_not_found: "), "\(stderr)")
            #expect(stderr.contains(path))
            #expect(!FileManager.default.fileExists(atPath: path))
        }
    }

    /// A PostgreSQL server that is not there is reported within the connect timeout, naming the
    /// server, not after the pool gives up a minute later.
    @Test func anUnreachablePostgreSQLIsReportedWithinTheConnectTimeout() throws {
        let started = ContinuousClock.now
        let (status, stderr) = try Self.tally(["report", "--month", "2026-11", "--db", "postgres://tally@127.0.0.1:1/tally", "--connect-timeout", "2"])
        let took = ContinuousClock.now - started
        #expect(status == 2)
        #expect(stderr.hasPrefix("error: store_unavailable: "), "\(stderr)")
        #expect(stderr.contains("127.0.0.1:1"))
        #expect(took < .seconds(30), "answered after \(took)")
    }
}
