import Foundation
import Logging
import PostgresNIO
import Synchronization
import TallyCore
import TallyStore

/// The PostgreSQL store, for operators who run several Tally processes on one database or outgrow
/// one machine. The same tables and guards as the SQLite store: facts and compact usage rows under
/// one sequence; accounts, packs (`CHECK (left >= 0)`), bills, balanced and append-only ledger
/// transactions (a deferred constraint trigger checks the balance at commit).
///
/// Several processes: each keeps its state in memory, and the database arbitrates. A batch that
/// would overdraw a pack or count an event id twice violates a constraint and rolls back whole;
/// it throws `StoreConflict`, and the engine reloads from the store and retries (docs/operations.md).
public final class PostgresStore: TallyStore {
    public let kind = "postgres"
    /// Each append is a transaction on a connection of its own from the pool.
    public let concurrentWrites = true
    /// Small batches are appended beside a bulk one, each on a connection of its own.
    public let expressWrites = true
    private let client: PostgresClient
    private let runner: Task<Void, Never>
    private let logger: Logger
    /// How long a write or a read of the request path waits for a connection (`leased`).
    private let connectTimeoutSeconds: Int64
    /// The server, as messages name it.
    private let server: String

    /// How long opening a store waits for the server by default: a command pointed at a server
    /// that is not there says so within this, instead of once the pool gives up a minute later.
    public static let connectTimeoutSecondsDefault: Int64 = 5

