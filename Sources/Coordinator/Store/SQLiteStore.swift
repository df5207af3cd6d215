import Foundation
import GRDB
import Wire

/// The embedded store: SQLite through GRDB, a `DatabasePool` in WAL mode with
/// `synchronous = FULL`, so a committed transaction survives a crash of the process or the
/// machine. Unit tests use an in-memory `DatabaseQueue`.
public struct SQLiteStore: CoordinatorStore {
    let writer: any DatabaseWriter
    /// Every write goes through it: concurrent writes share a transaction (and its fsync).
    let group: GroupCommit

    public init(writer: any DatabaseWriter) throws {
        self.writer = writer
        self.group = GroupCommit(writer: writer)
        try Self.migrator.migrate(writer)
    }

    /// Opens (creating when missing) `directory/heddle.sqlite`.
    public static func open(directory: String) throws -> SQLiteStore {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = Configuration()
        // Another connection to the file (a second store, the sqlite3 tool) may hold the write
        // lock for a moment: wait for it rather than fail.
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let path = "\(directory)/heddle.sqlite"
        // No database (or an empty file) beside stored logs or artifacts: starting would make
        // an empty fabric and orphan them.
        let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int ?? 0
        if size == 0 {
            for folder in ["logs", "blobs"] {
                let contents = (try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/\(folder)")) ?? []
                guard contents.isEmpty else {
                    let state = FileManager.default.fileExists(atPath: path) ? "is empty" : "is missing"
                    throw StoreError(.inconsistent, "the database \(path) \(state) but \(directory)/\(folder) holds data: restore heddle.sqlite from a backup, or move \(directory) away to start an empty fabric")
                }
            }
        }
        do {
            let pool = try DatabasePool(path: path, configuration: config)
            return try SQLiteStore(writer: pool)
        } catch let error as DatabaseError {
            throw StoreError(.inconsistent, "cannot open the database \(path): \(error.message ?? "SQLite error \(error.resultCode.rawValue)") (SQLite error \(error.resultCode.rawValue)); if the file is damaged, restore it from a backup, or move \(directory) away to start an empty fabric")
        }
    }

    public static func inMemory() throws -> SQLiteStore {
        try SQLiteStore(writer: DatabaseQueue())
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: projects, pipelines, runs, jobs, nodes, logs, artifacts") { db in
            try db.execute(sql: """
                CREATE TABLE project (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    repository TEXT NOT NULL DEFAULT '',
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE pipeline_version (
                    id INTEGER PRIMARY KEY,
                    project_id INTEGER NOT NULL REFERENCES project(id),
                    pipeline TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    source TEXT NOT NULL,
                    jobs TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE (project_id, pipeline, version)
                );
                CREATE TABLE run (
                    id INTEGER PRIMARY KEY,
                    project TEXT NOT NULL,
                    pipeline TEXT NOT NULL,
                    pipeline_version_id INTEGER NOT NULL REFERENCES pipeline_version(id),
                    branch TEXT NOT NULL,
                    status TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    trigger TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER
                );
                CREATE TABLE job (
                    id INTEGER PRIMARY KEY,
                    run_id INTEGER NOT NULL REFERENCES run(id),
                    attempt INTEGER NOT NULL,
                    name TEXT NOT NULL,
                    labels TEXT NOT NULL,
                    status TEXT NOT NULL,
                    runner TEXT,
                    epoch INTEGER NOT NULL DEFAULT 0,
                    position REAL NOT NULL,
                    queued_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    reason TEXT NOT NULL DEFAULT ''
                );
                CREATE INDEX job_by_run ON job(run_id, attempt);
                CREATE INDEX job_active ON job(position) WHERE status IN ('queued', 'running');
                CREATE TABLE node (
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    name TEXT NOT NULL,
                    ordinal INTEGER NOT NULL,
                    run TEXT NOT NULL,
                    needs TEXT NOT NULL,
                    env TEXT NOT NULL,
                    timeout INTEGER,
                    artifacts TEXT NOT NULL,
                    status TEXT NOT NULL,
                    exit_code INTEGER,
                    started_at INTEGER,
                    finished_at INTEGER,
                    PRIMARY KEY (job_id, name)
                );
                CREATE TABLE log_chunk (
                    job_id INTEGER NOT NULL,
                    node TEXT NOT NULL,
                    offset INTEGER NOT NULL,
                    data BLOB NOT NULL,
                    PRIMARY KEY (job_id, node, offset)
                ) WITHOUT ROWID;
                CREATE TABLE artifact (
                    id INTEGER PRIMARY KEY,
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    name TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    sha256 TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE (job_id, name)
                );
                """)
        }
        migrator.registerMigration("v2: attempts, job commits, projects' repositories, drained runners") { db in
            try db.execute(sql: """
                CREATE TABLE attempt (
                    run_id INTEGER NOT NULL REFERENCES run(id),
                    number INTEGER NOT NULL,
                    status TEXT NOT NULL,
                    trigger TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    PRIMARY KEY (run_id, number)
                );
                INSERT INTO attempt (run_id, number, status, trigger, created_at, started_at, finished_at)
                    SELECT id, attempt, status, trigger, created_at, started_at, finished_at FROM run;
                ALTER TABLE job ADD COLUMN commit_sha TEXT NOT NULL DEFAULT '';
                ALTER TABLE node ADD COLUMN grace INTEGER;
                CREATE TABLE runner_state (
                    name TEXT PRIMARY KEY,
                    drained INTEGER NOT NULL
                );
                CREATE INDEX run_by_filter ON run(project, pipeline, branch);
                """)
        }
        migrator.registerMigration("v3: lost-job retries, resumable uploads, revocations") { db in
            try db.execute(sql: """
                ALTER TABLE job ADD COLUMN retry_lost INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE job ADD COLUMN lost_count INTEGER NOT NULL DEFAULT 0;
                CREATE TABLE upload (
                    id INTEGER PRIMARY KEY,
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    name TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    sha256 TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE (job_id, name)
                );
                CREATE TABLE revocation (
                    id INTEGER PRIMARY KEY,
                    name TEXT,
                    fingerprint TEXT,
                    revoked_at INTEGER NOT NULL
                );
                """)
        }
        migrator.registerMigration("v4: log bytes in segment files, their durable lengths here") { db in
            try db.execute(sql: """
                CREATE TABLE log_end (
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    node TEXT NOT NULL,
                    length INTEGER NOT NULL,
                    PRIMARY KEY (job_id, node)
                ) WITHOUT ROWID;
                INSERT INTO log_end (job_id, node, length)
                    SELECT job_id, node, MAX(offset + length(data)) FROM log_chunk GROUP BY job_id, node;
                """)
        }
        migrator.registerMigration("v5: no log bytes in the database") { db in
            // Versions before v4 kept log bytes here; v4 moved them to files when it started.
            // This version no longer moves them: a database that still holds some is refused
            // rather than losing them.
            if let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM log_chunk"), count > 0 {
                throw StoreError(.inconsistent, "this database still holds \(count) log chunks of a version older than v4: start it once with that version's coordinator, which moves them to files")
            }
            try db.execute(sql: "DROP TABLE log_chunk")
        }
        migrator.registerMigration("v6: API tokens, artifact search") { db in
            // Artifacts carry their run's project, pipeline and branch, so a search across
            // every run is answered from indexes; names are searched through a trigram index.
            try db.execute(sql: """
                ALTER TABLE artifact ADD COLUMN run_id INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE artifact ADD COLUMN project TEXT NOT NULL DEFAULT '';
                ALTER TABLE artifact ADD COLUMN pipeline TEXT NOT NULL DEFAULT '';
                ALTER TABLE artifact ADD COLUMN branch TEXT NOT NULL DEFAULT '';
                UPDATE artifact SET (run_id, project, pipeline, branch) =
                    (SELECT r.id, r.project, r.pipeline, r.branch FROM job j JOIN run r ON r.id = j.run_id WHERE j.id = artifact.job_id);
                CREATE INDEX artifact_by_project ON artifact(project, pipeline, branch);
                CREATE INDEX artifact_by_project_branch ON artifact(project, branch, size);
                CREATE INDEX artifact_by_run ON artifact(run_id);
                CREATE INDEX artifact_by_sha256 ON artifact(sha256);
                CREATE INDEX artifact_by_created ON artifact(created_at);
                CREATE INDEX artifact_by_size ON artifact(size);
                CREATE VIRTUAL TABLE artifact_name USING fts5(name, content='artifact', content_rowid='id', tokenize='trigram');
                INSERT INTO artifact_name(artifact_name) VALUES ('rebuild');
                CREATE TRIGGER artifact_name_insert AFTER INSERT ON artifact BEGIN
                    INSERT INTO artifact_name(rowid, name) VALUES (new.id, new.name);
                END;
                CREATE TRIGGER artifact_name_delete AFTER DELETE ON artifact BEGIN
                    INSERT INTO artifact_name(artifact_name, rowid, name) VALUES ('delete', old.id, old.name);
                END;
                CREATE TRIGGER artifact_name_update AFTER UPDATE OF name ON artifact BEGIN
                    INSERT INTO artifact_name(artifact_name, rowid, name) VALUES ('delete', old.id, old.name);
                    INSERT INTO artifact_name(rowid, name) VALUES (new.id, new.name);
                END;
                """)
            try db.execute(sql: """
                ALTER TABLE project ADD COLUMN webhook_secret TEXT;
                ALTER TABLE run ADD COLUMN commit_sha TEXT NOT NULL DEFAULT '';
                CREATE TABLE delivery (
                    id INTEGER PRIMARY KEY,
                    project TEXT NOT NULL,
                    forge TEXT NOT NULL,
                    delivery_id TEXT NOT NULL,
                    event TEXT NOT NULL,
                    received_at INTEGER NOT NULL,
                    outcome TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    run_ids TEXT NOT NULL,
                    UNIQUE (project, forge, delivery_id)
                );
                CREATE INDEX delivery_by_project ON delivery(project, id);
                """)
            try db.execute(sql: """
                CREATE TABLE api_token (
                    name TEXT PRIMARY KEY,
                    role TEXT NOT NULL,
                    secret_sha256 TEXT NOT NULL UNIQUE,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    revoked_at INTEGER
                );
                """)
        }
        migrator.registerMigration("v7: browser sessions, who started an attempt") { db in
            try db.execute(sql: """
                CREATE TABLE web_session (
                    secret_sha256 TEXT PRIMARY KEY,
                    token_name TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                );
                CREATE INDEX web_session_by_token ON web_session(token_name, created_at);
                CREATE INDEX web_session_by_expiry ON web_session(expires_at);
                ALTER TABLE run ADD COLUMN triggered_by TEXT NOT NULL DEFAULT '';
                ALTER TABLE attempt ADD COLUMN triggered_by TEXT NOT NULL DEFAULT '';
                """)
        }
        return migrator
    }

    // MARK: pipelines

    public func savePipeline(project: String, definition: PipelineDefinition, source: String,
                             now: Int64) async throws -> PipelineVersionRecord {
        try await group.write { db in
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO project (name, created_at) VALUES (?, ?)").execute(
                           arguments: [project, now])
            let projectID = try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM project WHERE name = ?"), arguments: [project])!
            let previous = try Int.fetchOne(db.cachedStatement(sql: """
                SELECT MAX(version) FROM pipeline_version WHERE project_id = ? AND pipeline = ?
                """), arguments: [projectID, definition.name]) ?? 0
            let jobs = definition.jobs.map(\.name)
            try db.cachedStatement(sql: """
                INSERT INTO pipeline_version (project_id, pipeline, version, source, jobs, created_at)
                VALUES (?, ?, ?, ?, ?, ?)
                """).execute(arguments: [projectID, definition.name, previous + 1, source, try json(jobs), now])
            return PipelineVersionRecord(id: db.lastInsertedRowID, project: project, pipeline: definition.name,
                                         version: previous + 1, source: source, createdAt: now, jobs: jobs)
        }
    }

    static let pipelineColumns = """
        v.id, p.name AS project, v.pipeline, v.version, v.source, v.jobs, v.created_at
        FROM pipeline_version v JOIN project p ON p.id = v.project_id
        """

    static func pipelineVersion(_ row: Row) throws -> PipelineVersionRecord {
        PipelineVersionRecord(id: row["id"], project: row["project"], pipeline: row["pipeline"],
                              version: row["version"], source: row["source"], createdAt: row["created_at"],
                              jobs: try unjson(row["jobs"]))
    }

    public func pipelines() async throws -> [PipelineVersionRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.pipelineColumns)
                WHERE v.version = (SELECT MAX(version) FROM pipeline_version w
                                   WHERE w.project_id = v.project_id AND w.pipeline = v.pipeline)
                ORDER BY p.name, v.pipeline
                """).map(Self.pipelineVersion)
        }
    }

    public func latestPipeline(project: String, pipeline: String) async throws -> PipelineVersionRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: """
                SELECT \(Self.pipelineColumns)
                WHERE p.name = ? AND v.pipeline = ? ORDER BY v.version DESC LIMIT 1
                """), arguments: [project, pipeline]).map(Self.pipelineVersion)
        }
    }

    // MARK: runs and jobs

    public func createRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String,
                          commit: String, trigger: String, triggeredBy: String, now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await group.write { db in
            try db.cachedStatement(sql: """
                INSERT INTO run (project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at, commit_sha,
                                 triggered_by)
                VALUES (?, ?, ?, ?, 'queued', 1, ?, ?, ?, ?)
                """).execute(arguments: [version.project, version.pipeline, version.id, branch, trigger, now, commit, triggeredBy])
            var run = RunRecord(id: db.lastInsertedRowID, project: version.project, pipeline: version.pipeline,
                                pipelineVersionID: version.id, branch: branch, status: .queued, attempt: 1,
                                trigger: trigger, createdAt: now)
            run.commit = commit
            run.triggeredBy = triggeredBy
            let jobs = try Self.insertAttempt(db, run: run, definition: definition, now: now)
            return (run, jobs)
        }
    }

    public func createAttempt(runID: Int64, definition: PipelineDefinition, trigger: String, triggeredBy: String,
                              now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await group.write { db in
            try db.cachedStatement(sql: """
                UPDATE run SET attempt = attempt + 1, status = 'queued', trigger = ?, triggered_by = ?, started_at = NULL,
                               finished_at = NULL WHERE id = ?
                """).execute(arguments: [trigger, triggeredBy, runID])
            guard let run = try Self.fetchRun(db, id: runID) else {
                throw StoreError(.notFound, "run \(runID) does not exist")
            }
            let jobs = try Self.insertAttempt(db, run: run, definition: definition, now: now)
            return (run, jobs)
        }
    }

    /// Inserts the attempt row of `run.attempt`, its queued jobs (at the end of the queue)
    /// and their pending nodes.
    static func insertAttempt(_ db: Database, run: RunRecord, definition: PipelineDefinition,
                              now: Int64) throws -> [JobRecord] {
            try db.cachedStatement(sql: """
                INSERT INTO attempt (run_id, number, status, trigger, created_at, triggered_by) VALUES (?, ?, 'queued', ?, ?, ?)
                """).execute(arguments: [run.id, run.attempt, run.trigger, now, run.triggeredBy])
            let maxPosition = try Double.fetchOne(db.cachedStatement(sql: """
                SELECT MAX(position) FROM job WHERE status IN ('queued', 'running')
                """)) ?? 0
            var jobs: [JobRecord] = []
            for (index, job) in definition.jobs.enumerated() {
                let position = maxPosition + Double(index + 1)
                try db.cachedStatement(sql: """
                    INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, retry_lost)
                    VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)
                    """).execute(arguments: [run.id, run.attempt, job.name, try json(job.labels), position, now, job.retryLost])
                let jobID = db.lastInsertedRowID
                for (ordinal, node) in job.nodes.enumerated() {
                    try db.cachedStatement(sql: """
                        INSERT INTO node (job_id, name, ordinal, run, needs, env, timeout, grace, artifacts, status)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')
                        """).execute(arguments: [jobID, node.name, ordinal, node.run, try json(node.needs),
                                         try json(node.env), node.timeout, node.grace, try json(node.artifacts)])
                }
                jobs.append(JobRecord(id: jobID, runID: run.id, attempt: run.attempt, name: job.name, labels: job.labels,
                                      status: .queued, runner: nil, epoch: 0, position: position, queuedAt: now,
                                      startedAt: nil, finishedAt: nil, reason: "", retryLost: job.retryLost))
            }
            return jobs
    }

    public func claimJobs(_ claims: [JobClaim], now: Int64) async throws -> [ClaimedJob?] {
        guard !claims.isEmpty else { return [] }
        return try await group.write { db in
            var repositories: [String: String] = [:]
            return try claims.map { try Self.claim(db, $0, now: now, repositories: &repositories) }
        }
    }

    public func claimNext(runner: String, labels: Set<String>, epoch: Int64, now: Int64) async throws -> ClaimedJob? {
        try await group.write { db in
            // In queue order; the first whose labels the runner all has. (One writer at a time
            // in SQLite: no other claim can come between the read and the update.)
            let queued = try Row.fetchCursor(db.cachedStatement(sql: """
                SELECT id, labels FROM job WHERE status = 'queued' ORDER BY position, id
                """))
            var chosen: Int64?
            while let row = try queued.next() {
                let needs: [String] = try unjson(row["labels"])
                if needs.allSatisfy(labels.contains) {
                    chosen = row["id"]
                    break
                }
            }
            guard let chosen else { return nil }
            var repositories: [String: String] = [:]
            return try Self.claim(db, JobClaim(jobID: chosen, runner: runner, epoch: epoch), now: now, repositories: &repositories)
        }
    }

    /// Marks a queued job running on a runner at an epoch, and its run and attempt running;
    /// nil when the job is no longer queued.
    static func claim(_ db: Database, _ claim: JobClaim, now: Int64, repositories: inout [String: String]) throws -> ClaimedJob? {
        try db.cachedStatement(sql: """
            UPDATE job SET status = 'running', runner = ?, epoch = ?, started_at = ? WHERE id = ? AND status = 'queued'
            """).execute(arguments: [claim.runner, claim.epoch, now, claim.jobID])
        guard db.changesCount == 1,
              let job = try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.jobColumns) FROM job WHERE id = ?"),
                                         arguments: [claim.jobID]).map(Self.job) else {
            return nil  // no longer queued: not claimed
        }
        try db.cachedStatement(sql: """
            UPDATE run SET status = 'running', started_at = COALESCE(started_at, ?) WHERE id = ? AND status = 'queued'
            """).execute(arguments: [now, job.runID])
        try db.cachedStatement(sql: """
            UPDATE attempt SET status = 'running', started_at = COALESCE(started_at, ?)
            WHERE run_id = ? AND number = ? AND status = 'queued'
            """).execute(arguments: [now, job.runID, job.attempt])
        guard let run = try Self.fetchRun(db, id: job.runID) else { throw StoreError(.inconsistent, "run \(job.runID) of job \(job.id) is missing") }
        if repositories[run.project] == nil {
            repositories[run.project] = try String.fetchOne(db.cachedStatement(sql: "SELECT repository FROM project WHERE name = ?"),
                                                            arguments: [run.project]) ?? ""
        }
        return ClaimedJob(job: job, run: run, nodes: try Self.fetchNodes(db, jobIDs: [job.id]),
                          repository: repositories[run.project] ?? "")
    }

    /// Refuses, inside the write's transaction, a runner's write whose lease is gone: the job
    /// must be running with this epoch. (A store shared by several coordinators checks it in
    /// the same statement or transaction as the write, so no other writer can come between.)
    static func fence(_ db: Database, jobID: Int64, epoch: Int64) throws {
        let current = try Int64.fetchOne(db.cachedStatement(sql: "SELECT epoch FROM job WHERE id = ? AND status = 'running'"),
                                         arguments: [jobID])
        guard current == epoch else { throw StoreError.staleLease(jobID: jobID, epoch: epoch) }
    }

    public func setJobCommit(id: Int64, epoch: Int64, commit: String) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: "UPDATE job SET commit_sha = ? WHERE id = ? AND epoch = ? AND status = 'running'")
                .execute(arguments: [commit, id, epoch])
            guard db.changesCount == 1 else { throw StoreError.staleLease(jobID: id, epoch: epoch) }
        }
    }

    public func updateNode(jobID: Int64, epoch: Int64, node: String, status: Status, exitCode: Int?, at: Int64) async throws {
        try await group.write { db in
            try Self.fence(db, jobID: jobID, epoch: epoch)
            if status == .running {
                try db.cachedStatement(sql: "UPDATE node SET status = ?, started_at = ? WHERE job_id = ? AND name = ?").execute(
                               arguments: [status.rawValue, at, jobID, node])
            } else {
                try db.cachedStatement(sql: """
                    UPDATE node SET status = ?, exit_code = ?, finished_at = ? WHERE job_id = ? AND name = ?
                    """).execute(arguments: [status.rawValue, exitCode, at, jobID, node])
            }
        }
    }

    public func finishJob(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64) async throws -> (RunRecord, JobRecord) {
        try await group.write { db in
            if let epoch { try Self.fence(db, jobID: id, epoch: epoch) }
            try db.cachedStatement(sql: """
                UPDATE job SET status = ?, reason = ?, finished_at = ?, started_at = COALESCE(started_at, ?)
                WHERE id = ?
                """).execute(arguments: [status.rawValue, reason, now, now, id])
            let leftover: Status = status == .cancelled ? .cancelled : .skipped
            try db.cachedStatement(sql: """
                UPDATE node SET status = CASE WHEN status = 'running' THEN ? ELSE ? END,
                                finished_at = CASE WHEN status = 'running' THEN ? ELSE finished_at END
                WHERE job_id = ? AND status IN ('pending', 'running')
                """).execute(arguments: [status == .cancelled ? "cancelled" : "failed", leftover.rawValue, now, id])
            guard let job = try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.jobColumns) FROM job WHERE id = ?"), arguments: [id]).map(Self.job)
            else { throw StoreError(.notFound, "job \(id) does not exist") }
            return (try Self.updateRunStatus(db, runID: job.runID, now: now), job)
        }
    }

    /// Recomputes the latest attempt's status (and so the run's) from its jobs.
    static func updateRunStatus(_ db: Database, runID: Int64, now: Int64) throws -> RunRecord {
        let run = try fetchRun(db, id: runID)!
        let statuses = try String.fetchAll(db.cachedStatement(sql: "SELECT status FROM job WHERE run_id = ? AND attempt = ?"),
                                           arguments: [runID, run.attempt]).compactMap(Status.init(rawValue:))
        let runStatus = Outcome.attemptStatus(jobs: statuses)
        let finished = runStatus.isFinished ? now : nil
        try db.cachedStatement(sql: "UPDATE run SET status = ?, finished_at = ? WHERE id = ?").execute(
                       arguments: [runStatus.rawValue, finished, runID])
        try db.cachedStatement(sql: """
            UPDATE attempt SET status = ?, finished_at = ?, started_at = COALESCE(started_at, ?)
            WHERE run_id = ? AND number = ?
            """).execute(arguments: [runStatus.rawValue, finished, runStatus == .queued ? nil : now, runID, run.attempt])
        return try fetchRun(db, id: runID)!
    }

    /// Cancels queued jobs in one transaction; returns the runs they belong to, afterwards.
    public func cancelJobs(ids: [Int64], reason: String, now: Int64) async throws -> CancelledJobs {
        guard !ids.isEmpty else { return CancelledJobs(jobIDs: [], runs: []) }
        return try await group.write { db in
            var runIDs = Set<Int64>()
            var cancelled = Set<Int64>()
            let update = try db.cachedStatement(sql: """
                UPDATE job SET status = 'cancelled', reason = ?, finished_at = ? WHERE id = ? AND status = 'queued'
                """)
            let nodes = try db.cachedStatement(sql: """
                UPDATE node SET status = 'cancelled' WHERE job_id = ? AND status = 'pending'
                """)
            let runOf = try db.cachedStatement(sql: "SELECT run_id FROM job WHERE id = ?")
            for id in ids {
                try update.execute(arguments: [reason, now, id])
                guard db.changesCount == 1 else { continue }
                cancelled.insert(id)
                try nodes.execute(arguments: [id])
                if let runID = try Int64.fetchOne(runOf, arguments: [id]) { runIDs.insert(runID) }
            }
            return CancelledJobs(jobIDs: cancelled, runs: try runIDs.sorted().map { try Self.updateRunStatus(db, runID: $0, now: now) })
        }
    }

    /// Moves one job in the queue; returns how many rows changed (1).
    public func setPosition(jobID: Int64, position: Double) async throws -> Int {
        try await group.write { db in
            try db.cachedStatement(sql: "UPDATE job SET position = ? WHERE id = ? AND status = 'queued'").execute(
                           arguments: [position, jobID])
            return db.changesCount
        }
    }

    /// Gives queued jobs new, evenly spaced positions (when repeated moves into one gap have
    /// used up the precision between two neighbours).
    public func renumberQueue(_ positions: [(Int64, Double)]) async throws {
        try await group.write { db in
            let statement = try db.cachedStatement(sql: "UPDATE job SET position = ? WHERE id = ?")
            for (id, position) in positions { try statement.execute(arguments: [position, id]) }
        }
    }

    /// Puts a job whose runner was lost back in the queue at `position` for a fresh start:
    /// its nodes pending again, the lost execution's log and artifacts removed.
    public func requeueLostJob(id: Int64, position: Double, reason: String, now: Int64) async throws -> RunRecord {
        try await group.write { db in
            try db.cachedStatement(sql: """
                UPDATE job SET status = 'queued', runner = NULL, started_at = NULL, finished_at = NULL,
                               position = ?, reason = ?, lost_count = lost_count + 1, commit_sha = ''
                WHERE id = ?
                """).execute(arguments: [position, reason, id])
            try db.cachedStatement(sql: """
                UPDATE node SET status = 'pending', exit_code = NULL, started_at = NULL, finished_at = NULL
                WHERE job_id = ?
                """).execute(arguments: [id])
            try db.cachedStatement(sql: "DELETE FROM log_end WHERE job_id = ?").execute(arguments: [id])
            try db.cachedStatement(sql: "DELETE FROM artifact WHERE job_id = ?").execute(arguments: [id])
            try db.cachedStatement(sql: "DELETE FROM upload WHERE job_id = ?").execute(arguments: [id])
            let runID = try Int64.fetchOne(db.cachedStatement(sql: "SELECT run_id FROM job WHERE id = ?"), arguments: [id])!
            return try Self.updateRunStatus(db, runID: runID, now: now)
        }
    }

    // MARK: uploads and revocations

    public func saveUpload(jobID: Int64, name: String, size: Int64, sha256: String, now: Int64) async throws -> UploadRecord {
        try await group.write { db in
            let id = try Self.upsertFile(db, into: "upload", jobID: jobID, name: name, size: size, sha256: sha256, now: now)
            return UploadRecord(id: id, jobID: jobID, name: name, size: size, sha256: sha256)
        }
    }

    public func uploads() async throws -> [UploadRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT id, job_id, name, size, sha256 FROM upload ORDER BY id").map {
                UploadRecord(id: $0["id"], jobID: $0["job_id"], name: $0["name"], size: $0["size"], sha256: $0["sha256"])
            }
        }
    }

    public func deleteUploads(ids: [Int64]) async throws {
        guard !ids.isEmpty else { return }
        try await group.write { db in
            try db.execute(sql: "DELETE FROM upload WHERE id IN (\(databaseQuestionMarks(count: ids.count)))",
                           arguments: StatementArguments(ids))
        }
    }

    public func revoke(name: String?, fingerprint: String?, now: Int64) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: "INSERT INTO revocation (name, fingerprint, revoked_at) VALUES (?, ?, ?)").execute(
                           arguments: [name, fingerprint, now])
        }
    }

    public func revocations() async throws -> [Revocation] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT name, fingerprint, revoked_at FROM revocation ORDER BY id").map {
                Revocation(name: $0["name"], fingerprint: $0["fingerprint"], revokedAt: $0["revoked_at"])
            }
        }
    }

    // MARK: webhooks

    public func setWebhookSecret(project: String, secret: String) async throws -> Bool {
        try await group.write { db in
            try db.cachedStatement(sql: "UPDATE project SET webhook_secret = ? WHERE name = ?").execute(arguments: [secret, project])
            return db.changesCount == 1
        }
    }

    public func webhookSecret(project: String) async throws -> String? {
        try await writer.read { db in
            try String.fetchOne(db.cachedStatement(sql: "SELECT webhook_secret FROM project WHERE name = ?"), arguments: [project])
        }
    }

    public func recordDelivery(_ delivery: DeliveryRecord) async throws -> DeliveryRecord? {
        try await group.write { db in
            if let seen = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM delivery WHERE project = ? AND forge = ? AND delivery_id = ?"),
                                           arguments: [delivery.project, delivery.forge, delivery.deliveryID]) {
                return try Self.delivery(seen)
            }
            try db.cachedStatement(sql: """
                INSERT INTO delivery (project, forge, delivery_id, event, received_at, outcome, detail, run_ids)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [delivery.project, delivery.forge, delivery.deliveryID, delivery.event, delivery.receivedAt,
                                          delivery.outcome.rawValue, delivery.detail, try json(delivery.runIDs)])
            return nil
        }
    }

    public func updateDelivery(_ delivery: DeliveryRecord) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: """
                UPDATE delivery SET outcome = ?, detail = ?, run_ids = ? WHERE project = ? AND forge = ? AND delivery_id = ?
                """).execute(arguments: [delivery.outcome.rawValue, delivery.detail, try json(delivery.runIDs), delivery.project,
                                          delivery.forge, delivery.deliveryID])
        }
    }

    public func deliveries(project: String, limit: Int) async throws -> [DeliveryRecord] {
        try await writer.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM delivery WHERE project = ? ORDER BY id DESC LIMIT ?"),
                             arguments: [project, limit]).map(Self.delivery)
        }
    }

    static func delivery(_ row: Row) throws -> DeliveryRecord {
        DeliveryRecord(project: row["project"], forge: row["forge"], deliveryID: row["delivery_id"], event: row["event"],
                       receivedAt: row["received_at"], outcome: DeliveryRecord.Outcome(rawValue: row["outcome"]) ?? .refused,
                       detail: row["detail"], runIDs: try unjson(row["run_ids"]))
    }

    // MARK: API tokens

    public func saveToken(_ token: TokenRecord) async throws -> Bool {
        try await group.write { db in
            try db.cachedStatement(sql: """
                INSERT INTO api_token (name, role, secret_sha256, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (name) DO NOTHING
                """).execute(arguments: [token.name, token.role.rawValue, token.secretSHA256, token.createdAt, token.expiresAt])
            return db.changesCount == 1
        }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM api_token ORDER BY name").map(Self.token)
        }
    }

    public func revokeToken(name: String, now: Int64) async throws -> TokenRecord? {
        try await group.write { db in
            try db.cachedStatement(sql: "UPDATE api_token SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
                .execute(arguments: [now, name])
            return try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM api_token WHERE name = ?"), arguments: [name]).map(Self.token)
        }
    }

    // MARK: browser sessions

    public func saveWebSession(_ session: WebSessionRecord, maximumPerToken: Int) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: "DELETE FROM web_session WHERE expires_at <= ?").execute(arguments: [session.createdAt])
            try db.cachedStatement(sql: """
                DELETE FROM web_session WHERE token_name = ? AND secret_sha256 IN (
                    SELECT secret_sha256 FROM web_session WHERE token_name = ? ORDER BY created_at DESC LIMIT -1 OFFSET ?)
                """).execute(arguments: [session.tokenName, session.tokenName, max(0, maximumPerToken - 1)])
            try db.cachedStatement(sql: """
                INSERT INTO web_session (secret_sha256, token_name, created_at, expires_at) VALUES (?, ?, ?, ?)
                """).execute(arguments: [session.secretSHA256, session.tokenName, session.createdAt, session.expiresAt])
        }
    }

    public func webSession(secretSHA256: String) async throws -> WebSessionRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM web_session WHERE secret_sha256 = ?"),
                             arguments: [secretSHA256]).map {
                WebSessionRecord(secretSHA256: $0["secret_sha256"], tokenName: $0["token_name"], createdAt: $0["created_at"],
                                 expiresAt: $0["expires_at"])
            }
        }
    }

    public func deleteWebSession(secretSHA256: String) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: "DELETE FROM web_session WHERE secret_sha256 = ?").execute(arguments: [secretSHA256])
        }
    }

    static func token(_ row: Row) -> TokenRecord {
        TokenRecord(name: row["name"], role: Role(rawValue: row["role"]) ?? .viewer, secretSHA256: row["secret_sha256"],
                    createdAt: row["created_at"], expiresAt: row["expires_at"], revokedAt: row["revoked_at"])
    }

    // MARK: attempts, projects, runners

    public func attempts(runID: Int64) async throws -> [AttemptRecord] {
        try await writer.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM attempt WHERE run_id = ? ORDER BY number"),
                             arguments: [runID]).map {
                AttemptRecord(runID: $0["run_id"], number: $0["number"],
                              status: Status(rawValue: $0["status"]) ?? .failed, trigger: $0["trigger"],
                              createdAt: $0["created_at"], startedAt: $0["started_at"], finishedAt: $0["finished_at"],
                              triggeredBy: $0["triggered_by"])
            }
        }
    }

    public func attempt(runID: Int64, number: Int) async throws -> AttemptRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM attempt WHERE run_id = ? AND number = ?"),
                             arguments: [runID, number]).map {
                AttemptRecord(runID: $0["run_id"], number: $0["number"],
                              status: Status(rawValue: $0["status"]) ?? .failed, trigger: $0["trigger"],
                              createdAt: $0["created_at"], startedAt: $0["started_at"], finishedAt: $0["finished_at"],
                              triggeredBy: $0["triggered_by"])
            }
        }
    }

    public func pipelineVersion(id: Int64) async throws -> PipelineVersionRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.pipelineColumns) WHERE v.id = ?"), arguments: [id])
                .map(Self.pipelineVersion)
        }
    }

    public func saveProject(name: String, repository: String, now: Int64) async throws -> ProjectRecord {
        try await group.write { db in
            try db.cachedStatement(sql: """
                INSERT INTO project (name, repository, created_at) VALUES (?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET repository = excluded.repository
                """).execute(arguments: [name, repository, now])
            return try Self.fetchProjects(db, where: "name = ?", [name]).first!
        }
    }

    public func projects() async throws -> [ProjectRecord] {
        try await writer.read { db in try Self.fetchProjects(db, where: "1", []) }
    }

    public func project(name: String) async throws -> ProjectRecord? {
        try await writer.read { db in try Self.fetchProjects(db, where: "name = ?", [name]).first }
    }

    static func fetchProjects(_ db: Database, where clause: String, _ arguments: StatementArguments) throws -> [ProjectRecord] {
        try Row.fetchAll(db, sql: "SELECT name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook FROM project WHERE \(clause) ORDER BY name",
                         arguments: arguments).map {
            ProjectRecord(name: $0["name"], repository: $0["repository"], createdAt: $0["created_at"], hasWebhook: $0["has_webhook"])
        }
    }

    public func setDrained(runner: String, drained: Bool) async throws {
        try await group.write { db in
            if drained {
                try db.cachedStatement(sql: "INSERT OR REPLACE INTO runner_state (name, drained) VALUES (?, 1)").execute(arguments: [runner])
            } else {
                try db.cachedStatement(sql: "DELETE FROM runner_state WHERE name = ?").execute(arguments: [runner])
            }
        }
    }

    public func drainedRunners() async throws -> Set<String> {
        try await writer.read { db in Set(try String.fetchAll(db, sql: "SELECT name FROM runner_state WHERE drained = 1")) }
    }

    /// A run attempt's status from its jobs': running until every job finished, then failed
    /// if any failed, cancelled if any was cancelled, otherwise succeeded.

    // MARK: logs

    public func setLogEnds(_ ends: [LogEnd]) async throws -> Set<Int64> {
        try await group.write { db in
            let fence = try db.cachedStatement(sql: "SELECT 1 FROM job WHERE id = ? AND epoch = ? AND status = 'running'")
            let statement = try db.cachedStatement(sql: """
                INSERT INTO log_end (job_id, node, length) VALUES (?, ?, ?)
                ON CONFLICT (job_id, node) DO UPDATE SET length = excluded.length
                """)
            var leased: [Int64: Bool] = [:]
            var refused = Set<Int64>()
            for end in ends {
                if let epoch = end.epoch {
                    let holds = try leased[end.jobID] ?? (Int64.fetchOne(fence, arguments: [end.jobID, epoch]) != nil)
                    leased[end.jobID] = holds
                    guard holds else {
                        refused.insert(end.jobID)
                        continue
                    }
                }
                try statement.execute(arguments: [end.jobID, end.node, end.length])
            }
            return refused
        }
    }

    public func logLengths(jobID: Int64) async throws -> [String: Int64] {
        try await writer.read { db in
            var lengths: [String: Int64] = [:]
            for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT node, length FROM log_end WHERE job_id = ?"), arguments: [jobID]) {
                lengths[row["node"]] = row["length"]
            }
            return lengths
        }
    }

    public func logEnds(jobIDs: [Int64], node: String?) async throws -> [LogEnd] {
        guard !jobIDs.isEmpty else { return [] }
        return try await writer.read { db in
            var arguments = StatementArguments(jobIDs)
            var filter = ""
            if let node {
                filter = " AND e.node = ?"
                arguments += [node]
            }
            return try Row.fetchAll(db, sql: """
                SELECT e.job_id, e.node, e.length FROM log_end e
                JOIN node n ON n.job_id = e.job_id AND n.name = e.node
                WHERE e.job_id IN (\(databaseQuestionMarks(count: jobIDs.count)))\(filter)
                ORDER BY e.job_id, n.ordinal
                """, arguments: arguments).map { LogEnd(jobID: $0["job_id"], node: $0["node"], length: $0["length"]) }
        }
    }

    // MARK: artifacts

    public func insertArtifact(jobID: Int64, epoch: Int64, name: String, size: Int64, sha256: String,
                               now: Int64) async throws -> ArtifactRecord {
        try await group.write { db in
            try Self.fence(db, jobID: jobID, epoch: epoch)
            let id = try Self.upsertFile(db, into: "artifact", jobID: jobID, name: name, size: size, sha256: sha256, now: now)
            try db.cachedStatement(sql: """
                UPDATE artifact SET (run_id, project, pipeline, branch) =
                    (SELECT r.id, r.project, r.pipeline, r.branch FROM job j JOIN run r ON r.id = j.run_id WHERE j.id = artifact.job_id)
                WHERE id = ?
                """).execute(arguments: [id])
            return try Self.fetchArtifacts(db, where: "a.id = ?", [id]).first!
        }
    }

    /// Inserts the row of a job's named file in `table` (`upload` or `artifact`), or
    /// replaces its size, hash and time; returns its id.
    static func upsertFile(_ db: Database, into table: String, jobID: Int64, name: String, size: Int64,
                           sha256: String, now: Int64) throws -> Int64 {
        try db.cachedStatement(sql: """
            INSERT INTO \(table) (job_id, name, size, sha256, created_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256,
                created_at = excluded.created_at
            """).execute(arguments: [jobID, name, size, sha256, now])
        return try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM \(table) WHERE job_id = ? AND name = ?"),
                                  arguments: [jobID, name])!
    }

    /// Artifacts listed without a run: the latest, so the answer stays one frame.
    static let latestArtifacts = 1000

    public func artifacts(runID: Int64?) async throws -> [ArtifactRecord] {
        try await writer.read { db in
            if let runID {
                return try Self.fetchArtifacts(db, where: "j.run_id = ?", [runID])
            }
            return try Self.fetchArtifacts(db, where: "a.id IN (SELECT id FROM artifact ORDER BY id DESC LIMIT ?)",
                                           [Self.latestArtifacts])
        }
    }

    public func artifact(id: Int64) async throws -> ArtifactRecord? {
        try await writer.read { db in try Self.fetchArtifacts(db, where: "a.id = ?", [id]).first }
    }

    static func fetchArtifacts(_ db: Database, where clause: String, _ arguments: StatementArguments) throws -> [ArtifactRecord] {
        try Row.fetchAll(db, sql: """
            SELECT \(artifactColumns) FROM artifact a JOIN job j ON j.id = a.job_id WHERE \(clause) ORDER BY a.id
            """, arguments: arguments).map(artifact)
    }

    static let artifactColumns = """
        a.id, j.run_id, a.job_id, j.attempt, j.name AS job, a.name, a.size, a.sha256, a.created_at, a.project, a.pipeline,
        a.branch
        """

    static func artifact(_ row: Row) -> ArtifactRecord {
        ArtifactRecord(id: row["id"], runID: row["run_id"], jobID: row["job_id"], attempt: row["attempt"],
                       job: row["job"], name: row["name"], size: row["size"], sha256: row["sha256"],
                       createdAt: row["created_at"], project: row["project"], pipeline: row["pipeline"], branch: row["branch"])
    }

    public func searchArtifacts(_ query: ArtifactQuery) async throws -> [ArtifactRecord] {
        try await writer.read { db in
            var clauses: [String] = []
            var arguments = StatementArguments()
            // A name alone, newest or oldest first: the trigram index gives the page itself, in
            // id order, without collecting every match (a common part matches most names).
            let nameAlone = !query.hasFiltersBesideName && (query.sort == .newest || query.sort == .oldest)
            let page = nameAlone ? " ORDER BY rowid \(query.sort == .newest ? "DESC" : "ASC") LIMIT \(query.limit) OFFSET \(query.offset)" : ""
            var pagedInIndex = false
            if let name = query.name {
                if name.contains(where: { "*?[".contains($0) }) {
                    clauses.append("a.id IN (SELECT rowid FROM artifact_name WHERE name GLOB ?\(page))")
                    arguments += [name]
                    pagedInIndex = nameAlone
                } else if name.count >= 3, !name.contains(where: { "%_".contains($0) }) {
                    // The trigram index answers a substring of three characters or more.
                    clauses.append("a.id IN (SELECT rowid FROM artifact_name WHERE name LIKE ?\(page))")
                    arguments += ["%\(name)%"]
                    pagedInIndex = nameAlone
                } else {
                    let escaped = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                        .replacingOccurrences(of: "_", with: "\\_")
                    clauses.append("a.name LIKE ? ESCAPE '\\'")
                    arguments += ["%\(escaped)%"]
                }
            }
            for (column, value) in [("a.project", query.project), ("a.pipeline", query.pipeline), ("a.branch", query.branch)] {
                if let value {
                    clauses.append("\(column) = ?")
                    arguments += [value]
                }
            }
            if let run = query.runID {
                clauses.append("a.run_id = ?")
                arguments += [run]
            }
            if let prefix = query.sha256Prefix {
                // Hex digits only (checked by the core): a range on the index.
                clauses.append("a.sha256 >= ? AND a.sha256 < ?")
                arguments += [prefix, prefix + "g"]
            }
            // Sorted by id, a size range is checked row by row along the id order (`+a.size`
            // keeps the size index out): the page is found without sorting every match.
            let size = query.sort == .newest || query.sort == .oldest ? "+a.size" : "a.size"
            if let minimum = query.minimumSize {
                clauses.append("\(size) >= ?")
                arguments += [minimum]
            }
            if let maximum = query.maximumSize {
                clauses.append("\(size) <= ?")
                arguments += [maximum]
            }
            if let after = query.createdAfter {
                clauses.append("a.created_at >= ?")
                arguments += [after]
            }
            if let before = query.createdBefore {
                clauses.append("a.created_at < ?")
                arguments += [before]
            }
            let order = switch query.sort {
            case .newest: "a.id DESC"
            case .oldest: "a.id"
            case .largest: "a.size DESC, a.id DESC"
            case .smallest: "a.size, a.id"
            case .name: "a.name, a.id"
            }
            // With the page taken in the name index, the outer query only orders it.
            let offset = pagedInIndex ? 0 : query.offset
            arguments += [query.limit, offset]
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try Row.fetchAll(db, sql: """
                SELECT \(Self.artifactColumns) FROM artifact a JOIN job j ON j.id = a.job_id \(whereClause)
                ORDER BY \(order) LIMIT ? OFFSET ?
                """, arguments: arguments).map(Self.artifact)
        }
    }

    // MARK: reads

    static let runColumns = """
        id, project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at, started_at, finished_at,
        commit_sha, triggered_by
        """

    static func run(_ row: Row) -> RunRecord {
        var run = RunRecord(id: row["id"], project: row["project"], pipeline: row["pipeline"],
                            pipelineVersionID: row["pipeline_version_id"], branch: row["branch"],
                            status: Status(rawValue: row["status"]) ?? .failed, attempt: row["attempt"],
                            trigger: row["trigger"], createdAt: row["created_at"], startedAt: row["started_at"],
                            finishedAt: row["finished_at"])
        run.commit = row["commit_sha"]
        run.triggeredBy = row["triggered_by"]
        return run
    }

    static func fetchRun(_ db: Database, id: Int64) throws -> RunRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT \(runColumns) FROM run WHERE id = ?"), arguments: [id]).map(run)
    }

    public func runs(limit: Int, filter: RunFilter) async throws -> [RunRecord] {
        try await writer.read { db in
            var clauses: [String] = []
            var arguments = StatementArguments()
            for (column, value) in [("project", filter.project), ("pipeline", filter.pipeline),
                                    ("branch", filter.branch), ("status", filter.status?.rawValue),
                                    ("trigger", filter.trigger)] {
                if let value {
                    clauses.append("\(column) = ?")
                    arguments += [value]
                }
            }
            if let before = filter.before {
                clauses.append("id < ?")
                arguments += [before]
            }
            arguments += [limit]
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try Row.fetchAll(db, sql: "SELECT \(Self.runColumns) FROM run \(whereClause) ORDER BY id DESC LIMIT ?",
                                    arguments: arguments).map(Self.run)
        }
    }

    public func run(id: Int64) async throws -> RunRecord? {
        try await writer.read { db in try Self.fetchRun(db, id: id) }
    }

    static let jobColumns = """
        id, run_id, attempt, name, labels, status, runner, epoch, position, queued_at, started_at, finished_at, reason,
        commit_sha, retry_lost, lost_count
        """

    static func job(_ row: Row) throws -> JobRecord {
        JobRecord(id: row["id"], runID: row["run_id"], attempt: row["attempt"], name: row["name"],
                  labels: try unjson(row["labels"]), status: Status(rawValue: row["status"]) ?? .failed,
                  runner: row["runner"], epoch: row["epoch"], position: row["position"], queuedAt: row["queued_at"],
                  startedAt: row["started_at"], finishedAt: row["finished_at"], reason: row["reason"],
                  commit: row["commit_sha"], retryLost: row["retry_lost"], lostCount: row["lost_count"])
    }

    public func jobs(runID: Int64, attempt: Int) async throws -> [JobRecord] {
        try await writer.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT \(Self.jobColumns) FROM job WHERE run_id = ? AND attempt = ? ORDER BY id"),
                             arguments: [runID, attempt]).map(Self.job)
        }
    }

    public func job(id: Int64) async throws -> JobRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.jobColumns) FROM job WHERE id = ?"), arguments: [id]).map(Self.job)
        }
    }

    public func jobs(ids: [Int64]) async throws -> [JobRecord] {
        guard !ids.isEmpty else { return [] }
        return try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT \(Self.jobColumns) FROM job WHERE id IN (\(databaseQuestionMarks(count: ids.count)))",
                             arguments: StatementArguments(ids)).map(Self.job)
        }
    }

    public func nodes(jobIDs: [Int64]) async throws -> [NodeRecord] {
        guard !jobIDs.isEmpty else { return [] }
        return try await writer.read { db in try Self.fetchNodes(db, jobIDs: jobIDs) }
    }

    static func fetchNodes(_ db: Database, jobIDs: [Int64]) throws -> [NodeRecord] {
        try Row.fetchAll(db, sql: """
            SELECT * FROM node WHERE job_id IN (\(databaseQuestionMarks(count: jobIDs.count)))
            ORDER BY job_id, ordinal
            """, arguments: StatementArguments(jobIDs)).map { row in
            NodeRecord(jobID: row["job_id"], name: row["name"], ordinal: row["ordinal"], run: row["run"],
                       needs: try unjson(row["needs"]), env: try unjson(row["env"]), timeout: row["timeout"], grace: row["grace"],
                       artifacts: try unjson(row["artifacts"]),
                       status: Status(rawValue: row["status"]) ?? .failed, exitCode: row["exit_code"],
                       startedAt: row["started_at"], finishedAt: row["finished_at"])
        }
    }

    public func queuedJobs(matching filter: RunFilter) async throws -> [JobRecord] {
        try await writer.read { db in
            var clauses = ["j.status = 'queued'"]
            var arguments = StatementArguments()
            for (column, value) in [("project", filter.project), ("pipeline", filter.pipeline), ("branch", filter.branch)] {
                if let value {
                    clauses.append("r.\(column) = ?")
                    arguments += [value]
                }
            }
            let columns = Self.jobColumns.split(separator: ",").map { "j." + $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            return try Row.fetchAll(db, sql: """
                SELECT \(columns.joined(separator: ", ")) FROM job j JOIN run r ON r.id = j.run_id
                WHERE \(clauses.joined(separator: " AND ")) ORDER BY j.position
                """, arguments: arguments).map(Self.job)
        }
    }

    public func activeJobs() async throws -> [JobRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.jobColumns) FROM job WHERE status IN ('queued', 'running') ORDER BY position
                """).map(Self.job)
        }
    }
}

private func json<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

private func unjson<T: Decodable>(_ text: String) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(text.utf8))
}
