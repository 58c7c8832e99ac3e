import Synchronization
import TallyCore

/// Where facts are kept. A store appends batches of facts atomically and in order, and gives them
/// all back at start, from which the engine rebuilds its state. The durable stores (SQLite,
/// PostgreSQL) also spread facts into tables whose constraints guard the invariants.
public protocol TallyStore: Sendable {
    /// Every fact appended so far, in order (for tests and small stores: it holds them all at once).
    func loadFacts() async throws -> [Fact]
    /// Applies to `state`, in order and each with its position, every shared fact
    /// (`FactRoute.isShared`) and every other fact after `position`, and returns it: how the engine
    /// rebuilds at start, its partitions loaded from snapshots (each skips its own facts at or
    /// before its snapshot's position). After 0: every fact. The durable stores stream their usage
    /// rows rather than holding them all.
    func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State
    /// The position of the latest fact the store has given a place to: every fact committed so
    /// far is at or before it, and every fact appended later comes after it.
    func position() async throws -> Int64
    /// Keeps a partition's snapshot, in one transaction, and forgets that partition's older ones
    /// past the newest `StoredSnapshot.keptPerPartition`.
    func saveSnapshot(_ snapshot: StoredSnapshot) async throws
    /// The snapshots kept, newest first within each partition (`rank` nil), or each partition's
    /// snapshot at `rank` (0: its newest; 1: the one before): a start reads the newest only, and
    /// the one before only for a partition whose newest cannot be used. `partitions`: those
    /// partitions' only (nil: every partition's), for a reload of a few.
    func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot]
    /// Every stored usage event recounted into monthly totals as it streams past: what the audit
    /// compares the state's totals with, since the state keeps only recent events' ids.
    func recountUsage(zone: Zone) async throws -> UsageRecount
    /// The stored events among `keys`, as stored: what the engine puts back into its index when
    /// an id older than the index may have come back.
    func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry]
    /// Appends a batch atomically: all of it is kept, or none (and the call throws).
    func append(_ batch: EncodedBatch) async throws
    /// Appends a small batch beside a bulk `append` under way (`expressWrites`), as atomically and
    /// as durably. The caller sends nothing here that shares an account with a batch not yet
    /// written, and nothing of a batch's accounts to `append` until this returns.
    func appendExpress(_ batch: EncodedBatch) async throws
    /// Whether `appendExpress` runs beside `append` instead of after it: the journal then writes
    /// small operations' facts beside a bulk write (PostgreSQL takes two transactions side by
    /// side; SQLite writes them to its express log).
    var expressWrites: Bool { get }
    /// A short name for reports ("memory", "sqlite", "postgres").
    var kind: String { get }
    /// Whether two appends may run side by side, each its own transaction (PostgreSQL): the journal
    /// then writes small operations' facts beside a bulk write instead of after it.
    var concurrentWrites: Bool { get }

    /// The answer kept for an idempotency key, if any. Answers live beside the facts, not among
    /// them: they are a cache of replies, pruned after a day, not part of what Tally knows.
    func answer(for key: String) async throws -> StoredAnswer?
    /// Keeps an answer; a key answered before keeps its first answer.
    func saveAnswer(_ answer: StoredAnswer) async throws
    /// Forgets answers made before `instant`.
    func pruneAnswers(before instant: Instant) async throws

    /// The number of partitions the data is split into, as recorded with it (nil: none recorded yet).
    func recordedPartitionCount() async throws -> Int?
    /// Records the number of partitions; a store that has one recorded keeps it.
    func recordPartitionCount(_ count: Int) async throws

    /// The console session kept under this digest of its cookie, if any. Sessions live beside the
    /// facts, like answers: a restart of the server keeps its customers signed in.
    func consoleSession(digest: [UInt8]) async throws -> StoredSession?
    /// Keeps a console session (a digest kept before keeps its first session).
    func saveConsoleSession(_ session: StoredSession) async throws
    /// Forgets one console session: signed out, or its key revoked.
    func endConsoleSession(digest: [UInt8]) async throws
    /// Forgets the console sessions that expired before `instant`.
    func pruneConsoleSessions(expiredBefore instant: Instant) async throws
}

extension TallyStore {
    /// Every snapshot kept, newest first within each partition.
    public func snapshots() async throws -> [StoredSnapshot] { try await snapshots(rank: nil, partitions: nil) }

