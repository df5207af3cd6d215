import Foundation
import Logging
import PostgresNIO

extension PostgresStore: ClusterStore {
    /// The database's clock in Unix milliseconds: beats and the sweep compare times of one
    /// clock, whatever the coordinators' clocks say.
    static let databaseNow = "(extract(epoch from clock_timestamp()) * 1000)::bigint"

    @discardableResult
    public func beat(othersWithin within: Duration) async throws -> Int {
        let milliseconds = Int64(within / .milliseconds(1))
        return try await read { [self] db in
            let row = try await db.row("""
                WITH beat AS (
                    INSERT INTO coordinator (id, seen_at) VALUES (\(coordinatorID), \(unescaped: Self.databaseNow))
                    ON CONFLICT (id) DO UPDATE SET seen_at = excluded.seen_at
                )
                SELECT count(*) AS others FROM coordinator
                WHERE id <> \(coordinatorID) AND seen_at >= \(unescaped: Self.databaseNow) - \(milliseconds)
                """, logger: logger)
            return Int(try row?.get("others", as: Int64.self) ?? 0)
        }
    }

    public func adopt(jobID: Int64, epoch: Int64, runner: String) async throws -> JobRecord? {
        try await read { [self] db in
            try await db.row("""
                UPDATE job SET holder = \(coordinatorID)
                WHERE id = \(jobID) AND epoch = \(epoch) AND runner = \(runner) AND status = 'running'
                RETURNING \(unescaped: Self.jobColumns)
                """, logger: logger).map(Self.job)
        }
    }

    public func reclaim(_ jobs: [LeaseRef]) async throws -> [Int64] {
        guard !jobs.isEmpty else { return [] }
        let ids = jobs.map(\.jobID)
        let epochs = jobs.map(\.epoch)
        return try await read { [self] db in
            try await db.rows("""
                UPDATE job SET holder = \(coordinatorID)
                FROM unnest(\(ids)::bigint[], \(epochs)::bigint[]) AS mine(id, epoch)
                WHERE job.id = mine.id AND job.epoch = mine.epoch AND job.status = 'running'
                  AND job.holder IS DISTINCT FROM \(coordinatorID)
                RETURNING job.id
                """, logger: logger).map { try $0.get("id", as: Int64.self) }
        }
    }

    public func moveQueued(jobID: Int64, to target: MoveTarget) async throws -> QueueMove {
        let logger = logger
        let (kind, n, anchor): (String, Int64, Int64) = switch target {
        case .top: ("top", 0, 0)
        case .bottom: ("bottom", 0, 0)
        case .position(let n): ("position", Int64(n), 0)
        case .before(let id): ("before", 0, id)
        case .after(let id): ("after", 0, id)
        }
        // One statement (`moveJobFunction`), so its own transaction: the lock, the
        // neighbours, the renumbering when there is no room, the update and the place.
        return try await transaction(explicit: false) { db in
            guard let row = try await db.row("SELECT * FROM heddle_move_job(\(jobID), \(kind), \(n), \(anchor))",
                                             logger: logger) else {
                throw StoreError(.inconsistent, "the move of job \(jobID) answered nothing")
            }
            switch try row.get("outcome", as: String.self) {
            case "not_queued": return .notQueued
            case "no_anchor": return .noSuchAnchor
            default:
                return .moved(QueueMove.Moved(job: try Self.job(row), run: try Self.run(row, prefix: "r_"),
                                              position: try row.get("new_position", as: Double.self),
                                              renumbered: try row.get("renumbered", as: Bool.self),
                                              place: Int(try row.get("place", as: Int64.self))))
            }
        }
    }

    /// The lock a sweep for orphaned jobs takes (for its transaction only): one coordinator
    /// sweeps at a time, and when it dies the lock goes with its connection.
    static let sweepLock: Int64 = 0x4865_6464_6C65_0003

    public func adoptOrphans(silentFor silence: Duration) async throws -> [JobRecord] {
        let logger = logger
        let silent = Int64(silence / .milliseconds(1))
        let me = coordinatorID
        return try await transaction { [self] db in
            guard let locked = try await db.row("SELECT pg_try_advisory_xact_lock(\(Self.sweepLock)) AS locked", logger: logger),
                  try locked.get("locked", as: Bool.self) else { return [] }
            let jobs = try await db.rows("""
                UPDATE job SET holder = \(me)
                WHERE status = 'running' AND (holder IS NULL OR holder <> \(me)) AND NOT EXISTS (
                    SELECT 1 FROM coordinator c WHERE c.id = job.holder AND c.seen_at >= \(unescaped: Self.databaseNow) - \(silent))
                RETURNING \(unescaped: Self.jobColumns)
                """, logger: logger).map(Self.job)
            try await Self.foldQueueCounts(db, logger: logger)
            // Coordinators silent for a day are gone for good.
            try await db.query("DELETE FROM coordinator WHERE seen_at < \(unescaped: Self.databaseNow) - 86400000", logger: logger)
            return jobs
        }
    }

