import Logging
import Synchronization
import TallyCore
import TallyStore

/// The clock: the server's real one, or the simulator's virtual one. Two values of one dependency.
public struct TallyClock: Sendable {
    public let now: @Sendable () -> Instant

    public init(now: @escaping @Sendable () -> Instant) { self.now = now }
}

/// A clock that moves only when told: the simulator's.
public final class VirtualClock: Sendable {
    private let current: Mutex<Instant>

    public init(start: Instant) { current = Mutex(start) }

    public var now: Instant { current.withLock { $0 } }

    /// Moves the clock forward; refuses to move it back.
    public func advance(to instant: Instant) throws(TallyError) {
        try current.withLock { (value: inout Instant) throws(TallyError) in
            guard instant >= value else {
                throw TallyError(.clockMovedBack, "the clock is at \(value.microseconds)µs and never moves back")
            }
            value = instant
        }
    }

    public var clock: TallyClock { TallyClock { [self] in self.now } }
}

/// Where new ids come from: sequential in the simulator (reproducible output), random in a
/// server (unique across restarts and processes).
public protocol IDSource: Sendable {
    func next(_ prefix: String) -> String
}

public final class SequentialIDs: IDSource {
    private let counters = Mutex<[String: Int]>([:])
    public init() {}
    public func next(_ prefix: String) -> String {
        let n = counters.withLock { counters in
            counters[prefix, default: 0] += 1
            return counters[prefix]!
        }
        return "\(prefix)_\(n)"
    }
}

/// Ids that look random (`txn_3f9a…`, 16 hex digits): a counter from a random start, scrambled by
/// a bijection (SplitMix64's finalizer), so no two ids of one source are ever equal, and sources
/// in other processes start 2^64-wide apart at random. One random draw per source, not a system
/// call per id: usage asks for an id with nearly every event. Not secrets: keys use `Keys.secret`.
public final class RandomIDs: IDSource {
    private let start: UInt64
    private let counter = Atomic<UInt64>(0)

    public init() {
        var generator = SystemRandomNumberGenerator()
        start = generator.next()
    }

    public func next(_ prefix: String) -> String {
        let z = Mix64.finalize(start &+ counter.wrappingAdd(1, ordering: .relaxed).oldValue)
        let prefixBytes = prefix.utf8
        // Written as bytes: appending a scalar at a time was about 4% of the server's CPU in a report.
        return String(unsafeUninitializedCapacity: prefixBytes.count + 17) { buffer in
            var at = buffer.initialize(fromContentsOf: prefixBytes)
            buffer[at] = UInt8(ascii: "_")
            at += 1
            for shift in stride(from: 60, through: 0, by: -4) {
                buffer[at] = Hex.digit(z >> UInt64(shift))
                at += 1
            }
            return at
        }
    }
}

/// The state an operation works on: the facts-derived `TallyState`, the token buckets (kept in
/// memory only: a restart refills them, which errs toward letting calls through), and the facts
/// the operation has emitted so far.
public struct EngineState: Sendable {
    public private(set) var tally: TallyState
    var buckets: [String: TokenBucket] = [:]
    /// Accounts whose free packs for a month were looked for, with how many products they had
    /// activated then: usage skips the search until either changes (it is memory only, like the
    /// buckets; a reload starts it empty).
    var freeQuotaChecked: [String: FreeQuotaCheck] = [:]
    fileprivate(set) var emitted: [Fact] = []
    /// The journal this state's facts go to, and which reload produced the state: both are
    /// replaced together when a conflict forces a reload.
    fileprivate var journal: Journal
    fileprivate var generation = 0

    init(tally: TallyState, journal: Journal) {
        self.tally = tally
        self.journal = journal
    }

    /// Applies a fact and keeps it for the journal. Operations check everything first and emit
    /// after, so that a refusal changes nothing.
    mutating func emit(_ fact: Fact, usageKey: TallyState.UsageKey? = nil) {
        tally.apply(fact, usageKey: usageKey)
        emitted.append(fact)
    }

