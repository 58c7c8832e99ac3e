import Synchronization
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// What every store must do, run against each store (the durable ones join in the next issue).
@Suite struct StoreConformanceTests {
    static func fact(_ n: Int) -> Fact {
        .accountOpened(account: "a\(n)", subject: .personal, verified: n % 2 == 0, at: Instant(seconds: Int64(n)))
    }

    @Test func keepsBatchesInOrder() async throws {
        let store = InMemoryStore()
        try await store.append((0..<3).map(Self.fact))
        try await store.append([])
        try await store.append((3..<10).map(Self.fact))
        #expect(try await store.loadFacts() == (0..<10).map(Self.fact))
    }

    /// Facts round-trip through Codable, which is how durable stores keep them.
    @Test func factsRoundTripThroughCodable() throws {
        let transaction = LedgerTransaction(id: "t", at: Instant(seconds: 1), kind: "top_up",
                                            entries: [.money(.cash("a"), Money(yuan: 5)), .money(.paymentsReceived, Money(yuan: -5))])
        let facts: [Fact] = [Self.fact(1), .moneyCredited(account: "a", transaction: transaction),
                             .monthClosed(month: Month(year: 2026, month: 1), at: Instant(seconds: 9))]
        let data = try JSONEncoder().encode(facts)
        #expect(try JSONDecoder().decode([Fact].self, from: data) == facts)
    }
}

/// A store that counts its writes and can be told to fail.
final class ProbeStore: TallyStore {
    let kind = "probe"
    let writes = Mutex<[Int]>([])
    let failing = Mutex(false)

    func loadFacts() async throws -> [Fact] { [] }

    func append(_ facts: [Fact]) async throws {
        if failing.withLock({ $0 }) { throw TallyError(.storeUnavailable, "disk on fire") }
        try await Task.sleep(for: .milliseconds(2))
        writes.withLock { $0.append(facts.count) }
    }
}

@Suite struct JournalTests {
    /// Many concurrent callers share writes: fewer store writes than facts, every fact written once.
    @Test func groupCommitSharesWrites() async throws {
        let store = ProbeStore()
        let journal = Journal(store: store)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for n in 0..<200 {
                group.addTask {
                    let ticket = journal.enqueue([StoreConformanceTests.fact(n)])
                    try await journal.waitDurable(ticket)
                }
            }
            try await group.waitForAll()
        }
        let writes = store.writes.withLock { $0 }
        #expect(writes.reduce(0, +) == 200)
        #expect(writes.count < 200, "every fact took a write of its own: \(writes.count)")
    }

    /// A failed write is reported to its waiters and every later caller: nothing is acknowledged
    /// that was not kept.
    @Test func failedWritesAreNeverAcknowledged() async throws {
        let store = ProbeStore()
        store.failing.withLock { $0 = true }
        let clock = VirtualClock(start: Instant(seconds: 1_800_000_000))
        let tally = try await Tally.start(catalog: try CatalogFile.parse(Self.catalog), store: store, clock: clock.clock, ids: SequentialIDs())
        await #expect(throws: TallyError.self) { try await tally.perform(OpenAccount(account: "a", subject: .personal, verified: true)) }
        store.failing.withLock { $0 = false }
        do {
            try await tally.perform(OpenAccount(account: "b", subject: .personal, verified: true))
            Issue.record("an engine whose store failed went on acknowledging work")
        } catch {
            #expect(error.code == .storeUnavailable)
        }
    }

    static let catalog = """
    catalog: probe
    currency: CNY
    time_zone: {name: UTC, utc_offset: "+00:00"}
    versions:
      - effective: 2020-01-01T00:00:00Z
        products:
          - id: p
            activation: none
            verification: none
            refund: none
            apis: [{id: p.a, postpaid: {model: flat, unit_price: "0.01"}}]
    """
}

import Foundation
