import Foundation
import Logging
import NIOCore
import PostgresNIO
import Synchronization

/// The store shared by several coordinators: PostgreSQL through postgres-nio's connection
/// pool. Every method that changes state is one transaction (`READ COMMITTED`, with row
/// locks where a decision reads before it writes), so any number of coordinators may use one
/// database at once:
///
/// - a claim is a conditional update (`WHERE id = ? AND status = 'queued'`), so two claims
///   of one job meet on its row lock and only the first takes it; `claimQueued` takes the
///   first fitting queued jobs in queue order with `FOR UPDATE SKIP LOCKED`, in one statement;
/// - a runner's write is fenced in the statement (or the transaction) that makes it: the job
///   must be running with the writer's epoch, its row locked until the write commits;
/// - a move is one `UPDATE` of one row, whatever the length of the queue.
///
/// The schema is made by its own migrations (`heddle_migration` lists those applied),
/// applied under an advisory lock so coordinators starting together do not race.
public final class PostgresStore: CoordinatorStore {
    let client: PostgresClient
    let logger: Logger
    /// The pool's run loop, the store's own: it lives exactly as long as the store (cancelled
    /// by `close` or when the store goes). Not a `Service` of the coordinator's group: the
    /// coordinator reads the store (migrations, recovery) before its services start, and
    /// tests and tools use a store with no group at all.
    private let runTask: Task<Void, Never>
    /// Each pipeline's latest version as this store last read or saved it, by project and
    /// pipeline (`latestPipeline`): as many as there are pipelines.
    let latestVersions = Mutex<[String: PipelineVersionRecord]>([:])
    /// Each pipeline's jobs and nodes as JSON rows (`jobsJSON`) for the version last triggered,
    /// by project and pipeline: every run of a version inserts the same rows (encoding them
    /// again cost 0.04 of the 0.99 ms of coordinator CPU per trivial job). As many as there are
    /// pipelines.
    let jobsJSONByPipeline = Mutex<[String: (versionID: Int64, json: JobsJSON)]>([:])

    /// What `--store` takes: `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE`, or with
    /// `?host=/path/to/socket/directory` a Unix socket. `sslmode=disable` (the default on a
    /// loopback host), `prefer` or `require`. `pool_max_conns=N` (pgx's name): the most
    /// connections the pool opens, `defaultMaximumConnections` unless given.
    public struct Location: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int
        public var socketPath: String?
        public var user: String
        public var password: String?
        public var database: String
        public var tls: TLSMode
        /// The most connections the pool opens (`pool_max_conns`), besides the one that listens.
        public var maximumConnections: Int
        /// How long a new connection may take (`connectTimeoutSeconds` unless set: tests on a
        /// machine busy with other suites wait longer).
        public var connectTimeout: Duration = .seconds(Self.connectTimeoutSeconds)

        public enum TLSMode: String, Sendable { case disable, prefer, require }

        public init(parsing text: String) throws {
            guard let components = URLComponents(string: text),
                  components.scheme == "postgres" || components.scheme == "postgresql" else {
                throw StoreError(.inconsistent, "a store is postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, not \(Self.redacted(text))")
            }
            let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
            guard !path.isEmpty, !path.contains("/") else {
                throw StoreError(.inconsistent, "the store's address names no database: postgres://USER@HOST:PORT/DATABASE")
            }
            database = path.removingPercentEncoding ?? path
            user = components.user?.removingPercentEncoding ?? ProcessInfo.processInfo.environment["USER"] ?? "postgres"
            password = components.password?.removingPercentEncoding
            port = components.port ?? 5432
            let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
            socketPath = query["host"].flatMap { $0.hasPrefix("/") ? "\($0)/.s.PGSQL.\(components.port ?? 5432)" : nil }
            host = components.host ?? "127.0.0.1"
            if socketPath == nil, host.isEmpty { host = "127.0.0.1" }
            let loopback = socketPath != nil || host == "127.0.0.1" || host == "localhost" || host == "::1"
            guard let mode = TLSMode(rawValue: query["sslmode"] ?? (loopback ? "disable" : "require")) else {
                throw StoreError(.inconsistent, "sslmode is disable, prefer or require")
            }
            tls = mode
            if let text = query["pool_max_conns"] {
                guard let count = Int(text), Self.connectionRange.contains(count) else {
                    throw StoreError(.inconsistent, "pool_max_conns is a whole number from \(Self.connectionRange.lowerBound) to \(Self.connectionRange.upperBound), not \(text)")
                }
                maximumConnections = count
            } else {
                maximumConnections = Self.defaultMaximumConnections
            }
        }

        /// A pool's connections unless `pool_max_conns` says otherwise. One coordinator running
        /// 700 trivial jobs a second for eight admin connections opened 14 server sessions in
        /// all, and ran as fast with 8 allowed (its writes share transactions, at most four at
        /// once, and its dispatch is one at a time). Lower it when many coordinators share a
        /// server's `max_connections`.
        public static let defaultMaximumConnections = 16
        static let connectionRange = 1...100

        /// The address without its password.
        public var description: String {
            let place = socketPath.map { "socket \($0)" } ?? "\(host):\(port)"
            return "postgres://\(user)@\(place)/\(database)"
        }

        static func redacted(_ text: String) -> String {
            guard var components = URLComponents(string: text), components.password != nil else { return text }
            components.password = "***"
            return components.string ?? "the given address"
        }

        var configuration: PostgresClient.Configuration {
            var configuration: PostgresClient.Configuration
            if let socketPath {
                configuration = .init(unixSocketPath: socketPath, username: user, password: password, database: database)
            } else {
                let tlsConfiguration: PostgresClient.Configuration.TLS = switch tls {
                case .disable: .disable
                case .prefer: .prefer(.makeClientConfiguration())
                case .require: .require(.makeClientConfiguration())
                }
                configuration = .init(host: host, port: port, username: user, password: password, database: database,
                                      tls: tlsConfiguration)
            }
            configuration.options.maximumConnections = maximumConnections
            configuration.options.connectTimeout = connectTimeout
            return configuration
        }