    mutating func forgetUsage(recordedBefore cutoff: Instant) { tally.forgetUsage(recordedBefore: cutoff) }

    /// Puts stored events back into the idempotency index (no fact: the store has them).
    mutating func remember(_ stored: [TallyState.UsageKey: UsageEntry]) { tally.remember(stored) }
}

/// What every operation is handed besides the state: the instant it happens at and the id source.
public struct Environment: Sendable {
    public let now: Instant
    public let ids: any IDSource
}

/// One operation of the engine (open an account, buy, record usage, run bills ...): checks the
/// request against the state, then emits the facts that carry it out.
public protocol Operation: Sendable {
    associatedtype Output: Sendable
    func execute(_ state: inout EngineState, _ environment: Environment) throws(TallyError) -> Output
    /// The keys of the usage events the operation would record that `retired` may hold: ids that
    /// may be older than the index, which the engine looks up in the store before the operation
    /// runs. None for operations that record no usage.
    func suspects(in retired: RetiredUsageKeys) -> [TallyState.UsageKey]
    /// Whether the operation is bulk work (a report's slice, a bill run's step, a sweep over
    /// accounts): it waits in the gate's bulk lane, behind the small operations a gateway waits on.
    var isBulk: Bool { get }
}

extension Operation {
    public func suspects(in retired: RetiredUsageKeys) -> [TallyState.UsageKey] { [] }
    public var isBulk: Bool { false }
}

/// An operation whose work grows with its input (a report of 10,000 events): the engine applies
/// it one bounded slice at a time, passing the gate between slices, so that an operation queued
/// behind it waits for at most one slice. Each slice is one journal entry, written in one store
/// transaction; the caller hears back once every slice is durable. A crash between slices keeps
/// the slices written, and the caller, told nothing, sends the whole operation again, which each
/// slice's own idempotency (event ids, deterministic bill ids) makes safe.
public protocol SlicedOperation: Operation {
    associatedtype Slice: Operation
    /// The slices, in order, each bounded by a named constant.
    var slices: [Slice] { get }
    /// The operation's answer from its slices' answers, in order.
    func combine(_ outputs: [Slice.Output]) -> Output
}

/// An operation run after putting stored events back into the index: the ids its events may
/// repeat from before the index's window, as the store holds them.
struct Remembering<Base: Operation>: Operation {
    let base: Base
    let stored: [TallyState.UsageKey: UsageEntry]

    func execute(_ state: inout EngineState, _ environment: Environment) throws(TallyError) -> Base.Output {
        state.remember(stored)
        return try base.execute(&state, environment)
    }

    var isBulk: Bool { base.isBulk }
}

/// The engine: the state in memory, rebuilt from the store at start; operations applied one at a
/// time under a lock; their facts made durable through the journal before the caller hears back.
public final class Tally: Sendable {
    public let clock: TallyClock
    public let ids: any IDSource
    public let store: any TallyStore
    public let logger: Logger
    private let state: Mutex<EngineState>
    /// What operations and `reading` wait at, suspended, before they take `state`'s lock.
    private let gate = Gate()
    private let reloading = Mutex<Int?>(nil)
    private let betweenSlices = Mutex<(@Sendable (Int) async -> Void)?>(nil)
    /// The keys of events recorded before the index's window (nil when the index keeps every
    /// event): the state's own filter, kept here too so that asking it does not wait for the
    /// engine's lock, which a long operation holds; replaced with the state on a reload.
    private let retired: Mutex<RetiredUsageKeys?>
    /// How often an operation is retried after losing a race with another process.
    public static let conflictRetriesMax = 32
    /// After the store refused a write, how long the engine waits between two attempts to reload
    /// from it: it serves again within this much of the store's return.
    public static let recoveryRetryMilliseconds = 500
    /// The recovery under way, if any (one at a time).
    private let recovering = Mutex<Task<Void, Never>?>(nil)

