import Foundation
import GRDB
import Testing
import TallyCore
import TallySQLite
import TallyStore

/// SQLite's express log: a small batch is durable in a file of its own beside the main file's
/// write, moved into the main file by the next main write, and never lost or counted twice.
@Suite(.timeLimit(.minutes(5))) struct ExpressLogTests {
    static func path() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tally-express-\(UUID().uuidString).sqlite").path
    }

    static func opened(_ account: String) -> Fact {
        .accountOpened(account: account, subject: .personal, verified: true, at: Instant(seconds: 1))
    }

    /// A store at `path` with account `a` and its event `u1` in the main file, and its event `u2`
    /// in the express log only.
    static func storeWithAnEventInEachFile(_ path: String) async throws -> SQLiteStore {
        let store = try SQLiteStore(path: path)
        try await store.append(EncodedBatch(encoding: [opened("a"), StoreConformanceTests.usage("a", 1)]))
        try await store.appendExpress(EncodedBatch(encoding: [StoreConformanceTests.usage("a", 2)]))
        return store
    }

    /// Rows of `table` in the file at `path` as it is on disk, read past the store (which would
    /// move what its log holds first).
    static func rowsOnDisk(_ path: String, _ table: String) throws -> Int {
        try DatabaseQueue(path: path).read { try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM \(table)") ?? 0 }
    }

    /// A batch committed to the log and never moved (the process died first) is in the main file
    /// once the store is opened again, in its place, and the log is empty.
    @Test func aBatchOnlyTheLogHoldsSurvivesACrash() async throws {
        let path = Self.path()
        defer { SQLiteStore.removeFiles(at: path) }
        let store = try SQLiteStore(path: path)
        try await store.append(EncodedBatch(encoding: [Self.opened("a")]))
        let logged: [Fact] = [Self.opened("b"), StoreConformanceTests.usage("b", 1), StoreConformanceTests.usage("a", 2)]
        try await store.appendExpress(EncodedBatch(encoding: logged))
        #expect(try Self.rowsOnDisk(path, "usage_events") == 0, "the log holds it, not the main file")

        let reopened = try SQLiteStore(path: path)
        #expect(try Self.rowsOnDisk(path, "usage_events") == 2)
        #expect(try Self.rowsOnDisk(path, "accounts") == 2)
        let facts = try await reopened.loadFacts()
        #expect(facts == [Self.opened("a")] + logged)
        #expect(try Self.rowsOnDisk(SQLiteStore.expressPath(path), "usage_events") == 0, "the log was emptied")
        // The first store, still open, moves nothing twice.
        try await store.append(EncodedBatch(encoding: [StoreConformanceTests.usage("a", 3)]))
        let counted = try await reopened.count("usage_events")
        #expect(counted == 3)
    }

    /// An account opened through the log is in the main file before the next main write, which
    /// may record its usage (the foreign key holds), and the facts keep their order.
    @Test func theNextMainWriteMovesTheLogFirst() async throws {
        let path = Self.path()
        defer { SQLiteStore.removeFiles(at: path) }
        let store = try SQLiteStore(path: path)
        try await store.appendExpress(EncodedBatch(encoding: [Self.opened("a")]))
        let usage = (0..<100).map { StoreConformanceTests.usage("a", $0) }
        try await store.append(EncodedBatch(encoding: usage))
        #expect(try Self.rowsOnDisk(path, "accounts") == 1)
        let facts = try await store.loadFacts()
        #expect(facts == [Self.opened("a")] + usage)
        let position = try await store.position()
        #expect(position == 101)
    }

    /// A main batch the database refuses rolls back alone: what the log had committed is moved
    /// all the same.
    @Test func aRefusedMainBatchStillMovesTheLog() async throws {
        let path = Self.path()
        defer { SQLiteStore.removeFiles(at: path) }
        let store = try SQLiteStore(path: path)
        try await store.appendExpress(EncodedBatch(encoding: [Self.opened("a")]))
        await #expect(throws: (any Error).self) {
            try await store.append(EncodedBatch(encoding: [StoreConformanceTests.usage("ghost", 1)]))
        }
        #expect(try Self.rowsOnDisk(path, "accounts") == 1)
        #expect(try Self.rowsOnDisk(path, "usage_events") == 0)
    }

    /// Stored usage, the engine's read for an id that may be old, finds what only the log holds
    /// without moving it: a move is a write to the main file, and here another connection holds
    /// that file's write lock all along (a move would wait for it, then fail). Once moved, the
    /// same events are found in the main file.
    @Test func storedUsageReadsTheLogWithoutMovingIt() async throws {
        let path = Self.path()
        defer { SQLiteStore.removeFiles(at: path) }
        let store = try await Self.storeWithAnEventInEachFile(path)
        let keys = [1, 2, 3].map { TallyState.usageKey(account: "a", id: "u\($0)") }
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        let blocker = try DatabaseQueue(path: path, configuration: configuration)
        let held = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        let holder = Thread {
            try? blocker.inDatabase { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                held.signal()
                release.wait()
                try db.execute(sql: "ROLLBACK")
            }
        }
        holder.start()
        held.wait()
        let before: [TallyState.UsageKey: UsageEntry]
        do {
            defer { release.signal() }
            before = try await store.storedUsage(keys)
        }
        #expect(Set(before.keys.map(\.id)) == ["u1", "u2"])
        try await store.append(EncodedBatch(encoding: [StoreConformanceTests.usage("a", 4)]))
        #expect(try Self.rowsOnDisk(path, "usage_events") == 3)
        let after = try await store.storedUsage(keys)
        #expect(after == before)
    }

    /// The log refuses an event the store counted before, in the main file or in the log, as
    /// the main file's unique index does, and says which.
    @Test func theLogRefusesAnEventCountedBefore() async throws {
        let path = Self.path()
        defer { SQLiteStore.removeFiles(at: path) }
        let store = try await Self.storeWithAnEventInEachFile(path)
        for n in [1, 2] {
            let error = await #expect(throws: StoreConflict.self) {
                try await store.appendExpress(EncodedBatch(encoding: [StoreConformanceTests.usage("a", 3 + n), StoreConformanceTests.usage("a", n)]))
            }
            #expect(error?.known.keys.map(\.id) == ["u\(n)"])
        }
        let counted = try await store.count("usage_events")
        #expect(counted == 2, "nothing of a refused batch was kept")
    }
}
