import Synchronization
import TallyCore
import TallyStore

/// Group commit: facts decided in memory queue here in order and are written to the store in
/// batches. A caller is answered only after its facts' batch has committed, so nothing acknowledged
/// is lost; many callers share one write, so nothing costs a transaction per event.
///
/// Why no background task: the first waiter that finds no write under way becomes the writer and
/// drains the queue, then steps down; callers that queue meanwhile wait for the next batch
/// (TigerBeetle and PostgreSQL's group commit work the same way).
public final class Journal: Sendable {
    /// The most facts one store write takes.
    public static let batchSizeMax = 16_384

    private struct State {
        var pending: [Fact] = []
        var enqueuedThrough: UInt64 = 0
        var durableThrough: UInt64 = 0
        var writing = false
        var failure: TallyError?
        /// Events the store already held when a batch lost a race (`StoreConflict.known`).
        var known: [TallyState.UsageKey: UsageEntry] = [:]
        var waiters: [(through: UInt64, continuation: CheckedContinuation<TallyError?, Never>)] = []
    }

    private let store: any TallyStore
    private let state = Mutex(State())

    public init(store: any TallyStore) { self.store = store }

    /// Queues facts; returns the ticket to wait on. Called under the engine's lock, so the queue
    /// order is the order in which the facts were applied.
    public func enqueue(_ facts: [Fact]) -> UInt64 {
        state.withLock { state in
            state.pending.append(contentsOf: facts)
            state.enqueuedThrough += UInt64(facts.count)
            return state.enqueuedThrough
        }
    }

    /// The events a failed batch found already stored: the reload puts them back into the index.
    public var knownAfterConflict: [TallyState.UsageKey: UsageEntry] { state.withLock { $0.known } }

    /// Returns once every fact up to `ticket` is in the store.
    public func waitDurable(_ ticket: UInt64) async throws(TallyError) {
        enum Role { case done, failed(TallyError), write, wait }
        let role: Role = state.withLock { state in
            // Durability first: a caller whose batch committed is answered even if a later batch failed.
            if state.durableThrough >= ticket { return .done }
            if let failure = state.failure { return .failed(failure) }
            if state.writing { return .wait }
            state.writing = true
            return .write
        }
        switch role {
        case .done: return
        case .failed(let error): throw error
        case .write: await write()
        case .wait: break
        }
        let failure: TallyError? = await withCheckedContinuation { continuation in
            let immediate: TallyError?? = state.withLock { state in
                if state.durableThrough >= ticket { return .some(nil) }
                if let failure = state.failure { return .some(failure) }
                state.waiters.append((ticket, continuation))
                return nil
            }
            if let immediate { continuation.resume(returning: immediate) }
        }
        if let failure { throw failure }
    }

    private func write() async {
        while true {
            let batch: [Fact]? = state.withLock { state in
                guard !state.pending.isEmpty else {
                    state.writing = false
                    return nil
                }
                let count = min(state.pending.count, Journal.batchSizeMax)
                let batch = Array(state.pending.prefix(count))
                state.pending.removeFirst(count)
                return batch
            }
            guard let batch else { return }
            var failure: TallyError?
            var known: [TallyState.UsageKey: UsageEntry] = [:]
            do {
                // The write runs in a task of its own: the caller that happens to be the writer may
                // be cancelled (a client hung up), and a cancelled write would fail every waiter's
                // batch and stop the engine. Nobody cancels this task; the caller still waits for it.
                let store = self.store
                try await Task { try await store.append(batch) }.value
            } catch let conflict as StoreConflict {
                known = conflict.known
                failure = TallyError(.storeConflict, "another process won a race for the same pack or event: \(conflict.reason)")
            } catch {
                failure = TallyError(.storeUnavailable, "the store refused a write; the engine must restart from the store: \(error)")
            }
            let ready: [CheckedContinuation<TallyError?, Never>] = state.withLock { state in
                if let failure {
                    state.failure = failure
                    state.known = known
                    state.writing = false
                    let all = state.waiters.map(\.continuation)
                    state.waiters.removeAll()
                    return all
                }
                state.durableThrough += UInt64(batch.count)
                let durable = state.durableThrough
                let ready = state.waiters.filter { $0.through <= durable }.map(\.continuation)
                state.waiters.removeAll { $0.through <= durable }
                return ready
            }
            for continuation in ready { continuation.resume(returning: failure) }
            if failure != nil { return }
        }
    }
}