    /// How long a usage event's id stays in memory after it was recorded (SPEC 4: an id is
    /// counted once for at least 35 days). Older ids are left to the store, whose unique index
    /// still refuses them; their keys go into a filter (`RetiredUsageKeys`), so that one sent
    /// again is looked up in the store before it is applied (docs/decisions.md).
    public static let usageIndexDays: Int64 = 35
    /// How many days of usage ids the index keeps; nil keeps every one (`tally audit` on stores
    /// that cannot stream a recount).
    public let usageIndexDays: Int64?
    /// The events a generation of the index holds by default (`TallyState.usageCacheGeneration`):
    /// between 131,072 and 262,144 of the latest events stay in memory, about 60 MB at most;
    /// older ids of the window are in the filter of retired keys (docs/decisions.md).
    public static let usageCacheGeneration = 1 << 17
    /// The events a generation of the index holds; nil keeps every event of the window in memory.
    public let usageCacheGeneration: Int?
    /// While small operations wait, the most facts of bulk ones a store write takes (`Journal`).
    public let journalBulkFacts: Int
    /// How the store's accounts are spread over partitions, as recorded with its data.
    public let partitioning: Partitioning

    /// Starts an engine on `store`: streams every fact from it and folds them over the catalog.
    /// `partitions`: the number the store's data is split into. A store that has one recorded
    /// keeps it, and another number is refused (`partition_count_mismatch`); a store with none
    /// records this one (nil: the recorded one, or `Partitioning.countDefault`).
    public static func start(
        catalog: Catalog, store: any TallyStore, clock: TallyClock, ids: any IDSource,
        usageIndexDays: Int64? = Tally.usageIndexDays, usageCacheGeneration: Int? = Tally.usageCacheGeneration,
        journalBulkFacts: Int = Journal.bulkFactsWhileSmallWaitDefault, partitions: Int? = nil,
        logger: Logger = Logger(label: "tally.engine")
    ) async throws -> Tally {
        guard Journal.bulkFactsWhileSmallWaitRange.contains(journalBulkFacts) else {
            throw TallyError(.countOutOfRange, "the journal's bulk facts a write are from \(Journal.bulkFactsWhileSmallWaitRange.lowerBound) to \(Journal.bulkFactsWhileSmallWaitRange.upperBound), got \(journalBulkFacts)")
        }
        let partitioning = try await Tally.partitioning(of: store, asked: partitions)
        let tally = try await store.rebuild(Tally.emptyState(catalog, now: clock.now(), usageIndexDays: usageIndexDays,
                                                             usageCacheGeneration: usageCacheGeneration))
        if let retired = tally.retiredKeys {
            logger.info("ids older than the index", metadata: ["keys": "\(retired.count)", "bytes": "\(retired.bytes)"])
        }
        logger.info("engine started", metadata: ["store": "\(store.kind)", "facts": "\(tally.factCount)", "accounts": "\(tally.accounts.count)",
                                                 "usage_events": "\(tally.usageEvents)", "indexed": "\(tally.usage.count)"])
        return Tally(state: EngineState(tally: tally, journal: Journal(store: store, bulkFactsWhileSmallWait: journalBulkFacts)), store: store,
                     clock: clock, ids: ids, usageIndexDays: usageIndexDays, usageCacheGeneration: usageCacheGeneration,
                     journalBulkFacts: journalBulkFacts, partitioning: partitioning, logger: logger)
    }

    /// The partitioning the store's data was made with: the recorded count, checked against the
    /// one asked for, or the one asked for (or the default), recorded now.
    static func partitioning(of store: any TallyStore, asked: Int?) async throws -> Partitioning {
        if let asked { _ = try Partitioning(count: asked) }
        if let recorded = try await store.recordedPartitionCount() {
            guard asked.map({ $0 == recorded }) ?? true else {
                throw TallyError(.partitionCountMismatch, "the store's data is split into \(recorded) partitions, not \(asked!); start with \(recorded), or leave the count out")
            }
            return try Partitioning(count: recorded)
        }
        let partitioning = try Partitioning(count: asked ?? Partitioning.countDefault)
        try await store.recordPartitionCount(partitioning.count)
        return partitioning
    }