        /// A connection attempt the server accepted while shutting down may never be answered:
        /// given up after 2 s and tried again (the pool's and the listener's), so a restarting
        /// database holds the coordinator's writes for seconds, not tens of seconds.
        static let connectTimeoutSeconds: Int64 = 2
    }

    public let location: Location
    public let coordinatorID: String
    /// Writes from many callers sharing transactions (`batched`).
    let batches = PostgresBatches()

    /// Connects, applies the migrations this version knows, and checks the database is not
    /// newer than this version.
    /// `callDeadline`: how long a call may hold its connection before it fails (below).
    public static func connect(_ location: Location, logger: Logger = Logger(label: "heddle.store"),
                               callDeadline: Duration = .seconds(10)) async throws -> PostgresStore {
        let store = PostgresStore(location: location, logger: logger, callDeadline: callDeadline)
        do {
            try await store.migrate()
        } catch {
            store.close()
            throw error
        }
        return store
    }

    private init(location: Location, logger: Logger, callDeadline: Duration) {
        self.location = location
        self.logger = logger
        self.callDeadline = callDeadline
        // New at every start: a restarted coordinator takes its jobs back as any other would.
        let host = ProcessInfo.processInfo.hostName.prefix(40)
        self.coordinatorID = "\(host)-\(ProcessInfo.processInfo.processIdentifier)-\(UInt32.random(in: 0...UInt32.max))"
        let client = PostgresClient(configuration: location.configuration, backgroundLogger: logger)
        self.client = client
        runTask = Task { await client.run() }
    }

    /// Closes the pool's connections; the store is unusable afterwards.
    public func close() {
        runTask.cancel()
    }

    deinit {
        runTask.cancel()
    }

    // MARK: transactions

    /// Runs `body` in one transaction on one connection; commits when it returns, rolls back
    /// when it throws. A deadlock or serialization failure (another coordinator's transaction
    /// crossed this one) is retried, up to five times.
    ///
    /// `explicit` false: `body` is one statement that writes (and reads that write nothing), so
    /// the statement's own transaction is enough: no `BEGIN` and `COMMIT`, two round trips
    /// fewer (a batch of one such write, `PostgresBatches`).
    func transaction<T: Sendable>(function: String = #function, explicit: Bool = true,
                                  _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await watched(function) { [logger] connection in
                    guard explicit else { return try await body(connection) }
                    try await connection.query("BEGIN", logger: logger)
                    do {
                        let result = try await body(connection)
                        try await connection.query("COMMIT", logger: logger)
                        return result
                    } catch {
                        _ = try? await connection.query("ROLLBACK", logger: logger)
                        throw error
                    }
                }
            } catch let error as PSQLError where attempt < 5 && Self.isRetryable(error) {
                logger.debug("transaction retried", metadata: ["error": "\(String(reflecting: error))"])
                continue
            } catch let error as PSQLError {
                throw Self.storeError(error)
            }
        }
    }

    /// Runs `body` in a transaction shared with the other writes waiting now (group commit,
    /// `PostgresBatches`): for the writes of the job lifecycle, many per second from many
    /// runners. `body` must write nothing it does not mean to keep unless it throws: it may
    /// run again, in a new transaction, when another write of its batch fails.
    ///
    /// `oneStatement`: `body` writes with one statement (reads that write nothing, such as a
    /// refusal's reason, may follow); a batch of that write alone then runs without
    /// `BEGIN`/`COMMIT`.
    func batched<T: Sendable>(oneStatement: Bool = false,
                              _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await batches.write(on: self, oneStatement: oneStatement, body)
    }

    /// Runs one read (or a single-statement write) outside an explicit transaction.
    @discardableResult
    func read<T: Sendable>(function: String = #function, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        do {
            return try await watched(function) { try await body($0) }
        } catch let error as PSQLError {
            throw Self.storeError(error)
        }
    }

    /// A call slower than this is logged (`a database call is slow`, with the store method and
    /// whether it has a connection yet).
    static let slowCall = Duration.seconds(2)
    /// A call that has held its connection this long (10 s unless `connect` says otherwise)
    /// fails (`unavailable`): its connection is closed, so the server rolls back what it had
    /// not committed, and the caller goes on without waiting for it. (After a database
    /// restart, postgres-nio was seen to leave a query on a leased connection unanswered
    /// forever, even once the connection was closed.)
    let callDeadline: Duration

    /// Leases a connection for `body`, watched: logged when slow; once it has held its
    /// connection for `callDeadline`, the connection is closed and the caller gets
    /// `unavailable` at once (the call, left behind, can commit nothing more). A call still
    /// waiting for a connection (the database away) waits on.
    private func watched<T: Sendable>(_ call: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let state = WatchedCall<T>()
        let (client, logger, callDeadline) = (client, logger, callDeadline)
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                state.answer.set(continuation)
                let watchdog = Task {
                    do {
                        try await Task.sleep(for: Self.slowCall)
                        guard !state.answer.isDone else { return }
                        logger.warning("a database call is slow", metadata: [
                            "call": "\(call)", "connection": "\(state.held.withLock { $0.connection == nil } ? "waiting for one" : "leased")"])
                        while !state.answer.isDone {
                            let (connection, since) = state.held.withLock { $0 }
                            if let connection, let since, since.duration(to: .now) >= callDeadline {
                                logger.error("a database call passed its deadline: its connection is closed", metadata: [
                                    "call": "\(call)", "seconds": "\(callDeadline.components.seconds)"])
                                try? await connection.close()
                                state.answer.finish(.failure(StoreError(.unavailable,
                                    "PostgreSQL did not answer \(call) within \(callDeadline.components.seconds) s")))
                                return
                            }
                            try await Task.sleep(for: since.map { callDeadline - $0.duration(to: .now) } ?? Self.slowCall)
                        }
                    } catch {}  // cancelled: the call ended
                }
                state.work.withLock {
                    $0 = Task {
                        do {
                            state.answer.finish(.success(try await client.withConnection { connection in
                                state.held.withLock { $0 = (connection, .now) }
                                defer { state.held.withLock { $0 = (nil, nil) } }
                                return try await body(connection)
                            }))
                        } catch {
                            state.answer.finish(.failure(error))
                        }
                        watchdog.cancel()
                    }
                }
            }
        } onCancel: {
            // The call is cancelled (a lease waited for ends at once); the watchdog stays, for
            // a call that does not end when cancelled.
            state.work.withLock { $0 }?.cancel()
        }
        return try result.get()
    }

    /// What a watched call's tasks share.
    final class WatchedCall<T: Sendable>: Sendable {
        /// The connection the call holds, and since when.
        let held = Mutex<(connection: PostgresConnection?, since: ContinuousClock.Instant?)>((nil, nil))
        /// The caller, answered once: by the call, or by the watchdog at the deadline.
        let answer = Once<Result<T, any Error>>()
        let work = Mutex<Task<Void, Never>?>(nil)
    }

    static func isRetryable(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "40P01" || state == "40001"
    }

    /// A database error as the store's: what the server said, or that it cannot be reached.
    /// A server shutting down or starting (SQLSTATE class 57) or a broken connection (08) is
    /// `unavailable`: the same request may succeed later.
    static func storeError(_ error: PSQLError) -> any Error {
        if let message = error.serverInfo?[.message] {
            let state = error.serverInfo?[.sqlState] ?? "?"
            let code: StoreError.Code = state.hasPrefix("57") || state.hasPrefix("08") ? .unavailable : .database
            return StoreError(code, "PostgreSQL: \(message) (\(state))")
        }
        let cause = error.underlying.map { ": \($0)" } ?? ""
        return StoreError(.unavailable, "PostgreSQL cannot be reached (\(error.code)\(cause))")
    }

    /// An error for a log line: a PostgreSQL error with what the server said (its own
    /// description hides it).
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        return "\(storeError(error))"
    }

    // MARK: migrations

    static let migrations: [(name: String, sql: [String])] = [
        ("v1: projects, pipelines, runs, attempts, jobs, nodes, log lengths, artifacts, uploads, revocations, drains, tokens, webhooks, browser sessions", [
            """
            CREATE TABLE project (
                id BIGSERIAL PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                repository TEXT NOT NULL DEFAULT '',
                created_at BIGINT NOT NULL,
                webhook_secret TEXT
            )
            """,
            """
            CREATE TABLE pipeline_version (
                id BIGSERIAL PRIMARY KEY,
                project_id BIGINT NOT NULL REFERENCES project(id),
                pipeline TEXT NOT NULL,
                version BIGINT NOT NULL,
                source TEXT NOT NULL,
                jobs TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                UNIQUE (project_id, pipeline, version)
            )
            """,
            """
            CREATE TABLE run (
                id BIGSERIAL PRIMARY KEY,
                project TEXT NOT NULL,
                pipeline TEXT NOT NULL,
                pipeline_version_id BIGINT NOT NULL REFERENCES pipeline_version(id),
                branch TEXT NOT NULL,
                status TEXT NOT NULL,
                attempt BIGINT NOT NULL,
                trigger TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT,
                commit_sha TEXT NOT NULL DEFAULT '',
                triggered_by TEXT NOT NULL DEFAULT ''
            )
            """,
            "CREATE INDEX run_by_filter ON run(project, pipeline, branch)",
            """
            CREATE TABLE attempt (
                run_id BIGINT NOT NULL REFERENCES run(id),
                number BIGINT NOT NULL,
                status TEXT NOT NULL,
                trigger TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT,
                triggered_by TEXT NOT NULL DEFAULT '',
                PRIMARY KEY (run_id, number)
            )
            """,
            """
            CREATE TABLE job (
                id BIGSERIAL PRIMARY KEY,
                run_id BIGINT NOT NULL REFERENCES run(id),
                attempt BIGINT NOT NULL,
                name TEXT NOT NULL,
                labels JSONB NOT NULL,
                status TEXT NOT NULL,
                runner TEXT,
                epoch BIGINT NOT NULL DEFAULT 0,
                position DOUBLE PRECISION NOT NULL,
                queued_at BIGINT NOT NULL,
                started_at BIGINT,
                finished_at BIGINT,
                reason TEXT NOT NULL DEFAULT '',
                commit_sha TEXT NOT NULL DEFAULT '',
                retry_lost BIGINT NOT NULL DEFAULT 0,
                lost_count BIGINT NOT NULL DEFAULT 0,
                holder TEXT
            )
            """,
            "CREATE INDEX job_by_run ON job(run_id, attempt)",
            "CREATE INDEX job_queued ON job(position, id) WHERE status = 'queued'",
            "CREATE INDEX job_active ON job(position) WHERE status IN ('queued', 'running')",
            """
            CREATE TABLE node (
                job_id BIGINT NOT NULL REFERENCES job(id),
                name TEXT NOT NULL,
                ordinal BIGINT NOT NULL,
                run TEXT NOT NULL,
                needs TEXT NOT NULL,
                env TEXT NOT NULL,
                timeout BIGINT,
                grace BIGINT,
                artifacts TEXT NOT NULL,
                status TEXT NOT NULL,
                exit_code BIGINT,
                started_at BIGINT,
                finished_at BIGINT,
                PRIMARY KEY (job_id, name)
            )
            """,
            """
            CREATE TABLE log_end (
                job_id BIGINT NOT NULL REFERENCES job(id),
                node TEXT NOT NULL,
                length BIGINT NOT NULL,
                PRIMARY KEY (job_id, node)
            )
            """,
            """
            CREATE TABLE artifact (
                id BIGSERIAL PRIMARY KEY,
                job_id BIGINT NOT NULL REFERENCES job(id),
                name TEXT NOT NULL,
                size BIGINT NOT NULL,
                sha256 TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                run_id BIGINT NOT NULL,
                project TEXT NOT NULL,
                pipeline TEXT NOT NULL,
                branch TEXT NOT NULL,
                UNIQUE (job_id, name)
            )
            """,
            "CREATE INDEX artifact_by_project ON artifact(project, pipeline, branch)",
            "CREATE INDEX artifact_by_run ON artifact(run_id)",
            "CREATE INDEX artifact_by_sha256 ON artifact(sha256 text_pattern_ops)",
            "CREATE INDEX artifact_by_created ON artifact(created_at)",
            "CREATE INDEX artifact_by_size ON artifact(size)",
            """
            CREATE TABLE upload (
                id BIGSERIAL PRIMARY KEY,
                job_id BIGINT NOT NULL REFERENCES job(id),
                name TEXT NOT NULL,
                size BIGINT NOT NULL,
                sha256 TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                UNIQUE (job_id, name)
            )
            """,
            """
            CREATE TABLE revocation (
                id BIGSERIAL PRIMARY KEY,
                name TEXT,
                fingerprint TEXT,
                revoked_at BIGINT NOT NULL
            )
            """,
            "CREATE TABLE runner_state (name TEXT PRIMARY KEY, drained BOOLEAN NOT NULL)",
            """
            CREATE TABLE delivery (
                id BIGSERIAL PRIMARY KEY,
                project TEXT NOT NULL,
                forge TEXT NOT NULL,
                delivery_id TEXT NOT NULL,
                event TEXT NOT NULL,
                received_at BIGINT NOT NULL,
                outcome TEXT NOT NULL,
                detail TEXT NOT NULL,
                run_ids TEXT NOT NULL,
                UNIQUE (project, forge, delivery_id)
            )
            """,
            "CREATE INDEX delivery_by_project ON delivery(project, id)",
            """
            CREATE TABLE api_token (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                secret_sha256 TEXT NOT NULL UNIQUE,
                created_at BIGINT NOT NULL,
                expires_at BIGINT,
                revoked_at BIGINT
            )
            """,
            """
            CREATE TABLE web_session (
                secret_sha256 TEXT PRIMARY KEY,
                token_name TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL
            )
            """,
            "CREATE INDEX web_session_by_token ON web_session(token_name, created_at)",
            "CREATE TABLE coordinator (id TEXT PRIMARY KEY, seen_at BIGINT NOT NULL)",
            "CREATE INDEX job_running_by_holder ON job(holder) WHERE status = 'running'",
            "CREATE INDEX web_session_by_expiry ON web_session(expires_at)",
        ]),
        ("v2: queue positions from a sequence, the shared data directory's marker", [
            // New jobs take their place at the end of the queue from a sequence, so triggers on
            // several coordinators never wait for each other; it starts above every position.
            "CREATE SEQUENCE job_position",
            """
            SELECT setval('job_position', GREATEST((SELECT COALESCE(CEIL(MAX(position)), 0) FROM job)::bigint,
                                                   (SELECT count(*) FROM job)) + 1)
            """,
            // The queue is read in order through `job_queued`; index-only reads need the
            // visibility map, which vacuum keeps: vacuumed after 1 % of the table changed.
            """
            ALTER TABLE job SET (autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_scale_factor = 0.01,
                                 autovacuum_analyze_scale_factor = 0.02)
            """,
            "CREATE TABLE cluster_setting (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ]),
        ("v3: nodes without network", [
            "ALTER TABLE node ADD COLUMN network BOOLEAN NOT NULL DEFAULT true",
        ]),
        ("v4: nodes' resource limits", [
            "ALTER TABLE node ADD COLUMN memory_limit BIGINT",
            "ALTER TABLE node ADD COLUMN cpu_limit_millis BIGINT",
            "ALTER TABLE node ADD COLUMN pids_limit BIGINT",
        ]),
        ("v5: secrets", [
            "ALTER TABLE node ADD COLUMN secrets TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE run ADD COLUMN fork BOOLEAN NOT NULL DEFAULT false",
            "ALTER TABLE project ADD COLUMN fork_secrets BOOLEAN NOT NULL DEFAULT false",
            """
            CREATE TABLE secret (
                project TEXT NOT NULL REFERENCES project(name),
                name TEXT NOT NULL,
                sealed TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL,
                PRIMARY KEY (project, name)
            )
            """,
        ]),
        ("v6: container images", [
            "ALTER TABLE node ADD COLUMN image TEXT NOT NULL DEFAULT ''",
        ]),
        ("v7: queued jobs counted per range of places", [
            // How many jobs are queued with positions in each range of 1,024 (`bucket`:
            // floor(position / 1024)), kept by the database on every change of `job`: a
            // job's place is the counts of the ranges before its own plus the jobs before it
            // in its range, so no read counts the whole queue. Each server process (`shard`:
            // its pid) adds to rows of its own, so writers never wait for each other's rows;
            // the housekeeping sweep folds them into shard 0 (`foldQueueCounts`).
            """
            CREATE TABLE queue_count (
                bucket BIGINT NOT NULL,
                shard INTEGER NOT NULL,
                n BIGINT NOT NULL,
                PRIMARY KEY (bucket, shard)
            )
            """,
            """
            CREATE FUNCTION heddle_queue_count() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'INSERT' THEN
                    INSERT INTO queue_count (bucket, shard, n)
                    SELECT floor(position / \(queueBucket))::bigint, pg_backend_pid(), count(*)
                    FROM new_rows WHERE status = 'queued' GROUP BY 1 ORDER BY 1
                    ON CONFLICT (bucket, shard) DO UPDATE SET n = queue_count.n + excluded.n;
                ELSIF TG_OP = 'UPDATE' THEN
                    INSERT INTO queue_count (bucket, shard, n)
                    SELECT b, pg_backend_pid(), sum(d) FROM (
                        SELECT floor(position / \(queueBucket))::bigint AS b, -1 AS d FROM old_rows WHERE status = 'queued'
                        UNION ALL
                        SELECT floor(position / \(queueBucket))::bigint, 1 FROM new_rows WHERE status = 'queued'
                    ) AS change GROUP BY b HAVING sum(d) <> 0 ORDER BY b
                    ON CONFLICT (bucket, shard) DO UPDATE SET n = queue_count.n + excluded.n;
                ELSE
                    INSERT INTO queue_count (bucket, shard, n)
                    SELECT floor(position / \(queueBucket))::bigint, pg_backend_pid(), -count(*)
                    FROM old_rows WHERE status = 'queued' GROUP BY 1 ORDER BY 1
                    ON CONFLICT (bucket, shard) DO UPDATE SET n = queue_count.n + excluded.n;
                END IF;
                RETURN NULL;
            END $$
            """,
            """
            CREATE TRIGGER job_queue_count_insert AFTER INSERT ON job REFERENCING NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION heddle_queue_count()
            """,
            """
            CREATE TRIGGER job_queue_count_update AFTER UPDATE ON job REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION heddle_queue_count()
            """,
            """
            CREATE TRIGGER job_queue_count_delete AFTER DELETE ON job REFERENCING OLD TABLE AS old_rows
            FOR EACH STATEMENT EXECUTE FUNCTION heddle_queue_count()
            """,
            """
            INSERT INTO queue_count (bucket, shard, n)
            SELECT floor(position / \(queueBucket))::bigint, 0, count(*) FROM job WHERE status = 'queued' GROUP BY 1
            """,
        ]),
        ("v8: runs' inputs", [
            "ALTER TABLE run ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}'",
        ]),
        ("v9: jobs carried over by a re-run of the failed ones", [
            "ALTER TABLE job ADD COLUMN carried_from BIGINT REFERENCES job(id)",
        ]),
        ("v10: schedules' latest started due times", [
            """
            CREATE TABLE schedule_start (
                project TEXT NOT NULL,
                pipeline TEXT NOT NULL,
                schedule TEXT NOT NULL,
                due BIGINT NOT NULL,
                run_id BIGINT REFERENCES run(id),
                PRIMARY KEY (project, pipeline, schedule)
            )
            """,
        ]),
        ("v11: jobs' caches, and the caches", [
            "ALTER TABLE job ADD COLUMN cache TEXT NOT NULL DEFAULT ''",
            """
            CREATE TABLE cache_entry (
                id BIGSERIAL PRIMARY KEY,
                project TEXT NOT NULL,
                branch TEXT NOT NULL,
                key TEXT NOT NULL,
                sha256 TEXT NOT NULL,
                size BIGINT NOT NULL,
                created_at BIGINT NOT NULL,
                last_used_at BIGINT NOT NULL,
                hits BIGINT NOT NULL DEFAULT 0,
                UNIQUE (project, branch, key)
            )
            """,
            "CREATE INDEX cache_entry_last_used ON cache_entry (last_used_at)",
        ]),
        ("v12: a job's end and its run's status in one call", [
            PostgresStore.attemptStatusFunction, PostgresStore.runStatusFunction, PostgresStore.endJobFunction,
        ]),
        ("v13: a claim's pick in the claim's statement", [PostgresStore.pickClaimsFunction]),
        ("v14: a queue move in one call", [PostgresStore.moveJobFunction]),
        ("v15: a claim's writes by primary key", [PostgresStore.claimQueuedFunction]),
        ("v16: a run's insert and the claim that follows it in one call", [PostgresStore.createRunFunction]),
        ("v17: the queue read by label set", [
            "CREATE INDEX job_queued_by_labels ON job (labels, position, id) WHERE status = 'queued'",
            PostgresStore.claimQueuedFunction,
        ]),
        ("v18: a batch's job ends in one call", [PostgresStore.endJobsFunction]),
        ("v19: a batch's runs and the claim that follows them in one call", [PostgresStore.createRunsFunction]),
        ("v20: a claim's statements planned once per connection", [PostgresStore.claimQueuedFunction]),
        ("v21: queue counts kept per changed row, not per statement", [
            // Every `UPDATE` of `job` fired the statement trigger, with its old and new rows
            // kept for it: a job's end and a node's too, which change no queued job. Now only
            // a row that leaves or joins the queue, or moves to another range of places, fires
            // a trigger. (A trigger with transition tables cannot name columns or rows.)
            "DROP TRIGGER job_queue_count_update ON job",
            """
            CREATE FUNCTION heddle_queue_count_row() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.status = 'queued' THEN
                    INSERT INTO queue_count (bucket, shard, n) VALUES (floor(OLD.position / \(queueBucket))::bigint, pg_backend_pid(), -1)
                    ON CONFLICT (bucket, shard) DO UPDATE SET n = queue_count.n + excluded.n;
                END IF;
                IF NEW.status = 'queued' THEN
                    INSERT INTO queue_count (bucket, shard, n) VALUES (floor(NEW.position / \(queueBucket))::bigint, pg_backend_pid(), 1)
                    ON CONFLICT (bucket, shard) DO UPDATE SET n = queue_count.n + excluded.n;
                END IF;
                RETURN NULL;
            END $$
            """,
            // `heddle.renumbering`: a renumber of the whole queue (`heddle_move_job`) counts
            // its rows itself, in one statement.
            """
            CREATE TRIGGER job_queue_count_row AFTER UPDATE OF status, position ON job FOR EACH ROW
            WHEN ((OLD.status = 'queued' OR NEW.status = 'queued')
                  AND (OLD.status IS DISTINCT FROM NEW.status
                       OR floor(OLD.position / \(queueBucket)) IS DISTINCT FROM floor(NEW.position / \(queueBucket)))
                  AND current_setting('heddle.renumbering', true) IS DISTINCT FROM 'on')
            EXECUTE FUNCTION heddle_queue_count_row()
            """,
            PostgresStore.moveJobFunction,
        ]),
    ]

    /// What `heddle_end_job` and `heddle_move_job` answer: a job's columns (`jobColumns`) and
    /// its run's (`runColumns`) prefixed `r_`, as `RETURNS TABLE` columns ...
    static let jobAndRunColumns = """
        id bigint, run_id bigint, attempt bigint, name text, labels text, status text, runner text,
        epoch bigint, "position" double precision, queued_at bigint, started_at bigint, finished_at bigint,
        reason text, commit_sha text, retry_lost bigint, lost_count bigint, carried_from bigint, cache text,
        r_id bigint, r_project text, r_pipeline text, r_pipeline_version_id bigint, r_branch text,
        r_status text, r_attempt bigint, r_trigger text, r_created_at bigint, r_started_at bigint,
        r_finished_at bigint, r_commit_sha text, r_triggered_by text, r_fork boolean, r_inputs text
        """

    /// ... and the values of those columns from the function's variables `j` (a `job`) and `r`
    /// (a `run`).
    static let jobAndRunValues = """
        j.id, j.run_id, j.attempt, j.name, j.labels::text, j.status, j.runner, j.epoch, j.position,
        j.queued_at, j.started_at, j.finished_at, j.reason, j.commit_sha, j.retry_lost, j.lost_count, j.carried_from,
        j.cache, r.id, r.project, r.pipeline, r.pipeline_version_id, r.branch, r.status, r.attempt, r.trigger,
        r.created_at, r.started_at, r.finished_at, r.commit_sha, r.triggered_by, r.fork, r.inputs
        """

    /// Moves a queued job to `p_kind` (`top`, `bottom`, `position` with `p_n`, `before` or
    /// `after` the job `p_anchor`) and answers its place, in one round trip (a move was six:
    /// its lock, the neighbours, the update, the place, `BEGIN` and `COMMIT`). One move at a
    /// time, whichever coordinator: the advisory lock (`queueMoveLock`) is taken before the
    /// job's row, for the statement's transaction; new jobs take places from `job_position`
    /// and never wait for it. The job goes between its new neighbours in the queue without it,
    /// read in the queue's order (position, then id); after the last, at a place from
    /// `job_position`, so that a job appended later goes after it. A numbered place is found
    /// from `queue_count` (the range that holds the (n-1)th of the others, read from that
    /// range's start, at most a range). When no number fits between the neighbours, every
    /// queued job is spaced evenly again (1, 2, 3, ...) and the place chosen again. The place
    /// is the counts of the ranges before the job's plus the queued jobs before it in its range.
    /// `outcome`: `moved` (with the job's columns, its run's prefixed `r_`, the new `position`,
    /// `renumbered` and `place`), `not_queued` or `no_anchor` (nothing changed).
    static let moveJobFunction = """
        CREATE OR REPLACE FUNCTION heddle_move_job(p_job bigint, p_kind text, p_n bigint, p_anchor bigint)
        RETURNS TABLE (outcome text, new_position double precision, renumbered boolean, place bigint,
                       \(jobAndRunColumns))
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        DECLARE
            width constant bigint := \(queueBucket);
            current_position double precision;
            anchor_position double precision;
            before_position double precision;
            after_position double precision;
            target double precision;
            was_renumbered boolean := false;
            counted bigint;
            j job;
            r run;
        BEGIN
            PERFORM pg_advisory_xact_lock(\(queueMoveLock));
            SELECT job.position INTO current_position FROM job WHERE job.id = p_job AND job.status = 'queued' FOR UPDATE;
            IF NOT FOUND THEN
                outcome := 'not_queued';
                RETURN NEXT;
                RETURN;
            END IF;
            IF p_kind IN ('before', 'after') THEN
                SELECT job.position INTO anchor_position FROM job
                WHERE job.id = p_anchor AND job.id <> p_job AND job.status = 'queued';
                IF NOT FOUND THEN
                    outcome := 'no_anchor';
                    RETURN NEXT;
                    RETURN;
                END IF;
            END IF;
            LOOP
                before_position := NULL;
                after_position := NULL;
                IF p_kind = 'top' OR (p_kind = 'position' AND p_n <= 1) THEN
                    SELECT job.position INTO after_position FROM job
                    WHERE job.status = 'queued' AND job.id <> p_job ORDER BY job.position, job.id LIMIT 1;
                ELSIF p_kind = 'position' THEN
                    -- The (n-1)th and nth of the others, read from the start of the range
                    -- that holds the (n-1)th. One statement, so the range's start is not known
                    -- when it is planned: with a known start and statistics from before a
                    -- burst of jobs, the planner sorted the queue from there instead of
                    -- reading the index in order (15 ms, not 1, with 100,000 queued).
                    SELECT min(o.position), CASE WHEN count(*) > 1 THEN max(o.position) END
                    INTO before_position, after_position FROM (
                        WITH rg AS (
                            SELECT c.bucket, (c.cum - c.s)::bigint AS before FROM (
                                SELECT g.bucket, g.s, sum(g.s) OVER (ORDER BY g.bucket) AS cum FROM (
                                    SELECT queue_count.bucket,
                                           sum(queue_count.n) - CASE WHEN queue_count.bucket = floor(current_position / width)::bigint
                                                                     THEN 1 ELSE 0 END AS s
                                    FROM queue_count GROUP BY queue_count.bucket
                                ) AS g
                            ) AS c WHERE c.cum >= p_n - 1 ORDER BY c.bucket LIMIT 1
                        )
                        SELECT p.position FROM rg CROSS JOIN LATERAL (
                            SELECT job.position FROM job
                            WHERE job.status = 'queued' AND job.id <> p_job AND job.position >= (rg.bucket * width)::float8
                            ORDER BY job.position, job.id OFFSET (p_n - 2) - rg.before LIMIT 2
                        ) AS p
                    ) AS o;
                ELSIF p_kind = 'before' THEN
                    SELECT job.position INTO before_position FROM job
                    WHERE job.status = 'queued' AND job.id <> p_job AND (job.position, job.id) < (anchor_position, p_anchor)
                    ORDER BY job.position DESC, job.id DESC LIMIT 1;
                    after_position := anchor_position;
                ELSIF p_kind = 'after' THEN
                    before_position := anchor_position;
                    SELECT job.position INTO after_position FROM job
                    WHERE job.status = 'queued' AND job.id <> p_job AND (job.position, job.id) > (anchor_position, p_anchor)
                    ORDER BY job.position, job.id LIMIT 1;
                ELSIF p_kind <> 'bottom' THEN
                    RAISE EXCEPTION 'unknown move kind %', p_kind;
                END IF;
                -- The bottom, and a numbered place past the end: after the last.
                IF p_kind = 'bottom' OR (p_kind = 'position' AND p_n > 1 AND before_position IS NULL) THEN
                    SELECT job.position INTO before_position FROM job
                    WHERE job.status = 'queued' AND job.id <> p_job ORDER BY job.position DESC, job.id DESC LIMIT 1;
                    after_position := NULL;
                END IF;
                IF after_position IS NULL THEN
                    target := greatest(nextval('job_position')::float8, COALESCE(before_position, 0) + 1);
                ELSIF before_position IS NULL THEN
                    target := after_position - 1;
                ELSE
                    target := before_position + (after_position - before_position) / 2;
                END IF;
                EXIT WHEN before_position IS NULL OR after_position IS NULL
                       OR (target > before_position AND target < after_position);
                IF was_renumbered THEN
                    RAISE EXCEPTION 'no room between % and % after renumbering', before_position, after_position;
                END IF;
                -- The whole queue at once: its counts moved in one statement, not by the row
                -- trigger once per job (`heddle.renumbering` holds it off meanwhile). A job
                -- claimed or cancelled since `n` was read is renumbered too but not counted:
                -- its own change counted it out, at its place then, which only moves change.
                PERFORM set_config('heddle.renumbering', 'on', true);
                WITH renumbered AS (
                    UPDATE job SET position = n.rank FROM (
                        SELECT job.id, job.position AS before, row_number() OVER (ORDER BY job.position, job.id)::float8 AS rank
                        FROM job WHERE job.status = 'queued'
                    ) AS n WHERE job.id = n.id
                    RETURNING n.before, job.position AS after, job.status
                )
                INSERT INTO queue_count (bucket, shard, n)
                SELECT c.b, pg_backend_pid(), sum(c.d) FROM (
                    SELECT floor(renumbered.before / width)::bigint AS b, -1 AS d FROM renumbered WHERE renumbered.status = 'queued'
                    UNION ALL
                    SELECT floor(renumbered.after / width)::bigint, 1 FROM renumbered WHERE renumbered.status = 'queued'
                ) AS c GROUP BY c.b HAVING sum(c.d) <> 0 ORDER BY c.b
                ON CONFLICT (bucket, shard) DO UPDATE SET n = queue_count.n + excluded.n;
                PERFORM set_config('heddle.renumbering', 'off', true);
                was_renumbered := true;
                IF p_kind IN ('before', 'after') THEN
                    SELECT job.position INTO anchor_position FROM job WHERE job.id = p_anchor;
                END IF;
                SELECT job.position INTO current_position FROM job WHERE job.id = p_job;
            END LOOP;
            UPDATE job SET position = target WHERE job.id = p_job RETURNING job.* INTO j;
            SELECT (SELECT COALESCE(sum(queue_count.n), 0) FROM queue_count
                    WHERE queue_count.bucket < floor(target / width)::bigint)::bigint
                   + (SELECT count(*) FROM job o WHERE o.status = 'queued' AND o.position >= (floor(target / width) * width)::float8
                        AND (o.position, o.id) < (target, p_job)) + 1
            INTO counted;
            SELECT * INTO r FROM run WHERE run.id = j.run_id;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'run % of job % is missing', j.run_id, p_job;
            END IF;
            RETURN QUERY SELECT 'moved'::text, target, was_renumbered, counted,
                \(jobAndRunValues);
        END
        $$
        """

    /// Picks queued jobs for runners' free slots and locks them (`FOR UPDATE SKIP LOCKED`, so
    /// claims never wait for one another): in queue order, each fitting job to the least busy
    /// open slot it fits (by jobs running plus picked, then the slots' order), until every slot
    /// is filled or no fitting job is left. A job read may fit only slots filled meanwhile, so
    /// it reads on past it, twice as far each round. `p_slots`: a JSON array of `{"runner",
    /// "labels" (an array), "running", "epochs" (one per free slot, in the order given)}`.
    /// Returns a job, its runner and its epoch per claim. Migration v13; coordinators before
    /// v15 call it from their claim's statement. This version calls `heddle_claim_queued`,
    /// which picks with the same loop (`pickFunction`).
    static let pickClaimsFunction = pickFunction("""
        CREATE OR REPLACE FUNCTION heddle_pick_claims(p_slots jsonb)
        RETURNS TABLE (claimed bigint, claimed_by text, claimed_at bigint)
        LANGUAGE plpgsql VOLATILE ROWS 16 AS $$
        """, declare: "", pick: """
                        claimed := picked.id;
                        claimed_by := s_runner[best];
                        claimed_at := (s_epochs[best]->>(jsonb_array_length(s_epochs[best]) - s_free[best]))::bigint;
        """)

    /// Claims queued jobs for runners' free slots, in one call: picks them as
    /// `heddle_pick_claims` does and marks each running on its runner at its epoch, held by
    /// `p_holder`, with its run and attempt running. Returns a row per claimed job and node, in
    /// the order picked: the job as it is now (`job_row`), its run as it was before
    /// (`run_row`) and whether this call started it (`started`, on the run's first job only),
    /// its project's `repository`, and the node (`node_row`, null for a job with none; a
    /// job's nodes in no particular order).
    ///
    /// Its plans do not depend on the tables' size or statistics. The pick reads the queue by
    /// label set (`pickFunction`'s `byLabelSets`), each set's jobs in queue order through
    /// `job_queued_by_labels`, and stops at its limit: with sorts off, the only way (reading
    /// every queued job and sorting them looked cheaper to plans made while the tables were
    /// new and unanalyzed, and `auto_explain` showed it read all 1,100 queued jobs at each
    /// claim). Only the few rows picked from the sets are sorted, to merge them (a sort, being
    /// disabled, costs enough to be compiled by JIT at every call: `jit = off`). Every other statement reads or writes one row by
    /// its primary key (the job is the row just locked, so queued), where the set-based claim
    /// this replaces hashed every queued job or scanned every run at each claim, for the same
    /// reason. Everything is read here, with the function's own snapshots: the calling
    /// statement's snapshot, older, may not show a run committed while the pick ran.
    /// (`heddle_pick_claims` stays for coordinators of the version before, while they are
    /// upgraded.)
    ///
    /// Its statements are planned once per connection (`plan_cache_mode =
    /// force_generic_plan`, migration v20): with array parameters, PL/pgSQL's plan cache chose
    /// a custom plan, planned again at every call, for most of them (`pg_stat_statements`
    /// with `track_planning`). The plans are the same either way (no sort, by index).
    static let claimQueuedFunction = pickFunction("""
        CREATE OR REPLACE FUNCTION heddle_claim_queued(p_slots jsonb, p_now bigint, p_holder text)
        RETURNS TABLE (job_row job, run_row run, repository text, node_row node, started boolean)
        LANGUAGE plpgsql VOLATILE ROWS 16 SET enable_sort = off SET enable_incremental_sort = off SET jit = off
            SET plan_cache_mode = force_generic_plan AS $$
        """, declare: "claimed job;", pick: """
                        UPDATE job SET status = 'running', runner = s_runner[best],
                            epoch = (s_epochs[best]->>(jsonb_array_length(s_epochs[best]) - s_free[best]))::bigint,
                            started_at = p_now, holder = p_holder
                        WHERE job.id = picked.id RETURNING job.* INTO claimed;
                        job_row := claimed;
                        SELECT * INTO run_row FROM run WHERE run.id = claimed.run_id;
                        SELECT project.repository INTO repository FROM project WHERE project.name = run_row.project;
                        repository := COALESCE(repository, '');
                        UPDATE run SET status = 'running', started_at = COALESCE(run.started_at, p_now)
                        WHERE run.id = claimed.run_id AND run.status = 'queued';
                        started := FOUND;
                        UPDATE attempt SET status = 'running', started_at = COALESCE(attempt.started_at, p_now)
                        WHERE attempt.run_id = claimed.run_id AND attempt.number = claimed.attempt AND attempt.status = 'queued';
        """, emit: """
                        FOR node_row IN SELECT * FROM node WHERE node.job_id = claimed.id LOOP
                            RETURN NEXT;
                        END LOOP;
                        IF NOT FOUND THEN
                            node_row := NULL;
                            RETURN NEXT;
                        END IF;
        """, byLabelSets: true)

    /// Stores a run, its first attempt, its jobs at the end of the queue (places from
    /// `job_position`, in the pipeline's order: `nextval` in the select list is evaluated after
    /// the sort) and their nodes, and answers a row per job (`created_run`, `created_id`,
    /// `created_name`, `created_position`, the other columns null). With `p_latest_only`,
    /// nothing when a later version of the pipeline exists. Then, when `p_slots` lists free
    /// slots and the run was stored, claims for them as `heddle_claim_queued` does, in queue
    /// order (an older queued job that fits goes before the new ones), and answers its rows
    /// (`created_*` null): one round trip and one commit where a trigger and its claim were
    /// two of each. Migration v16; this version calls `heddle_create_runs` (several runs in one
    /// call), and keeps this one for coordinators of the version before, while they are upgraded.
    static let createRunFunction = """
        CREATE OR REPLACE FUNCTION heddle_create_run(p_project text, p_pipeline text, p_version bigint, p_branch text,
                                                     p_trigger text, p_now bigint, p_commit text, p_by text, p_jobs jsonb,
                                                     p_nodes jsonb, p_fork boolean, p_inputs text, p_latest_only boolean,
                                                     p_slots jsonb, p_holder text)
        RETURNS TABLE (created_run bigint, created_id bigint, created_name text, created_position double precision,
                       job_row job, run_row run, repository text, node_row node, started boolean)
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        BEGIN
            RETURN QUERY
            WITH r AS (
                INSERT INTO run (project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at,
                                 commit_sha, triggered_by, fork, inputs)
                SELECT p_project, p_pipeline, p_version, p_branch, 'queued', 1, p_trigger, p_now, p_commit, p_by, p_fork, p_inputs
                WHERE NOT p_latest_only OR NOT EXISTS (
                    SELECT 1 FROM pipeline_version v JOIN pipeline_version w
                        ON w.project_id = v.project_id AND w.pipeline = v.pipeline AND w.version > v.version
                    WHERE v.id = p_version)
                RETURNING run.id
            ), a AS (
                INSERT INTO attempt (run_id, number, status, trigger, created_at, triggered_by)
                SELECT r.id, 1, 'queued', p_trigger, p_now, p_by FROM r
            ), j AS (
                INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, retry_lost, cache)
                SELECT r.id, 1, d.name, d.labels::jsonb, 'queued', nextval('job_position')::float8, p_now, d.retry_lost, d.cache
                FROM r, jsonb_to_recordset(p_jobs) AS d(ordinal bigint, name text, labels text, retry_lost bigint, cache text)
                ORDER BY d.ordinal
                RETURNING job.id, job.run_id, job.name, job.position
            ), n AS (
                INSERT INTO node (job_id, \(nodeColumns), status)
                SELECT j.id, \(qualified(nodeColumns, by: "d")), 'pending'
                FROM jsonb_to_recordset(p_nodes) AS d(\(nodeRecordset))
                JOIN j ON j.name = d.job
            )
            SELECT j.run_id, j.id, j.name, j.position, NULL::job, NULL::run, NULL::text, NULL::node, NULL::boolean FROM j;
            IF FOUND AND jsonb_array_length(p_slots) > 0 THEN
                RETURN QUERY
                SELECT NULL::bigint, NULL::bigint, NULL::text, NULL::double precision,
                       c.job_row, c.run_row, c.repository, c.node_row, c.started
                FROM heddle_claim_queued(p_slots, p_now, p_holder) AS c;
            END IF;
        END
        $$
        """

    /// Stores several runs in one call, each as `heddle_create_run` stores one (the k-th from
    /// the k-th element of every array but `p_claimer` and `p_slots`; `p_jobs` and `p_nodes`
    /// are each run's JSON arrays), their jobs at the end of the queue in the order given,
    /// then claims for `p_slots` as `heddle_claim_queued` does, when they list any and the
    /// `p_claimer`-th run was stored. A run with `p_latest_only` is not stored while a later
    /// version of its pipeline exists. Answers a row per job stored (`created_ordinal`: its
    /// run's k, `created_run`, `created_id`, `created_name`, `created_position`; the other
    /// columns null), then the claim's rows (`created_*` null). Run ids are taken from
    /// `run_id_seq` before the inserts, so that each job and node is joined to its run by id.
    /// Planned once per connection (`force_generic_plan`): a custom plan for the arrays given,
    /// which the plan cache chose, planned the inserts again at every call (0.48 against 0.26
    /// ms a call, alone, in `pgbench`).
    static let createRunsFunction = """
        CREATE OR REPLACE FUNCTION heddle_create_runs(p_projects text[], p_pipelines text[], p_versions bigint[], p_branches text[],
                                                      p_triggers text[], p_nows bigint[], p_commits text[], p_bys text[],
                                                      p_jobs jsonb[], p_nodes jsonb[], p_forks boolean[], p_inputs text[],
                                                      p_latest_only boolean[], p_claimer bigint, p_slots jsonb, p_holder text)
        RETURNS TABLE (created_ordinal bigint, created_run bigint, created_id bigint, created_name text,
                       created_position double precision, job_row job, run_row run, repository text, node_row node,
                       started boolean)
        LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
        #variable_conflict use_column
        DECLARE
            stored bigint[];
        BEGIN
            IF true = ANY(p_latest_only) THEN
                stored := ARRAY(
                    SELECT u.o FROM unnest(p_versions, p_latest_only) WITH ORDINALITY AS u(version, latest_only, o)
                    WHERE NOT u.latest_only OR NOT EXISTS (
                        SELECT 1 FROM pipeline_version v JOIN pipeline_version w
                            ON w.project_id = v.project_id AND w.pipeline = v.pipeline AND w.version > v.version
                        WHERE v.id = u.version));
            ELSE
                stored := ARRAY(SELECT generate_series(1, cardinality(p_projects))::bigint);
            END IF;
            RETURN QUERY
            WITH d AS (
                SELECT u.*, nextval('run_id_seq') AS run_id
                FROM unnest(p_projects, p_pipelines, p_versions, p_branches, p_triggers, p_nows, p_commits, p_bys, p_jobs,
                            p_nodes, p_forks, p_inputs) WITH ORDINALITY
                    AS u(project, pipeline, version, branch, trigger, now, commit_sha, by, jobs, nodes, fork, inputs, o)
                WHERE u.o = ANY(stored)
                ORDER BY u.o
            ), r AS (
                INSERT INTO run (id, project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at,
                                 commit_sha, triggered_by, fork, inputs)
                SELECT d.run_id, d.project, d.pipeline, d.version, d.branch, 'queued', 1, d.trigger, d.now, d.commit_sha, d.by,
                       d.fork, d.inputs
                FROM d
            ), a AS (
                INSERT INTO attempt (run_id, number, status, trigger, created_at, triggered_by)
                SELECT d.run_id, 1, 'queued', d.trigger, d.now, d.by FROM d
            ), j AS (
                INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, retry_lost, cache)
                SELECT d.run_id, 1, x.name, x.labels::jsonb, 'queued', nextval('job_position')::float8, d.now, x.retry_lost, x.cache
                FROM d CROSS JOIN LATERAL jsonb_to_recordset(d.jobs) AS x(ordinal bigint, name text, labels text, retry_lost bigint, cache text)
                ORDER BY d.o, x.ordinal
                RETURNING job.id, job.run_id, job.name, job.position
            ), n AS (
                INSERT INTO node (job_id, \(nodeColumns), status)
                SELECT j.id, \(qualified(nodeColumns, by: "x")), 'pending'
                FROM d CROSS JOIN LATERAL jsonb_to_recordset(d.nodes) AS x(\(nodeRecordset))
                JOIN j ON j.run_id = d.run_id AND j.name = x.job
            )
            SELECT d.o, j.run_id, j.id, j.name, j.position, NULL::job, NULL::run, NULL::text, NULL::node, NULL::boolean
            FROM j JOIN d ON d.run_id = j.run_id;
            IF p_claimer = ANY(stored) AND jsonb_array_length(p_slots) > 0 THEN
                RETURN QUERY
                SELECT NULL::bigint, NULL::bigint, NULL::bigint, NULL::text, NULL::double precision,
                       c.job_row, c.run_row, c.repository, c.node_row, c.started
                FROM heddle_claim_queued(p_slots, p_nows[p_claimer], p_holder) AS c;
            END IF;
        END
        $$
        """

    /// A function that picks queued jobs for free slots (`heddle_pick_claims`' loop): `header`
    /// up to `DECLARE`, `declare` its own variables, `pick` what it does with a job `picked`
    /// for slot `best` before the slot is counted, `emit` how its rows are returned once it is.
    ///
    /// `byLabelSets`: the distinct label sets of the queued jobs are read first, one descent of
    /// `job_queued_by_labels` each. A round with no set that fits a free slot reads no job; one
    /// where only some fit reads those sets' jobs, each set's first in queue order from its own
    /// range of the index, merged; one where every set fits reads the queue in its order.
    /// Without it, the queue is always read in its order, and every queued job that fits no
    /// slot is read and passed over: with 100,000 queued for a label no runner here has, each
    /// claim read them all (33 ms alone, 60 ms under load; 0.4-0.6 ms by label set).
    private static func pickFunction(_ header: String, declare: String, pick: String,
                                     emit: String = "RETURN NEXT;", byLabelSets: Bool = false) -> String {
        // Each job read: to the least busy free slot it fits, if any.
        let body = """
                    got := got + 1;
                    seen := seen || picked.id;
                    best := NULL;
                    FOR i IN 1..n LOOP
                        IF s_free[i] > 0 AND picked.labels <@ s_labels[i]
                           AND (best IS NULL OR s_busy[i] < s_busy[best]) THEN
                            best := i;
                        END IF;
                    END LOOP;
                    IF best IS NOT NULL THEN
        \(pick)
                        s_free[best] := s_free[best] - 1;
                        s_busy[best] := s_busy[best] + 1;
        \(emit)
                    END IF;
        """
        // The queue in its order: what fits none of the slots is read and passed over.
        let inOrder = """
                FOR picked IN
                    SELECT job.id, job.labels FROM job
                    WHERE job.status = 'queued' AND job.labels <@ ANY(fits) AND job.id <> ALL(seen)
                    ORDER BY job.position, job.id LIMIT wanted FOR UPDATE SKIP LOCKED
                LOOP
        \(body)
                END LOOP;
        """
        // The jobs of the fitting sets only, each set's first in queue order, merged: `labels`
        // as a range, not an equality, so that the only plan in the index's order is
        // `job_queued_by_labels`' (an equality makes `job_queued`'s order do too, and a plan
        // made for one set of 100,000 chose it and read them all).
        let bySet = """
                FOR picked IN
                    SELECT q.id, q.labels FROM unnest(fit_sets) AS f(l) CROSS JOIN LATERAL (
                        SELECT job.id, job.labels, job.position FROM job
                        WHERE job.status = 'queued' AND job.labels >= f.l AND job.labels <= f.l AND job.id <> ALL(seen)
                        ORDER BY job.labels, job.position, job.id LIMIT wanted FOR UPDATE SKIP LOCKED) AS q
                    ORDER BY q.position, q.id LIMIT wanted
                LOOP
        \(body)
                END LOOP;
        """
        // When every queued set fits a slot, the queue in its order passes nothing over, and
        // costs less (no merge).
        let picks = byLabelSets ? """
                IF cardinality(fit_sets) = cardinality(label_sets) THEN
        \(inOrder)
                ELSE
        \(bySet)
                END IF;
        """ : inOrder
        let sets = byLabelSets ? """
                    label_sets := ARRAY(
                        WITH RECURSIVE d(l) AS (
                            (SELECT job.labels FROM job WHERE job.status = 'queued' ORDER BY job.labels LIMIT 1)
                            UNION ALL
                            SELECT (SELECT job.labels FROM job WHERE job.status = 'queued' AND job.labels > d.l
                                    ORDER BY job.labels LIMIT 1)
                            FROM d WHERE d.l IS NOT NULL)
                        SELECT d.l FROM d WHERE d.l IS NOT NULL);
            """ : ""
        let fitting = byLabelSets ? """
                        fit_sets := ARRAY(SELECT u.l FROM unnest(label_sets) AS u(l) WHERE u.l <@ ANY(fits));
                        EXIT WHEN cardinality(fit_sets) = 0;
            """ : ""
        return """
        \(header)
        DECLARE
            \(declare)
            \(byLabelSets ? "label_sets jsonb[]; fit_sets jsonb[];" : "")
            s_runner text[];
            s_labels jsonb[];
            s_epochs jsonb[];
            s_busy int[];
            s_free int[];
            n int;
            fits jsonb[];
            seen bigint[] := ARRAY[]::bigint[];
            wanted int;
            got int;
            round int := 0;
            best int;
            picked record;
        BEGIN
            SELECT array_agg(e->>'runner' ORDER BY o), array_agg(e->'labels' ORDER BY o), array_agg(e->'epochs' ORDER BY o),
                   array_agg((e->>'running')::int ORDER BY o), array_agg(jsonb_array_length(e->'epochs') ORDER BY o)
            INTO s_runner, s_labels, s_epochs, s_busy, s_free
            FROM jsonb_array_elements(p_slots) WITH ORDINALITY AS t(e, o);
            n := COALESCE(array_length(s_runner, 1), 0);
        \(sets)
            LOOP
                wanted := 0;
                fits := ARRAY[]::jsonb[];
                FOR i IN 1..n LOOP
                    IF s_free[i] > 0 THEN
                        wanted := wanted + s_free[i];
                        IF NOT (s_labels[i] = ANY(fits)) THEN
                            fits := fits || s_labels[i];
                        END IF;
                    END IF;
                END LOOP;
                EXIT WHEN wanted = 0;
        \(fitting)
                wanted := wanted * (1 << least(round, 10));
                round := round + 1;
                got := 0;
        \(picks)
                EXIT WHEN got < wanted;
            END LOOP;
        END
        $$
        """
    }

    /// An attempt's (and so its run's) status from its jobs' statuses, as
    /// `Outcome.attemptStatus` decides it (a test holds the two to the same answers): queued
    /// while all are, running until all finished, then failed if any failed, cancelled if
    /// any was cancelled, else succeeded.
    static let attemptStatusFunction = """
        CREATE OR REPLACE FUNCTION heddle_attempt_status(statuses text[]) RETURNS text
        LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE
                WHEN 'queued' = ALL(statuses) THEN 'queued'
                WHEN NOT (statuses <@ ARRAY['succeeded', 'failed', 'cancelled', 'skipped']) THEN 'running'
                WHEN 'failed' = ANY(statuses) THEN 'failed'
                WHEN 'cancelled' = ANY(statuses) THEN 'cancelled'
                ELSE 'succeeded' END
        $$
        """

    /// Sets a run's latest attempt's status (and the run's) from its jobs, and returns the
    /// run. The run's row is locked first, then its jobs are read in a statement of their own
    /// (a volatile function's every statement reads a new snapshot): two coordinators
    /// finishing the last two jobs of one attempt both see the other's job finished, in turn.
    static let runStatusFunction = """
        CREATE OR REPLACE FUNCTION heddle_run_status(p_run bigint, p_now bigint) RETURNS SETOF run
        LANGUAGE plpgsql VOLATILE AS $$
        DECLARE
            \(runStatusVariables)
            r run;
        BEGIN
        \(runStatusStatements(run: "p_run", now: "p_now", into: "r"))
            RETURN NEXT r;
        END
        $$
        """

    /// The variables `runStatusStatements` needs declared.
    static let runStatusVariables = "latest bigint; next_status text; finished bigint;"

    /// `heddle_run_status`'s statements, for a PL/pgSQL function to run in its own body (a
    /// call of it costs more than its four statements): the run `run`'s row locked first,
    /// then its latest attempt's jobs read in a statement of their own, the attempt's and the
    /// run's status set at `now`; the run as it is now in the `run` variable `into`.
    static func runStatusStatements(run: String, now: String, into: String) -> String {
        """
            SELECT run.attempt INTO latest FROM run WHERE run.id = \(run) FOR UPDATE;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'run % is missing', \(run);
            END IF;
            SELECT heddle_attempt_status(COALESCE(array_agg(job.status), ARRAY[]::text[])) INTO next_status
            FROM job WHERE job.run_id = \(run) AND job.attempt = latest;
            finished := CASE WHEN next_status IN ('succeeded', 'failed', 'cancelled', 'skipped') THEN \(now) END;
            UPDATE attempt SET status = next_status, finished_at = finished,
                               started_at = COALESCE(attempt.started_at, CASE WHEN next_status = 'queued' THEN NULL ELSE \(now) END)
            WHERE attempt.run_id = \(run) AND attempt.number = latest;
            UPDATE run SET status = next_status, finished_at = finished WHERE run.id = \(run) RETURNING run.* INTO \(into);
        """
    }

    /// Ends a job and sets its run's and attempt's status (`heddle_run_status`) in one round
    /// trip (a job's end was four statements, each a round trip in its batch). Fenced when
    /// `p_fenced`: the job must be running at `p_epoch`, held by `p_holder`; otherwise no row
    /// comes back and nothing changed. Its nodes not yet finished end with it (running ones
    /// as `p_ended`, the others as `p_leftover`). Returns the job's columns (`jobColumns`) and
    /// the run's, each prefixed `r_`. Migration v12; this version calls `heddle_end_jobs`
    /// (several ends in one call), and keeps this one for coordinators of the version before,
    /// while they are upgraded.
    static let endJobFunction = """
        CREATE OR REPLACE FUNCTION heddle_end_job(p_status text, p_reason text, p_now bigint, p_id bigint, p_fenced boolean,
                                                  p_epoch bigint, p_holder text, p_ended text, p_leftover text)
        RETURNS TABLE (\(jobAndRunColumns))
        LANGUAGE plpgsql VOLATILE AS $$
        #variable_conflict use_column
        DECLARE
            j job;
            r run;
        BEGIN
            UPDATE job SET status = p_status, reason = p_reason, finished_at = p_now, started_at = COALESCE(job.started_at, p_now)
            WHERE job.id = p_id AND (NOT p_fenced OR (job.status = 'running' AND job.epoch = p_epoch AND job.holder = p_holder))
            RETURNING job.* INTO j;
            IF NOT FOUND THEN
                RETURN;
            END IF;
            UPDATE node SET status = CASE WHEN node.status = 'running' THEN p_ended ELSE p_leftover END,
                            finished_at = CASE WHEN node.status = 'running' THEN p_now ELSE node.finished_at END
            WHERE node.job_id = p_id AND node.status IN ('pending', 'running');
            SELECT * INTO r FROM heddle_run_status(j.run_id, p_now);
            RETURN QUERY SELECT \(jobAndRunValues);
        END
        $$
        """

    /// Ends several jobs in one call, each as `heddle_end_job` ends one (a batch's ends were a
    /// round trip each): the k-th job is `p_ids[k]`, ended as `p_statuses[k]` with
    /// `p_reasons[k]` at `p_nows[k]`, fenced when `p_fenced[k]` (running at `p_epochs[k]`, held
    /// by `p_holder`), its nodes not yet finished ending as `p_ended[k]` (running ones) or
    /// `p_leftovers[k]`. The jobs are ended in the order of their ids, then as given, so that
    /// batches lock rows in one order. Returns a row per job: `end_ordinal` (k), `end_outcome`
    /// (`ended`; or, nothing changed: `held`, running at that epoch but held by another
    /// coordinator; `stale`, not running at that epoch; `missing`, no such job), and, when
    /// ended, the job as it is now (`job_row`) and its run (`run_row`; null otherwise). A
    /// refused end writes nothing and does not fail the call. Then, when `p_slots` lists free
    /// slots and the `p_claimer`-th job was ended, claims for them as `heddle_claim_queued`
    /// does, and answers its rows (`end_ordinal` null): an end and the claim for the slot it
    /// frees in one round trip. Planned once per connection (`force_generic_plan`), as
    /// `heddle_create_runs`.
    static let endJobsFunction = """
        CREATE OR REPLACE FUNCTION heddle_end_jobs(p_ids bigint[], p_statuses text[], p_reasons text[], p_nows bigint[],
                                                   p_fenced boolean[], p_epochs bigint[], p_ended text[], p_leftovers text[],
                                                   p_holder text, p_claimer bigint, p_slots jsonb)
        RETURNS TABLE (end_ordinal bigint, end_outcome text, job_row job, run_row run, repository text, node_row node,
                       started boolean)
        LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_generic_plan AS $$
        #variable_conflict use_column
        DECLARE
            k bigint;
            v_outcome text;
            claimer_ended boolean := false;
            \(runStatusVariables)
            j job;
            r run;
        BEGIN
            FOR k IN SELECT u.o FROM unnest(p_ids) WITH ORDINALITY AS u(id, o) ORDER BY u.id, u.o LOOP
                j := NULL;
                r := NULL;
                UPDATE job SET status = p_statuses[k], reason = p_reasons[k], finished_at = p_nows[k],
                               started_at = COALESCE(job.started_at, p_nows[k])
                WHERE job.id = p_ids[k]
                  AND (NOT p_fenced[k] OR (job.status = 'running' AND job.epoch = p_epochs[k] AND job.holder = p_holder))
                RETURNING job.* INTO j;
                IF FOUND THEN
                    UPDATE node SET status = CASE WHEN node.status = 'running' THEN p_ended[k] ELSE p_leftovers[k] END,
                                    finished_at = CASE WHEN node.status = 'running' THEN p_nows[k] ELSE node.finished_at END
                    WHERE node.job_id = p_ids[k] AND node.status IN ('pending', 'running');
                    \(runStatusStatements(run: "j.run_id", now: "p_nows[k]", into: "r"))
                    v_outcome := 'ended';
                    claimer_ended := claimer_ended OR k = p_claimer;
                ELSE
                    SELECT CASE WHEN job.status = 'running' AND job.epoch = p_epochs[k] THEN 'held' ELSE 'stale' END
                    INTO v_outcome FROM job WHERE job.id = p_ids[k];
                    v_outcome := COALESCE(v_outcome, 'missing');
                END IF;
                RETURN QUERY SELECT k, v_outcome, j, r, NULL::text, NULL::node, NULL::boolean;
            END LOOP;
            IF claimer_ended AND jsonb_array_length(p_slots) > 0 THEN
                RETURN QUERY
                SELECT NULL::bigint, NULL::text, c.job_row, c.run_row, c.repository, c.node_row, c.started
                FROM heddle_claim_queued(p_slots, p_nows[p_claimer], p_holder) AS c;
            END IF;
        END
        $$
        """

    /// The width of a range of queue positions counted in `queue_count`: a power of two, so
    /// `position / queueBucket` is exact in floating point and a range's bounds are too.
    static let queueBucket = 1024

    /// The advisory lock key migrations run under (any 64-bit number of Heddle's own).
    static let migrationLock: Int64 = 0x4865_6464_6C65_0001

    /// On a connection of its own, outside the pool.
    func migrate() async throws {
        let logger = logger
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: try location.connectionConfiguration(), id: 0,
                                                              logger: logger)
        } catch let error as PSQLError {
            throw Self.storeError(error)
        }
        do {
            try await connection.query("BEGIN", logger: logger)
            try await Self.migrate(connection, logger: logger)
            try await connection.query("COMMIT", logger: logger)
        } catch {
            try? await connection.close()
            throw (error as? PSQLError).map(Self.storeError) ?? error
        }
        try? await connection.close()
    }

    static func migrate(_ db: PostgresConnection, logger: Logger) async throws {
        try await db.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger)
        try await db.query("CREATE TABLE IF NOT EXISTS heddle_migration (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                           logger: logger)
        var applied = Set<String>()
        for try await name in try await db.query("SELECT name FROM heddle_migration", logger: logger).decode(String.self) {
            applied.insert(name)
        }
        let known = Set(migrations.map(\.name))
        if let unknown = applied.subtracting(known).sorted().first {
            throw StoreError(.inconsistent, "the database was migrated by a newer Heddle (\(unknown)): start that version's coordinator")
        }
        for migration in migrations where !applied.contains(migration.name) {
            for statement in migration.sql {
                try await db.query(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            try await db.query("INSERT INTO heddle_migration (name, applied_at) VALUES (\(migration.name), \(Date.nowMilliseconds))",
                               logger: logger)
        }
    }
}

// MARK: rows

extension PostgresRow {
    /// Cells by column name.
    var columns: PostgresRandomAccessRow { makeRandomAccess() }
}

extension PostgresRandomAccessRow {
    func get<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        try self[column].decode(T.self)
    }
}