    /// Connects (`postgres://user[:password]@host[:port]/database`, or a Unix socket directory
    /// with `?host=/path`), then applies the migrations under an advisory lock; refuses with
    /// `store_unavailable`, naming the server, when that takes more than `connectTimeoutSeconds`.
    public init(url: String, connectTimeoutSeconds: Int64 = PostgresStore.connectTimeoutSecondsDefault,
                logger: Logger = Logger(label: "tally.postgres")) async throws {
        self.logger = logger
        self.connectTimeoutSeconds = connectTimeoutSeconds
        self.server = PostgresStore.serverName(url)
        var configuration = try PostgresStore.configuration(url)
        configuration.options.connectTimeout = .seconds(connectTimeoutSeconds)
        client = PostgresClient(configuration: configuration)
        let client = self.client
        runner = Task { await client.run() }
        let server = PostgresStore.serverName(url)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await self.migrate() }
                group.addTask {
                    try await Task.sleep(for: .seconds(connectTimeoutSeconds))
                    throw TallyError(.storeUnavailable, "PostgreSQL at \(server) did not answer within \(connectTimeoutSeconds) s")
                }
                defer { group.cancelAll() }
                try await group.next()
            }
        } catch {
            runner.cancel()
            if error is TallyError { throw error }
            throw TallyError(.storeUnavailable, "could not open PostgreSQL at \(server): \(error)")
        }
    }

    /// Where a URL points, for messages: `host:port`, or the socket's directory.
    static func serverName(_ url: String) -> String {
        guard let components = URLComponents(string: url) else { return url }
        if let socket = components.queryItems?.first(where: { $0.name == "host" })?.value, socket.hasPrefix("/") {
            return "\(socket) (port \(components.port ?? 5432))"
        }
        return "\(components.host ?? "127.0.0.1"):\(components.port ?? 5432)"
    }

    deinit { runner.cancel() }

    static func configuration(_ url: String) throws -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme) else {
            throw TallyError(.invalidRequest, "a PostgreSQL URL looks like postgres://user@host:5432/database")
        }
        let user = components.user ?? "postgres"
        let database = components.path.split(separator: "/").first.map(String.init)
        if let socketDirectory = components.queryItems?.first(where: { $0.name == "host" })?.value, socketDirectory.hasPrefix("/") {
            let port = components.port ?? 5432
            return .init(unixSocketPath: "\(socketDirectory)/.s.PGSQL.\(port)", username: user, password: components.password, database: database)
        }
        return .init(host: components.host ?? "127.0.0.1", port: components.port ?? 5432, username: user,
                     password: components.password, database: database, tls: .disable)
    }

    // MARK: Schema

    static let migrations: [(String, [String])] = [
        ("001_facts_and_usage", [
            """
            CREATE SEQUENCE fact_seq
            """,
            """
            CREATE TABLE facts (seq BIGINT PRIMARY KEY, kind TEXT NOT NULL, body BYTEA NOT NULL)
            """,
            """
            CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            subject TEXT NOT NULL CHECK (subject IN ('personal', 'enterprise')),
            opened BIGINT NOT NULL
            )
            """,
            """
            CREATE TABLE usage_events (
            account TEXT NOT NULL REFERENCES accounts(id),
            id TEXT NOT NULL,
            seq BIGINT NOT NULL UNIQUE,
            api TEXT NOT NULL,
            edition TEXT,
            calls BIGINT NOT NULL CHECK (calls > 0),
            at BIGINT NOT NULL,
            recorded BIGINT NOT NULL,
            free BIGINT NOT NULL CHECK (free >= 0),
            pack BIGINT NOT NULL CHECK (pack >= 0),
            postpaid BIGINT NOT NULL CHECK (postpaid >= 0),
            refused BIGINT NOT NULL CHECK (refused >= 0),
            refusal TEXT,
            draws TEXT NOT NULL,
            txn TEXT,
            PRIMARY KEY (account, id),
            CHECK (free + pack + postpaid + refused = calls)
            )
            """,
            """
            CREATE FUNCTION tally_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$
            """,
            """
            CREATE TRIGGER facts_append_only BEFORE UPDATE OR DELETE ON facts FOR EACH ROW EXECUTE FUNCTION tally_append_only()
            """,
            """
            CREATE TRIGGER usage_append_only BEFORE UPDATE OR DELETE ON usage_events FOR EACH ROW EXECUTE FUNCTION tally_append_only()
            """,
        ]),
        ("002_ledger_packs_bills", [
            """
            CREATE TABLE ledger_transactions (id TEXT PRIMARY KEY, seq BIGINT NOT NULL, at BIGINT NOT NULL, kind TEXT NOT NULL)
            """,
            """
            CREATE TABLE ledger_entries (
            txn TEXT NOT NULL REFERENCES ledger_transactions(id) DEFERRABLE INITIALLY DEFERRED,
            account TEXT NOT NULL,
            unit TEXT NOT NULL CHECK (unit IN ('microyuan', 'calls')),
            amount BIGINT NOT NULL CHECK (amount <> 0)
            )
            """,
            """
            CREATE INDEX ledger_entries_by_txn ON ledger_entries(txn)
            """,
            """
            CREATE FUNCTION tally_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
            IF EXISTS (SELECT 1 FROM ledger_entries WHERE txn = NEW.txn GROUP BY unit HAVING SUM(amount) <> 0) THEN
            RAISE EXCEPTION 'unbalanced ledger transaction %', NEW.txn USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
            END $$
            """,
            """
            CREATE CONSTRAINT TRIGGER ledger_balanced AFTER INSERT ON ledger_entries
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION tally_balanced()
            """,
            """
            CREATE TRIGGER ledger_transactions_append_only BEFORE UPDATE OR DELETE ON ledger_transactions FOR EACH ROW EXECUTE FUNCTION tally_append_only()
            """,
            """
            CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries FOR EACH ROW EXECUTE FUNCTION tally_append_only()
            """,
            """
            CREATE TABLE packs (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts(id),
            api TEXT NOT NULL,
            item TEXT NOT NULL,
            size BIGINT NOT NULL CHECK (size > 0),
            "left" BIGINT NOT NULL CHECK ("left" >= 0 AND "left" <= size),
            expires BIGINT NOT NULL,
            revoked BOOLEAN NOT NULL DEFAULT FALSE
            )
            """,
            """
            CREATE TABLE bills (
            id TEXT PRIMARY KEY,
            account TEXT NOT NULL REFERENCES accounts(id),
            product TEXT NOT NULL,
            month TEXT NOT NULL,
            total BIGINT NOT NULL,
            UNIQUE (account, product, month)
            )
            """,
        ]),
        ("003_idempotency_answers", [
            """
            CREATE TABLE idempotency_answers (
            key TEXT PRIMARY KEY,
            fingerprint BYTEA NOT NULL,
            status INTEGER NOT NULL CHECK (status BETWEEN 100 AND 599),
            content_type TEXT NOT NULL,
            body BYTEA NOT NULL,
            created BIGINT NOT NULL
            )
            """,
            "CREATE INDEX idempotency_answers_created ON idempotency_answers (created)",
        ]),
        ("004_usage_key_id_first", [
            // The same key, event id first: time-ordered ids from one batch land side by side in
            // the B-tree instead of on one page per account (see SQLite's migration 005).
            "ALTER TABLE usage_events DROP CONSTRAINT usage_events_pkey, ADD PRIMARY KEY (id, account)",
        ]),
        ("005_usage_accounts_checked_per_statement", [
            // The foreign key from usage_events to accounts ran a lookup and a row lock per event: half
            // of a COPY's cost. The same guard, once per statement: the rows just written whose
            // account does not exist refuse the statement (23503, as the foreign key did). Accounts
            // are never deleted or renamed (append-only, like the facts), so a row that was valid
            // when written stays valid, and no lock on the account is needed.
            "ALTER TABLE usage_events DROP CONSTRAINT usage_events_account_fkey",
            """
            CREATE FUNCTION tally_usage_accounts_exist() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE missing TEXT;
            BEGIN
                SELECT n.account INTO missing FROM (SELECT DISTINCT account FROM written) n
                WHERE NOT EXISTS (SELECT 1 FROM accounts a WHERE a.id = n.account) LIMIT 1;
                IF FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = '23503', MESSAGE = format('usage_events: no account %s', missing);
                END IF;
                RETURN NULL;
            END $$
            """,
            """
            CREATE TRIGGER usage_accounts_exist AFTER INSERT ON usage_events REFERENCING NEW TABLE AS written
            FOR EACH STATEMENT EXECUTE FUNCTION tally_usage_accounts_exist()
            """,
            "CREATE TRIGGER accounts_append_only BEFORE UPDATE OR DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION tally_append_only()",
        ]),
        ("007_console_sessions", [
            "CREATE TABLE console_sessions (digest BYTEA PRIMARY KEY, key_id TEXT NOT NULL, csrf TEXT NOT NULL, expires BIGINT NOT NULL)",
            "CREATE INDEX console_sessions_expires ON console_sessions (expires)",
        ]),
        // What the data was made with and must be read with again (the partition count).
        ("008_settings", ["CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)"]),
        // A partition's snapshots (the newest two are kept), and the shared facts found by an
        // index of their own: a start from snapshots reads every shared fact and only the facts
        // after the oldest snapshot's position.
        ("009_snapshots", [
            """
            CREATE TABLE snapshots (
            partition INTEGER NOT NULL, position BIGINT NOT NULL, taken BIGINT NOT NULL, body BYTEA NOT NULL,
            PRIMARY KEY (partition, position))
            """,
            "CREATE INDEX facts_shared ON facts (seq) WHERE \(SharedFacts.condition)",
        ]),
    ]

    func migrate() async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(7426001)", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY)", logger: logger)
            var applied: Set<String> = []
            for try await name in try await connection.query("SELECT name FROM schema_migrations", logger: logger).decode(String.self) {
                applied.insert(name)
            }
            for (name, statements) in PostgresStore.migrations where !applied.contains(name) {
                for sql in statements { try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger) }
                try await connection.query("INSERT INTO schema_migrations (name) VALUES (\(name))", logger: logger)
            }
        }
    }

    // MARK: Reading

    public func loadFacts() async throws -> [Fact] {
        var facts: [Fact] = []
        try await forEachFact { facts.append($1) }
        return facts
    }

    public func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State {
        var state = state
        try await forEachFact(after: position) { state.fold($1, at: $0) }
        return state
    }

    /// The sequence's last value handed out, by any session (0 before the first).
    public func position() async throws -> Int64 {
        let rows = try await client.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM fact_seq", logger: logger)
        for try await value in rows.decode(Int64.self) { return value }
        return 0
    }

    public func saveSnapshot(_ snapshot: StoredSnapshot) async throws {
        let partition = snapshot.partition, position = snapshot.position, taken = snapshot.taken.microseconds
        let body = ByteBuffer(bytes: snapshot.bytes), kept = StoredSnapshot.keptPerPartition, logger = logger
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("""
                INSERT INTO snapshots (partition, position, taken, body) VALUES (\(partition), \(position), \(taken), \(body))
                ON CONFLICT (partition, position) DO UPDATE SET taken = EXCLUDED.taken, body = EXCLUDED.body
                """, logger: logger)
            try await connection.query("""
                DELETE FROM snapshots WHERE partition = \(partition) AND position NOT IN
                    (SELECT position FROM snapshots WHERE partition = \(partition) ORDER BY position DESC LIMIT \(kept))
                """, logger: logger)
        }
    }

    public func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot] {
        var found: [StoredSnapshot] = []
        let every = partitions == nil, listed = partitions ?? []
        let rows = try await client.query("""
            SELECT partition, position, taken, body FROM snapshots AS s
            WHERE (\(rank)::bigint IS NULL OR (SELECT COUNT(*) FROM snapshots AS t WHERE t.partition = s.partition AND t.position > s.position) = \(rank)::bigint)
              AND (\(every) OR partition = ANY(\(listed)))
            ORDER BY partition, position DESC
            """, logger: logger)
        for try await (partition, position, taken, body) in rows.decode((Int, Int64, Int64, ByteBuffer).self) {
            found.append(StoredSnapshot(partition: partition, position: position, taken: Instant(microseconds: taken),
                                        bytes: body.getBytes(at: body.readerIndex, length: body.readableBytes) ?? []))
        }
        return found
    }

    typealias UsageTuple = (Int64, String, String, String, String?, Int64, Int64, Int64, Int64, Int64, Int64, Int64, String?, String, String?)

    static func usageRow(_ row: UsageTuple) -> UsageRow {
        UsageRow(account: row.1, id: row.2, api: row.3, edition: row.4, calls: row.5, at: row.6, recorded: row.7, free: row.8,
                 postpaid: row.10, refused: row.11, refusal: row.12, draws: row.13, transaction: row.14)
    }

    /// Hands to `body` in order, one at a time, with its position, every shared fact and every
    /// fact after `position`: usage rows are never all in memory.
    private func forEachFact(after position: Int64 = 0, _ body: (Int64, Fact) throws -> Void) async throws {
        let decoder = JSONDecoder()
        var facts: [(Int64, Fact)] = []
        if position > 0 {
            let shared = try await client.query("""
                SELECT seq, body FROM facts WHERE \(unescaped: SharedFacts.condition) AND seq <= \(position) ORDER BY seq
                """, logger: logger)
            for try await (seq, body) in shared.decode((Int64, ByteBuffer).self) {
                facts.append((seq, try decoder.decode(Fact.self, from: Data(buffer: body))))
            }
        }
        let rest = try await client.query("SELECT seq, body FROM facts WHERE seq > \(position) ORDER BY seq", logger: logger)
        for try await (seq, body) in rest.decode((Int64, ByteBuffer).self) {
            facts.append((seq, try decoder.decode(Fact.self, from: Data(buffer: body))))
        }
        var merger = FactMerger(facts: facts)
        let rows = try await client.query("""
            SELECT \(unescaped: UsageRow.columns)
            FROM usage_events WHERE seq > \(position) ORDER BY seq
            """, logger: logger)
        for try await row in rows.decode(UsageTuple.self) {
            try merger.usage(row.0, try PostgresStore.usageRow(row).fact(), body)
        }
        try merger.finish(body)
    }

    public func recountUsage(zone: Zone) async throws -> UsageRecount {
        var recount = UsageRecount(zone: zone)
        let rows = try await client.query("""
            SELECT \(unescaped: UsageRow.columns)
            FROM usage_events ORDER BY seq
            """, logger: logger)
        for try await row in rows.decode(UsageTuple.self) { recount.add(try PostgresStore.usageRow(row).record()) }
        return recount
    }

    /// The stored events among `keys`: what a batch that the unique index refused had sent again.
    public func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] {
        guard !keys.isEmpty else { return [:] }
        let accounts = keys.map(\.account), ids = keys.map(\.id), logger = logger
        return try await leased { connection in
            let rows = try await connection.query("""
                SELECT \(unescaped: UsageRow.columns)
                FROM usage_events WHERE (account, id) IN (SELECT a, i FROM UNNEST(\(accounts)::text[], \(ids)::text[]) AS k(a, i))
                """, logger: logger)
            var found: [TallyState.UsageKey: UsageEntry] = [:]
            for try await row in rows.decode(UsageTuple.self) {
                let (key, entry) = try PostgresStore.usageRow(row).entry()
                found[key] = entry
            }
            return found
        }
    }

    /// A flag one task sets and another reads.
    private final class Flag: Sendable {
        let raised = Mutex(false)
    }

    /// Runs `body` on a connection from the pool, or gives up with `store_unavailable` when none
    /// can be had within `connectTimeoutSeconds`: while the server is away the pool would keep the
    /// caller waiting about a minute, and a gateway, and the engine's readiness, with it. Once a
    /// connection is leased, `body` runs to its end.
    private func leased<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let leased = Flag(), client = client, seconds = connectTimeoutSeconds, server = server
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask {
                try await client.withConnection { connection in
                    leased.raised.withLock { $0 = true }
                    return try await body(connection)
                }
            }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                if leased.raised.withLock({ $0 }) { return nil }
                throw TallyError(.storeUnavailable, "no connection to PostgreSQL at \(server) within \(seconds) s")
            }
            defer { group.cancelAll() }
            while let result = try await group.next() {
                if let value = result { return value }
            }
            throw TallyError(.storeUnavailable, "the connection to PostgreSQL at \(server) ended without an answer")
        }
    }

    // MARK: Idempotency answers

    public func answer(for key: String) async throws -> StoredAnswer? {
        let rows = try await client.query("""
            SELECT fingerprint, status, content_type, body, created FROM idempotency_answers WHERE key = \(key)
            """, logger: logger)
        for try await (fingerprint, status, contentType, body, created) in rows.decode((ByteBuffer, Int32, String, ByteBuffer, Int64).self) {
            return StoredAnswer(key: key, fingerprint: Array(fingerprint.readableBytesView), status: Int(status), contentType: contentType,
                                body: Array(body.readableBytesView), created: Instant(microseconds: created))
        }
        return nil
    }

    public func saveAnswer(_ answer: StoredAnswer) async throws {
        let fingerprint = ByteBuffer(bytes: answer.fingerprint), body = ByteBuffer(bytes: answer.body)
        let status = Int32(answer.status), created = answer.created.microseconds
        try await client.query("""
            INSERT INTO idempotency_answers (key, fingerprint, status, content_type, body, created)
            VALUES (\(answer.key), \(fingerprint), \(status), \(answer.contentType), \(body), \(created))
            ON CONFLICT (key) DO NOTHING
            """, logger: logger)
    }

    public func pruneAnswers(before instant: Instant) async throws {
        let cutoff = instant.microseconds
        try await client.query("DELETE FROM idempotency_answers WHERE created < \(cutoff)", logger: logger)
    }

    // MARK: Settings

    public func recordedPartitionCount() async throws -> Int? {
        let rows = try await client.query("SELECT value FROM settings WHERE name = 'partitions'", logger: logger)
        for try await value in rows.decode(String.self) { return Int(value) }
        return nil
    }

    public func recordPartitionCount(_ count: Int) async throws {
        let value = String(count)
        try await client.query("INSERT INTO settings (name, value) VALUES ('partitions', \(value)) ON CONFLICT (name) DO NOTHING", logger: logger)
    }

    // MARK: Console sessions

    public func consoleSession(digest: [UInt8]) async throws -> StoredSession? {
        let key = ByteBuffer(bytes: digest)
        let rows = try await client.query("SELECT key_id, csrf, expires FROM console_sessions WHERE digest = \(key)", logger: logger)
        for try await (keyID, csrf, expires) in rows.decode((String, String, Int64).self) {
            return StoredSession(digest: digest, keyID: keyID, csrf: csrf, expires: Instant(microseconds: expires))
        }
        return nil
    }

    public func saveConsoleSession(_ session: StoredSession) async throws {
        let key = ByteBuffer(bytes: session.digest), expires = session.expires.microseconds
        try await client.query("""
            INSERT INTO console_sessions (digest, key_id, csrf, expires) VALUES (\(key), \(session.keyID), \(session.csrf), \(expires))
            ON CONFLICT (digest) DO NOTHING
            """, logger: logger)
    }

    public func endConsoleSession(digest: [UInt8]) async throws {
        let key = ByteBuffer(bytes: digest)
        try await client.query("DELETE FROM console_sessions WHERE digest = \(key)", logger: logger)
    }

    public func pruneConsoleSessions(expiredBefore instant: Instant) async throws {
        let cutoff = instant.microseconds
        try await client.query("DELETE FROM console_sessions WHERE expires < \(cutoff)", logger: logger)
    }

    // MARK: Writing

    /// A batch of at most this many facts, all of them usage events (a gateway's checks), is
    /// written by one statement in a transaction of its own (`UsageStatement`): one round trip
    /// to the server instead of five (BEGIN, the sequence numbers, COPY, the packs' update,
    /// COMMIT). Larger batches go by COPY, which is faster per row.
    static let oneStatementFactsMax = 64

    public func append(_ batch: EncodedBatch) async throws {
        guard !batch.isEmpty else { return }
        do {
            let logger = logger
            if let statement = UsageStatement(batch, factsMax: PostgresStore.oneStatementFactsMax) {
                try await leased { connection in try await statement.run(connection, logger: logger) }
                return
            }
            try await leased { connection in
                try await connection.withTransaction(logger: logger) { connection in
                    try await self.write(batch, connection: connection)
                }
            }
        } catch {
            guard let server = PostgresStore.serverError(error) else { throw error }
            let state = server.serverInfo?[.sqlState]
            if state == UsageStatement.unknownPackState {
                throw TallyError(.storeUnavailable, "a usage event draws on an unknown pack")
            }
            // check_violation (an overdrawn pack) and unique_violation (an event id counted by
            // another process): the batch lost a race; the engine reloads and retries.
            if state == "23514" || state == "23505" {
                // Ids of the batch already stored (by another process, or older than the engine's
                // index) go back to the engine, which remembers them before retrying.
                let keys = batch.usageKeys
                let known = state == "23505" && !keys.isEmpty ? try await storedUsage(keys) : [:]
                throw StoreConflict(reason: server.serverInfo?[.message] ?? "constraint violated", known: known)
            }
            throw TallyError(.storeUnavailable, "PostgreSQL refused the batch: \(server.serverInfo?[.message] ?? String(describing: server))")
        }
    }

    /// The server's error inside whatever PostgresNIO wrapped it in.
    static func serverError(_ error: any Error) -> PSQLError? {
        if let error = error as? PSQLError { return error }
        if let error = error as? PostgresTransactionError {
            return [error.closureError, error.commitError, error.beginError].compactMap { $0.flatMap(serverError) }.first
        }
        return nil
    }

    private func write(_ batch: EncodedBatch, connection: PostgresConnection) async throws {
        // The batch's sequence numbers in one row (one array), not one row each.
        var seqs: [Int64] = []
        for try await values in try await connection.query(
            "SELECT array_agg(nextval('fact_seq')) FROM generate_series(1, \(batch.count))", logger: logger).decode([Int64].self) {
            seqs = values
        }
        guard seqs.count == batch.count else { throw TallyError(.storeUnavailable, "PostgreSQL gave \(seqs.count) sequence numbers for \(batch.count) facts") }
        var usage = UsageCopy()
        var other = FactColumns()
        for (index, (fact, seq)) in zip(batch.facts, seqs).enumerated() {
            if case .usageRecorded(let record, let transaction) = fact {
                usage.append(record, seq: seq, transaction: transaction?.id)
                continue
            }
            other.append(fact, seq: seq, body: batch.bodies[index]!)
        }
        try await other.insert(connection, logger: logger)
        if usage.rows > 0 {
            // COPY, the bulk path: the rows stream as text, with no arrays to build and unnest.
            let text = usage.text
            try await connection.copyFrom(table: "usage_events", columns: UsageCopy.columns, logger: logger) { writer in
                try await writer.write(text)
            }
        }
        let drawn = batch.drawsByPack
        if !drawn.isEmpty {
            let ids = drawn.map(\.pack), amounts = drawn.map(\.calls)
            let rows = try await connection.query("""
                UPDATE packs SET "left" = "left" - d.n FROM UNNEST(\(ids)::text[], \(amounts)::bigint[]) AS d(id, n)
                WHERE packs.id = d.id RETURNING packs.id
                """, logger: logger).collect()
            guard rows.count == ids.count else { throw TallyError(.storeUnavailable, "a usage event draws on an unknown pack") }
        }
    }

    /// Creates an empty database beside the one `url` names and returns its URL: tests give each
    /// store a database of its own.
    public static func createDatabase(near url: String, name: String) async throws -> String {
        let client = PostgresClient(configuration: try configuration(url))
        let runner = Task { await client.run() }
        defer { runner.cancel() }
        try await client.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \"\(name)\""))
        guard var components = URLComponents(string: url) else { throw TallyError(.invalidRequest, "bad URL \(url)") }
        components.path = "/\(name)"
        return components.string ?? url
    }

    /// Runs raw SQL: for tests that prove the database guards its invariants.
    public func execute(_ sql: String) async throws {
        _ = try await client.withTransaction(logger: logger) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: sql), logger: logger)
        }
    }

    public func count(_ table: String) async throws -> Int {
        var count = 0
        for try await n in try await client.query(PostgresQuery(unsafeSQL: "SELECT COUNT(*) FROM \(table)"), logger: logger).decode(Int64.self) {
            count = Int(n)
        }
        return count
    }
}

