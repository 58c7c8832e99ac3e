import Synchronization
import TallyCore
import TallyStore

/// Group commit: facts decided in memory queue here and are written to the store in batches. A
/// caller is answered only after its facts' batch has committed, so nothing acknowledged is lost;
/// many callers share one write, so nothing costs a transaction per event.
///
/// An entry (the facts of one `enqueue`: one operation, or one slice of a sliced one) is never
/// cut: it goes to the store in one transaction, so a crash stops an operation between two of
/// its slices, never inside one.
///
/// The writer is fair to small operations. Entries are written in the order they were queued,
/// except that a small entry (at most `smallEntryFactsMax` facts: a check, a top-up) may go ahead
/// of entries queued before it that touch none of its accounts, and while small entries wait, one
/// write takes at most `bulkFactsWhileSmallWait` facts of bulk entries. On a store with express
/// writes (`TallyStore.expressWrites`: SQLite's express log, PostgreSQL's second connection),
/// while the main writer writes, a second writer takes the small entries of one account's facts
/// beside it, and the main writer leaves them to it, taking each other entry ahead of the small
/// ones it passes when it shares no account with them: a check is durable after its own short
/// write. With nothing else ready the main writer takes the checks itself. On a store without them,
/// ready small entries get a write of their own every other write, so a check queued behind
/// 40,000 facts of reports for other accounts is durable after the write under way and the next
/// one. Each account's facts still reach the store in the order they were applied, and facts that
/// belong to no single account (the catalog, keys, closed months) keep their place among all
/// others, with nothing written beside them: facts of different accounts commute, so a rebuild
/// from the store's order gives the state the memory holds (`FactRoute`).
///
/// The writer is a task of its own, started by the first waiter that finds none under way; it
/// drains the queue and ends. Callers that queue meanwhile wait for the next batch (TigerBeetle and
/// PostgreSQL's group commit work the same way). No caller writes for the others: under a steady
/// load the queue never empties, and a caller that drained it was answered only when the load
/// stopped.
///
/// Each caller encodes its own facts' JSON bodies between queueing them (under the engine's lock)
/// and waiting (or `submit`), so that encoding runs beside the write under way instead of inside
/// the single writer. The writer takes only entries whose bodies are ready; finding none it can
/// take, it ends, and the caller still encoding starts it again. So every ticket must be submitted
/// or waited on: that is what hands its bodies over.
public final class Journal: Sendable {
    /// The most facts one store write takes, unless one entry alone is larger (it is then written
    /// alone: an entry is never cut). Larger writes cost the callers in them a longer commit.
    public static let batchSizeMax = 16_384
    /// An entry of at most this many facts is a small operation's: it may be written ahead of
    /// bulk entries for other accounts. A check is one to four facts; a report's slice is hundreds.
    public static let smallEntryFactsMax = 64
    /// While small entries wait, the most facts of bulk entries one write takes by default, so
    /// that the write under way when a check comes is short (with express writes: so that the
    /// flush a check's commit waits behind on the same disk is short); an engine setting
    /// (`--journal-bulk-facts`), since it trades a check's latency for the reports' throughput
    /// (docs/decisions.md, "Fair group commit"). 256 on SQLite; 512 on a store that takes writes
    /// side by side (PostgreSQL), where 256 slowed the reports.
    public static func bulkFactsWhileSmallWaitDefault(concurrentWrites: Bool) -> Int { concurrentWrites ? 512 : 256 }
    /// The bounds of that setting.
    public static let bulkFactsWhileSmallWaitRange = 64...batchSizeMax
    /// Small entries count as waiting for this long after the last one was queued: a gateway's
    /// callers each wait for their check before sending the next, so at the moment a write is
    /// taken their checks may all be in the write under way, and a write of 16,384 bulk facts
    /// taken then would hold every next check for its whole length.
    public static let smallActiveMilliseconds = 50
    /// On a store with express writes (`TallyStore.expressWrites`), the most facts of small
    /// entries the express writer takes in one write.
    public static let expressFactsMax = 256

    /// What `enqueue` hands back: the entry to wait on, and the facts the caller encodes (none
    /// when every fact is a usage row, which needs no body).
    public struct Ticket: Sendable {
        let sequence: UInt64
        let toEncode: [Fact]
        /// Whether the entry is a bulk one (not small): what a main writer it starts carries.
        let bulk: Bool
    }

