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

/// The state an operation works on: one partition's `TallyState` (its accounts, and the shared
/// part every partition holds alike), the token buckets (kept in memory only: a restart refills
/// them, which errs toward letting calls through), and the facts the operation has emitted so far.
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
    fileprivate(set) var journal: Journal
    fileprivate var generation = 0

    init(tally: TallyState, journal: Journal) {
        self.tally = tally
        self.tally.holdsRotation = true
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

    fileprivate mutating func adopt(_ global: GlobalState) { tally.adopt(global) }

    fileprivate mutating func rotateIfFull() { tally.rotateIfFull() }
}

/// What every operation is handed besides the state: the instant it happens at and the id source.
public struct Environment: Sendable {
    public let now: Instant
    public let ids: any IDSource
}

/// Where an operation runs (docs/decisions.md, "Partitions").
public enum Placement: Sendable {
    /// In the account's partition: everything it reads and changes is the account's, and the
    /// shared part (catalog, keys, months closed) as it stands.
    case account(String)
    /// It emits shared facts (a key, a webhook endpoint, a delivery): it holds every partition's
    /// gate, runs in the account's partition (the first for none), and every partition then takes
    /// the new shared part.
    case shared(account: String?)
    /// Over the accounts of many partitions: the operation is `AcrossPartitions`.
    case across
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
    /// Where it runs: every operation says, so that none runs in a partition that does not hold
    /// what it reads.
    var placement: Placement { get }
}

extension Operation {
    public func suspects(in retired: RetiredUsageKeys) -> [TallyState.UsageKey] { [] }
    public var isBulk: Bool { false }
}

/// An operation over the accounts of many partitions (a report, a bill run, a sweep, a catalog
/// publication): the engine runs one part of it in each partition that holds some of its
/// accounts, and puts the parts' answers together.
public protocol AcrossPartitions: Operation {
    /// Its parts, each with the partition it runs in, at most one a partition. When the first
    /// part emits shared facts (`sharesFacts`), the others must not.
    func parts(_ partitioning: Partitioning) -> [(partition: Int, part: Self)]
    /// Whether its first part emits shared facts, given the shared part now (a bill run that
    /// closes its month, a catalog publication): the whole operation then holds every partition's
    /// gate, each part sees the shared part as it was before the operation, and its facts are one
    /// journal entry. Otherwise the parts run side by side, each under its own partition.
    func sharesFacts(_ global: GlobalState) -> Bool
    /// The answer from each part's answer.
    func gather(_ parts: [(part: Self, output: Output)]) -> Output
    /// Applies one part in its partition and returns what waits for it to be durable: the engine
    /// applies a few parts at a time and waits for them all together, so that their facts share
    /// the journal's writes. By default the part is run whole (applied and durable) here.
    func applyPart(on engine: Tally, in partition: Int) async throws(TallyError) -> PartPending<Output>
}

/// A part of an operation across partitions, applied: its wait until durable gives its output.
public struct PartPending<Output: Sendable>: Sendable {
    let result: @Sendable () async -> Result<Output, TallyError>

    public init(_ result: @escaping @Sendable () async -> Result<Output, TallyError>) { self.result = result }

    func wait() async throws(TallyError) -> Output { try await result().get() }
}

extension AcrossPartitions {
    public func applyPart(on engine: Tally, in partition: Int) async throws(TallyError) -> PartPending<Output> {
        let output = try await engine.perform(self, in: partition)
        return PartPending { .success(output) }
    }

    fileprivate func performAcross(on engine: Tally) async throws(TallyError) -> Output {
        try await engine.performAcross(self)
    }
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
/// repeat from before the index's window, as the store holds them (`stored`), and every key
/// looked up in the store, found or not (`looked`): its suspects are those not looked up yet.
struct Remembering<Base: Operation>: Operation {
    let base: Base
    private(set) var stored: [TallyState.UsageKey: UsageEntry] = [:]
    private(set) var looked: Set<TallyState.UsageKey> = []

    init(_ base: Base) { self.base = base }

    func execute(_ state: inout EngineState, _ environment: Environment) throws(TallyError) -> Base.Output {
        if !stored.isEmpty { state.remember(stored) }
        return try base.execute(&state, environment)
    }

    func suspects(in retired: RetiredUsageKeys) -> [TallyState.UsageKey] {
        let suspects = base.suspects(in: retired)
        return looked.isEmpty ? suspects : suspects.filter { !looked.contains($0) }
    }

