import Foundation
import GRDB
import GRDBSQLite
import CSQLiteSettings
import Synchronization
import TallyCore
import TallyStore

/// The embedded store: one SQLite file in WAL mode with `synchronous = FULL`, so a committed batch
/// survives a crash or a power cut.
///
/// SQLite has one writer a file, so a second file beside it, the express log (`<path>-express`),
/// takes small batches (a gateway's checks, a top-up) while a bulk batch is being written to the
/// main file: a check is durable after its own short commit, not after the report's write under
/// way (`appendExpress`). Each batch the log commits is moved into the main file at the start of
/// the next main write, in that write's transaction, with the positions it was given; the log keeps
/// it until then, and a start moves whatever a crash left there. Readers of the main file move
/// what is waiting first, so they never miss a committed batch.
///
/// Facts are kept in order under one sequence. Usage events, the bulk of all facts, are compact rows
/// of `usage_events` (primary key (account, id): the database refuses to count an event twice); every
/// other fact is a JSON row of `facts`. Projections guard the invariants a second time: accounts,
/// packs (`CHECK (left >= 0 AND left <= size)`), balanced ledger transactions (a trigger), bills, and
/// append-only triggers on facts and posted ledger entries.
public final class SQLiteStore: TallyStore {
    public let kind = "sqlite"
    /// Small batches go to the express log beside the main file's write under way.
    public let expressWrites = true
    public let path: String
    private let pool: DatabasePool
    private let nextSequence: Mutex<Int64>
    /// A connection of its own that copies committed pages from the WAL into the file while the
    /// writer goes on writing: checkpoints were a third of the writer's time in a bill run, on
    /// the one thread every write waits for.
    private let checkpointer: DatabaseQueue
    /// Whether anything was committed since the last checkpoint.
    private let committed = Atomic<Bool>(false)
    /// The express log, and a connection of its own for its checkpoints, as the main file has.
    private let express: DatabaseQueue
    private let expressCheckpointer: DatabaseQueue
    private let expressCommitted = Atomic<Bool>(false)
    /// Batches the express log committed and the main file does not hold yet, in the order they
    /// committed, each with its first position; and the positions moved since, which the log's
    /// next commit deletes.
    private let expressed = Mutex<(waiting: [(first: Int64, batch: EncodedBatch)], moved: [ClosedRange<Int64>])>(([], []))
    /// The express log's path for a store at `path`.
    public static func expressPath(_ path: String) -> String { path + "-express" }
    /// Every file a store at `path` keeps: the main file, the express log, and their WAL and
    /// shared-memory files.
    public static func files(_ path: String) -> [String] {
        [path, expressPath(path)].flatMap { [$0, $0 + "-wal", $0 + "-shm"] }
    }
    /// The writer's page cache, in KiB.
    static let cacheKiB = 131_072
    /// How often the checkpointer looks for committed pages.
    static let checkpointInterval = Duration.milliseconds(50)
    /// WAL pages after which the writer checkpoints itself (about 256 MB of 4 KiB pages): the
    /// backstop, should the checkpointer fall behind, and what resets a WAL that a writer never
    /// leaves quiet long enough for the checkpointer to finish.
    static let checkpointPages = 65_536

    /// The dispatch quality of service of each connection's queue, which on Linux is a thread's
    /// nice value: libdispatch runs each class on threads of its own (user-interactive -4, default
    /// 0, utility +2, background +10). The express log's writer commits the checks that wait
    /// beside a bulk write; it goes ahead of everything else for a core. The main file's
    /// connections (the writer's bulk writes, the readers' reloads) and both checkpointers go
    /// after the request threads. With every queue at the default, a check's commit to the log
    /// waited for a core behind the main writer's inserts (docs/decisions.md, "Threads by
    /// urgency").
    static let expressQoS = DispatchQoS.userInteractive
    static let mainQoS = DispatchQoS.utility
    static let checkpointerQoS = DispatchQoS.utility

    /// SQLite's settings for the whole process, made once, before the first connection opens:
    /// memory statistics off (with them on, each of SQLite's allocations took a process-wide lock;
    /// ingest ran 8-15% faster without). A connection opened earlier (by GRDB used directly, in a
    /// test) leaves the setting as it was, which changes speed, not behaviour.
    private static let processSettings: Void = {
        _ = tally_sqlite_disable_memory_statistics()
    }()

