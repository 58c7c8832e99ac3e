import Synchronization
import TallyCore
import TallyStore

/// Group commit: facts decided in memory queue here in order and are written to the store in
/// batches. A caller is answered only after its facts' batch has committed, so nothing acknowledged
/// is lost; many callers share one write, so nothing costs a transaction per event.
///
/// The writer is a task of its own, started by the first waiter that finds none under way; it
/// drains the queue and ends. Callers that queue meanwhile wait for the next batch (TigerBeetle and
/// PostgreSQL's group commit work the same way). No caller writes for the others: under a steady
/// load the queue never empties, and a caller that drained it was answered only when the load
/// stopped (reports over HTTP answered in seconds at the 99th percentile).
///
/// Each caller encodes its own facts' JSON bodies between queueing them (under the engine's lock)
/// and waiting, so that encoding runs beside the write under way instead of inside the single
/// writer. The writer takes only facts whose bodies are ready; finding the oldest caller still
/// encoding, it ends, and that caller, which waits next, starts it again. So every ticket must be
/// waited on: `waitDurable` is what hands its bodies over.
public final class Journal: Sendable {
    /// The most facts one store write takes.
    public static let batchSizeMax = 16_384

    /// What `enqueue` hands back: the position to wait for, and the facts the caller encodes (none
    /// when every fact is a usage row, which needs no body).
    public struct Ticket: Sendable {
        let through: UInt64
        let toEncode: [Fact]
    }

    /// The facts of one `enqueue`, and their bodies once ready.
    private struct Entry {
        var facts: ArraySlice<Fact>
        var bodies: ArraySlice<[UInt8]?>?
        /// The position of its last fact: the caller's ticket.
        let through: UInt64
    }

    private struct State {
        var pending: [Entry] = []
        var enqueuedThrough: UInt64 = 0
        var durableThrough: UInt64 = 0
        var writing = false
        var failure: TallyError?
        /// Events the store already held when a batch lost a race (`StoreConflict.known`).
        var known: [TallyState.UsageKey: UsageEntry] = [:]
        var waiters: [(through: UInt64, continuation: CheckedContinuation<Signal, Never>)] = []

        /// Fails the journal: every waiter hears `failure`, and so does every later caller.
        mutating func fail(_ failure: TallyError, known: [TallyState.UsageKey: UsageEntry] = [:]) -> [CheckedContinuation<Signal, Never>] {
            self.failure = failure
            self.known = known
            writing = false
            defer { waiters.removeAll() }
            return waiters.map(\.continuation)
        }

        /// Whether the caller waiting for `through` is answered now (nil: it waits).
        func answer(for through: UInt64) -> Signal? {
            // Durability first: a caller whose batch committed is answered even if a later batch failed.
            if durableThrough >= through { return .durable }
            if let failure { return .failed(failure) }
            return nil
        }

        /// Takes the writer's role when nobody holds it and the oldest entry is ready; when its
        /// caller is still encoding it, that caller starts the writer once it waits.
        mutating func startWriter() -> Bool {
            if writing || failure != nil { return false }
            guard let oldest = pending.first, oldest.bodies != nil else { return false }
            writing = true
            return true
        }
    }

    /// What a waiting caller is told: its facts are durable, or the journal failed.
    enum Signal {
        case durable
        case failed(TallyError)
    }

    private let store: any TallyStore
    private let state = Mutex(State())

    public init(store: any TallyStore) { self.store = store }

    /// Queues facts; returns the ticket to wait on. Called under the engine's lock, so the queue
    /// order is the order in which the facts were applied.
    public func enqueue(_ facts: [Fact]) -> Ticket {
        let plain = !facts.contains(where: StreamingJSONEncoder.needsBody)
        return state.withLock { state in
            state.enqueuedThrough += UInt64(facts.count)
            state.pending.append(Entry(facts: facts[...], bodies: plain ? Array(repeating: nil, count: facts.count)[...] : nil,
                                       through: state.enqueuedThrough))
            return Ticket(through: state.enqueuedThrough, toEncode: plain ? [] : facts)
        }
    }

    /// The events a failed batch found already stored: the reload puts them back into the index.
    public var knownAfterConflict: [TallyState.UsageKey: UsageEntry] { state.withLock { $0.known } }