    /// Adds what the store holds of `keys`.
    mutating func add(_ found: [TallyState.UsageKey: UsageEntry], lookedFor keys: [TallyState.UsageKey]) {
        stored.merge(found) { first, _ in first }
        looked.formUnion(keys)
    }

    var isBulk: Bool { base.isBulk }
    var placement: Placement { base.placement }
}

/// What applying an operation under its partition's lock came to: applied (its output, the
/// ticket to wait on, the journal that holds it, the state's generation), or not applied because
/// some of its events may repeat ids the index does not hold (`missing`): the caller reads those
/// from the store and applies again.
enum Applied<Output> {
    case applied(Output, Journal.Ticket?, Journal, Int)
    case missing([TallyState.UsageKey])
}

/// One partition of the engine: its state behind its own lock, and the gate its operations wait
/// at, suspended, before they take the lock.
final class Partition: Sendable {
    /// Its place among the engine's partitions.
    let index: Int
    let gate = Gate()
    let state: Mutex<EngineState>

    init(index: Int, state: EngineState) {
        self.index = index
        self.state = Mutex(state)
    }
}

/// The engine: the state in memory, split into partitions by account and rebuilt from the store
/// at start; each partition's operations applied one at a time under its lock, side by side with
/// other partitions'; their facts made durable through the journal before the caller hears back.
public final class Tally: Sendable {
    public let clock: TallyClock
    public let ids: any IDSource
    public let store: any TallyStore
    public let logger: Logger
    let partitions: [Partition]
    /// The shared part as the last operation that changed it left it: read without waiting for
    /// any partition (keys, the catalog), and taken by every partition after a shared write.
    private let shared: Mutex<GlobalState>
    private let reloading = Mutex<Int?>(nil)
    private let lastReloaded = Mutex<Set<Int>>([])
    private let betweenSlices = Mutex<(@Sendable (Int) async -> Void)?>(nil)
    /// The parts of an operation across partitions applied at once: one a core here. Each part is
    /// a task that takes a pool thread while it applies; a report split into 64 parts all at once
    /// kept a check's task waiting behind them for a thread (docs/decisions.md, "Partitions").
    public static let partsInFlightMax = 2
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
    /// The events a generation of the index holds by default, over all partitions (each holds its
    /// share, `TallyState.usageCacheGeneration`): between 131,072 and 262,144 of the latest
    /// events stay in memory, about 60 MB at most; older ids of the window are in the filter of
    /// retired keys (docs/decisions.md).
    public static let usageCacheGeneration = 1 << 17
    /// The events a generation of the index holds, over all partitions; nil keeps every event of
    /// the window in memory.
    public let usageCacheGeneration: Int?
    /// While small operations wait, the most facts of bulk ones a store write takes (`Journal`).
    public let journalBulkFacts: Int

    /// How the store's accounts are spread over partitions, as recorded with its data.
    public let partitioning: Partitioning
    /// What each partition's latest snapshot covers, and when the last round of them was taken.
    let snapshots: Mutex<SnapshotMarks>
    /// How many partitions the start loaded from a snapshot (the rest were replayed from their facts).
    public let snapshotsLoaded: Int

