import Logging
import Synchronization
import TallyCore
import TallyStore

/// What each partition's latest snapshot covers, and when the last round of snapshots was taken.
struct SnapshotMarks: Sendable {
    /// Each partition's fact count when its latest snapshot was taken or loaded (nil: none): a
    /// partition that has applied nothing since is not written again.
    var covered: [Int64?]
    /// The facts of every partition at the last round, and when it was taken.
    var factsAtRound: Int64
    var roundAt: ContinuousClock.Instant
    /// Whether another process was found writing to the store (logged once).
    var othersWrite = false

    init(snapshotted: [Int64?], facts: [Int64]) {
        covered = snapshotted
        factsAtRound = facts.reduce(0, +)
        roundAt = .now
    }
}

/// Snapshots (docs/decisions.md, "Snapshots"): each partition's state is written to the store with
/// the position of the last fact it covers, and a start loads each partition's newest usable
/// snapshot and replays only the facts after it.
extension Tally {
    /// A round of snapshots is taken once this many facts were applied since the last round...
    public static let snapshotEveryFactsDefault: Int64 = 2_000_000
    /// ...or once this many seconds passed, if anything was applied.
    public static let snapshotEverySecondsDefault: Int64 = 300
    /// The bounds of those settings (0 facts: no snapshots).
    public static let snapshotEveryFactsRange: ClosedRange<Int64> = 10_000...1_000_000_000
    public static let snapshotEverySecondsRange: ClosedRange<Int64> = 10...86_400

    /// Refuses snapshot settings out of their bounds.
    public static func checkSnapshotSettings(everyFacts: Int64, everySeconds: Int64) throws(TallyError) {
        guard everyFacts == 0 || snapshotEveryFactsRange.contains(everyFacts) else {
            throw TallyError(.countOutOfRange, "snapshots are taken every 0 (never) or \(snapshotEveryFactsRange.lowerBound) to \(snapshotEveryFactsRange.upperBound) facts, got \(everyFacts)")
        }
        guard snapshotEverySecondsRange.contains(everySeconds) else {
            throw TallyError(.countOutOfRange, "snapshots are taken every \(snapshotEverySecondsRange.lowerBound) to \(snapshotEverySecondsRange.upperBound) seconds, got \(everySeconds)")
        }
    }

    /// What a start loaded: the partitions' states, what each one's snapshot covers (its fact
    /// count), how many snapshots were used, the position the replay started after, and how long
    /// reading the snapshots, decoding them and replaying the facts after them took.
    struct Loaded {
        let state: PartitionedState
        let snapshotted: [Int64?]
        let tailAfter: Int64
        let milliseconds: (read: Int64, decode: Int64, replay: Int64)

        var snapshots: Int { snapshotted.count { $0 != nil } }
    }

    /// Snapshots decoded at once at a start: one a core.
    static let decodesInFlightMax = 2

