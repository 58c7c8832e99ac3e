import Foundation
import TallyCore
import TallyPostgres
import TallySQLite
import TallyStore

/// The stores the conformance suite runs against. PostgreSQL joins when the test command has
/// started its throw-away cluster (scripts/with-postgres sets TALLY_TEST_POSTGRES_URL).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory, sqlite, postgres

    var testDescription: String { rawValue }

    static let postgresURL = ProcessInfo.processInfo.environment["TALLY_TEST_POSTGRES_URL"]
    /// How long a test waits to open a PostgreSQL store: the suites open many at once on two
    /// cores, and their migrations then took more than the default 5 s now and then.
    static let postgresConnectTimeoutSeconds: Int64 = 30

    /// The kinds this run can test.
    static var available: [StoreKind] { postgresURL == nil ? [.memory, .sqlite] : allCases }

    /// A fresh, empty store, and a way to open it again as a new process would.
    func make() async throws -> (store: any TallyStore, reopen: @Sendable () async throws -> any TallyStore) {
        switch self {
        case .memory:
            let store = InMemoryStore()
            return (store, { store })
        case .sqlite:
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("tally-test-\(UUID().uuidString).sqlite").path
            return (try SQLiteStore(path: path), { try SQLiteStore(path: path) })
        case .postgres:
            guard let base = StoreKind.postgresURL else { throw TallyError(.storeUnavailable, "no test cluster") }
            let url = try await PostgresStore.createDatabase(near: base, name: "t_\(UUID().uuidString.prefix(8).lowercased())")
            let timeout = StoreKind.postgresConnectTimeoutSeconds
            return (try await PostgresStore(url: url, connectTimeoutSeconds: timeout), { try await PostgresStore(url: url, connectTimeoutSeconds: timeout) })
        }
    }
}

import Testing
