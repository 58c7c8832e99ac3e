import Logging
import ServiceLifecycle
import Synchronization
import TallyCore
import TallyEngine

/// What real time sets off (SPEC 4, 7): free quotas at 00:00 Beijing time on the 1st (granted at
/// activation and on first use as well), bill runs at 01:00 on the 1st, pack and membership expiry
/// notices. Each step is an idempotent operation that reads the state and the clock, so a restart
/// repeats nothing, and a server that was down catches up on its first tick: every month that
/// ended with usage still open is billed, oldest first.
struct Scheduler: Service {
    let server: ServerEnvironment
    let logger: Logger

    /// Bill runs start this long after midnight on the 1st.
    static let billRunDelaySeconds: Int64 = 3_600
    /// How often the expiry notices are looked for: they go out 7 days ahead, so minutes do not
    /// matter, and the scan reads every pack.
    static let expiryScanSeconds: Int64 = 600

    /// What the scheduler did last in this process, so that a tick skips what is not due: the free
    /// quota grant reads every account and is due once a month (activation and first use grant
    /// too); the expiry scan reads every pack; the usage index is trimmed once a day.
    final class Memory: Sendable {
        let last = Mutex<(grantedMonth: Month?, scanned: Instant?, trimmed: CivilDate?)>((nil, nil, nil))
    }

    func run() async throws {
        let interval = server.configuration.schedulerIntervalSeconds
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Scheduler.tick(server)
                } catch {
                    logger.error("a scheduled step failed; it runs again on the next tick", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: .seconds(interval))
            }
        }
    }

    /// What one tick did.
    struct Tick: Sendable, Equatable {
        var freePacks = 0
        var notices = 0
        var billed: [Month] = []
        /// The usage ids left in memory after the day's trim (nil: not trimmed on this tick).
        var usageIDsIndexed: Int?
    }

    /// One look at the clock: grant, notify, bill what is due.
    @discardableResult
    static func tick(_ server: ServerEnvironment) async throws -> Tick {
        var tick = Tick()
        let now = server.tally.clock.now()
        let month = server.tally.readShared { $0.zone.month(of: now) }
        let (grantedMonth, scanned, trimmed) = server.schedulerMemory.last.withLock { $0 }
        if grantedMonth != month {
            tick.freePacks = try await server.tally.grantFreeQuota()
            server.schedulerMemory.last.withLock { $0.grantedMonth = month }
        }
        if scanned.map({ now >= $0.adding(seconds: expiryScanSeconds) }) ?? true {
            tick.notices = try await server.tally.expire()
            server.schedulerMemory.last.withLock { $0.scanned = now }
        }
        let today = server.tally.readShared { $0.zone.date(of: now) }
        if trimmed != today {
            tick.usageIDsIndexed = await server.tally.forgetOldUsage()
            server.schedulerMemory.last.withLock { $0.trimmed = today }
        }
        try await server.tally.store.pruneAnswers(before: now.adding(seconds: -IdempotencyTable.storeLifetimeSeconds))
        try await server.tally.store.pruneConsoleSessions(expiredBefore: now)
        for month in Set(server.tally.readEach { monthsDue($0, now: now) }.joined()).sorted() {
            let totals = try await server.billRun(month)
            server.tally.logger.info("bill run done", metadata: ["month": "\(month)", "bills": "\(totals.created)", "total": "\(totals.total)"])
            tick.billed.append(month)
        }
        return tick
    }

    /// The months whose bill run is due at `now` and has not started: every month with usage that
    /// has ended, is not closed, and (for last month) once 01:00 on the 1st has passed.
    static func monthsDue(_ state: TallyState, now: Instant) -> [Month] {
        let zone = state.zone
        let current = zone.month(of: now)
        let through = now >= zone.start(of: current).adding(seconds: billRunDelaySeconds) ? current.previous : current.previous.previous
        let open = Set(state.monthly.keys.lazy.map(\.month)).filter { month in
            month <= through && (state.closedThrough.map { month > $0 } ?? true)
        }
        return open.sorted()
    }
}

/// Takes a round of snapshots when one is due (`Tally.snapshotIfDue`), looking every
/// `snapshotCheckMilliseconds`. A round that fails (the store away) is logged and tried again at
/// the next look; the facts are safe in the store whatever becomes of a snapshot.
struct SnapshotService: Service {
    let server: ServerEnvironment
    let logger: Logger

    func run() async throws {
        let configuration = server.configuration
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await server.tally.snapshotIfDue(everyFacts: configuration.snapshotEveryFacts, everySeconds: configuration.snapshotEverySeconds)
                } catch {
                    logger.warning("a round of snapshots failed; it is tried again", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: .milliseconds(configuration.snapshotCheckMilliseconds))
            }
        }
    }
}