    /// Starts an engine on `store`: streams every fact from it and folds them into the partitions.
    /// `partitions`: the number the store's data is split into. A store that has one recorded
    /// keeps it, and another number is refused (`partition_count_mismatch`); a store with none
    /// records this one (nil: the recorded one, or `Partitioning.countDefault`).
    public static func start(
        catalog: Catalog, store: any TallyStore, clock: TallyClock, ids: any IDSource,
        usageIndexDays: Int64? = Tally.usageIndexDays, usageCacheGeneration: Int? = Tally.usageCacheGeneration,
        journalBulkFacts: Int? = nil, partitions: Int? = nil,
        logger: Logger = Logger(label: "tally.engine")
    ) async throws -> Tally {
        let journalBulkFacts = journalBulkFacts ?? Journal.bulkFactsWhileSmallWaitDefault(concurrentWrites: store.concurrentWrites)
        guard Journal.bulkFactsWhileSmallWaitRange.contains(journalBulkFacts) else {
            throw TallyError(.countOutOfRange, "the journal's bulk facts a write are from \(Journal.bulkFactsWhileSmallWaitRange.lowerBound) to \(Journal.bulkFactsWhileSmallWaitRange.upperBound), got \(journalBulkFacts)")
        }
        let partitioning = try await Tally.partitioning(of: store, asked: partitions)
        let position = try await store.position()
        let loaded = try await Tally.load(catalog, store: store, partitioning: partitioning, now: clock.now(), usageIndexDays: usageIndexDays,
                                          usageCacheGeneration: usageCacheGeneration, logger: logger)
        let built = loaded.state
        let whole = Totals(built.parts)
        if built.parts[0].retiredKeys != nil {
            let retired = built.parts.compactMap(\.retiredKeys)
            logger.info("ids older than the index", metadata: ["keys": "\(retired.reduce(0) { $0 + $1.count })",
                                                               "bytes": "\(retired.reduce(0) { $0 + $1.bytes })"])
        }
        logger.info("engine started", metadata: ["store": "\(store.kind)", "partitions": "\(partitioning.count)", "facts": "\(whole.facts)",
                                                 "accounts": "\(whole.accounts)", "usage_events": "\(whole.usageEvents)", "indexed": "\(whole.indexed)",
                                                 "from_snapshots": "\(loaded.snapshots)", "replayed_after": "\(loaded.tailAfter)",
                                                 "snapshots_read_ms": "\(loaded.milliseconds.read)", "snapshots_decoded_ms": "\(loaded.milliseconds.decode)",
                                                 "replay_ms": "\(loaded.milliseconds.replay)"])
        return Tally(built: built, journal: Journal(store: store, bulkFactsWhileSmallWait: journalBulkFacts, startPosition: position), store: store,
                     clock: clock, ids: ids, usageIndexDays: usageIndexDays, usageCacheGeneration: usageCacheGeneration,
                     journalBulkFacts: journalBulkFacts, snapshotted: loaded.snapshotted, snapshotsLoaded: loaded.snapshots, logger: logger)
    }

    /// A few sums over every partition, for the log.
    private struct Totals {
        var facts: Int64 = 0, accounts = 0, usageEvents: Int64 = 0, indexed = 0

        init(_ parts: [TallyState]) {
            facts = parts.first?.global.factCount ?? 0
            for part in parts {
                facts += part.partition.factCount
                accounts += part.accounts.count
                usageEvents += part.usageEvents
                indexed += part.usage.count
            }
        }
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

    /// The keys the first segment of a day of the filter of retired ids is sized for at least,
    /// over all partitions (each partition's filter takes its share, at least 1,024): 128 KiB a
    /// day in all, 4.5 MB for the 35 days of the ids' window, however quiet the store.
    static let retiredFirstKeys = 1 << 16

    /// One partition's empty state, what a start begins a partition with no usable snapshot from:
    /// the catalog, the instant before which usage ids stay out of memory, the partition's share
    /// of the bound on the index's generations, and a filter of its own (hashed under a key of its
    /// own) for the ids the index lets go.
    static func emptyPartition(_ catalog: Catalog, partitioning: Partitioning, now: Instant, usageIndexDays: Int64?,
                               usageCacheGeneration: Int?) -> TallyState {
        var tally = TallyState(catalog: catalog)
        if let days = usageIndexDays {
            tally.retiredKeys = RetiredUsageKeys(firstCapacity: max(1_024, retiredFirstKeys / partitioning.count))
            tally.usageCacheGeneration = usageCacheGeneration.map { max(1, ($0 + partitioning.count - 1) / partitioning.count) }
            tally.forgetUsage(recordedBefore: now.adding(seconds: -days * 86_400))
        }
        return tally
    }

    private init(built: PartitionedState, journal: Journal, store: any TallyStore, clock: TallyClock, ids: any IDSource, usageIndexDays: Int64?,
                 usageCacheGeneration: Int?, journalBulkFacts: Int, snapshotted: [Int64?], snapshotsLoaded: Int, logger: Logger) {
        self.snapshots = Mutex(SnapshotMarks(snapshotted: snapshotted, facts: built.parts.map(\.partition.factCount)))
        self.snapshotsLoaded = snapshotsLoaded
        self.journalBulkFacts = journalBulkFacts
        self.partitioning = built.partitioning
        self.usageCacheGeneration = usageCacheGeneration
        self.logger = logger
        self.partitions = built.parts.enumerated().map { Partition(index: $0.offset, state: EngineState(tally: $0.element, journal: journal)) }
        self.shared = Mutex(built.parts[0].global)
        self.store = store
        self.clock = clock
        self.ids = ids
        self.usageIndexDays = usageIndexDays
    }

    /// The partition an account's operations and reads go to.
    private func partition(of account: String) -> Partition { partitions[partitioning.partition(of: account)] }