    /// The facts of one `enqueue`, and their bodies once ready.
    private struct Entry {
        let sequence: UInt64
        let facts: [Fact]
        var bodies: [[UInt8]?]?
        /// Whether it is a bulk operation's, whatever its size (a small part of a large report).
        let bulk: Bool
        /// Whether the express writer may take it: a small entry whose facts are all one
        /// account's, on a store with express writes. The main writer leaves it to that writer
        /// while other entries are ready (`take`).
        let expressable: Bool
        /// The accounts its facts belong to, worked out when the writer first needs them (to let
        /// a small entry past it); `.some(nil)` when one of its facts is not one account's.
        var accounts: AccountSet??

        var isSmall: Bool { !bulk && facts.count <= Journal.smallEntryFactsMax }

        mutating func route() -> AccountSet? {
            if let accounts { return accounts }
            let found = AccountSet.of(facts)
            accounts = .some(found)
            return found
        }
    }

    private struct State {
        let bulkFactsWhileSmallWait: Int
        /// Whether the store has express writes, and so the express writer runs.
        let express: Bool
        /// Entries not yet taken by the writer, in the order they were queued.
        var pending: [Entry] = []
        var enqueuedThrough: UInt64 = 0
        /// Entries queued and not yet committed (taken by a write under way, or pending), each
        /// with the engine's partition whose facts it holds; and how many are outstanding a
        /// partition: what a snapshot asks to find its partition with nothing on its way.
        var outstanding: [UInt64: Int] = [:]
        var outstandingByPartition: [Int: Int] = [:]
        /// Pending entries whose bodies are ready, and how many of those the main writer takes
        /// (all of them, unless the store has express writes).
        var ready = 0
        var readyMain = 0
        var writing = false
        /// The second writer, for small entries of one account's facts (`expressFactsMax`).
        var expressWriting = false
        /// What each writer's write under way touches: the other writer takes nothing that shares
        /// an account with it (nil: a fact of no single account, which nothing may pass).
        var mainInFlight: AccountSet? = .empty
        /// Whether the main writer's write under way carries bulk facts: only then does the
        /// express writer run beside it (checks alone are written by the main writer).
        var mainBulk = false
        var expressInFlight: AccountSet? = .empty
        var failure: TallyError?
        /// Events the store already held when a batch lost a race (`StoreConflict.known`).
        var known: [TallyState.UsageKey: UsageEntry] = [:]
        /// The facts of each writer's write under way (the express writer's second), until it
        /// commits: after a failure, with the entries still queued, what may not be in the store.
        var writingFacts: [[Fact]] = [[], []]
        var waiters: [UInt64: CheckedContinuation<Signal, Never>] = [:]
        /// When the last small entry was queued.
        var smallQueued: ContinuousClock.Instant?
        /// Whether the last write took small entries only (`take`): the next one then takes bulk
        /// entries first, so that checks arriving without end never hold a report back.
        var lastTookSmallOnly = false
        /// The partition whose entries the next writes take first, ahead of other partitions'
        /// (`waitUntilQuiet`): a snapshot holding its gate waits for those entries alone, not for
        /// the whole queue.
        var expedited: Int?

        /// Fails the journal: every waiter hears `failure`, and so does every later caller.
        mutating func fail(_ failure: TallyError, known: [TallyState.UsageKey: UsageEntry] = [:]) -> [CheckedContinuation<Signal, Never>] {
            self.failure = failure
            self.known = known
            writing = false
            expressWriting = false
            defer { waiters.removeAll() }
            return Array(waiters.values)
        }

        /// Whether the caller waiting for `sequence` is answered now (nil: it waits).
        func answer(for sequence: UInt64) -> Signal? {
            // Durability first: a caller whose entry committed is answered even if a later batch failed.
            if outstanding[sequence] == nil { return .durable }
            if let failure { return .failed(failure) }
            return nil
        }

        /// Takes the writer's role when nobody holds it and some entry is ready; an entry still
        /// being encoded is written once its caller submits it.
        mutating func startWriter() -> Bool {
            if writing || failure != nil || ready == 0 { return false }
            writing = true
            return true
        }

        /// Takes the express writer's role when the main writer is writing bulk facts, nobody holds it and a
        /// small entry of one account is ready (on a store with express writes), unless the main
        /// writer's write under way holds a fact of no single account, which nothing may pass.
        mutating func startExpress() -> Bool {
            if !writing || !mainBulk || expressWriting || failure != nil || ready == 0 || mainInFlight == nil { return false }
            guard pending.contains(where: { $0.expressable && $0.bodies != nil }) else { return false }
            expressWriting = true
            return true
        }

