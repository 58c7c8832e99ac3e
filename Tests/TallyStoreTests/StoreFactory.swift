import Foundation
import TallyCore
import TallySQLite
import TallyStore

/// The stores the conformance suite runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory, sqlite

    var testDescription: String { rawValue }

    /// A fresh, empty store, and a way to open it again as a new process would.
    func make() throws -> (store: any TallyStore, reopen: @Sendable () throws -> any TallyStore) {
        switch self {
        case .memory:
            let store = InMemoryStore()
            return (store, { store })
        case .sqlite:
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("tally-test-\(UUID().uuidString).sqlite").path
            return (try SQLiteStore(path: path), { try SQLiteStore(path: path) })
        }
    }
}

import Testing