/// A small batch of usage events alone, as one statement: the rows go in as arrays, each takes
/// the next sequence number in the batch's order, and the packs they draw on are charged in the
/// same statement, which PostgreSQL runs as a transaction of its own. Prepared once a connection
/// (PostgresNIO keeps it), so a check's write is not planned again each time. A draw on a pack the
/// store does not hold fails the whole statement (a division by zero, `unknownPackState`), as the
/// transaction of the COPY path rolls back.
struct UsageStatement: PostgresPreparedStatement {
    typealias Row = Int64

    /// The SQLSTATE of a draw on an unknown pack (division_by_zero, raised on purpose).
    static let unknownPackState = "22012"

    static let sql = """
        WITH seqs AS (
            SELECT array_agg(nextval('fact_seq')) AS s FROM generate_series(1, $1::bigint)
        ), rows AS (
            SELECT * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bool[], $7::bigint[], $8::bigint[], $9::bigint[],
                                 $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[], $14::text[], $15::bool[], $16::text[],
                                 $17::text[], $18::bool[])
                WITH ORDINALITY AS r(account, id, api, edition, has_edition, calls, at, recorded, free, pack, postpaid, refused,
                                     refusal, has_refusal, draws, txn, has_txn, n)
        ), inserted AS (
            INSERT INTO usage_events (account, id, seq, api, edition, calls, at, recorded, free, pack, postpaid, refused, refusal, draws, txn)
            SELECT r.account, r.id, seqs.s[r.n], r.api, CASE WHEN r.has_edition THEN r.edition END, r.calls, r.at, r.recorded,
                   r.free, r.pack, r.postpaid, r.refused, CASE WHEN r.has_refusal THEN r.refusal END, r.draws,
                   CASE WHEN r.has_txn THEN r.txn END
            FROM rows r, seqs
            RETURNING 1
        ), charged AS (
            UPDATE packs SET "left" = "left" - d.n FROM UNNEST($19::text[], $20::bigint[]) AS d(id, n)
            WHERE packs.id = d.id RETURNING packs.id
        )
        -- Every pack drawn on was charged, or the division fails the statement (not foldable
        -- early: it reads the update's rows).
        SELECT (SELECT count(*) FROM inserted) * (1 / (((SELECT count(*) FROM charged) + $21::bigint) / $22::bigint))
        """