        /// The next batch: entries in queue order, whole, each ready and clear of every entry
        /// passed over before it (same account, or a fact of no single account); while a small
        /// entry waits (or one was queued within `smallActiveMilliseconds`), bulk entries fill at
        /// most `bulkFactsWhileSmallWait`. On a store with one writer, small entries that are ready
        /// get a write of their own, every other write at most (`lastTookSmallOnly`): a check then
        /// waits for the bulk write under way and a short write, not for its share of a bulk one.
        /// Nil, and the writer steps down, when nothing can be taken.
        mutating func take() -> (batch: EncodedBatch, sequences: [UInt64])? {
            guard failure == nil else {
                writing = false
                return nil
            }
            // With express writes, while other entries are ready this writer leaves the small
            // entries of one account to the express writer; with none, it writes them itself
            // (checks alone: SQLite then has nothing to move from its express log).
            let leavingExpressable = express && readyMain > 0
            let smallActive = smallQueued.map { ContinuousClock.now - $0 < .milliseconds(Journal.smallActiveMilliseconds) } ?? false
            let smallReady = pending.contains { $0.isSmall && !$0.expressable && $0.bodies != nil }
            let smallWaiting = smallActive || smallReady
            let bulkRoom = smallWaiting ? bulkFactsWhileSmallWait : Journal.batchSizeMax
            var chosen: (taken: [Int], factCount: Int, bulkTaken: Int, route: AccountSet?) = ([], 0, 0, .empty)
            if let partition = expedited { chosen = collect(smallWaiting: true, bulkRoom: 0, expediting: partition) }
            if chosen.taken.isEmpty && smallReady && !express && !lastTookSmallOnly { chosen = collect(smallWaiting: true, bulkRoom: 0) }
            // Every small entry ready sits behind one of its accounts' bulk entries: an ordinary write.
            if chosen.taken.isEmpty { chosen = collect(smallWaiting: smallWaiting, bulkRoom: bulkRoom, leavingExpressable: leavingExpressable) }
            // What is ready waits behind small entries left to the express writer, which runs only
            // beside a bulk write: this writer takes them itself.
            if chosen.taken.isEmpty && leavingExpressable { chosen = collect(smallWaiting: smallWaiting, bulkRoom: bulkRoom) }
            guard !chosen.taken.isEmpty else {
                writing = false
                mainInFlight = .empty
                mainBulk = false
                return nil
            }
            mainInFlight = chosen.route
            mainBulk = chosen.bulkTaken > 0
            lastTookSmallOnly = chosen.bulkTaken == 0 && smallReady
            let written = batch(of: chosen.taken, factCount: chosen.factCount)
            writingFacts[0] = written.batch.facts
            return written
        }