extension PostgresConnection {
    /// Every row of a query.
    func rows(_ query: PostgresQuery, logger: Logger) async throws -> [PostgresRandomAccessRow] {
        var rows: [PostgresRandomAccessRow] = []
        for try await row in try await self.query(query, logger: logger) {
            rows.append(row.makeRandomAccess())
        }
        return rows
    }

    func row(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRandomAccessRow? {
        try await rows(query, logger: logger).first
    }

    /// The number of rows an `UPDATE`, `INSERT` or `DELETE` changed.
    func changes(_ query: PostgresQuery, logger: Logger) async throws -> Int {
        // `RETURNING 1` makes the count the number of rows that come back.
        try await rows(query, logger: logger).count
    }
}

/// Binds for a query built from parts.
struct QueryBuilder {
    var sql = ""
    var binds = PostgresBindings()

    /// `$N` for the next value.
    mutating func bind<T: PostgresDynamicTypeEncodable>(_ value: T) -> String {
        binds.append(value)
        return "$\(binds.count)"
    }

    mutating func bind<T: PostgresThrowingDynamicTypeEncodable>(_ value: T) throws -> String {
        try binds.append(value)
        return "$\(binds.count)"
    }

    var query: PostgresQuery { PostgresQuery(unsafeSQL: sql, binds: binds) }
}

func pgJSON<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

func pgUnJSON<T: Decodable>(_ text: String) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(text.utf8))
}