    /// Every partition's snapshots at `rank` (nil: all of them).
    public func snapshots(rank: Int?) async throws -> [StoredSnapshot] { try await snapshots(rank: rank, partitions: nil) }

    /// One writer at a time unless a store says otherwise (SQLite has one writer; the memory
    /// store is for tests and the simulator).
    public var concurrentWrites: Bool { false }

    /// No express writes unless a store says so: small batches go through `append`.
    public var expressWrites: Bool { false }
    public func appendExpress(_ batch: EncodedBatch) async throws { try await append(batch) }

    /// Encodes the facts here and appends them: for callers outside the journal (tests, tools).
    public func append(_ facts: [Fact]) async throws {
        try await append(EncodedBatch(encoding: facts))
    }
}

/// A batch of facts on its way to a store, with each fact's JSON body (nil for a usage fact, which
/// is stored as a row). Encoding needs no database and was most of a bill run's write, so the
/// journal has each caller encode its own facts while the single writer writes earlier ones.
public struct EncodedBatch: Sendable {
    public let facts: [Fact]
    public let bodies: [[UInt8]?]

    public init(facts: [Fact], bodies: [[UInt8]?]) {
        precondition(facts.count == bodies.count, "a body for each fact")
        self.facts = facts
        self.bodies = bodies
    }

    public init(encoding facts: [Fact]) throws {
        self.init(facts: facts, bodies: try StreamingJSONEncoder.bodies(of: facts))
    }

    /// The keys of the usage events among the facts: what a store looks up when it refuses an
    /// event counted before.
    public var usageKeys: [TallyState.UsageKey] {
        facts.compactMap { fact in
            guard case .usageRecorded(let record, _) = fact else { return nil }
            return TallyState.usageKey(account: record.account, id: record.id)
        }
    }

    /// The calls the batch's usage events draw on each pack, summed, in the packs' order: what a
    /// store charges with one update a pack a batch.
    public var drawsByPack: [(pack: String, calls: Int64)] {
        var drawn: [String: Int64] = [:]
        for fact in facts {
            guard case .usageRecorded(let record, _) = fact else { continue }
            for draw in record.settlement.draws { drawn[draw.pack, default: 0] += draw.calls }
        }
        return drawn.sorted { $0.key < $1.key }.map { (pack: $0.key, calls: $0.value) }
    }

    public var count: Int { facts.count }
    public var isEmpty: Bool { facts.isEmpty }
}

/// A reply kept for an idempotency key: what the first request was (its fingerprint) and what it
/// was told, byte for byte.
public struct StoredAnswer: Sendable, Hashable {
    public let key: String
    public let fingerprint: [UInt8]
    public let status: Int
    public let contentType: String
    public let body: [UInt8]
    public let created: Instant

    public init(key: String, fingerprint: [UInt8], status: Int, contentType: String, body: [UInt8], created: Instant) {
        self.key = key
        self.fingerprint = fingerprint
        self.status = status
        self.contentType = contentType
        self.body = body
        self.created = created
    }
}

/// A console session as kept: the SHA-256 digest of its cookie (never the cookie itself, so a copy
/// of the database signs nobody in), the key it was opened with, its CSRF token and when it ends.
public struct StoredSession: Sendable, Hashable {
    public let digest: [UInt8]
    public let keyID: String
    public let csrf: String
    public let expires: Instant

    public init(digest: [UInt8], keyID: String, csrf: String, expires: Instant) {
        self.digest = digest
        self.keyID = keyID
        self.csrf = csrf
        self.expires = expires
    }
}

/// Keeps facts in memory: for unit tests and the in-process simulator. Nothing survives the process.
/// Like the durable stores, it refuses a batch that counts an event id a second time.
public final class InMemoryStore: TallyStore {
    private let facts = Mutex<(all: [Fact], usage: [TallyState.UsageKey: UsageEntry])>(([], [:]))
    public let kind = "memory"

    public init() {}

    public func loadFacts() async throws -> [Fact] { facts.withLock { $0.all } }