        /// The entries a write takes (indices into `pending`), their facts, the bulk facts among
        /// them and the accounts they touch (nil: a fact of no single account). `bulkRoom` 0 takes
        /// no bulk entry at all; otherwise the first bulk entry always goes, whatever its size.
        /// `expediting`: that partition's entries only, bulk ones too, each clear of what it
        /// passes like a small one (other partitions' accounts are other accounts).
        /// `leavingExpressable`: no small entry the express writer takes.
        private mutating func collect(smallWaiting: Bool, bulkRoom: Int, expediting: Int? = nil, leavingExpressable: Bool = false)
            -> (taken: [Int], factCount: Int, bulkTaken: Int, route: AccountSet?) {
            var factCount = 0
            var taken: [Int] = []
            var bulkTaken = 0
            // What the entries passed over touch: later entries that share it wait for them.
            var passedAccounts = AccountSet()
            var passedShared = false
            var route: AccountSet? = .empty
            // Whether an entry may go ahead of one passed over: a small entry while small entries
            // wait; with express writes, any entry clear of those passed over, since this writer
            // leaves the small entries of one account to the express writer.
            let passing = smallWaiting || express
            // Whether the entry at `index` shares no account with those passed over.
            func clearOfPassed(_ index: Int) -> Bool { pending[index].route().map { passedAccounts.isDisjoint(with: $0) } ?? false }
            for index in pending.indices {
                if passedShared || factCount >= Journal.batchSizeMax { break }
                let inOrder = taken.count == index
                if !inOrder && !passing { break }
                let entry = pending[index]
                var take = false
                // Nothing that shares an account with the express writer's write under way, and
                // nothing of no single account beside it.
                let clearOfExpress = (expressInFlight ?? .empty).isEmpty
                    || (pending[index].route().map { expressInFlight!.isDisjoint(with: $0) } ?? false)
                if clearOfExpress, entry.bodies != nil, factCount == 0 || factCount + entry.facts.count <= Journal.batchSizeMax {
                    if let expediting {
                        take = outstanding[entry.sequence] == expediting
                            && (inOrder || clearOfPassed(index))
                    } else if entry.isSmall {
                        take = !(leavingExpressable && entry.expressable)
                            && (inOrder || clearOfPassed(index))
                    } else {
                        // The first bulk entry always goes, whatever its size: small entries
                        // arriving without end must not hold a report back for ever.
                        take = bulkRoom > 0 && (bulkTaken == 0 || bulkTaken + entry.facts.count <= bulkRoom)
                            && (inOrder || (express && clearOfPassed(index)))
                    }
                }
                // In order, the first entry left behind ends the batch.
                if !take && !passing { break }
                if take {
                    factCount += entry.facts.count
                    if !entry.isSmall { bulkTaken += entry.facts.count }
                    taken.append(index)
                    // What the express writer must keep clear of while this write is under way.
                    if express { if let accounts = pending[index].route() { route?.formUnion(accounts) } else { route = nil } }
                } else if let accounts = pending[index].route() {
                    passedAccounts.formUnion(accounts)
                } else {
                    passedShared = true
                }
            }
            return (taken, factCount, bulkTaken, route)
        }

        /// The express writer's next batch: ready small entries, in queue order, clear of every
        /// entry passed over before them and of the main writer's write under way; nil, and the
        /// express writer steps down, when there is none.
        mutating func takeExpress() -> (batch: EncodedBatch, sequences: [UInt64])? {
            guard failure == nil, let busy = mainInFlight else {
                expressWriting = false
                expressInFlight = .empty
                return nil
            }
            var passedAccounts = busy
            var factCount = 0
            var taken: [Int] = []
            var route = AccountSet()
            for index in pending.indices {
                let entry = pending[index]
                guard let accounts = pending[index].route() else { break }
                if entry.expressable, entry.bodies != nil, factCount + entry.facts.count <= Journal.expressFactsMax,
                   passedAccounts.isDisjoint(with: accounts) {
                    factCount += entry.facts.count
                    taken.append(index)
                    route.formUnion(accounts)
                } else {
                    passedAccounts.formUnion(accounts)
                }
            }
            guard !taken.isEmpty else {
                expressWriting = false
                expressInFlight = .empty
                return nil
            }
            expressInFlight = route
            let written = batch(of: taken, factCount: factCount)
            writingFacts[1] = written.batch.facts
            return written
        }

        /// Takes the entries at `taken` (ascending indices of `pending`) out of the queue, as one batch.
        private mutating func batch(of taken: [Int], factCount: Int) -> (batch: EncodedBatch, sequences: [UInt64]) {
            let last = taken[taken.count - 1]
            ready -= taken.count
            readyMain -= taken.count { !pending[$0].expressable }
            let sequences = taken.map { pending[$0].sequence }
            // Copied once into arrays of the right size; one entry is handed over as it is.
            var facts: [Fact] = [], bodies: [[UInt8]?] = []
            if taken.count == 1 {
                facts = pending[last].facts
                bodies = pending[last].bodies!
            } else {
                facts.reserveCapacity(factCount)
                bodies.reserveCapacity(factCount)
                for index in taken {
                    facts.append(contentsOf: pending[index].facts)
                    bodies.append(contentsOf: pending[index].bodies!)
                }
            }
            if taken.count == last + 1 {
                pending.removeFirst(taken.count)
            } else {
                for index in taken.reversed() { pending.remove(at: index) }
            }
            return (EncodedBatch(facts: facts, bodies: bodies), sequences)
        }
    }

    /// What a waiting caller is told: its facts are durable, or the journal failed.
    enum Signal {
        case durable
        case failed(TallyError)
    }

    private let store: any TallyStore
    private let state: Mutex<State>
    /// Whether the express writer writes small entries beside the main writer's write.
    private let express: Bool