    /// Drops from memory the ids of usage events recorded more than `usageIndexDays` ago: the
    /// scheduler's daily housekeeping. Returns how many ids the index still holds.
    /// It waits at each partition's gate like an operation; its hold is bounded by the index's own
    /// bound (two generations of the partition's share of `usageCacheGeneration` events).
    @discardableResult
    public func forgetOldUsage() async -> Int {
        let cutoff = usageIndexDays.map { clock.now().adding(seconds: -$0 * 86_400) }
        var indexed = 0
        for partition in partitions {
            indexed += await partition.gate.pass(.bulk) {
                partition.state.withLock { state in
                    if let cutoff { state.forgetUsage(recordedBefore: cutoff) }
                    return state.tally.usage.count
                }
            }
        }
        return indexed
    }

    /// Runs an operation now and returns once its facts are durable.
    @discardableResult
    public func perform<Op: Operation>(_ operation: Op) async throws(TallyError) -> Op.Output {
        switch operation.placement {
        case .account(let account):
            return try await perform(operation, in: partitioning.partition(of: account))
        case .shared(let account):
            let home = account.map { partition(of: $0) } ?? partitions[0]
            return try await runHoldingEvery([(home, operation)], lane: operation.isBulk ? .bulk : .small)[0]
        case .across:
            return try await across(operation)
        }
    }

    /// Runs an operation placed `.across`, which must be `AcrossPartitions`.
    private func across<Op: Operation>(_ operation: Op) async throws(TallyError) -> Op.Output {
        guard let across = operation as? any AcrossPartitions else {
            preconditionFailure("\(Op.self) runs across partitions but is not AcrossPartitions")
        }
        return try await across.performAcross(on: self) as! Op.Output
    }

    /// Runs an operation in one partition, after reading from the store the events it may repeat
    /// from before the index's window.
    func perform<Op: Operation>(_ operation: Op, in index: Int) async throws(TallyError) -> Op.Output {
        try await run(operation, in: partitions[index])
    }