    /// Folds the queue's counts that server processes added to rows of their own into shard
    /// 0 (under the sweep's lock, so one folder at a time), skipping rows a transaction still
    /// holds, and drops ranges left empty: the counts stay a few rows per range.
    static func foldQueueCounts(_ db: PostgresConnection, logger: Logger) async throws {
        try await db.query("""
            WITH gone AS (
                DELETE FROM queue_count WHERE (bucket, shard) IN (
                    SELECT bucket, shard FROM queue_count WHERE shard <> 0 FOR UPDATE SKIP LOCKED
                ) RETURNING bucket, n
            )
            INSERT INTO queue_count (bucket, shard, n) SELECT bucket, 0, sum(n) FROM gone GROUP BY bucket
            ON CONFLICT (bucket, shard) DO UPDATE SET n = queue_count.n + excluded.n
            """, logger: logger)
        try await db.query("DELETE FROM queue_count WHERE shard = 0 AND n = 0", logger: logger)
    }

    public func queueHead(limit: Int) async throws -> (jobs: [JobRecord], queued: Int, running: Int) {
        try await transaction { [self] db in
            let running = try await db.rows("""
                SELECT \(unescaped: Self.jobColumns) FROM job WHERE status = 'running' ORDER BY id LIMIT \(Int64(limit))
                """, logger: logger).map(Self.job)
            let queued = try await db.rows("""
                SELECT \(unescaped: Self.jobColumns) FROM job WHERE status = 'queued' ORDER BY position, id
                LIMIT \(Int64(max(0, limit - running.count)))
                """, logger: logger).map(Self.job)
            let counts = try await db.row("""
                SELECT (SELECT COALESCE(sum(n), 0) FROM queue_count)::bigint AS queued,
                       (SELECT count(*) FROM job WHERE status = 'running') AS running
                """, logger: logger)!
            return (running + queued, Int(try counts.get("queued", as: Int64.self)), Int(try counts.get("running", as: Int64.self)))
        }
    }

    public func queuePlaces(jobIDs: [Int64]) async throws -> [Int64: Int] {
        guard !jobIDs.isEmpty else { return [:] }
        return try await read { [self] db in try await Self.places(db, jobIDs: jobIDs, logger: logger) }
    }

    /// Queued jobs' places (1: the next to go).
    static func places(_ db: PostgresConnection, jobIDs: [Int64], logger: Logger) async throws -> [Int64: Int] {
        // A job's place: the queued jobs counted in the ranges before its own, then its rank
        // among the jobs of its range (at most a range read per range asked about).
        let width = Int64(Self.queueBucket)
        let query: PostgresQuery = """
            WITH x AS (
                SELECT id, floor(position / \(width))::bigint AS bucket FROM job WHERE id = ANY(\(jobIDs)) AND status = 'queued'
            ), prefix AS (
                SELECT bucket, (sum(s) OVER (ORDER BY bucket) - s)::bigint AS before
                FROM (SELECT bucket, sum(n) AS s FROM queue_count GROUP BY bucket) AS g
            )
            SELECT w.id, COALESCE(p.before, 0) + w.rank AS place
            FROM (SELECT DISTINCT bucket FROM x) AS xb
            CROSS JOIN LATERAL (
                SELECT id, row_number() OVER (ORDER BY position, id) AS rank FROM job
                WHERE status = 'queued' AND position >= (xb.bucket * \(width))::float8
                  AND position < ((xb.bucket + 1) * \(width))::float8
            ) AS w
            LEFT JOIN prefix p ON p.bucket = xb.bucket
            WHERE w.id IN (SELECT id FROM x)
            """
        var places: [Int64: Int] = [:]
        for row in try await db.rows(query, logger: logger) {
            places[try row.get("id")] = Int(try row.get("place", as: Int64.self))
        }
        return places
    }

    /// The marker file under `--data`, and its name in `cluster_setting`.
    static let dataMarker = "heddle-data.id"