    /// The store's position when the state this journal writes for was read from it (nil: not
    /// known), and the facts this journal has sent since, committed or not: while the store's
    /// position is their sum, no other process has written to it (a write that fails still
    /// takes its positions, and so counts). A snapshot is taken only then.
    public let startPosition: Int64?
    private let sent = Atomic<Int64>(0)

    /// The position the store is at if only this journal wrote to it since `startPosition`.
    public var positionIfAlone: Int64? { startPosition.map { $0 + sent.load(ordering: .acquiring) } }

    /// `bulkFactsWhileSmallWait` nil: the store's default (`bulkFactsWhileSmallWaitDefault`).
    public init(store: any TallyStore, bulkFactsWhileSmallWait: Int? = nil, startPosition: Int64? = nil) {
        let bulkFactsWhileSmallWait = bulkFactsWhileSmallWait ?? Journal.bulkFactsWhileSmallWaitDefault(concurrentWrites: store.concurrentWrites)
        precondition(Journal.bulkFactsWhileSmallWaitRange.contains(bulkFactsWhileSmallWait), "a bulk budget within its range")
        self.startPosition = startPosition
        self.store = store
        express = store.expressWrites
        state = Mutex(State(bulkFactsWhileSmallWait: bulkFactsWhileSmallWait, express: store.expressWrites))
    }

    /// Queues facts; returns the ticket to wait on. Called under the engine's lock, so each
    /// account's facts queue in the order in which they were applied. `bulk`: the facts are a
    /// bulk operation's, never written ahead of others however few they are.
    public func enqueue(_ facts: [Fact], bulk: Bool = false, partition: Int = Journal.everyPartition) -> Ticket {
        precondition(!facts.isEmpty, "an entry carries facts")
        let plain = !facts.contains(where: StreamingJSONEncoder.needsBody)
        // A small entry's accounts are worked out now, to know which writer takes it.
        let accounts: AccountSet?? = express && !bulk && facts.count <= Journal.smallEntryFactsMax ? .some(AccountSet.of(facts)) : nil
        let expressable = accounts.map { $0 != nil } ?? false
        return state.withLock { state in
            state.enqueuedThrough += 1
            let sequence = state.enqueuedThrough
            let entry = Entry(sequence: sequence, facts: facts, bodies: plain ? Array(repeating: nil, count: facts.count) : nil, bulk: bulk,
                              expressable: expressable, accounts: accounts)
            state.pending.append(entry)
            state.outstanding[sequence] = partition
            state.outstandingByPartition[partition, default: 0] += 1
            if plain {
                state.ready += 1
                if !expressable { state.readyMain += 1 }
            }
            if entry.isSmall { state.smallQueued = .now }
            return Ticket(sequence: sequence, toEncode: plain ? [] : facts, bulk: !entry.isSmall)
        }
    }

    /// The partition of an entry of facts of several partitions (a shared operation's).
    public static let everyPartition = -1

    /// Whether no entry of `partition` (nor of several partitions) is on its way to the store.
    public func isQuiet(partition: Int) -> Bool {
        state.withLock { state in
            state.failure == nil && state.outstandingByPartition[partition, default: 0] == 0
                && state.outstandingByPartition[Journal.everyPartition, default: 0] == 0
        }
    }

    /// Returns once `partition` is quiet (`isQuiet`), for a caller that keeps the partition from
    /// queueing more; throws if the journal fails first. Meanwhile the writer takes the
    /// partition's entries ahead of other partitions', so the wait is for them and not for the
    /// whole queue. It looks every `quietPollMilliseconds`: a waiter of its own per entry would
    /// cost every write a look for it.
    public func waitUntilQuiet(partition: Int) async throws(TallyError) {
        state.withLock { $0.expedited = partition }
        defer { state.withLock { $0.expedited = nil } }
        while !isQuiet(partition: partition) {
            if let failure { throw failure }
            try? await Task.sleep(for: .milliseconds(Journal.quietPollMilliseconds))
        }
    }

    /// The partition a wait for quiet has the writer take first, if any.
    public var expeditedPartition: Int? { state.withLock { $0.expedited } }

    /// How often a wait for a quiet partition looks.
    public static let quietPollMilliseconds = 2

    /// Entries queued and not yet committed: the journal's queue depth.
    public var outstandingEntries: Int { state.withLock { $0.outstanding.count } }

    /// Why the journal stopped, if it did: a write the store refused or a race another process won.
    /// A failed journal writes nothing more; the engine reloads from the store and starts a new one.
    public var failure: TallyError? { state.withLock { $0.failure } }

