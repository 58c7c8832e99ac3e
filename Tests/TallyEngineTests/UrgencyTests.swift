import Testing
import TallyEngine

/// A gateway's decision raises its task so that its jobs run on threads of a higher priority than
/// bulk work's (`Urgency`).
@Suite(.timeLimit(.minutes(5))) struct UrgencyTests {
    @Test(.timeLimit(.minutes(1)))
    func aRaisedTaskRunsAtTheDecisionPriorityFromThenOn() async {
        let seen = await Task.detached(priority: .medium) {
            let before = Task.currentPriority
            Urgency.raiseCurrentTask()
            await Task.yield()
            let afterSuspension = Task.currentPriority
            try? await Task.sleep(for: .milliseconds(1))
            return (before, afterSuspension, Task.currentPriority)
        }.value
        #expect(seen.0 == .medium)
        #expect(seen.1 == Urgency.decision)
        #expect(seen.2 == Urgency.decision)
    }

    @Test(.timeLimit(.minutes(1)))
    func aTaskAlreadyAboveTheDecisionPriorityIsLeftThere() async {
        let above = TaskPriority(rawValue: Urgency.decision.rawValue + 8)
        let seen = await Task.detached(priority: above) {
            Urgency.raiseCurrentTask()
            await Task.yield()
            return Task.currentPriority
        }.value
        #expect(seen == above)
    }
}