    /// The state a rebuild starts from: the catalog, the instant before which usage ids stay out
    /// of memory, the bound on the index's generations, and a new filter for the keys of the ids
    /// memory does not keep.
    static func emptyState(_ catalog: Catalog, now: Instant, usageIndexDays: Int64?, usageCacheGeneration: Int?) -> TallyState {
        var tally = TallyState(catalog: catalog)
        if let days = usageIndexDays {
            tally.retiredKeys = RetiredUsageKeys()
            tally.usageCacheGeneration = usageCacheGeneration
            tally.forgetUsage(recordedBefore: now.adding(seconds: -days * 86_400))
        }
        return tally
    }

    private init(state: EngineState, store: any TallyStore, clock: TallyClock, ids: any IDSource, usageIndexDays: Int64?,
                 usageCacheGeneration: Int?, journalBulkFacts: Int, partitioning: Partitioning, logger: Logger) {
        self.journalBulkFacts = journalBulkFacts
        self.partitioning = partitioning
        self.usageCacheGeneration = usageCacheGeneration
        self.logger = logger
        self.state = Mutex(state)
        self.store = store
        self.clock = clock
        self.ids = ids
        self.usageIndexDays = usageIndexDays
        retired = Mutex(state.tally.retiredKeys)
    }

    /// Drops from memory the ids of usage events recorded more than `usageIndexDays` ago: the
    /// scheduler's daily housekeeping. Returns how many ids the index still holds.
    /// It waits at the gate like an operation; its hold is bounded by the index's own bound (two
    /// generations of `usageCacheGeneration` events).
    @discardableResult
    public func forgetOldUsage() async -> Int {
        guard let days = usageIndexDays else { return await reading { $0.usage.count } }
        let cutoff = clock.now().adding(seconds: -days * 86_400)
        return await gate.pass(.bulk) {
            state.withLock { state in
                state.forgetUsage(recordedBefore: cutoff)
                return state.tally.usage.count
            }
        }
    }

    /// Runs an operation now and returns once its facts are durable.
    @discardableResult
    public func perform<Op: Operation>(_ operation: Op) async throws(TallyError) -> Op.Output {
        let stored = try await storedUsage(repeatedBy: operation)
        return stored.isEmpty ? try await run(operation) : try await run(Remembering(base: operation, stored: stored))
    }

    /// Runs a sliced operation a slice at a time, each slice through the gate on its own; returns
    /// once every slice is durable. Slices are written while later ones are applied.
    @discardableResult
    public func perform<Op: SlicedOperation>(_ operation: Op) async throws(TallyError) -> Op.Output {
        let slices = operation.slices
        var outputs: [Op.Slice.Output] = []
        outputs.reserveCapacity(slices.count)
        var written: [(ticket: Journal.Ticket, journal: Journal, generation: Int)?] = []
        // The gate is held from slice to slice, and let go between two slices only when a small
        // operation waits (or a store read or a test's hook comes between): bulk work alone runs
        // without a hand-off per slice, and a check waits for the slice under way only.
        await gate.enter(.bulk)
        var holding = true
        defer { if holding { gate.leave() } }
        for (index, slice) in slices.enumerated() {
            if !holding {
                await gate.enter(.bulk)
                holding = true
            }
            let suspects = suspects(of: slice)
            var stored: [TallyState.UsageKey: UsageEntry] = [:]
            if !suspects.isEmpty {
                gate.leave()
                holding = false
                stored = try await storedUsage(suspects)
                await gate.enter(.bulk)
                holding = true
            }
            let (output, ticket, journal, generation) = stored.isEmpty ? try applyHoldingGate(slice)
                : try applyHoldingGate(Remembering(base: slice, stored: stored))
            if let ticket { journal.submit(ticket) }
            outputs.append(output)
            written.append(ticket.map { ($0, journal, generation) })
            guard index < slices.count - 1 else { break }
            let hook = betweenSlices.withLock { $0 }
            if hook != nil || gate.smallWaiting {
                gate.leave()
                holding = false
                await hook?(index)
            }
        }
        if holding {
            gate.leave()
            holding = false
        }
        for (index, entry) in written.enumerated() {
            guard let (ticket, journal, generation) = entry else { continue }
            do {
                try await journal.waitDurable(ticket, submitted: true)
            } catch {
                guard error.code == .storeConflict else {
                    failed(error, generation: generation)
                    throw error
                }
                // The slices before this one are durable; this one and the rest were rolled back
                // with the journal: reload, and run them again, one by one.
                logger.info("retrying the rest of a sliced operation after a conflict with another process", metadata: ["slice": "\(index)"])
                try await reload(from: generation)
                for rest in index..<slices.count { outputs[rest] = try await perform(slices[rest]) }
                break
            }
        }
        return operation.combine(outputs)
    }