    /// The failure that stopped the journal for good (the store refused a write or could not be
    /// read), not a lost race, which the caller reloads and retries: memory may then hold facts
    /// the store did not take.
    public var stoppedBy: TallyError? { failure.flatMap { $0.code == .storeConflict ? nil : $0 } }

    /// The accounts whose facts may not be in the store: those of the writes under way or failed
    /// and of every entry still queued (after a failure, the entries queued since too). Nil when
    /// one of those facts is not one account's (a shared fact): anything may then be ahead of the
    /// store. What a reload after a failure reloads.
    public var undurableAccounts: Set<String>? {
        state.withLock { state in
            var accounts = Set<String>()
            for facts in state.writingFacts {
                guard let found = FactRoute.accounts(of: facts) else { return nil }
                accounts.formUnion(found)
            }
            for entry in state.pending {
                guard let found = FactRoute.accounts(of: entry.facts) else { return nil }
                accounts.formUnion(found)
            }
            return accounts
        }
    }

    /// The events a failed batch found already stored: the reload puts them back into the index.
    public var knownAfterConflict: [TallyState.UsageKey: UsageEntry] { state.withLock { $0.known } }

    /// Encodes the ticket's facts and lets the writer take them, without waiting: what a sliced
    /// operation does between its slices, so that earlier slices are written while later ones are
    /// applied. The ticket must still be waited on.
    public func submit(_ ticket: Ticket) {
        if !ticket.toEncode.isEmpty { attach(ticket) }
        startWriters(state.withLock { ($0.startWriter(), express && $0.startExpress()) }, carryingBulk: ticket.bulk)
    }

    private func startWriters(_ start: (main: Bool, express: Bool), carryingBulk: Bool) {
        if start.main { startDraining(carryingBulk: carryingBulk) }
        if start.express { startExpress() }
    }

    private func startExpress() {
        Task(priority: Urgency.decision) { await self.drain(express: true) }
    }

    /// Encodes the ticket's facts (unless submitted already), then returns once they are in the store.
    public func waitDurable(_ ticket: Ticket, submitted: Bool = false) async throws(TallyError) {
        if !submitted, !ticket.toEncode.isEmpty { attach(ticket) }
        if let now = state.withLock({ $0.answer(for: ticket.sequence) }) { return try Journal.outcome(now) }
        let signal = await withCheckedContinuation { continuation in
            let (now, start): (Signal?, (Bool, Bool)) = state.withLock { state in
                if let now = state.answer(for: ticket.sequence) { return (now, (false, false)) }
                state.waiters[ticket.sequence] = continuation
                return (nil, (state.startWriter(), express && state.startExpress()))
            }
            if let now { continuation.resume(returning: now) }
            startWriters(start, carryingBulk: ticket.bulk)
        }
        try Journal.outcome(signal)
    }

    /// Nobody cancels the writer: a caller that is cancelled (a client hung up) must not fail
    /// every other waiter's batch. `carryingBulk`: what it is started for is bulk work
    /// (`mainPriority`).
    private func startDraining(carryingBulk: Bool) {
        Task(priority: mainPriority(carryingBulk: carryingBulk)) { await self.drain() }
    }

    /// The main writer's priority: that of what it carries. On a store with express writes, while
    /// it writes bulk facts it runs at the default priority (`mainWriterBulkPriority`), beside the
    /// bulk work they come from: the checks waiting beside a bulk write are the express writer's,
    /// and a main writer at a decision's priority took the decision threads (two, one a core) from
    /// them while it gathered and copied thousands of facts. While it writes checks alone it runs
    /// at a decision's priority (`Urgency`), ahead of the callers that wait on it. On a store
    /// without express writes it writes every check beside bulk work too, and keeps a decision's
    /// priority. When the batch it takes carries the other kind, the writer hands its role and the
    /// batch to a task of the other priority (`drain`).
    private func mainPriority(carryingBulk: Bool) -> TaskPriority {
        express && carryingBulk ? Journal.mainWriterBulkPriority : Urgency.decision
    }

    /// The main writer's priority while it carries bulk facts, on a store with express writes.
    static let mainWriterBulkPriority = TaskPriority.medium

    private static func outcome(_ signal: Signal) throws(TallyError) {
        if case .failed(let error) = signal { throw error }
    }

