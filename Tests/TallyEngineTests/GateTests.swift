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

    /// Small tasks go ahead of bulk tasks that came before them; each lane keeps its own order.
    @Test(.timeLimit(.minutes(1)))
    func smallTasksGoAheadOfBulkOnes() async {
        let gate = Gate()
        let log = Log()
        await gate.enter()
        await withTaskGroup(of: Void.self) { group in
            // Bulk tasks 0-2 queue first, then small tasks 10-12.
            let tasks: [(Int, Gate.Lane)] = [(0, .bulk), (1, .bulk), (2, .bulk), (10, .small), (11, .small), (12, .small)]
            for (queued, (n, lane)) in tasks.enumerated() {
                group.addTask { await gate.pass(lane) { log.order.withLock { $0.append(n) } } }
                while gate.waiting < queued + 1 { await Task.yield() }
            }
            gate.leave()
        }
        #expect(log.order.withLock { $0 } == [10, 11, 12, 0, 1, 2])
    }

    /// A stream of small tasks does not hold bulk work back for ever: after `smallRunMax` small
    /// tasks in a row, a waiting bulk task goes.
    @Test(.timeLimit(.minutes(1)))
    func bulkTasksAreNotStarved() async {
        let gate = Gate()
        let log = Log()
        await gate.enter()
        let smalls = Gate.smallRunMax * 2
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await gate.pass(.bulk) { log.order.withLock { $0.append(-1) } } }
            while gate.waiting < 1 { await Task.yield() }
            for n in 0..<smalls {
                group.addTask { await gate.pass(.small) { log.order.withLock { $0.append(n) } } }
                while gate.waiting < n + 2 { await Task.yield() }
            }
            gate.leave()
        }
        let order = log.order.withLock { $0 }
        #expect(order.firstIndex(of: -1) == Gate.smallRunMax)
        #expect(order.filter { $0 >= 0 } == Array(0..<smalls))
    }
}
