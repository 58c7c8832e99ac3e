import Synchronization

/// Lets one task at a time through, in the order they came, and suspends the others instead of
/// blocking their threads. The engine's state sits behind a `Mutex`, and a report of 10,000
/// events holds it for tens of milliseconds: a task that blocked on it would take one of the
/// cooperative pool's threads (one a core) away from every other request until then.
final class Gate: Sendable {
    private struct Queue {
        var busy = false
        var waiting: [CheckedContinuation<Void, Never>] = []
        var head = 0

        /// Takes the gate if it is open.
        mutating func admit() -> Bool {
            if busy { return false }
            busy = true
            return true
        }
    }

    private let queue = Mutex(Queue())

    /// Returns once the caller holds the gate; `leave()` hands it on.
    func enter() async {
        // Asked first without a continuation: most of the time the gate is open.
        if queue.withLock({ $0.admit() }) { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = queue.withLock { queue in
                if queue.admit() { return true }
                queue.waiting.append(continuation)
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    /// Hands the gate to the task that has waited longest, or opens it.
    func leave() {
        let next = queue.withLock { queue -> CheckedContinuation<Void, Never>? in
            guard queue.head < queue.waiting.count else {
                queue.busy = false
                queue.waiting.removeAll(keepingCapacity: true)
                queue.head = 0
                return nil
            }
            defer { queue.head += 1 }
            return queue.waiting[queue.head]
        }
        next?.resume()
    }

    /// How many tasks wait to enter.
    var waiting: Int { queue.withLock { $0.waiting.count - $0.head } }

    /// Runs `body` holding the gate.
    func pass<T, E: Error>(_ body: () throws(E) -> T) async throws(E) -> T {
        await enter()
        defer { leave() }
        return try body()
    }
}