    /// Stops the journal with `failure` (the store could not be read either): nothing more is
    /// written, and every waiter and later caller hears it.
    public func stop(_ failure: TallyError) {
        let waiting = state.withLock { state in
            let known = state.known
            return state.fail(failure, known: known)
        }
        for continuation in waiting { continuation.resume(returning: .failed(failure)) }
    }

    /// Fails the journal and tells every waiter.
    private func fail(_ failure: TallyError, known: [TallyState.UsageKey: UsageEntry] = [:]) {
        for continuation in state.withLock({ $0.fail(failure, known: known) }) { continuation.resume(returning: .failed(failure)) }
    }

    /// Encodes a ticket's facts and hands the bodies to its queued entry.
    private func attach(_ ticket: Ticket) {
        let bodies: [[UInt8]?]
        do {
            bodies = try StreamingJSONEncoder.bodies(of: ticket.toEncode)
        } catch {
            let failure = TallyError(.internalError, "a fact could not be encoded: \(error)")
            fail(failure)
            return
        }
        state.withLock { state in
            // Entries are in ticket order; the writer never takes one whose bodies are missing, so
            // it is still queued unless the journal has failed.
            var low = 0, high = state.pending.count
            while low < high {
                let middle = (low + high) / 2
                if state.pending[middle].sequence < ticket.sequence { low = middle + 1 } else { high = middle }
            }
            guard low < state.pending.count, state.pending[low].sequence == ticket.sequence, state.pending[low].bodies == nil else { return }
            state.pending[low].bodies = bodies
            state.ready += 1
            if !state.pending[low].expressable { state.readyMain += 1 }
        }
    }

    /// A batch a writer took: its facts, its entries' sequences, and whether it carries bulk facts.
    private typealias Taken = (batch: EncodedBatch, sequences: [UInt64], bulk: Bool)

    /// Writes batches while there are entries it can take, answering each batch's waiters; the
    /// role ends with the queue (`take` gives it up). `taken`: a batch handed over, written first.
    private func drain(express: Bool = false, taken first: Taken? = nil) async {
        var first = first
        while let (batch, sequences, bulk) = first ?? state.withLock({ state -> Taken? in
            if express { return state.takeExpress().map { ($0.batch, $0.sequences, false) } }
            guard let taken = state.take() else { return nil }
            return (taken.batch, taken.sequences, state.mainBulk)
        }) {
            first = nil
            // The main writer writes at the priority of what it carries: from bulk facts to checks
            // alone and back, it hands its role and the batch to a task of the other priority.
            if !express, self.express, Task.currentPriority != mainPriority(carryingBulk: bulk) {
                let taken = (batch, sequences, bulk)
                Task(priority: mainPriority(carryingBulk: bulk)) { await self.drain(taken: taken) }
                return
            }
            // Checks left waiting (or behind this write's accounts before it) go beside a bulk write.
            if !express, self.express, state.withLock({ $0.startExpress() }) { startExpress() }
            sent.add(Int64(batch.count), ordering: .releasing)
            do {
                try await (express ? store.appendExpress(batch) : store.append(batch))
            } catch let conflict as StoreConflict {
                return fail(TallyError(.storeConflict, "another process won a race for the same pack or event: \(conflict.reason)"),
                            known: conflict.known)
            } catch {
                return fail(TallyError(.storeUnavailable, "the store refused a write; Tally reloads from the store once it answers: \(error)"))
            }
            let ready: [CheckedContinuation<Signal, Never>] = state.withLock { state in
                state.writingFacts[express ? 1 : 0] = []
                if !express {
                    state.mainInFlight = .empty
                    state.mainBulk = false
                }
                var ready: [CheckedContinuation<Signal, Never>] = []
                for sequence in sequences {
                    if let partition = state.outstanding.removeValue(forKey: sequence) { state.outstandingByPartition[partition]! -= 1 }
                    if let waiter = state.waiters.removeValue(forKey: sequence) { ready.append(waiter) }
                }
                return ready
            }
            for continuation in ready { continuation.resume(returning: .durable) }
            // The main writer may have stepped down for entries that waited on this write.
            if express { startMainAfterExpress() }
        }
        if express { startMainAfterExpress() }
    }

    /// Starts the main writer if it stepped down for entries that waited on the express writer's
    /// write, at the priority of what is queued.
    private func startMainAfterExpress() {
        let start: Bool? = state.withLock { state in state.startWriter() ? state.pending.contains { !$0.isSmall } : nil }
        if let carryingBulk = start { startDraining(carryingBulk: carryingBulk) }
    }
}