    /// Opens (creating if needed) and migrates the database at `path`.
    public init(path: String) throws {
        _ = SQLiteStore.processSettings
        self.path = path
        var configuration = SQLiteStore.durableWAL()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA foreign_keys = ON")
            // The unique index on (account, id) takes inserts all over its pages: a writer's page
            // cache that holds it spares a read per insert (the default is 2 MB). Readers scan,
            // and keep the default.
            if !db.configuration.readonly { try db.execute(sql: "PRAGMA cache_size = -\(SQLiteStore.cacheKiB)") }
        }
        configuration.qos = SQLiteStore.mainQoS
        pool = try DatabasePool(path: path, configuration: configuration)
        try SQLiteStore.migrator.migrate(pool)
        var expressConfiguration = SQLiteStore.durableWAL()
        expressConfiguration.qos = SQLiteStore.checkpointerQoS
        // The writer reads the main file in its own transaction, as the attached database `store`.
        var expressWriter = expressConfiguration
        expressWriter.qos = SQLiteStore.expressQoS
        expressWriter.prepareDatabase { db in try db.execute(sql: "ATTACH DATABASE ? AS store", arguments: [path]) }
        let express = try DatabaseQueue(path: SQLiteStore.expressPath(path), configuration: expressWriter)
        try express.write { db in try db.execute(sql: SQLiteStore.expressSchema) }
        try SQLiteStore.recover(from: express, into: pool)
        self.express = express
        let last = try pool.read { db in
            try Int64.fetchOne(db, sql: "SELECT MAX(s) FROM (SELECT MAX(seq) AS s FROM facts UNION ALL SELECT MAX(seq) FROM usage_events)")
        }
        nextSequence = Mutex((last ?? 0) + 1)
        configuration.qos = SQLiteStore.checkpointerQoS
        checkpointer = try DatabaseQueue(path: path, configuration: configuration)
        expressCheckpointer = try DatabaseQueue(path: SQLiteStore.expressPath(path), configuration: expressConfiguration)
        Task.detached(priority: .utility) { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: SQLiteStore.checkpointInterval)
                guard let store = self else { return }
                // Checks alone bring no main write to move them: they are moved here. A failure
                // shows at the next main write or read, which moves them first.
                if store.moveDue() { try? await store.moveExpressed() }
                await store.checkpointIfCommitted()
            }
        }
    }

    /// Both files' settings: WAL with `synchronous = FULL`, so a commit is flushed before it is
    /// acknowledged. The checkpointer copies pages beside the writer; the writer checkpoints only
    /// past `checkpointPages` (the default, 1,000, made it copy most pages back after every commit).
    static func durableWAL() -> Configuration {
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA wal_autocheckpoint = \(SQLiteStore.checkpointPages)")
        }
        return configuration
    }

    /// The bytes the writing connection's page cache holds now (SQLite's `SQLITE_DBSTATUS_CACHE_USED`):
    /// what the bench takes from the process's resident memory to tell the store's share from the
    /// engine's.
    public func writerPageCacheBytes() async throws -> Int {
        try await pool.writeWithoutTransaction { db in
            var current: Int32 = 0, highest: Int32 = 0
            sqlite3_db_status(db.sqliteConnection, SQLITE_DBSTATUS_CACHE_USED, &current, &highest, 0)
            return Int(current)
        }
    }

    /// Copies what was committed since the last time into the database file, without waiting for
    /// (or holding up) the writer or readers: a passive checkpoint. Pages a reader still needs
    /// stay in the WAL for the next one.
    func checkpointIfCommitted() async {
        if committed.exchange(false, ordering: .relaxed) { await SQLiteStore.checkpoint(checkpointer) }
        if expressCommitted.exchange(false, ordering: .relaxed) { await SQLiteStore.checkpoint(expressCheckpointer) }
    }

    private static func checkpoint(_ connection: DatabaseQueue) async {
        try? await connection.writeWithoutTransaction { db in
            _ = sqlite3_wal_checkpoint_v2(db.sqliteConnection, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
        }
    }

    // MARK: The express log

    /// The express log's tables: the main file's facts and usage rows as they are read back, with
    /// none of its projections or guards (those run when a batch is moved into the main file).
    static let expressSchema = """
        CREATE TABLE IF NOT EXISTS facts (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, body BLOB NOT NULL);
        CREATE TABLE IF NOT EXISTS usage_events (
            seq INTEGER PRIMARY KEY, account TEXT NOT NULL, id TEXT NOT NULL, api TEXT NOT NULL, edition TEXT,
            calls INTEGER NOT NULL, at INTEGER NOT NULL, recorded INTEGER NOT NULL, free INTEGER NOT NULL,
            pack INTEGER NOT NULL, postpaid INTEGER NOT NULL, refused INTEGER NOT NULL, refusal TEXT,
            draws TEXT NOT NULL, txn TEXT
        );
        CREATE UNIQUE INDEX IF NOT EXISTS usage_events_key ON usage_events(id, account);
        """

    /// Deletes the facts at `positions` from the express log (its own tables, on a connection
    /// that may have the main file attached).
    static func forget(_ positions: ClosedRange<Int64>, inLog db: Database) throws {
        for table in ["facts", "usage_events"] {
            try db.execute(sql: "DELETE FROM main.\(table) WHERE seq BETWEEN ? AND ?", arguments: [positions.lowerBound, positions.upperBound])
        }
    }

    /// Every file a store at `path` keeps, removed (those there are).
    public static func removeFiles(at path: String) {
        for file in files(path) { try? FileManager.default.removeItem(atPath: file) }
    }

    /// Whether the main file holds the fact at position `seq`.
    static func holds(_ seq: Int64, _ db: Database) throws -> Bool {
        try Bool.fetchOne(db, sql: "SELECT EXISTS (SELECT 1 FROM facts WHERE seq = ?1) OR EXISTS (SELECT 1 FROM usage_events WHERE seq = ?1)",
                          arguments: [seq]) ?? false
    }

    /// Moves into the main file every fact the express log holds and the main file does not (a
    /// crash came between a batch's commit to the log and its move), in one transaction, then
    /// empties the log.
    static func recover(from express: DatabaseQueue, into pool: DatabasePool) throws {
        let logged: [(Int64, Fact)] = try express.read { db in
            var logged: [(Int64, Fact)] = []
            try SQLiteStore.forEachFact(db) { logged.append(($0, $1)) }
            return logged
        }
        guard let last = logged.last?.0 else { return }
        try pool.write { db in
            // Runs of consecutive positions the main file lacks, each written as one batch.
            var runs: [(first: Int64, facts: [Fact])] = []
            for (seq, fact) in logged where try !SQLiteStore.holds(seq, db) {
                if let run = runs.last, run.first + Int64(run.facts.count) == seq {
                    runs[runs.count - 1].facts.append(fact)
                } else {
                    runs.append((seq, [fact]))
                }
            }
            for run in runs { try SQLiteStore.write(try EncodedBatch(encoding: run.facts), firstSequence: run.first, db: db) }
        }
        try express.write { db in try SQLiteStore.forget(Int64.min...last, inLog: db) }
    }

    /// Writes a small batch to the express log, beside the main file's write under way; it is
    /// moved into the main file by the next main write (or read). The journal sends each account's
    /// batches here only after everything of that account before them is written, and writes
    /// nothing of those accounts to the main file until this returns, so each account's facts
    /// keep their order in the main file.
    public func appendExpress(_ batch: EncodedBatch) async throws {
        guard !batch.isEmpty else { return }
        let first = nextSequence.withLock { next in
            defer { next += Int64(batch.count) }
            return next
        }
        // What was moved since the last commit leaves the log in this one.
        let moved = expressed.withLock { state in
            defer { state.moved.removeAll() }
            return state.moved
        }
        let keys = batch.usageKeys
        do {
            // Deferred: an immediate transaction would take the attached main file's write lock
            // too, and wait for the write under way there.
            try await express.writeWithoutTransaction { db in try db.inTransaction(.deferred) {
                for range in moved { try SQLiteStore.forget(range, inLog: db) }
                // The main file's unique index is not there to refuse an event counted before, so
                // it is looked up here: in the log, and in the main file, attached (a WAL reader's
                // snapshot, which does not wait for the write under way; that write shares no
                // account with this batch). Everything moved out of the log was committed to the
                // main file first.
                if !keys.isEmpty {
                    var known = try SQLiteStore.storedEntries(keys, db)
                    known.merge(try SQLiteStore.storedEntries(keys, db, schema: "store")) { logged, _ in logged }
                    if !known.isEmpty { throw StoreConflict(reason: "\(known.count) event ids of the batch were counted before", known: known) }
                }
                try SQLiteStore.write(batch, firstSequence: first, db: db, projecting: false)
                return .commit
            } }
        } catch {
            expressed.withLock { $0.moved += moved }
            throw error
        }
        expressCommitted.store(true, ordering: .relaxed)
        expressed.withLock { $0.waiting.append((first, batch)) }
    }

    /// In one transaction on the writer's connection: moves into the main file the batches the
    /// express log committed, then runs `write` in a savepoint of its own. Returns what refused
    /// `write` (its savepoint is rolled back and the moves still commit); with nothing to move, a
    /// refusal rolls the transaction back and is thrown.
    private func moveExpressed(_ db: Database, then write: ((Database) throws -> Void)? = nil) throws -> (any Error)? {
        let waiting = expressed.withLock { $0.waiting }
        var refusal: (any Error)?
        try db.inTransaction {
            for (first, batch) in waiting where try !SQLiteStore.holds(first, db) {
                try SQLiteStore.write(batch, firstSequence: first, db: db)
            }
            if let write {
                if waiting.isEmpty {
                    try write(db)
                } else {
                    do { try db.inSavepoint { try write(db); return .commit } } catch { refusal = error }
                }
            }
            return .commit
        }
        if !waiting.isEmpty {
            expressed.withLock { state in
                state.waiting.removeFirst(waiting.count)
                state.moved += waiting.map { $0.first...($0.first + Int64($0.batch.count) - 1) }
            }
        }
        return refusal
    }

    /// How often the log's batches are moved into the main file when no main write comes to move
    /// them (checks alone): each move is a commit to the main file whose flush the log's next
    /// commits wait behind. Every 50 ms that cost checks alone a p99 of 4.4 ms, against 1.4 ms
    /// every second (`tally bench --scenario mixed --reporters 0`); a second of checks is what the
    /// log and memory then hold at most (about 20,000 batches here).
    static let expressMoveInterval = Duration.seconds(1)
    private let lastMove = Mutex(ContinuousClock.now)

    /// Whether a move is due by `expressMoveInterval`; it then counts as made.
    func moveDue() -> Bool {
        lastMove.withLock { last in
            guard ContinuousClock.now - last >= SQLiteStore.expressMoveInterval else { return false }
            last = .now
            return true
        }
    }

    /// Moves what the express log committed into the main file: for a reader of the main file,
    /// which must see every committed batch.
    func moveExpressed() async throws {
        guard expressed.withLock({ !$0.waiting.isEmpty }) else { return }
        _ = try await pool.writeWithoutTransaction { db in try self.moveExpressed(db) }
        committed.store(true, ordering: .relaxed)
    }

    // MARK: Schema

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("001_facts_and_usage") { db in
            try db.execute(sql: """
                CREATE TABLE facts (
                    seq INTEGER PRIMARY KEY,
                    kind TEXT NOT NULL,
                    body BLOB NOT NULL
                );
                CREATE TRIGGER facts_no_update BEFORE UPDATE ON facts BEGIN SELECT RAISE(ABORT, 'facts are append-only'); END;
                CREATE TRIGGER facts_no_delete BEFORE DELETE ON facts BEGIN SELECT RAISE(ABORT, 'facts are append-only'); END;

                CREATE TABLE accounts (
                    id TEXT PRIMARY KEY,
                    subject TEXT NOT NULL CHECK (subject IN ('personal', 'enterprise')),
                    opened INTEGER NOT NULL
                );

                -- Rows are kept in sequence order (seq is the rowid, so an insert appends); the
                -- unique index on (account, id) is what refuses to count an event twice.
                CREATE TABLE usage_events (
                    seq INTEGER PRIMARY KEY,
                    account TEXT NOT NULL REFERENCES accounts(id),
                    id TEXT NOT NULL,
                    api TEXT NOT NULL,
                    edition TEXT,
                    calls INTEGER NOT NULL CHECK (calls > 0),
                    at INTEGER NOT NULL,
                    recorded INTEGER NOT NULL,
                    free INTEGER NOT NULL CHECK (free >= 0),
                    pack INTEGER NOT NULL CHECK (pack >= 0),
                    postpaid INTEGER NOT NULL CHECK (postpaid >= 0),
                    refused INTEGER NOT NULL CHECK (refused >= 0),
                    refusal TEXT,
                    draws TEXT NOT NULL,
                    txn TEXT,
                    CHECK (free + pack + postpaid + refused = calls)
                );
                CREATE UNIQUE INDEX usage_events_id ON usage_events(account, id);
                CREATE TRIGGER usage_no_update BEFORE UPDATE ON usage_events BEGIN SELECT RAISE(ABORT, 'usage events are append-only'); END;
                CREATE TRIGGER usage_no_delete BEFORE DELETE ON usage_events BEGIN SELECT RAISE(ABORT, 'usage events are append-only'); END;
                """)
        }
        migrator.registerMigration("002_ledger_packs_bills") { db in
            try db.execute(sql: """
                CREATE TABLE ledger_transactions (
                    id TEXT PRIMARY KEY,
                    seq INTEGER NOT NULL,
                    at INTEGER NOT NULL,
                    kind TEXT NOT NULL
                );
                CREATE TABLE ledger_entries (
                    txn TEXT NOT NULL REFERENCES ledger_transactions(id) DEFERRABLE INITIALLY DEFERRED,
                    account TEXT NOT NULL,
                    unit TEXT NOT NULL CHECK (unit IN ('microyuan', 'calls')),
                    amount INTEGER NOT NULL CHECK (amount != 0)
                );
                CREATE INDEX ledger_entries_by_txn ON ledger_entries(txn);
                CREATE INDEX ledger_entries_by_account ON ledger_entries(account);
                -- Entries are written first; their transaction's row is refused unless each unit sums to zero.
                CREATE TRIGGER ledger_balanced BEFORE INSERT ON ledger_transactions
                WHEN EXISTS (SELECT 1 FROM ledger_entries WHERE txn = NEW.id GROUP BY unit HAVING SUM(amount) != 0)
                BEGIN SELECT RAISE(ABORT, 'unbalanced ledger transaction'); END;
                CREATE TRIGGER ledger_transactions_no_update BEFORE UPDATE ON ledger_transactions BEGIN SELECT RAISE(ABORT, 'posted transactions are never changed'); END;
                CREATE TRIGGER ledger_transactions_no_delete BEFORE DELETE ON ledger_transactions BEGIN SELECT RAISE(ABORT, 'posted transactions are never changed'); END;
                CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries BEGIN SELECT RAISE(ABORT, 'posted entries are never changed'); END;
                CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries BEGIN SELECT RAISE(ABORT, 'posted entries are never changed'); END;

                CREATE TABLE packs (
                    id TEXT PRIMARY KEY,
                    account TEXT NOT NULL REFERENCES accounts(id),
                    api TEXT NOT NULL,
                    item TEXT NOT NULL,
                    size INTEGER NOT NULL CHECK (size > 0),
                    "left" INTEGER NOT NULL CHECK ("left" >= 0 AND "left" <= size),
                    expires INTEGER NOT NULL,
                    revoked INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
                );
                CREATE TABLE bills (
                    id TEXT PRIMARY KEY,
                    account TEXT NOT NULL REFERENCES accounts(id),
                    product TEXT NOT NULL,
                    month TEXT NOT NULL,
                    total INTEGER NOT NULL,
                    UNIQUE (account, product, month)
                );
                """)
        }
        migrator.registerMigration("003_idempotency_answers") { db in
            try db.execute(sql: """
                CREATE TABLE idempotency_answers (
                    key TEXT PRIMARY KEY,
                    fingerprint BLOB NOT NULL,
                    status INTEGER NOT NULL CHECK (status BETWEEN 100 AND 599),
                    content_type TEXT NOT NULL,
                    body BLOB NOT NULL,
                    created INTEGER NOT NULL
                );
                CREATE INDEX idempotency_answers_created ON idempotency_answers (created);
                """)
        }
        migrator.registerMigration("004_no_ledger_entries_by_account") { db in
            // Only the audit reads entries by account, and it sums them all in one scan; the index
            // cost every posted entry a third B-tree insert. (PostgreSQL's schema never had it.)
            try db.execute(sql: "DROP INDEX ledger_entries_by_account")
        }
        migrator.registerMigration("005_usage_key_id_first") { db in
            // The same unique key, ordered by event id first. Gateways number their events in
            // time (request ids, ULIDs), so a batch's keys land side by side in the B-tree and a
            // commit rewrites a few pages; account first scattered every batch over one page per
            // account. Duplicates are looked up by both columns, so either order serves.
            try db.execute(sql: """
                DROP INDEX usage_events_id;
                CREATE UNIQUE INDEX usage_events_key ON usage_events(id, account);
                """)
        }
        migrator.registerMigration("006_accounts_append_only") { db in
            // As on PostgreSQL: an account, once opened, is never deleted or renamed, so every
            // row that names it stays valid (its status lives in the facts, not in this row).
            try db.execute(sql: """
                CREATE TRIGGER accounts_no_update BEFORE UPDATE ON accounts BEGIN SELECT RAISE(ABORT, 'accounts are append-only'); END;
                CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts BEGIN SELECT RAISE(ABORT, 'accounts are append-only'); END;
                """)
        }
        migrator.registerMigration("007_console_sessions") { db in
            try db.execute(sql: """
                CREATE TABLE console_sessions (
                    digest BLOB PRIMARY KEY,
                    key_id TEXT NOT NULL,
                    csrf TEXT NOT NULL,
                    expires INTEGER NOT NULL
                );
                CREATE INDEX console_sessions_expires ON console_sessions (expires);
                """)
        }
        migrator.registerMigration("008_settings") { db in
            // What the data was made with and must be read with again (the partition count).
            try db.execute(sql: "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
        }
        migrator.registerMigration("009_snapshots") { db in
            // A partition's snapshots (the newest two are kept), and the shared facts found by an
            // index of their own: a start from snapshots reads every shared fact and only the
            // facts after the oldest snapshot's position.
            try db.execute(sql: """
                CREATE TABLE snapshots (
                    partition INTEGER NOT NULL,
                    position INTEGER NOT NULL,
                    taken INTEGER NOT NULL,
                    body BLOB NOT NULL,
                    PRIMARY KEY (partition, position)
                );
                CREATE INDEX facts_shared ON facts(seq) WHERE \(SharedFacts.condition);
                """)
        }
        return migrator
    }()

    // MARK: Reading

    public func loadFacts() async throws -> [Fact] {
        try await moveExpressed()
        return try await pool.read { db in
            var facts: [Fact] = []
            try SQLiteStore.forEachFact(db) { facts.append($1) }
            return facts
        }
    }

    public func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State {
        try await moveExpressed()
        return try await pool.read { db in
            var state = state
            try SQLiteStore.forEachFact(db, after: position) { state.fold($1, at: $0) }
            return state
        }
    }

    public func position() async throws -> Int64 { nextSequence.withLock { $0 } - 1 }

    public func saveSnapshot(_ snapshot: StoredSnapshot) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO snapshots (partition, position, taken, body) VALUES (?, ?, ?, ?)",
                           arguments: [snapshot.partition, snapshot.position, snapshot.taken.microseconds, Data(snapshot.bytes)])
            try db.execute(sql: """
                DELETE FROM snapshots WHERE partition = ? AND position NOT IN
                    (SELECT position FROM snapshots WHERE partition = ? ORDER BY position DESC LIMIT ?)
                """, arguments: [snapshot.partition, snapshot.partition, StoredSnapshot.keptPerPartition])
        }
        committed.store(true, ordering: .relaxed)
    }

    public func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot] {
        // The partitions as a JSON array, which `json_each` reads as rows.
        let listed = partitions.map { "[" + $0.map(String.init).joined(separator: ",") + "]" }
        return try await pool.read { db in
            // A body is read only for the rows returned (a blob's overflow pages are read when the
            // column is).
            try Row.fetchAll(db, sql: """
                SELECT partition, position, taken, body FROM snapshots AS s
                WHERE (?1 IS NULL OR (SELECT COUNT(*) FROM snapshots AS t WHERE t.partition = s.partition AND t.position > s.position) = ?1)
                  AND (?2 IS NULL OR partition IN (SELECT value FROM json_each(?2)))
                ORDER BY partition, position DESC
                """, arguments: [rank, listed]).map { row in
                let body: Data = row[3]
                return StoredSnapshot(partition: row[0], position: row[1], taken: Instant(microseconds: row[2]), bytes: [UInt8](body))
            }
        }
    }

    public func recountUsage(zone: Zone) async throws -> UsageRecount {
        try await moveExpressed()
        return try await pool.read { db in
            var recount = UsageRecount(zone: zone)
            let events = try Row.fetchCursor(db, sql: "SELECT \(UsageRow.columns) FROM usage_events ORDER BY seq")
            while let row = try events.next() { recount.add(try SQLiteStore.usageRow(row).record()) }
            return recount
        }
    }

    /// Hands to `body` in order, one at a time, with its position, every shared fact and every
    /// fact after `position`: usage rows are never all in memory.
    static func forEachFact(_ db: Database, after position: Int64 = 0, _ body: (Int64, Fact) throws -> Void) throws {
        let decoder = JSONDecoder()
        var facts: [(Int64, Fact)] = []
        func read(_ rows: RowCursor) throws {
            while let row = try rows.next() {
                let body: Data = row[1]
                facts.append((row[0], try decoder.decode(Fact.self, from: body)))
            }
        }
        if position > 0 {
            try read(Row.fetchCursor(db, sql: "SELECT seq, body FROM facts WHERE \(SharedFacts.condition) AND seq <= ? ORDER BY seq", arguments: [position]))
        }
        try read(Row.fetchCursor(db, sql: "SELECT seq, body FROM facts WHERE seq > ? ORDER BY seq", arguments: [position]))
        var merger = FactMerger(facts: facts)
        let events = try Row.fetchCursor(db, sql: "SELECT \(UsageRow.columns) FROM usage_events WHERE seq > ? ORDER BY seq", arguments: [position])
        while let row = try events.next() { try merger.usage(row[0], try SQLiteStore.usageRow(row).fact(), body) }
        try merger.finish(body)
    }

    /// The stored events among `keys`: what a batch that a unique index refused had sent again.
    /// `schema`: the database of the connection that holds them (the express log's connection
    /// has the main file attached as `store`).
    static func storedEntries(_ keys: [TallyState.UsageKey], _ db: Database, schema: String = "main") throws -> [TallyState.UsageKey: UsageEntry] {
        let select = try db.cachedStatement(sql: "SELECT \(UsageRow.columns) FROM \(schema).usage_events WHERE account = ? AND id = ?")
        var found: [TallyState.UsageKey: UsageEntry] = [:]
        for key in keys {
            if let row = try Row.fetchOne(select, arguments: [key.account, key.id]) {
                let (stored, entry) = try SQLiteStore.usageRow(row).entry()
                found[stored] = entry
            }
        }
        return found
    }

    static func usageRow(_ row: Row) -> UsageRow {
        UsageRow(account: row[1], id: row[2], api: row[3], edition: row[4], calls: row[5], at: row[6], recorded: row[7],
                     free: row[8], postpaid: row[10], refused: row[11], refusal: row[12], draws: row[13], transaction: row[14])
    }

    /// Reads the main file and the batches the express log committed that it does not hold yet,
    /// without moving them: a move is a write to the main file, and this read is on the engine's
    /// path for a check whose id may be old, which would then wait behind a bulk write. The list
    /// of batches is read first: a batch leaves it only once the main file holds it, so the main
    /// file's read, begun after, sees every batch the list no longer shows.
    public func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] {
        guard !keys.isEmpty else { return [:] }
        let waiting = expressed.withLock { $0.waiting }
        var found = SQLiteStore.entries(keys, in: waiting.map(\.batch))
        found.merge(try await pool.read { db in try SQLiteStore.storedEntries(keys, db) }) { logged, _ in logged }
        return found
    }

    /// The events among `keys` that `batches` hold.
    static func entries(_ keys: [TallyState.UsageKey], in batches: [EncodedBatch]) -> [TallyState.UsageKey: UsageEntry] {
        guard !batches.isEmpty else { return [:] }
        let wanted = Set(keys)
        var found: [TallyState.UsageKey: UsageEntry] = [:]
        for batch in batches {
            for fact in batch.facts {
                guard case .usageRecorded(let record, _) = fact else { continue }
                let key = TallyState.usageKey(account: record.account, id: record.id)
                if wanted.contains(key) { found[key] = UsageEntry(record) }
            }
        }
        return found
    }

    // MARK: Writing

    public func append(_ batch: EncodedBatch) async throws {
        guard !batch.isEmpty else { return }
        let first = nextSequence.withLock { next in
            defer { next += Int64(batch.count) }
            return next
        }
        do {
            // What the express log committed goes first, and stays committed if the batch is refused.
            let refusal: (any Error)? = try await pool.writeWithoutTransaction { db in
                try self.moveExpressed(db) { db throws in try SQLiteStore.write(batch, firstSequence: first, db: db) }
            }
            committed.store(true, ordering: .relaxed)
            if let refusal { throw refusal }
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
            // An event id the store holds but the engine's index no longer does (older than its
            // window): the batch rolled back; the engine reloads, remembers these and retries.
            let keys = batch.usageKeys
            let known = try await storedUsage(keys)
            guard !known.isEmpty else { throw error }
            throw StoreConflict(reason: "\(known.count) event ids of the batch were counted before", known: known)
        }
    }

    /// Writes a batch into the main file (`projecting`: with every table its facts spread into) or
    /// into the express log (the facts and usage rows only, as they are read back).
    static func write(_ batch: EncodedBatch, firstSequence: Int64, db: Database, projecting: Bool = true) throws {
        let usage = try UsageInserts(db)
        let insertFact = try Insert(db, "INSERT INTO facts (seq, kind, body) VALUES (?, ?, ?)")
        let facts = batch.facts
        var offset = 0
        while offset < facts.count {
            guard !facts[offset].isUsage else {
                // A run of usage events goes in together; rows stay in the batch's order, so an
                // account opened earlier in the batch is there for the foreign key.
                var end = offset + 1
                while end < facts.count, facts[end].isUsage { end += 1 }
                try usage.insert(facts[offset..<end], firstSequence: firstSequence)
                offset = end
                continue
            }
            let seq = firstSequence + Int64(offset)
            try insertFact.run(seq, facts[offset].kind, batch.bodies[offset]!)
            if projecting { try project(facts[offset], seq: seq, db: db) }
            offset += 1
        }
        guard projecting else { return }
        // One update per pack per batch; the CHECK refuses any draw below zero and rolls the batch back.
        let draw = try db.cachedStatement(sql: #"UPDATE packs SET "left" = "left" - ? WHERE id = ?"#)
        for (pack, calls) in batch.drawsByPack {
            draw.setUncheckedArguments([calls, pack])
            try draw.execute()
            guard db.changesCount == 1 else { throw TallyError(.storeUnavailable, "a usage event draws on unknown pack \(pack)") }
        }
    }

    /// Spreads a fact into the tables whose constraints guard it.
    static func project(_ fact: Fact, seq: Int64, db: Database) throws {
        if let transaction = fact.transaction { try post(transaction, seq: seq, db: db) }
        switch fact {
        case .accountOpened(let account, let subject, _, let at):
            try Insert(db, "INSERT INTO accounts (id, subject, opened) VALUES (?, ?, ?)").run(account, subject.rawValue, at.microseconds)
        case .accountVerified(let account, let subject, _):
            _ = (account, subject)
        case .packGranted(let pack, _):
            try insert(pack, db: db)
        case .orderPlaced(_, let packs, _, _):
            for pack in packs { try insert(pack, db: db) }
        case .orderRefunded(let order, _, let transaction):
            _ = order
            for entry in transaction.entries where entry.unit == .calls && entry.account.name.hasPrefix("pack:") {
                try db.cachedStatement(sql: "UPDATE packs SET revoked = 1 WHERE id = ?").execute(arguments: [String(entry.account.name.dropFirst(5))])
            }
        case .billPosted(let bill, _):
            try Insert(db, "INSERT INTO bills (id, account, product, month, total) VALUES (?, ?, ?, ?, ?)")
                .run(bill.id, bill.account, bill.product, bill.month.description, bill.total.microyuan)
        default:
            break
        }
    }

    static func insert(_ pack: Pack, db: Database) throws {
        try Insert(db, #"INSERT INTO packs (id, account, api, item, size, "left", expires) VALUES (?, ?, ?, ?, ?, ?, ?)"#)
            .run(pack.id, pack.account, pack.api, pack.item, pack.size, pack.left, pack.expires.microseconds)
    }

    static func post(_ transaction: LedgerTransaction, seq: Int64, db: Database) throws {
        let entry = try Insert(db, "INSERT INTO ledger_entries (txn, account, unit, amount) VALUES (?, ?, ?, ?)")
        for line in transaction.entries {
            try entry.run(transaction.id, line.account.name, line.unit.rawValue, line.amount)
        }
        try Insert(db, "INSERT INTO ledger_transactions (id, seq, at, kind) VALUES (?, ?, ?, ?)")
            .run(transaction.id, seq, transaction.at.microseconds, transaction.kind)
    }

    /// Runs raw SQL against the file: for tests that prove the database guards its invariants.
    public func execute(_ sql: String) async throws {
        try await pool.write { db in try db.execute(sql: sql) }
    }

    /// Counts the rows of a table.
    public func count(_ table: String) async throws -> Int {
        try await moveExpressed()
        return try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(table)") ?? 0 }
    }
}

extension SQLiteStore {
    public func answer(for key: String) async throws -> StoredAnswer? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT fingerprint, status, content_type, body, created FROM idempotency_answers WHERE key = ?",
                             arguments: [key]).map { row in
                let fingerprint: Data = row[0], body: Data = row[3]
                return StoredAnswer(key: key, fingerprint: Array(fingerprint), status: row[1], contentType: row[2], body: Array(body),
                                    created: Instant(microseconds: row[4]))
            }
        }
    }

    public func saveAnswer(_ answer: StoredAnswer) async throws {
        try await pool.write { db in
            try db.execute(sql: """
                INSERT INTO idempotency_answers (key, fingerprint, status, content_type, body, created) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (key) DO NOTHING
                """, arguments: [answer.key, Data(answer.fingerprint), answer.status, answer.contentType, Data(answer.body),
                                 answer.created.microseconds])
        }
    }

    public func pruneAnswers(before instant: Instant) async throws {
        try await pool.write { db in
            try db.execute(sql: "DELETE FROM idempotency_answers WHERE created < ?", arguments: [instant.microseconds])
        }
    }

    public func recordedPartitionCount() async throws -> Int? {
        try await pool.read { db in try String.fetchOne(db, sql: "SELECT value FROM settings WHERE name = 'partitions'").flatMap { Int($0) } }
    }

    public func recordPartitionCount(_ count: Int) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO settings (name, value) VALUES ('partitions', ?) ON CONFLICT (name) DO NOTHING", arguments: [String(count)])
        }
    }

    public func consoleSession(digest: [UInt8]) async throws -> StoredSession? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT key_id, csrf, expires FROM console_sessions WHERE digest = ?", arguments: [Data(digest)]).map { row in
                StoredSession(digest: digest, keyID: row[0], csrf: row[1], expires: Instant(microseconds: row[2]))
            }
        }
    }

    public func saveConsoleSession(_ session: StoredSession) async throws {
        try await pool.write { db in
            try db.execute(sql: "INSERT INTO console_sessions (digest, key_id, csrf, expires) VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
                           arguments: [Data(session.digest), session.keyID, session.csrf, session.expires.microseconds])
        }
    }

    public func endConsoleSession(digest: [UInt8]) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM console_sessions WHERE digest = ?", arguments: [Data(digest)]) }
    }

    public func pruneConsoleSessions(expiredBefore instant: Instant) async throws {
        try await pool.write { db in try db.execute(sql: "DELETE FROM console_sessions WHERE expires < ?", arguments: [instant.microseconds]) }
    }

    /// Rebuilds the state from the facts and compares the projection tables with it (pack
    /// balances, bills, money per ledger account), all in one read transaction: a server writing
    /// meanwhile cannot make the two disagree. The usage is recounted as the rows stream past, and
    /// the state keeps no per-event index: the audit's memory does not grow with the events.
    /// Returns the state, the recount and the differences.
    public func auditProjections(catalog: Catalog) async throws -> (state: TallyState, recount: UsageRecount, differences: [String]) {
        try await pool.read { db in
            var state = TallyState(catalog: catalog)
            state.forgetUsage(recordedBefore: Instant(microseconds: .max))
            var recount = UsageRecount(zone: state.zone)
            try SQLiteStore.forEachFact(db) { _, fact in
                state.apply(fact)
                if case .usageRecorded(let record, _) = fact { recount.add(record) }
            }
            let ledger = LedgerBalances(state.ledger)  // money transactions: usage draws are not in ledger_entries
            var found: [String] = []
            let packs = try Row.fetchAll(db, sql: #"SELECT id, "left", revoked FROM packs"#)
            if packs.count != state.packs.count { found.append("packs table has \(packs.count) rows, state \(state.packs.count)") }
            for row in packs {
                let id: String = row[0]
                let left: Int64 = row[1]
                guard let pack = state.packs[id] else { found.append("pack \(id) is not in the facts"); continue }
                if pack.left != left || pack.revoked != (row[2] as Int64 == 1) {
                    found.append("pack \(id): table \(left), facts \(pack.left)")
                }
            }
            let sums = try Row.fetchAll(db, sql: "SELECT account, SUM(amount) FROM ledger_entries WHERE unit = 'microyuan' GROUP BY account")
            for row in sums {
                let account: String = row[0]
                let amount: Int64 = row[1]
                if ledger.money(LedgerAccount(account)).microyuan != amount { found.append("ledger \(account): table \(amount), facts \(ledger.money(LedgerAccount(account)).microyuan)") }
            }
            let bills = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM bills") ?? 0
            if bills != state.bills.count { found.append("bills table has \(bills) rows, state \(state.bills.count)") }
            let events = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM usage_events") ?? 0
            if events != state.usageEvents { found.append("usage_events has \(events) rows, state \(state.usageEvents)") }
            return (state, recount, found)
        }
    }
}