    /// Loads every partition: its newest usable snapshot (one that cannot be read is logged and
    /// the one before it is read and tried; with none, the partition starts empty), then the
    /// shared facts and the facts after the oldest snapshot's position, each partition skipping
    /// those its snapshot covers. With `usageIndexDays` nil (memory keeps every id: the audit's
    /// way), snapshots are not read, since theirs do not.
    ///
    /// `keeping`: partitions whose state stands as it is (a reload's, for the partitions none of
    /// whose facts may be missing from the store): only their shared part is rebuilt.
    static func load(_ catalog: Catalog, store: any TallyStore, partitioning: Partitioning, now: Instant, usageIndexDays: Int64?,
                     usageCacheGeneration: Int?, keeping: [Int: PartitionState] = [:], logger: Logger) async throws -> Loaded {
        let empty = { emptyPartition(catalog, partitioning: partitioning, now: now, usageIndexDays: usageIndexDays, usageCacheGeneration: usageCacheGeneration) }
        var loaded = [(state: TallyState, position: Int64, facts: Int64)?](repeating: nil, count: partitioning.count)
        var reading = Duration.zero, decoding = Duration.zero
        // The partitions still to load: at rank 0 every one not kept, then those whose snapshot at
        // the rank before could not be used.
        var unloaded = Set((0..<partitioning.count).filter { keeping[$0] == nil })
        for rank in 0..<(usageIndexDays == nil ? 0 : StoredSnapshot.keptPerPartition) where !unloaded.isEmpty {
            let started = ContinuousClock.now
            // Every partition's at a start; a reload's few by name.
            let asked = unloaded.count == partitioning.count ? nil : unloaded.sorted()
            var waiting = try await store.snapshots(rank: rank, partitions: asked).filter { unloaded.contains($0.partition) }[...]
            let tried = Set(waiting.map(\.partition))
            let read = ContinuousClock.now
            await withTaskGroup(of: (Int, (state: TallyState, position: Int64, facts: Int64)?).self) { group in
                func start() {
                    guard let snapshot = waiting.popFirst() else { return }
                    let base = empty()
                    group.addTask { (snapshot.partition, decode(snapshot, base: base, zone: catalog.zone, now: now, usageIndexDays: usageIndexDays, logger: logger)) }
                }
                for _ in 0..<decodesInFlightMax { start() }
                while let (index, partition) = await group.next() {
                    loaded[index] = partition
                    start()
                }
            }
            // Only a partition whose snapshot at this rank was there and unusable is read at the next.
            unloaded = tried.filter { loaded[$0] == nil }
            reading += read - started
            decoding += .now - read
        }
        let decoded = ContinuousClock.now
        var covered = loaded.map { $0?.position ?? 0 }
        var parts = loaded.map { $0?.state ?? empty() }
        for (index, partition) in keeping {
            parts[index] = TallyState(global: parts[index].global, partition: partition)
            covered[index] = .max
        }
        let after = covered.min() ?? 0
        let state = try await store.rebuild(PartitionedState(parts, partitioning: partitioning, covered: covered), after: after)
        return Loaded(state: state, snapshotted: loaded.map { $0?.facts }, tailAfter: after,
                      milliseconds: (milliseconds(reading), milliseconds(decoding), milliseconds(.now - decoded)))
    }