    /// Called between two slices of a sliced operation, with the index of the slice just applied:
    /// what a test holds an operation still with, to see what passes meanwhile.
    public func onSliceApplied(_ hook: (@Sendable (Int) async -> Void)?) {
        betweenSlices.withLock { $0 = hook }
    }

    /// The keys of the operation's events that may repeat ids from before the index's window: a
    /// store read is due for them before it runs. Asked outside the lock.
    private func suspects<Op: Operation>(of operation: Op) -> [TallyState.UsageKey] {
        guard let retired = retired.withLock({ $0 }), !retired.isEmpty else { return [] }
        return operation.suspects(in: retired)
    }

    /// The stored events whose ids the operation may repeat from before the index's window. Read
    /// outside the lock, so that an old id sent again is answered from the index as a duplicate,
    /// rather than failing at the store's unique index and costing every caller a reload.
    private func storedUsage<Op: Operation>(repeatedBy operation: Op) async throws(TallyError) -> [TallyState.UsageKey: UsageEntry] {
        try await storedUsage(suspects(of: operation))
    }

    private func storedUsage(_ suspects: [TallyState.UsageKey]) async throws(TallyError) -> [TallyState.UsageKey: UsageEntry] {
        guard !suspects.isEmpty else { return [:] }
        do {
            return try await store.storedUsage(suspects)
        } catch {
            throw TallyError(.storeUnavailable, "could not read earlier usage events from the store: \(error)")
        }
    }

    private func run<Op: Operation>(_ operation: Op) async throws(TallyError) -> Op.Output {
        for retry in 0...Tally.conflictRetriesMax {
            switch try await attemptOnce(operation) {
            case .done(let output):
                return output
            case .lostRace(let generation):
                logger.info("retrying after a conflict with another process", metadata: ["retry": "\(retry + 1)"])
                try await reload(from: generation)
                // A little jitter, so that processes racing for one pack do not collide in lockstep.
                try? await Task.sleep(for: .microseconds(Int.random(in: 0...(200 * min(retry + 1, 10)))))
            }
        }
        throw TallyError(.storeConflict, "the operation lost \(Tally.conflictRetriesMax + 1) races with other processes in a row; try again")
    }

    /// One try of an operation: done, or rolled back because another process won a race while the
    /// state was at `generation`.
    private enum Attempt<Output> {
        case done(Output)
        case lostRace(generation: Int)
    }

    /// Applies an operation under the lock (after the operations queued at the gate before it)
    /// and queues its facts; returns its output, the ticket to wait on, the journal that holds
    /// it, and the state's generation.
    private func apply<Op: Operation>(_ operation: Op) async throws(TallyError) -> (Op.Output, Journal.Ticket?, Journal, Int) {
        try await gate.pass(operation.isBulk ? .bulk : .small) { () throws(TallyError) in try applyHoldingGate(operation) }
    }