/// One of the writer's cached insert statements, its values bound straight to SQLite: these run
/// for every fact, ledger entry and usage event, and GRDB's boxed arguments were a third of their
/// cost.
struct Insert {
    private let statement: SQLiteStatement
    private let db: Database

    init(_ db: Database, _ sql: String) throws {
        self.db = db
        statement = try db.cachedStatement(sql: sql).sqliteStatement
    }

    /// Binds `values` to the statement's parameters in order, runs it and resets it.
    func run<each Value: Bindable>(_ values: repeat each Value) throws {
        bind(after: 0, repeat each values)
        try step()
    }

    /// Binds `values` to the parameters that follow the first `offset`.
    func bind<each Value: Bindable>(after offset: Int32, _ values: repeat each Value) {
        var index = offset
        for value in repeat each values {
            index += 1
            value.bind(statement, index)
        }
    }

    /// Runs the statement with what is bound, and resets it.
    func step() throws {
        let code = sqlite3_step(statement)
        sqlite3_reset(statement)
        guard code == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: code), message: String(cString: sqlite3_errmsg(db.sqliteConnection)))
        }
    }
}

/// The writer's usage-row inserts: one statement that inserts `rowsPerStatement` rows, for the
/// bulk of a run of events, and one of a single row for what is left over. Each statement costs
/// SQLite a step, a reset and a pass through its program; 16 rows a statement inserted about 1.2×
/// as many rows a second in C against this schema (docs/decisions.md).
struct UsageInserts {
    static let rowsPerStatement = 16
    static let columns = "account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn"
    static let columnCount: Int32 = 15