    /// Runs each part of an operation across partitions: side by side, each under its own
    /// partition, or, when it emits shared facts, holding every partition's gate.
    func performAcross<Op: AcrossPartitions>(_ operation: Op) async throws(TallyError) -> Op.Output {
        let parts = operation.parts(partitioning)
        if operation.sharesFacts(shared.withLock { $0 }) {
            let steps = parts.map { (partitions[$0.partition], $0.part) }
            let outputs = try await runHoldingEvery(steps, lane: operation.isBulk ? .bulk : .small)
            return operation.gather(Array(zip(parts.map(\.part), outputs)))
        }
        if parts.count == 1 {
            return operation.gather([(parts[0].part, try await parts[0].part.applyPart(on: self, in: parts[0].partition).wait())])
        }
        // Applied a few at a time (each applying part is a task that takes a pool thread), and
        // then waited for together.
        let applied = await withTaskGroup(of: (Int, Result<PartPending<Op.Output>, TallyError>).self) { group in
            var results = [Result<PartPending<Op.Output>, TallyError>?](repeating: nil, count: parts.count)
            var next = 0, running = 0
            while next < parts.count || running > 0 {
                if next < parts.count, running < Tally.partsInFlightMax {
                    let position = next, part = parts[next]
                    group.addTask { (position, await Tally.applying(part.part, on: self, in: part.partition)) }
                    next += 1
                    running += 1
                } else if let (position, result) = await group.next() {
                    results[position] = result
                    running -= 1
                }
            }
            return results
        }
        // Every applied part is waited for, even after another failed: its facts are on their way.
        var gathered: [(part: Op, output: Op.Output)] = []
        gathered.reserveCapacity(parts.count)
        var failure: TallyError?
        for (part, result) in zip(parts, applied) {
            do throws(TallyError) {
                gathered.append((part.part, try await result!.get().wait()))
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
        return operation.gather(gathered)
    }

    /// Applies one part of an operation across partitions, its refusal as a value.
    private static func applying<Op: AcrossPartitions>(_ part: Op, on engine: Tally, in partition: Int) async -> Result<PartPending<Op.Output>, TallyError> {
        do throws(TallyError) {
            return .success(try await part.applyPart(on: engine, in: partition))
        } catch {
            return .failure(error)
        }
    }

    /// Runs a sliced operation in one partition a slice at a time, each slice through the gate on
    /// its own; returns once every slice is durable. Slices are written while later ones are applied.
    @discardableResult
    public func perform<Op: SlicedOperation>(_ operation: Op) async throws(TallyError) -> Op.Output {
        switch operation.placement {
        case .account(let account): return try await performSliced(operation, in: partitioning.partition(of: account))
        case .shared, .across: return try await across(operation)
        }
    }

    func performSliced<Op: SlicedOperation>(_ operation: Op, in index: Int) async throws(TallyError) -> Op.Output {
        try await awaitSlices(operation, try await applySlices(operation, in: index), in: index)
    }

    /// A sliced operation's slices as applied: their outputs, and what each waits for.
    struct SlicesApplied<Output: Sendable>: Sendable {
        var outputs: [Output] = []
        var written: [(ticket: Journal.Ticket, journal: Journal, generation: Int)?] = []
    }

    /// Applies a sliced operation's slices in its partition and hands their facts to the journal,
    /// without waiting for them to be durable (`awaitSlices`).
    func applySlices<Op: SlicedOperation>(_ operation: Op, in index: Int) async throws(TallyError) -> SlicesApplied<Op.Slice.Output> {
        let partition = partitions[index]
        let slices = operation.slices
        var outputs: [Op.Slice.Output] = []
        outputs.reserveCapacity(slices.count)
        var written: [(ticket: Journal.Ticket, journal: Journal, generation: Int)?] = []
        // Each slice holds the partition's gate while it is applied and lets it go before the
        // next: a check waits for the slice under way only.
        for (index, slice) in slices.enumerated() {
            var remembering = Remembering(slice)
            let (output, ticket, journal, generation) = try await applyRemembering(&remembering, in: partition)
            if let ticket { journal.submit(ticket) }
            outputs.append(output)
            written.append(ticket.map { ($0, journal, generation) })
            if index < slices.count - 1, let hook = betweenSlices.withLock({ $0 }) { await hook(index) }
        }
        return SlicesApplied(outputs: outputs, written: written)
    }

    /// Waits until every applied slice is durable; after a lost race, reloads and runs the slices
    /// not yet durable again, one by one.
    func awaitSlices<Op: SlicedOperation>(_ operation: Op, _ applied: SlicesApplied<Op.Slice.Output>, in index: Int) async throws(TallyError) -> Op.Output {
        let slices = operation.slices
        var outputs = applied.outputs
        for (position, entry) in applied.written.enumerated() {
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
                logger.info("retrying the rest of a sliced operation after a conflict with another process", metadata: ["slice": "\(position)"])
                try await reload(from: generation)
                for rest in position..<slices.count { outputs[rest] = try await perform(slices[rest], in: index) }
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

    /// The stored events among `suspects`: the ids an operation may repeat from before the
    /// index's window. Read outside the lock, so that an old id sent again is answered from the
    /// index as a duplicate, rather than failing at the store's unique index and costing every
    /// caller a reload.
    private func storedUsage(_ suspects: [TallyState.UsageKey]) async throws(TallyError) -> [TallyState.UsageKey: UsageEntry] {
        guard !suspects.isEmpty else { return [:] }
        do {
            return try await store.storedUsage(suspects)
        } catch {
            throw TallyError(.storeUnavailable, "could not read earlier usage events from the store: \(error)")
        }
    }

    /// Runs an operation in its partition and waits until its facts are durable.
    private func run<Op: Operation>(_ operation: Op, in partition: Partition) async throws(TallyError) -> Op.Output {
        var remembering = Remembering(operation)
        return try await retrying { () throws(TallyError) in try await applyRemembering(&remembering, in: partition) }
    }

    /// Applies an operation in its partition. When some of its events may repeat ids that are no
    /// longer in the index (`Applied.missing`), it lets the lock go, reads those from the store and
    /// applies again with them; `remembering` keeps what was read, for a retry after a lost race.
    private func applyRemembering<Op: Operation>(_ remembering: inout Remembering<Op>, in partition: Partition)
        async throws(TallyError) -> (Op.Output, Journal.Ticket?, Journal, Int) {
        while true {
            switch try await apply(remembering, in: partition) {
            case .applied(let output, let ticket, let journal, let generation): return (output, ticket, journal, generation)
            case .missing(let keys): remembering.add(try await storedUsage(keys), lookedFor: keys)
            }
        }
    }

    /// Applies, then waits until the facts are durable; after a lost race with another process,
    /// reloads and applies again (at most `conflictRetriesMax` times).
    private func retrying<Output>(
        _ apply: () async throws(TallyError) -> (Output, Journal.Ticket?, Journal, Int)
    ) async throws(TallyError) -> Output {
        for retry in 0...Tally.conflictRetriesMax {
            let (output, ticket, journal, generation) = try await apply()
            guard let ticket else { return output }
            do {
                try await journal.waitDurable(ticket)
                return output
            } catch {
                guard error.code == .storeConflict else {
                    failed(error, generation: generation)
                    throw error
                }
                logger.info("retrying after a conflict with another process", metadata: ["retry": "\(retry + 1)"])
                try await reload(from: generation)
                // A little jitter, so that processes racing for one pack do not collide in lockstep.
                try? await Task.sleep(for: .microseconds(Int.random(in: 0...(200 * min(retry + 1, 10)))))
            }
        }
        throw TallyError(.storeConflict, "the operation lost \(Tally.conflictRetriesMax + 1) races with other processes in a row; try again")
    }

    /// Applies an operation under its partition's lock (after the operations queued at that
    /// partition's gate before it) and queues its facts; returns its output, the ticket to wait
    /// on, the journal that holds it, and the state's generation.
    private func apply<Op: Operation>(_ operation: Op, in partition: Partition) async throws(TallyError) -> Applied<Op.Output> {
        try await partition.gate.pass(operation.isBulk ? .bulk : .small) { () throws(TallyError) in try applyHoldingGate(operation, in: partition) }
    }

    /// `apply` for a caller that holds the partition's gate.
    private func applyHoldingGate<Op: Operation>(_ operation: Op, in partition: Partition) throws(TallyError) -> Applied<Op.Output> {
        let environment = Environment(now: clock.now(), ids: ids)
        return try partition.state.withLock { (state: inout EngineState) throws(TallyError) -> Applied<Op.Output> in
            // Ids the operation may repeat that are not in the index (older than it, or gone since
            // another operation filled a generation) are read from the store first: applied without
            // them, a repeated id would count twice in memory and fail at the store's unique index.
            if let retired = state.tally.retiredKeys, !retired.isEmpty {
                let missing = operation.suspects(in: retired).filter { state.tally.usage[$0] == nil }
                if !missing.isEmpty { return .missing(missing) }
            }
            let shared = state.tally.global.factCount
            let output = try Tally.execute(operation, &state, environment)
            precondition(state.tally.global.factCount == shared, "\(Op.self) emitted a shared fact without holding every partition")
            let ticket = state.emitted.isEmpty ? nil : state.journal.enqueue(state.emitted, bulk: operation.isBulk, partition: partition.index)
            // Handed to the journal, not kept: the journal holds this buffer until it is written,
            // so the next operation's first fact would copy it into a new buffer of the same
            // capacity, the largest batch's (a megabyte mapped and unmapped for a single check
            // once a report of 10,000 events had passed).
            state.emitted = []
            return .applied(output, ticket, state.journal, state.generation)
        }
    }

    /// Executes an operation on a state, unless the state may hold facts the store did not take.
    private static func execute<Op: Operation>(_ operation: Op, _ state: inout EngineState, _ environment: Environment) throws(TallyError) -> Op.Output {
        // Memory may hold facts the store did not take: nothing more is applied on top of them
        // until the state is reloaded from the store (`recover`).
        if let failure = state.journal.stoppedBy { throw Tally.unavailable(failure) }
        do throws(TallyError) {
            let output = try operation.execute(&state, environment)
            state.rotateIfFull()
            return output
        } catch {
            // Operations check before they emit; one that refused after emitting would leave
            // the memory ahead of what the caller was told, so that is a programmer error.
            precondition(state.emitted.isEmpty, "an operation emitted facts and then refused: \(error)")
            throw error
        }
    }

    /// Runs steps (each an operation and the partition it runs in) holding every partition's
    /// gate, so that nothing else applies meanwhile: the shared facts the first step emits reach
    /// every partition before any other operation runs, and the steps' facts are one journal
    /// entry, durable or rolled back together. Later steps see the shared part as it was before.
    private func runHoldingEvery<Op: Operation>(_ steps: [(Partition, Op)], lane: Gate.Lane) async throws(TallyError) -> [Op.Output] {
        try await retrying { () throws(TallyError) in
            await enterEvery(lane)
            defer { leaveEvery() }
            return try applyHoldingEvery(steps)
        }
    }

    private func applyHoldingEvery<Op: Operation>(_ steps: [(Partition, Op)]) throws(TallyError) -> ([Op.Output], Journal.Ticket?, Journal, Int) {
        let environment = Environment(now: clock.now(), ids: ids)
        var outputs: [Op.Output] = []
        var facts: [Fact] = []
        var sharedBy: Partition?
        var journal: Journal?, generation = 0
        for (position, (partition, operation)) in steps.enumerated() {
            try partition.state.withLock { (state: inout EngineState) throws(TallyError) in
                let shared = state.tally.global.factCount
                let output: Op.Output
                do throws(TallyError) {
                    output = try Tally.execute(operation, &state, environment)
                } catch {
                    // Only the first step may refuse: later ones would leave the earlier ones'
                    // facts applied and the caller told of a refusal.
                    precondition(facts.isEmpty, "a step across partitions refused after others had emitted: \(error)")
                    throw error
                }
                if state.tally.global.factCount != shared {
                    precondition(position == 0, "only the first step across partitions emits shared facts")
                    sharedBy = partition
                }
                outputs.append(output)
                facts.append(contentsOf: state.emitted)
                state.emitted = []
                journal = state.journal
                generation = state.generation
            }
        }
        if let sharedBy {
            let global = sharedBy.state.withLock { $0.tally.global }
            for partition in partitions where partition !== sharedBy { partition.state.withLock { $0.adopt(global) } }
            shared.withLock { $0 = global }
        }
        guard let journal else { preconditionFailure("no step to run") }
        return (outputs, facts.isEmpty ? nil : journal.enqueue(facts, bulk: steps.contains { $0.1.isBulk }), journal, generation)
    }

    /// Enters every partition's gate, in partition order (so two callers cannot hold parts of
    /// each other's).
    private func enterEvery(_ lane: Gate.Lane) async {
        for partition in partitions { await partition.gate.enter(lane) }
    }

    private func leaveEvery() {
        for partition in partitions.reversed() { partition.gate.leave() }
    }

    /// Rebuilds the state from the store after a lost race or a refused write: the memory had run
    /// ahead of what was kept (and another process's facts were not in it). Only the partitions
    /// some of whose facts may not be in the store are loaded again, from their snapshots and the
    /// facts after them; the others keep their state. One caller reloads; the others wait.
    private func reload(from generation: Int) async throws(TallyError) {
        let first = partitions[0]
        // Wait while another caller reloads; take the reload over if nobody holds it (a reloader
        // that failed leaves it free), and stop when the caller is cancelled.
        while true {
            if first.state.withLock({ $0.generation }) != generation { return }
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
        let (generationNow, catalog, failedJournal) = first.state.withLock { ($0.generation, $0.tally.baseCatalog, $0.journal) }
        if generationNow != generation { return }
        // Every gate first: nothing is applied while the partitions to reload are chosen and
        // loaded, so every fact applied since the failure is among the failed journal's entries.
        await enterEvery(.small)
        defer { leaveEvery() }
        let known = failedJournal.knownAfterConflict
        // The partitions some of whose facts may not be in the store; the others stand as they
        // are, and only their shared part is rebuilt.
        var reloaded = failedJournal.undurableAccounts.map { Set($0.map(partitioning.partition(of:))) } ?? Set(partitions.indices)
        reloaded.formUnion(known.keys.map { partitioning.partition(of: $0.account) })
        var keeping: [Int: PartitionState] = [:]
        for index in partitions.indices where !reloaded.contains(index) { keeping[index] = partitions[index].state.withLock { $0.tally.partition } }
        var built: PartitionedState
        let position: Int64
        do {
            position = try await store.position()
            built = try await Tally.load(catalog, store: store, partitioning: partitioning, now: clock.now(), usageIndexDays: usageIndexDays,
                                         usageCacheGeneration: usageCacheGeneration, keeping: keeping, logger: logger).state
        } catch {
            let failure = TallyError(.storeUnavailable, "reloading from the store failed: \(error)")
            // The state may hold facts the store refused: stop taking work until a reload succeeds.
            first.state.withLock { $0.journal.stop(failure) }
            failed(failure, generation: generation)
            throw failure
        }
        var parts = built.parts
        // Ids the store refused as already counted but older than the index: back into it, so
        // that the retry answers them as duplicates.
        for (key, entry) in known { parts[partitioning.partition(of: key.account)].remember([key: entry]) }
        let journal = Journal(store: store, bulkFactsWhileSmallWait: journalBulkFacts, startPosition: position)
        lastReloaded.withLock { $0 = reloaded }
        logger.info("reloaded from the store", metadata: ["partitions": "\(reloaded.count)", "of": "\(partitions.count)"])
        shared.withLock { $0 = parts[0].global }
        for (partition, tally) in zip(partitions, parts) {
            partition.state.withLock { state in
                var fresh = EngineState(tally: tally, journal: journal)
                fresh.buckets = state.buckets
                fresh.generation = state.generation + 1
                state = fresh
            }
        }
    }

    /// Whether the engine takes work: false from a write the store refused until the state is
    /// reloaded from the store. Meanwhile memory may hold facts the store did not take, so a
    /// server answers reads, like writes, with `store_unavailable` (`/health/ready` says 503).
    public var isReady: Bool {
        partitions[0].state.withLock { $0.journal.stoppedBy == nil }
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

    /// What an operation would do now, without doing it: it runs on a copy of its partition's
    /// state and its facts are thrown away (the price preview before paying). The copy is
    /// copy-on-write, so a preview costs a copy of what the operation changes, outside the lock.
    public func preview<Op: Operation>(_ operation: Op) throws(TallyError) -> Op.Output {
        let partition: Partition
        switch operation.placement {
        case .account(let account): partition = self.partition(of: account)
        case .shared(let account): partition = account.map { self.partition(of: $0) } ?? partitions[0]
        case .across: preconditionFailure("an operation across partitions has no preview")
        }
        var copy = partition.state.withLock { $0 }
        copy.emitted.removeAll()
        return try operation.execute(&copy, Environment(now: clock.now(), ids: ids))
    }

    /// The audit of the state against every usage event the store holds (the state's index keeps
    /// only recent ones). For a quiet engine: writes between the recount and the read would show
    /// as mismatches (`tally audit` on SQLite reads both in one snapshot instead).
    public func audit() async throws -> Audit.Report {
        let recount = try await store.recountUsage(zone: readShared { $0.zone })
        return read { Audit.run($0, recount: recount) }
    }

    /// How many times the state was rebuilt from the store after a write lost a race (another
    /// process's facts, or an id the store held and the memory did not).
    public var reloads: Int { partitions[0].state.withLock { $0.generation } }

    /// The partitions the last reload loaded from the store (the others kept their state).
    public var partitionsLastReloaded: Set<Int> { lastReloaded.withLock { $0 } }

    /// What waits: operations at the partitions' gates, and journal entries not yet committed.
    public var queueDepth: (gate: Int, journal: Int) {
        (partitions.reduce(0) { $0 + $1.gate.waiting }, partitions[0].state.withLock { $0.journal }.outstandingEntries)
    }

    /// Reads every partition as one state (`TallyState.merged`): for readers of every account at
    /// once (the audit, an operator's lists, the command line, tests). Each partition is read in
    /// turn, not all at one instant. The request path reads one account's partition instead.
    public func read<T: Sendable>(_ body: (TallyState) throws -> T) rethrows -> T {
        try body(TallyState.merged(partitions.map { partition in partition.state.withLock { $0.tally } }))
    }

    /// Reads the partition that holds `account` (and the shared part).
    public func read<T: Sendable, E: Error>(account: String, _ body: (TallyState) throws(E) -> T) throws(E) -> T {
        try partition(of: account).state.withLock { (state: inout EngineState) throws(E) -> T in try body(state.tally) }
    }

    /// Reads one partition.
    public func read<T: Sendable>(partition index: Int, _ body: (TallyState) throws -> T) rethrows -> T {
        try partitions[index].state.withLock { try body($0.tally) }
    }

    /// Reads each partition in turn: one answer a partition, in partition order.
    public func readEach<T: Sendable>(_ body: (TallyState) throws -> T) rethrows -> [T] {
        try partitions.map { partition in try partition.state.withLock { try body($0.tally) } }
    }

    /// The first thing `body` finds in a partition, looking in each in turn (a bill by its id).
    public func find<T: Sendable>(_ body: (TallyState) -> T?) -> T? {
        for partition in partitions {
            if let found = partition.state.withLock({ body($0.tally) }) { return found }
        }
        return nil
    }

    /// Reads the shared part (catalog, keys, webhook endpoints, months closed) without waiting for
    /// any partition.
    public func readShared<T: Sendable>(_ body: (GlobalState) throws -> T) rethrows -> T {
        try shared.withLock { try body($0) }
    }

    /// Reads the partition that holds `account` after the operations queued there before it,
    /// suspended rather than blocked while one runs: what a server's request path uses, so that
    /// a long report holds no thread but its own.
    public func reading<T: Sendable, E: Error>(account: String, _ body: (TallyState) throws(E) -> T) async throws(E) -> T {
        let partition = partition(of: account)
        return try await partition.gate.pass { () throws(E) in
            try partition.state.withLock { (state: inout EngineState) throws(E) -> T in try body(state.tally) }
        }
    }
}