    /// A partition's state from its snapshot, on `base`'s shared part and settings; nil when the
    /// snapshot cannot be used (logged).
    private static func decode(_ snapshot: StoredSnapshot, base: TallyState, zone: Zone, now: Instant, usageIndexDays: Int64?,
                               logger: Logger) -> (state: TallyState, position: Int64, facts: Int64)? {
        do {
            let image = try SnapshotCodec.decode(snapshot.bytes)
            var partition = try PartitionState(image: image, zone: zone, usageCacheGeneration: base.usageCacheGeneration)
            if partition.retiredKeys == nil { partition.retiredKeys = base.retiredKeys }
            var state = TallyState(global: base.global, partition: partition)
            if let days = usageIndexDays { state.forgetUsage(recordedBefore: now.adding(seconds: -days * 86_400)) }
            return (state, snapshot.position, image.records.factCount)
        } catch {
            logger.warning("a partition's snapshot cannot be used; an older one or the partition's facts are replayed instead",
                           metadata: ["partition": "\(snapshot.partition)", "position": "\(snapshot.position)", "error": "\(error)"])
            return nil
        }
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1_000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    /// How long a snapshot looks for a moment when nothing of its partition is on its way to the
    /// store, before it holds the partition's gate until the partition's entries are written.
    public static let snapshotQuietWaitMilliseconds = 1_000

    /// What a snapshot found at its partition's gate.
    private enum SnapshotLook {
        /// Nothing applied since the last snapshot.
        case unchanged
        /// Some of the partition's facts still on their way to the store: look again.
        case busy
        /// The state, its filter's image and the store's position, the journal, the fact count.
        case copied(PartitionState, RetiredUsageKeys.Image?, Int64, Journal, Int64)
    }

    /// Writes partition `index`'s snapshot, unless it applied nothing since its last one; true
    /// when one was written. It takes the partition's gate (as a bulk operation) at a moment when
    /// nothing the partition applied is still on its way to the store (`Journal.isQuiet`), looking
    /// again every `Journal.quietPollMilliseconds` and letting the gate go in between, so that
    /// checks pass; past `snapshotQuietWaitMilliseconds` it holds the gate until the partition is
    /// quiet. Holding the gate, it copies the state (its tables are shared until an operation
    /// changes them) and reads the store's position: every fact of the partition at or before it
    /// is then in the copy, and every later one comes after it. The image is encoded and written
    /// after the gate is let go. Throws, writing nothing, if the journal has failed: a snapshot
    /// never holds a fact the store did not take.
    @discardableResult
    public func snapshot(partition index: Int) async throws -> Bool {
        let partition = partitions[index]
        let deadline = ContinuousClock.now + .milliseconds(Tally.snapshotQuietWaitMilliseconds)
        while true {
            let look: SnapshotLook = try await partition.gate.passSuspending(.bulk) {
                let (journal, facts) = partition.state.withLock { ($0.journal, $0.tally.partition.factCount) }
                if let failure = journal.failure { throw failure }
                if snapshots.withLock({ $0.covered[index] }) == facts { return .unchanged }
                if !journal.isQuiet(partition: index) {
                    if ContinuousClock.now < deadline { return .busy }
                    try await journal.waitUntilQuiet(partition: index)
                }
                let (state, retired) = partition.state.withLock { ($0.tally.partition, $0.tally.retiredKeys?.image) }
                return .copied(state, retired, try await store.position(), journal, facts)
            }
            switch look {
            case .unchanged:
                return false
            case .busy:
                try? await Task.sleep(for: .milliseconds(Journal.quietPollMilliseconds))
            case .copied(let state, let retired, let position, let journal, let facts):
                // Another process wrote to the store since this state was read: the snapshot could
                // claim to cover facts of the partition this process never applied. None is written.
                guard position == journal.positionIfAlone else {
                    if snapshots.withLock({ marks in defer { marks.othersWrite = true }; return !marks.othersWrite }) {
                        logger.warning("another process writes to this store: no snapshots are taken (run each process with --snapshot-every-facts 0)",
                                       metadata: ["position": "\(position)", "expected": "\(journal.positionIfAlone.map(String.init) ?? "unknown")"])
                    }
                    return false
                }
                let bytes = try SnapshotCodec.encode(state.image(retired: retired))
                try await store.saveSnapshot(StoredSnapshot(partition: index, position: position, taken: clock.now(), bytes: bytes))
                snapshots.withLock { $0.covered[index] = facts }
                return true
            }
        }
    }

    /// A round: a snapshot of every partition that applied anything since its last, one partition
    /// at a time (each waits only for its own gate). Returns how many were written.
    @discardableResult
    public func snapshotAll() async throws -> Int {
        let facts = readEach { $0.partition.factCount }.reduce(0, +)
        let started = ContinuousClock.now
        var written = 0
        for index in partitions.indices where try await snapshot(partition: index) { written += 1 }
        snapshots.withLock {
            $0.factsAtRound = facts
            $0.roundAt = started
        }
        if written > 0 {
            logger.info("snapshots written", metadata: ["partitions": "\(written)", "milliseconds": "\(Tally.milliseconds(.now - started))"])
        }
        return written
    }

    /// A round of snapshots if one is due: `everyFacts` facts applied since the last round, or
    /// `everySeconds` passed and anything applied. Returns how many were written.
    @discardableResult
    public func snapshotIfDue(everyFacts: Int64 = Tally.snapshotEveryFactsDefault, everySeconds: Int64 = Tally.snapshotEverySecondsDefault) async throws -> Int {
        let facts = readEach { $0.partition.factCount }.reduce(0, +)
        let due = snapshots.withLock { marks in
            facts - marks.factsAtRound >= everyFacts || (facts != marks.factsAtRound && ContinuousClock.now - marks.roundAt >= .seconds(everySeconds))
        }
        return due ? try await snapshotAll() : 0
    }
}
