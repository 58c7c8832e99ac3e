import Testing
import TallyCore
import TallyEngine
import TallyStore

/// An engine on an in-memory store with a virtual clock, for tests.
struct Harness {
    let clock: VirtualClock
    let tally: Tally
    let store: InMemoryStore

    static func make(_ start: String = "2026-01-05T10:00:00+08:00", catalog: Catalog = Repository.catalog) async throws -> Harness {
        let clock = VirtualClock(start: instant(start))
        let store = InMemoryStore()
        let tally = try await Tally.start(catalog: catalog, store: store, clock: clock.clock, ids: SequentialIDs())
        return Harness(clock: clock, tally: tally, store: store)
    }

    @discardableResult
    func run<Op: Operation>(_ operation: Op) async throws -> Op.Output { try await tally.perform(operation) }

    func advance(_ to: String) throws { try clock.advance(to: instant(to)) }

    func account(_ id: String) -> Account { tally.read { $0.accounts[id]! } }

    /// Opens a verified account with cash.
    func customer(_ id: String, _ subject: Subject = .enterprise, cash: String = "0", activate: [String] = []) async throws {
        try await run(OpenAccount(account: id, subject: subject, verified: true))
        if cash != "0" { try await run(TopUp(account: id, cash: money(cash))) }
        for product in activate { try await run(Activate(account: id, product: product)) }
    }

    /// Asserts that the operation is refused with `code` and that nothing changed: no fact emitted,
    /// nothing written, and the audit still clean.
    func expectRefusal<Op: Operation>(_ operation: Op, _ code: TallyError.Code, sourceLocation: SourceLocation = #_sourceLocation) async {
        let facts = tally.read { $0.factCount }
        let stored = store.count
        do {
            _ = try await tally.perform(operation)
            Issue.record("\(Op.self) was accepted; expected \(code.rawValue)", sourceLocation: sourceLocation)
        } catch {
            #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
            #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
        }
        #expect(tally.read { $0.factCount } == facts, "a refusal changed the state", sourceLocation: sourceLocation)
        #expect(store.count == stored, "a refusal wrote to the store", sourceLocation: sourceLocation)
    }

    func expectCleanAudit(sourceLocation: SourceLocation = #_sourceLocation) {
        let report = tally.read { Audit.run($0) }
        #expect(report.isClean, "\(report.mismatches) \(report.unbalancedTransactions)", sourceLocation: sourceLocation)
    }
}

func instant(_ text: String) -> Instant {
    guard let instant = Instant(rfc3339: text) else { preconditionFailure("bad timestamp \(text)") }
    return instant
}

func money(_ text: String) -> Money {
    guard let money = Money(parsing: text) else { preconditionFailure("bad amount \(text)") }
    return money
}