    /// `apply` for a caller that holds the gate.
    private func applyHoldingGate<Op: Operation>(_ operation: Op) throws(TallyError) -> (Op.Output, Journal.Ticket?, Journal, Int) {
        let environment = Environment(now: clock.now(), ids: ids)
        return try state.withLock { (state: inout EngineState) throws(TallyError) -> (Op.Output, Journal.Ticket?, Journal, Int) in
            // Memory may hold facts the store did not take: nothing more is applied on top of them
            // until the state is reloaded from the store (`recover`).
            if let failure = state.journal.stoppedBy { throw Tally.unavailable(failure) }
            let output: Op.Output
            do throws(TallyError) {
                output = try operation.execute(&state, environment)
            } catch {
                // Operations check before they emit; one that refused after emitting would leave
                // the memory ahead of what the caller was told, so that is a programmer error.
                precondition(state.emitted.isEmpty, "an operation emitted facts and then refused: \(error)")
                throw error
            }
            let ticket = state.emitted.isEmpty ? nil : state.journal.enqueue(state.emitted)
            // Handed to the journal, not kept: the journal holds this buffer until it is written,
            // so the next operation's first fact would copy it into a new buffer of the same
            // capacity, the largest batch's (a megabyte mapped and unmapped for a single check
            // once a report of 10,000 events had passed).
            state.emitted = []
            return (output, ticket, state.journal, state.generation)
        }
    }

    private func attemptOnce<Op: Operation>(_ operation: Op) async throws(TallyError) -> Attempt<Op.Output> {
        let (output, ticket, journal, generation) = try await apply(operation)
        if let ticket {
            do {
                try await journal.waitDurable(ticket)
            } catch {
                if error.code == .storeConflict { return .lostRace(generation: generation) }
                failed(error, generation: generation)
                throw error
            }
        }
        return .done(output)
    }

    /// Rebuilds the state from the store after a lost race: the memory had run ahead of what was
    /// kept, and the other process's facts were not in it. One caller reloads; the others wait.
    private func reload(from generation: Int) async throws(TallyError) {
        // Wait while another caller reloads; take the reload over if nobody holds it (a reloader
        // that failed leaves it free), and stop when the caller is cancelled.
        while true {
            if state.withLock({ $0.generation }) != generation { return }
            let mine = reloading.withLock { current -> Bool in
                guard current == nil else { return false }
                current = generation
                return true
            }
            if mine { break }
            guard !Task.isCancelled else { throw TallyError(.storeConflict, "cancelled while another caller reloaded") }
            try? await Task.sleep(for: .milliseconds(1))
        }
        defer { reloading.withLock { $0 = nil } }
        let (generationNow, catalog, known) = state.withLock { ($0.generation, $0.tally.baseCatalog, $0.journal.knownAfterConflict) }
        if generationNow != generation { return }
        var tally: TallyState
        do {
            tally = try await store.rebuild(Tally.emptyState(catalog, now: clock.now(), usageIndexDays: usageIndexDays,
                                                             usageCacheGeneration: usageCacheGeneration))
        } catch {
            let failure = TallyError(.storeUnavailable, "reloading from the store failed: \(error)")
            // The state may hold facts the store refused: stop taking work until a reload succeeds.
            state.withLock { $0.journal.stop(failure) }
            failed(failure, generation: generation)
            throw failure
        }
        // Ids the store refused as already counted but older than the index: back into it, so
        // that the retry answers them as duplicates.
        tally.remember(known)
        let store = self.store
        retired.withLock { $0 = tally.retiredKeys }
        state.withLock { state in
            var fresh = EngineState(tally: tally, journal: Journal(store: store, bulkFactsWhileSmallWait: journalBulkFacts))
            fresh.buckets = state.buckets
            fresh.generation = state.generation + 1
            state = fresh
        }
    }

