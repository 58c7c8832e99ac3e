/// How urgent work is, as the priority of the task it runs in. On Linux the Swift runtime hands a
/// task's jobs to libdispatch's threads of the task's priority, and each priority has threads of
/// their own with their own nice value (user-initiated -2, default 0, utility +2): a task of a
/// higher priority gets a core first when both cores are busy with bulk work. A gateway's
/// decision and the journal's writers while they carry checks run at `decision`; reports, bill
/// runs, the journal's main writer while it carries bulk facts and everything else run at the
/// default (`Journal.mainPriority`).
public enum Urgency {
    /// A gateway's single decision (check-and-record, authorize, Envoy's `ShouldRateLimit`), and
    /// the journal's writers while they carry checks.
    public static let decision = TaskPriority.high

    /// Raises the current task to `decision` for the rest of its life (a raised task is never
    /// lowered): its next job after a suspension runs on a thread of that priority. On HTTP/1.1
    /// the task is the connection's, so every later request on a gateway's connection runs
    /// raised too, without a hop to a task of its own per request.
    public static func raiseCurrentTask() {
        withUnsafeCurrentTask { task in
            guard let task, task.priority < decision else { return }
            task.escalatePriority(to: decision)
        }
    }
}