    private var account: [String] = [], id: [String] = [], api: [String] = [], edition: [String] = [], hasEdition: [Bool] = []
    private var calls: [Int64] = [], at: [Int64] = [], recorded: [Int64] = []
    private var free: [Int64] = [], pack: [Int64] = [], postpaid: [Int64] = [], refused: [Int64] = []
    private var refusal: [String] = [], hasRefusal: [Bool] = [], draws: [String] = [], txn: [String] = [], hasTxn: [Bool] = []
    private let packs: [String], amounts: [Int64]

    /// Nil unless the batch holds usage events only, and at most `factsMax` of them.
    init?(_ batch: EncodedBatch, factsMax: Int) {
        guard batch.count <= factsMax else { return nil }
        for fact in batch.facts {
            guard case .usageRecorded(let record, let transaction) = fact else { return nil }
            let settlement = record.settlement
            account.append(record.account); id.append(record.id); api.append(record.api)
            edition.append(record.edition ?? ""); hasEdition.append(record.edition != nil)
            calls.append(record.calls); at.append(record.at.microseconds); recorded.append(record.recorded.microseconds)
            free.append(settlement.free); pack.append(settlement.pack); postpaid.append(settlement.postpaid); refused.append(settlement.refused)
            refusal.append(settlement.refusal?.rawValue ?? ""); hasRefusal.append(settlement.refusal != nil)
            draws.append(UsageRow.encode(draws: settlement.draws))
            txn.append(transaction?.id ?? ""); hasTxn.append(transaction != nil)
        }
        let drawn = batch.drawsByPack
        packs = drawn.map(\.pack)
        amounts = drawn.map(\.calls)
    }

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 22)
        bindings.append(Int64(account.count))
        for texts in [account, id, api, edition] { bindings.append(texts) }
        bindings.append(hasEdition)
        for numbers in [calls, at, recorded, free, pack, postpaid, refused] { bindings.append(numbers) }
        bindings.append(refusal); bindings.append(hasRefusal); bindings.append(draws); bindings.append(txn); bindings.append(hasTxn)
        bindings.append(packs); bindings.append(amounts)
        // With no pack drawn on: (0 + 1) / 1.
        bindings.append(Int64(packs.isEmpty ? 1 : 0)); bindings.append(Int64(max(1, packs.count)))
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Int64 { try row.decode(Int64.self) }

    func run(_ connection: PostgresConnection, logger: Logger) async throws {
        // Read to the end: an error after the statement's first row shows only there.
        var inserted: Int64 = 0
        for try await count in try await connection.execute(self, logger: logger) { inserted = count }
        guard inserted == Int64(account.count) else {
            throw TallyError(.storeUnavailable, "PostgreSQL stored \(inserted) of a batch's \(account.count) usage events")
        }
    }
}