    public func append(_ batch: EncodedBatch) async throws {
        try facts.withLock { facts in
            var added: [TallyState.UsageKey: UsageEntry] = [:], known: [TallyState.UsageKey: UsageEntry] = [:]
            for fact in batch.facts {
                guard case .usageRecorded(let record, _) = fact else { continue }
                let key = TallyState.usageKey(account: record.account, id: record.id)
                if let stored = facts.usage[key] { known[key] = stored } else { added[key] = UsageEntry(record) }
            }
            guard known.isEmpty else { throw StoreConflict(reason: "\(known.count) event ids of the batch were counted before", known: known) }
            facts.all.append(contentsOf: batch.facts)
            facts.usage.merge(added) { first, _ in first }
        }
    }

    public func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] {
        facts.withLock { facts in
            var found: [TallyState.UsageKey: UsageEntry] = [:]
            for key in keys { found[key] = facts.usage[key] }
            return found
        }
    }

    /// How many facts are kept.
    public var count: Int { facts.withLock { $0.all.count } }

    private let answers = Mutex<[String: StoredAnswer]>([:])

    public func answer(for key: String) async throws -> StoredAnswer? { answers.withLock { $0[key] } }

    public func saveAnswer(_ answer: StoredAnswer) async throws {
        answers.withLock { answers in if answers[answer.key] == nil { answers[answer.key] = answer } }
    }

    public func pruneAnswers(before instant: Instant) async throws {
        answers.withLock { answers in answers = answers.filter { $0.value.created >= instant } }
    }

    private let kept = Mutex<[Int: [StoredSnapshot]]>([:])

    public func saveSnapshot(_ snapshot: StoredSnapshot) async throws {
        kept.withLock { kept in
            var list = kept[snapshot.partition, default: []].filter { $0.position != snapshot.position }
            list.append(snapshot)
            list.sort { $0.position > $1.position }
            kept[snapshot.partition] = Array(list.prefix(StoredSnapshot.keptPerPartition))
        }
    }

    public func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot] {
        kept.withLock { kept in
            kept.keys.sorted().filter { partitions?.contains($0) ?? true }.flatMap { partition in
                let list = kept[partition]!
                return rank.map { list.dropFirst($0).prefix(1) } ?? list[...]
            }
        }
    }

    private let partitions = Mutex<Int?>(nil)

    public func recordedPartitionCount() async throws -> Int? { partitions.withLock { $0 } }

    public func recordPartitionCount(_ count: Int) async throws { partitions.withLock { $0 = $0 ?? count } }

    private let sessions = Mutex<[[UInt8]: StoredSession]>([:])

    public func consoleSession(digest: [UInt8]) async throws -> StoredSession? { sessions.withLock { $0[digest] } }

    public func saveConsoleSession(_ session: StoredSession) async throws {
        sessions.withLock { sessions in if sessions[session.digest] == nil { sessions[session.digest] = session } }
    }

    public func endConsoleSession(digest: [UInt8]) async throws { sessions.withLock { _ = $0.removeValue(forKey: digest) } }

    public func pruneConsoleSessions(expiredBefore instant: Instant) async throws {
        sessions.withLock { sessions in sessions = sessions.filter { $0.value.expires >= instant } }
    }
}

/// A batch that lost a race with another process (a pack overdrawn, an event id counted twice):
/// it was rolled back whole. The engine reloads its state from the store and retries.
public struct StoreConflict: Error, Sendable {
    public let reason: String
    /// Events of the batch that the store already held (an id sent again), as stored: the engine
    /// puts them back into its index before retrying, however old they are.
    public let known: [TallyState.UsageKey: UsageEntry]
    public init(reason: String, known: [TallyState.UsageKey: UsageEntry] = [:]) {
        self.reason = reason
        self.known = known
    }
}

extension TallyStore {
    /// Applies every fact appended so far, in order, to `state` and returns it.
    public func rebuild<State: FactFolding>(_ state: State) async throws -> State { try await rebuild(state, after: 0) }
}

extension InMemoryStore {
    /// A fact's position is its place in the list, from 1.
    public func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State {
        var state = state
        for (offset, fact) in try await loadFacts().enumerated() where Int64(offset + 1) > position || FactRoute.isShared(fact) {
            state.fold(fact, at: Int64(offset + 1))
        }
        return state
    }

    public func position() async throws -> Int64 { Int64(count) }
}

extension TallyStore {

    public func recountUsage(zone: Zone) async throws -> UsageRecount {
        var recount = UsageRecount(zone: zone)
        for case .usageRecorded(let record, _) in try await loadFacts() {
            recount.add(record)
        }
        return recount
    }
}
