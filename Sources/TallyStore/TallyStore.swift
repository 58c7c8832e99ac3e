import Synchronization
import TallyCore

/// Where facts are kept. A store appends batches of facts atomically and in order, and gives them
/// all back at start, from which the engine rebuilds its state. The durable stores (SQLite,
/// PostgreSQL) also spread facts into tables whose constraints guard the invariants.
public protocol TallyStore: Sendable {
    /// Every fact appended so far, in order.
    func loadFacts() async throws -> [Fact]
    /// Appends a batch atomically: all of it is kept, or none (and the call throws).
    func append(_ facts: [Fact]) async throws
    /// A short name for reports ("memory", "sqlite", "postgres").
    var kind: String { get }
}

/// Keeps facts in memory: for unit tests and the in-process simulator. Nothing survives the process.
public final class InMemoryStore: TallyStore {
    private let facts = Mutex<[Fact]>([])
    public let kind = "memory"

    public init() {}

    public func loadFacts() async throws -> [Fact] { facts.withLock { $0 } }

    public func append(_ batch: [Fact]) async throws { facts.withLock { $0.append(contentsOf: batch) } }

    /// How many facts are kept.
    public var count: Int { facts.withLock { $0.count } }
}

/// A batch that lost a race with another process (a pack overdrawn, an event id counted twice):
/// it was rolled back whole. The engine reloads its state from the store and retries.
public struct StoreConflict: Error, Sendable {
    public let reason: String
    public init(reason: String) { self.reason = reason }
}