    /// Whether the engine takes work: false from a write the store refused until the state is
    /// reloaded from the store. Meanwhile memory may hold facts the store did not take, so a
    /// server answers reads, like writes, with `store_unavailable` (`/health/ready` says 503).
    public var isReady: Bool {
        state.withLock { $0.journal.stoppedBy == nil }
    }

    static func unavailable(_ failure: TallyError) -> TallyError {
        TallyError(.storeUnavailable, "the store is unavailable; Tally serves again once it has reloaded from it (\(failure.message))")
    }

    /// A write failed on an unavailable store while the state was at `generation`: logs it once
    /// and starts the recovery, which reloads the state from the store as soon as it answers.
    private func failed(_ error: TallyError, generation: Int) {
        let started = recovering.withLock { task -> Bool in
            guard task == nil else { return false }
            // The task holds the engine only while it tries, so an engine given up on (a test's,
            // on a store that never comes back) is freed and its recovery ends.
            task = Task { [weak self] in
                var attempts = 0
                while !Task.isCancelled {
                    attempts += 1
                    do {
                        guard let engine = self else { return }
                        if await engine.recoverOnce(from: generation, attempts: attempts) { return }
                    }
                    try? await Task.sleep(for: .milliseconds(Tally.recoveryRetryMilliseconds))
                }
            }
            return true
        }
        if started {
            logger.critical("a write to the store failed; refusing work and reloading from the store once it answers", metadata: ["error": "\(error)"])
        }
    }

    /// One try at reloading the state from the store after a failed write: true once the state is
    /// reloaded (by this try or another caller's). What the store took is kept and what it
    /// refused is gone from memory, so a client's retry of a refused call is counted once.
    private func recoverOnce(from generation: Int, attempts: Int) async -> Bool {
        do {
            try await reload(from: generation)
        } catch {
            return false
        }
        recovering.withLock { $0 = nil }
        logger.notice("reloaded from the store after a failed write; serving again", metadata: ["attempts": "\(attempts)"])
        return true
    }

    /// What an operation would do now, without doing it: it runs on a copy of the state and its
    /// facts are thrown away (the price preview before paying). The copy is copy-on-write, so a
    /// preview costs a copy of what the operation changes, outside the engine's lock.
    public func preview<Op: Operation>(_ operation: Op) throws(TallyError) -> Op.Output {
        var copy = state.withLock { $0 }
        copy.emitted.removeAll()
        return try operation.execute(&copy, Environment(now: clock.now(), ids: ids))
    }

    /// The audit of the state against every usage event the store holds (the state's index keeps
    /// only recent ones). For a quiet engine: writes between the recount and the read would show
    /// as mismatches (`tally audit` on SQLite reads both in one snapshot instead).
    public func audit() async throws -> Audit.Report {
        let recount = try await store.recountUsage(zone: read { $0.zone })
        return read { Audit.run($0, recount: recount) }
    }

    /// How many times the state was rebuilt from the store after a write lost a race (another
    /// process's facts, or an id the store held and the memory did not).
    public var reloads: Int { state.withLock { $0.generation } }

    /// What waits: operations at the gate, and journal entries not yet committed.
    public var queueDepth: (gate: Int, journal: Int) {
        (gate.waiting, state.withLock { $0.journal }.outstandingEntries)
    }

    /// Reads the state.
    public func read<T: Sendable>(_ body: (TallyState) throws -> T) rethrows -> T {
        try state.withLock { try body($0.tally) }
    }

    /// Reads the state after the operations before it, suspended rather than blocked while one
    /// runs: what a server's request path uses, so that a long report holds no thread but its own.
    public func reading<T: Sendable, E: Error>(_ body: (TallyState) throws(E) -> T) async throws(E) -> T {
        try await gate.pass { () throws(E) in try state.withLock { (state: inout EngineState) throws(E) -> T in try body(state.tally) } }
    }
}