    public func checkDataDirectory(_ directory: String) async throws {
        let path = "\(directory)/\(Self.dataMarker)"
        func onDisk() -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let logger = logger
        func recorded() async throws -> String? {
            try await read { db in
                try await db.row("SELECT value FROM cluster_setting WHERE name = 'data_marker'", logger: logger)
                    .map { try $0.get("value", as: String.self) }
            }
        }
        var marker = onDisk()
        if try await recorded() == nil {
            if let found = marker {
                // A marker no database recorded: this directory's first coordinator stopped
                // before recording it (then it holds no data yet), or it is another database's.
                let holdsData = ["logs", "blobs"].contains {
                    !((try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/\($0)")) ?? []).isEmpty
                }
                if holdsData {
                    throw StoreError(.inconsistent, "--data \(directory) holds another database's data (its \(Self.dataMarker) says \(found), and this database recorded none): give this database an empty directory at --data, or start with the database that directory was used with")
                }
            } else {
                // The first coordinator of the database: the marker is created in the directory
                // (only the first of several coordinators doing so at once wins there), then
                // recorded in the database (only the first wins there too).
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
                let temporary = "\(path).\(UUID().uuidString.lowercased())"
                try Data("\(UUID().uuidString.lowercased())\n".utf8).write(to: URL(fileURLWithPath: temporary))
                _ = link(temporary, path)  // fails when another coordinator made it first: theirs stays
                unlink(temporary)
                marker = onDisk()
            }
            if let marker {
                try await read { db in
                    try await db.query("""
                        INSERT INTO cluster_setting (name, value) VALUES ('data_marker', \(marker)) ON CONFLICT (name) DO NOTHING
                        """, logger: logger)
                }
            }
        }
        guard let recorded = try await recorded() else {
            throw StoreError(.inconsistent, "cannot write the marker \(path) under --data: check that the directory is writable")
        }
        guard let marker else {
            throw StoreError(.inconsistent, "--data \(directory) is not the data directory the other coordinators of this database use: it has no \(Self.dataMarker) (theirs says \(recorded)). Every coordinator must have the same shared directory at --data")
        }
        guard marker == recorded else {
            throw StoreError(.inconsistent, "--data \(directory) is not the data directory the other coordinators of this database use: its \(Self.dataMarker) says \(marker), the database \(recorded). Every coordinator must have the same shared directory at --data")
        }
    }

    /// The channel coordinators signal each other on.
    static let channel = "heddle"

    public func signal(_ signals: [ClusterSignal]) async throws {
        guard !signals.isEmpty else { return }
        let payloads = signals.map { "\(coordinatorID)|\(Self.encode($0))" }
        // One statement, one notification each, in order.
        try await read { [self] db in
            try await db.query("""
                SELECT pg_notify(\(Self.channel), p) FROM unnest(\(payloads)::text[]) WITH ORDINALITY AS s(p, i) ORDER BY i
                """, logger: logger)
        }
    }

    public func listen(_ received: @Sendable (ClusterSignal) -> Void) async {
        let me = coordinatorID
        var backoff = 0.1
        while !Task.isCancelled {
            do {
                let connection = try await PostgresConnection.connect(configuration: try location.connectionConfiguration(),
                                                                      id: 0, logger: logger)
                do {
                    try await connection.listen(on: Self.channel) { notifications in
                        backoff = 0.1
                        // Anything sent while no connection listened is lost: read again. And
                        // say so: a coordinator that thought itself alone sends its signals again.
                        received(.resync)
                        try? await signal([.hello])
                        for try await notification in notifications {
                            let parts = notification.payload.split(separator: "|", maxSplits: 1).map(String.init)
                            guard parts.count == 2, parts[0] != me, let signal = Self.decode(parts[1]) else { continue }
                            received(signal)
                        }
                    }
                } catch {
                    try? await connection.close()
                    throw error
                }
                try? await connection.close()
            } catch {
                if Task.isCancelled { break }
                logger.warning("listening for other coordinators failed; trying again", metadata: ["error": "\(Self.describe(error))"])
            }
            try? await Task.sleep(for: .milliseconds(Int(backoff * 1000)))
            backoff = min(backoff * 2, 2)
        }
    }

    static func encode(_ signal: ClusterSignal) -> String {
        switch signal {
        case .queue: "queue"
        case .state: "state"
        case .resync: "resync"
        case .hello: "hello"
        case .cancel(let jobID, let reason): "cancel|\(jobID)|\(reason.prefix(1000))"
        case .moved(let jobID, let position): "moved|\(jobID)|\(position)"
        // A notification holds up to 8,000 bytes: past 500 runs, a resync says as much.
        case .run(let runIDs) where runIDs.count > 500: "resync"
        case .run(let runIDs): "run|" + runIDs.map(String.init).joined(separator: ",")
        }
    }

    static func decode(_ text: String) -> ClusterSignal? {
        let parts = text.split(separator: "|", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        switch parts[0] {
        case "queue": return .queue
        case "state": return .state
        case "resync": return .resync
        case "hello": return .hello
        case "cancel" where parts.count == 3: return Int64(parts[1]).map { .cancel(jobID: $0, reason: parts[2]) }
        case "moved" where parts.count == 3:
            guard let id = Int64(parts[1]), let position = Double(parts[2]), position.isFinite else { return nil }
            return .moved(jobID: id, position: position)
        case "run" where parts.count == 2: return .run(runIDs: parts[1].split(separator: ",").compactMap { Int64($0) })
        default: return nil
        }
    }
}

extension PostgresStore.Location {
    /// For one connection of its own (listening), outside the pool.
    func connectionConfiguration() throws -> PostgresConnection.Configuration {
        var configuration: PostgresConnection.Configuration
        if let socketPath {
            configuration = .init(unixSocketPath: socketPath, username: user, password: password, database: database)
        } else {
            let tlsConfiguration: PostgresConnection.Configuration.TLS = switch tls {
            case .disable: .disable
            case .prefer: .prefer(try .init(configuration: .makeClientConfiguration()))
            case .require: .require(try .init(configuration: .makeClientConfiguration()))
            }
            configuration = .init(host: host, port: port, username: user, password: password, database: database,
                                  tls: tlsConfiguration)
        }
        configuration.options.connectTimeout = TimeAmount.nanoseconds(
            connectTimeout.components.seconds * 1_000_000_000 + connectTimeout.components.attoseconds / 1_000_000_000)
        return configuration
    }
}