/// A batch's usage rows in COPY's text format: one line a row, columns split by tabs, `\N` for
/// null, and backslash, tab, newline and carriage return escaped in texts.
struct UsageCopy {
    static let columns = ["account", "id", "seq", "api", "edition", "calls", "at", "recorded", "free", "pack", "postpaid", "refused",
                          "refusal", "draws", "txn"]
    private(set) var text = ByteBuffer()
    private(set) var rows = 0

    mutating func append(_ record: UsageRecord, seq: Int64, transaction: String?) {
        let s = record.settlement
        field(record.account); field(record.id); field(seq); field(record.api); field(record.edition)
        field(record.calls); field(record.at.microseconds); field(record.recorded.microseconds)
        field(s.free); field(s.pack); field(s.postpaid); field(s.refused); field(s.refusal?.rawValue)
        field(UsageRow.encode(draws: s.draws)); field(transaction, last: true)
        rows += 1
    }

    private mutating func field(_ value: Int64, last: Bool = false) {
        text.writeString(String(value))
        text.writeInteger(last ? UInt8(ascii: "\n") : UInt8(ascii: "\t"))
    }

    private mutating func field(_ value: String?, last: Bool = false) {
        if let value {
            var value = value
            value.withUTF8 { bytes in
                let special: (UInt8) -> Bool = { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }
                guard bytes.contains(where: special) else {
                    text.writeBytes(bytes)
                    return
                }
                for byte in bytes {
                    switch byte {
                    case UInt8(ascii: "\\"): text.writeStaticString("\\\\")
                    case UInt8(ascii: "\t"): text.writeStaticString("\\t")
                    case UInt8(ascii: "\n"): text.writeStaticString("\\n")
                    case UInt8(ascii: "\r"): text.writeStaticString("\\r")
                    default: text.writeInteger(byte)
                    }
                }
            }
        } else {
            text.writeStaticString("\\N")
        }
        text.writeInteger(last ? UInt8(ascii: "\n") : UInt8(ascii: "\t"))
    }
}

