import Synchronization
import Testing
@testable import TallyEngine

/// The gate in front of the engine's lock: one task at a time, in the order they came, and the
/// others suspended, not blocking threads.
@Suite(.timeLimit(.minutes(5))) struct GateTests {
    /// What the tasks of a test note down, shared between them.
    final class Log: Sendable {
        let order = Mutex<[Int]>([])
        let inside = Mutex(0)
        let most = Mutex(0)
    }

    @Test(.timeLimit(.minutes(1)))
    func tasksPassOneAtATimeInTheOrderTheyCame() async {
        let gate = Gate()
        let log = Log()
        await gate.enter()
        await withTaskGroup(of: Void.self) { group in
            for n in 0..<10 {
                group.addTask {
                    await gate.pass { log.order.withLock { $0.append(n) } }
                }
                while gate.waiting < n + 1 { await Task.yield() }
            }
            gate.leave()
        }
        #expect(log.order.withLock { $0 } == Array(0..<10))
        #expect(gate.waiting == 0)
    }

    /// More waiters than the cooperative pool has threads, while one task holds the gate: another
    /// task still runs. Waiters that blocked their threads would starve it until the test's limit.
    @Test(.timeLimit(.minutes(1)))
    func waitersHoldNoThread() async {
        let gate = Gate()
        let log = Log()
        await gate.enter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<64 {
                group.addTask {
                    await gate.pass {
                        let now = log.inside.withLock { $0 += 1; return $0 }
                        log.most.withLock { $0 = max($0, now) }
                        log.inside.withLock { $0 -= 1 }
                    }
                }
            }
            while gate.waiting < 64 { await Task.yield() }
            let bystander = await Task.detached { 42 }.value
            #expect(bystander == 42)
            gate.leave()
        }
        #expect(log.most.withLock { $0 } == 1)
        #expect(gate.waiting == 0)
    }
}
