import Synchronization

/// Lets one task at a time through and suspends the others instead of blocking their threads.
/// The engine's state sits behind a `Mutex`; a task that blocked on it would take one of the
/// cooperative pool's threads (one a core) away from every other request while a bulk slice ran.
///
/// Two lanes. Small work (a check, a top-up, a request's read of its key) goes ahead of bulk work
/// (a report's slice, a bill run's step), so that a check waits for the one slice under way, not
/// for a slice of every report queued before it. Bulk work is not starved: after
/// `smallRunMax` small tasks in a row, a waiting bulk task goes next. Each lane is first come,
/// first served.
final class Gate: Sendable {
    /// Which lane a task waits in.
    enum Lane: Sendable { case small, bulk }

    /// Small tasks let through in a row while bulk tasks wait: a check takes tens of
    /// microseconds, so a slice waits a few milliseconds at most.
    static let smallRunMax = 64

    private struct Lanes {
        var busy = false
        var small = FIFO()
        var bulk = FIFO()
        var smallInARow = 0

        /// Takes the gate if it is open.
        mutating func admit() -> Bool {
            if busy { return false }
            busy = true
            return true
        }

        /// The task to hand the gate to, or nil (the gate opens).
        mutating func next() -> CheckedContinuation<Void, Never>? {
            let bulkFirst = !bulk.isEmpty && (small.isEmpty || smallInARow >= Gate.smallRunMax)
            if bulkFirst, let next = bulk.pop() {
                smallInARow = 0
                return next
            }
            if let next = small.pop() {
                smallInARow += 1
                return next
            }
            busy = false
            smallInARow = 0
            return nil
        }
    }

    /// A queue of waiters that reuses its storage once drained.
    private struct FIFO {
        var waiting: [CheckedContinuation<Void, Never>] = []
        var head = 0

        var isEmpty: Bool { head == waiting.count }
        var count: Int { waiting.count - head }

        mutating func push(_ waiter: CheckedContinuation<Void, Never>) { waiting.append(waiter) }

        mutating func pop() -> CheckedContinuation<Void, Never>? {
            guard head < waiting.count else { return nil }
            defer {
                head += 1
                if head == waiting.count {
                    waiting.removeAll(keepingCapacity: true)
                    head = 0
                }
            }
            return waiting[head]
        }
    }

    private let lanes = Mutex(Lanes())

    /// Returns once the caller holds the gate; `leave()` hands it on.
    func enter(_ lane: Lane = .small) async {
        // Asked first without a continuation: most of the time the gate is open.
        if lanes.withLock({ $0.admit() }) { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let admitted = lanes.withLock { lanes in
                if lanes.admit() { return true }
                switch lane {
                case .small: lanes.small.push(continuation)
                case .bulk: lanes.bulk.push(continuation)
                }
                return false
            }
            if admitted { continuation.resume() }
        }
    }

    /// Hands the gate to the next task (see the lanes), or opens it.
    func leave() {
        lanes.withLock { $0.next() }?.resume()
    }

    /// Whether a small task waits: a bulk task holding the gate from step to step lets go then.
    var smallWaiting: Bool { lanes.withLock { !$0.small.isEmpty } }

    /// How many tasks wait to enter.
    var waiting: Int { lanes.withLock { $0.small.count + $0.bulk.count } }

    /// Runs `body` holding the gate.
    func pass<T, E: Error>(_ lane: Lane = .small, _ body: () throws(E) -> T) async throws(E) -> T {
        await enter(lane)
        defer { leave() }
        return try body()
    }

    /// Runs `body` holding the gate while it suspends (a snapshot's wait for its partition's
    /// writes): nothing else passes meanwhile.
    func passSuspending<T>(_ lane: Lane = .small, _ body: () async throws -> T) async throws -> T {
        await enter(lane)
        defer { leave() }
        return try await body()
    }
}