/// The other facts of a batch, and the tables they are spread into, as columns: one statement per
/// table per batch, not one round trip per fact (a bill run's step holds tens of thousands). The
/// tables are written in an order their foreign keys accept: accounts before packs and bills,
/// transactions before their entries, packs before their revocations.
struct FactColumns {
    var seq: [Int64] = [], kind: [String] = [], body: [String] = []
    var txnID: [String] = [], txnSeq: [Int64] = [], txnAt: [Int64] = [], txnKind: [String] = []
    var entryTxn: [String] = [], entryAccount: [String] = [], entryUnit: [String] = [], entryAmount: [Int64] = []
    var accountID: [String] = [], accountSubject: [String] = [], accountOpened: [Int64] = []
    var packID: [String] = [], packAccount: [String] = [], packAPI: [String] = [], packItem: [String] = []
    var packSize: [Int64] = [], packLeft: [Int64] = [], packExpires: [Int64] = []
    var revoked: [String] = []
    var billID: [String] = [], billAccount: [String] = [], billProduct: [String] = [], billMonth: [String] = [], billTotal: [Int64] = []

    mutating func append(_ fact: Fact, seq: Int64, body: [UInt8]) {
        self.seq.append(seq)
        kind.append(fact.kind)
        body.withUnsafeBufferPointer { self.body.append(String(decoding: $0, as: UTF8.self)) }
        if let transaction = fact.transaction {
            txnID.append(transaction.id); txnSeq.append(seq); txnAt.append(transaction.at.microseconds); txnKind.append(transaction.kind)
            for entry in transaction.entries {
                entryTxn.append(transaction.id); entryAccount.append(entry.account.name); entryUnit.append(entry.unit.rawValue)
                entryAmount.append(entry.amount)
            }
        }
        switch fact {
        case .accountOpened(let account, let subject, _, let at):
            accountID.append(account); accountSubject.append(subject.rawValue); accountOpened.append(at.microseconds)
        case .packGranted(let pack, _):
            append(pack)
        case .orderPlaced(_, let packs, _, _):
            packs.forEach { append($0) }
        case .orderRefunded(_, _, let transaction):
            for entry in transaction.entries where entry.unit == .calls && entry.account.name.hasPrefix("pack:") {
                revoked.append(String(entry.account.name.dropFirst(5)))
            }
        case .billPosted(let bill, _):
            billID.append(bill.id); billAccount.append(bill.account); billProduct.append(bill.product)
            billMonth.append(bill.month.description); billTotal.append(bill.total.microyuan)
        default:
            break
        }
    }