    private let many: Insert
    private let one: Insert

    init(_ db: Database) throws {
        let row = "(" + Array(repeating: "?", count: Int(UsageInserts.columnCount)).joined(separator: ", ") + ")"
        let rows = Array(repeating: row, count: UsageInserts.rowsPerStatement).joined(separator: ", ")
        many = try Insert(db, "INSERT INTO usage_events (\(UsageInserts.columns)) VALUES \(rows)")
        one = try Insert(db, "INSERT INTO usage_events (\(UsageInserts.columns)) VALUES \(row)")
    }

    /// Inserts the rows of `facts`, a run of usage events whose indices are their offsets in the
    /// batch.
    func insert(_ facts: ArraySlice<Fact>, firstSequence: Int64) throws {
        var offset = facts.startIndex
        while offset < facts.endIndex {
            let rows = facts.endIndex - offset >= UsageInserts.rowsPerStatement ? UsageInserts.rowsPerStatement : 1
            let insert = rows == 1 ? one : many
            for row in 0..<rows {
                guard case .usageRecorded(let record, let transaction) = facts[offset + row] else { preconditionFailure("a run of usage events") }
                bind(record, seq: firstSequence + Int64(offset + row), transaction: transaction?.id, into: insert,
                     after: Int32(row) * UsageInserts.columnCount)
            }
            try insert.step()
            offset += rows
        }
    }