    /// Encodes the ticket's facts, then returns once every fact up to it is in the store.
    public func waitDurable(_ ticket: Ticket) async throws(TallyError) {
        if !ticket.toEncode.isEmpty { attach(ticket) }
        if let now = state.withLock({ $0.answer(for: ticket.through) }) { return try Journal.outcome(now) }
        let signal = await withCheckedContinuation { continuation in
            let (now, start): (Signal?, Bool) = state.withLock { state in
                if let now = state.answer(for: ticket.through) { return (now, false) }
                state.waiters.append((ticket.through, continuation))
                return (nil, state.startWriter())
            }
            if let now { continuation.resume(returning: now) }
            // Nobody cancels the writer: a caller that is cancelled (a client hung up) must not
            // fail every other waiter's batch. Every waiter waits on it, so after each write it
            // goes ahead of the requests queued for the pool's threads.
            if start { Task(priority: .high) { await self.drain() } }
        }
        try Journal.outcome(signal)
    }

    private static func outcome(_ signal: Signal) throws(TallyError) {
        if case .failed(let error) = signal { throw error }
    }

    /// Fails the journal and tells every waiter.
    private func fail(_ failure: TallyError, known: [TallyState.UsageKey: UsageEntry] = [:]) {
        for continuation in state.withLock({ $0.fail(failure, known: known) }) { continuation.resume(returning: .failed(failure)) }
    }

    /// Encodes a ticket's facts and hands the bodies to its queued entry.
    private func attach(_ ticket: Ticket) {
        let bodies: [[UInt8]?]
        do {
            bodies = try StreamingJSONEncoder.bodies(of: ticket.toEncode)
        } catch {
            let failure = TallyError(.internalError, "a fact could not be encoded: \(error)")
            fail(failure)
            return
        }
        state.withLock { state in
            // Entries are in ticket order; the writer never takes one whose bodies are missing, so
            // it is still queued unless the journal has failed.
            var low = 0, high = state.pending.count
            while low < high {
                let middle = (low + high) / 2
                if state.pending[middle].through < ticket.through { low = middle + 1 } else { high = middle }
            }
            guard low < state.pending.count, state.pending[low].through == ticket.through else { return }
            state.pending[low].bodies = bodies[...]
        }
    }

    /// Takes the oldest ready facts, at most `batchSizeMax`; nil (and the writer steps down) when
    /// nothing is queued or the oldest entry's caller is still encoding it.
    private func take() -> EncodedBatch? {
        state.withLock { state in
            var facts: [Fact] = [], bodies: [[UInt8]?] = []
            var taken = 0
            while taken < state.pending.count, facts.count < Journal.batchSizeMax, let ready = state.pending[taken].bodies {
                let entry = state.pending[taken]
                let room = Journal.batchSizeMax - facts.count
                if entry.facts.count <= room {
                    if facts.isEmpty {
                        // A whole batch's facts are taken as they are: a slice over all of an
                        // array's elements becomes that array without copying one fact.
                        facts = Array(entry.facts)
                        bodies = Array(ready)
                    } else {
                        facts.append(contentsOf: entry.facts)
                        bodies.append(contentsOf: ready)
                    }
                    taken += 1
                } else {
                    facts.append(contentsOf: entry.facts.prefix(room))
                    bodies.append(contentsOf: ready.prefix(room))
                    state.pending[taken].facts = entry.facts.dropFirst(room)
                    state.pending[taken].bodies = ready.dropFirst(room)
                }
            }
            state.pending.removeFirst(taken)
            guard !facts.isEmpty else {
                state.writing = false
                return nil
            }
            return EncodedBatch(facts: facts, bodies: bodies)
        }
    }

    /// Writes batches while there are ready facts, answering each batch's waiters; the role ends
    /// with the queue (`take` gives it up).
    private func drain() async {
        while let batch = take() {
            do {
                try await store.append(batch)
            } catch let conflict as StoreConflict {
                return fail(TallyError(.storeConflict, "another process won a race for the same pack or event: \(conflict.reason)"),
                            known: conflict.known)
            } catch {
                return fail(TallyError(.storeUnavailable, "the store refused a write; the engine must restart from the store: \(error)"))
            }
            let ready: [CheckedContinuation<Signal, Never>] = state.withLock { state in
                state.durableThrough += UInt64(batch.count)
                let durable = state.durableThrough
                let ready = state.waiters.filter { $0.through <= durable }.map(\.continuation)
                state.waiters.removeAll { $0.through <= durable }
                return ready
            }
            for continuation in ready { continuation.resume(returning: .durable) }
        }
    }
}