    private mutating func append(_ pack: Pack) {
        packID.append(pack.id); packAccount.append(pack.account); packAPI.append(pack.api); packItem.append(pack.item)
        packSize.append(pack.size); packLeft.append(pack.left); packExpires.append(pack.expires.microseconds)
    }

    func insert(_ connection: PostgresConnection, logger: Logger) async throws {
        guard !seq.isEmpty else { return }
        if !accountID.isEmpty {
            try await connection.query("""
                INSERT INTO accounts (id, subject, opened)
                SELECT * FROM UNNEST(\(accountID)::text[], \(accountSubject)::text[], \(accountOpened)::bigint[])
                """, logger: logger)
        }
        try await connection.query("""
            INSERT INTO facts (seq, kind, body)
            SELECT s, k, convert_to(b, 'UTF8') FROM UNNEST(\(seq)::bigint[], \(kind)::text[], \(body)::text[]) AS f(s, k, b)
            """, logger: logger)
        if !txnID.isEmpty {
            try await connection.query("""
                INSERT INTO ledger_transactions (id, seq, at, kind)
                SELECT * FROM UNNEST(\(txnID)::text[], \(txnSeq)::bigint[], \(txnAt)::bigint[], \(txnKind)::text[])
                """, logger: logger)
            try await connection.query("""
                INSERT INTO ledger_entries (txn, account, unit, amount)
                SELECT * FROM UNNEST(\(entryTxn)::text[], \(entryAccount)::text[], \(entryUnit)::text[], \(entryAmount)::bigint[])
                """, logger: logger)
        }
        if !packID.isEmpty {
            try await connection.query("""
                INSERT INTO packs (id, account, api, item, size, "left", expires)
                SELECT * FROM UNNEST(\(packID)::text[], \(packAccount)::text[], \(packAPI)::text[], \(packItem)::text[],
                                     \(packSize)::bigint[], \(packLeft)::bigint[], \(packExpires)::bigint[])
                """, logger: logger)
        }
        if !revoked.isEmpty {
            try await connection.query("UPDATE packs SET revoked = TRUE WHERE id = ANY(\(revoked)::text[])", logger: logger)
        }
        if !billID.isEmpty {
            try await connection.query("""
                INSERT INTO bills (id, account, product, month, total)
                SELECT * FROM UNNEST(\(billID)::text[], \(billAccount)::text[], \(billProduct)::text[], \(billMonth)::text[], \(billTotal)::bigint[])
                """, logger: logger)
        }
    }
}