    private func bind(_ record: UsageRecord, seq: Int64, transaction: String?, into insert: Insert, after offset: Int32) {
        let s = record.settlement
        insert.bind(after: offset, record.account, record.id, seq, record.api, record.edition, record.calls, record.at.microseconds,
                    record.recorded.microseconds, s.free, s.pack, s.postpaid, s.refused, s.refusal?.rawValue,
                    UsageRow.encode(draws: s.draws), transaction)
    }
}

/// A value `Insert` binds to a parameter. SQLite copies texts and blobs before the call returns.
protocol Bindable {
    func bind(_ statement: SQLiteStatement, _ index: Int32)
}

private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

extension Int64: Bindable {
    func bind(_ statement: SQLiteStatement, _ index: Int32) { sqlite3_bind_int64(statement, index, self) }
}

extension String: Bindable {
    func bind(_ statement: SQLiteStatement, _ index: Int32) {
        var text = self
        text.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { chars in
                // A null pointer would store NULL, not an empty text.
                guard let start = chars.baseAddress else { _ = sqlite3_bind_text(statement, index, "", 0, transient); return }
                _ = sqlite3_bind_text(statement, index, start, Int32(chars.count), transient)
            }
        }
    }
}

extension Optional: Bindable where Wrapped == String {
    func bind(_ statement: SQLiteStatement, _ index: Int32) {
        if let self { self.bind(statement, index) } else { sqlite3_bind_null(statement, index) }
    }
}

extension Array: Bindable where Element == UInt8 {
    func bind(_ statement: SQLiteStatement, _ index: Int32) {
        withUnsafeBytes { bytes in
            // A non-null pointer even for no bytes: a null one would store NULL, not an empty blob.
            _ = sqlite3_bind_blob(statement, index, bytes.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(bytes.count), transient)
        }
    }
}
