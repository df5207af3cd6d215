import Foundation
import Logging
import PostgresNIO

// The store protocol on PostgreSQL. The rules are the SQLite store's; where PostgreSQL lets
// several writers in at once, a row lock (`FOR UPDATE`) or a single statement keeps them.
extension PostgresStore {
    // MARK: pipelines

    public func savePipeline(project: String, definition: PipelineDefinition, source: String,
                             now: Int64) async throws -> PipelineVersionRecord {
        let jobs = definition.jobs.map(\.name)
        let jobsJSON = try pgJSON(jobs)
        return try await transaction { [self] db in
            try await db.query("""
                INSERT INTO project (name, created_at) VALUES (\(project), \(now)) ON CONFLICT (name) DO NOTHING
                """, logger: logger)
            // The project's row, locked: two pushes of one pipeline take versions one after the other.
            guard let projectRow = try await db.row("SELECT id FROM project WHERE name = \(project) FOR UPDATE", logger: logger)
            else { throw StoreError(.inconsistent, "project \(project) vanished") }
            let projectID: Int64 = try projectRow.get("id")
            let previous = try await db.row("""
                SELECT COALESCE(MAX(version), 0) AS version FROM pipeline_version
                WHERE project_id = \(projectID) AND pipeline = \(definition.name)
                """, logger: logger).map { try $0.get("version", as: Int.self) } ?? 0
            let row = try await db.row("""
                INSERT INTO pipeline_version (project_id, pipeline, version, source, jobs, created_at)
                VALUES (\(projectID), \(definition.name), \(previous + 1), \(source), \(jobsJSON), \(now)) RETURNING id
                """, logger: logger)
            return PipelineVersionRecord(id: try row!.get("id"), project: project, pipeline: definition.name,
                                         version: previous + 1, source: source, createdAt: now, jobs: jobs)
        }
    }

    static let pipelineColumns = """
        v.id, p.name AS project, v.pipeline, v.version, v.source, v.jobs, v.created_at
        FROM pipeline_version v JOIN project p ON p.id = v.project_id
        """

    static func pipelineVersion(_ row: PostgresRandomAccessRow) throws -> PipelineVersionRecord {
        PipelineVersionRecord(id: try row.get("id"), project: try row.get("project"), pipeline: try row.get("pipeline"),
                              version: try row.get("version"), source: try row.get("source"),
                              createdAt: try row.get("created_at"), jobs: try pgUnJSON(try row.get("jobs")))
    }

    public func pipelines() async throws -> [PipelineVersionRecord] {
        try await read { [self] db in
            try await db.rows(PostgresQuery(unsafeSQL: """
                SELECT \(Self.pipelineColumns)
                WHERE v.version = (SELECT MAX(version) FROM pipeline_version w
                                   WHERE w.project_id = v.project_id AND w.pipeline = v.pipeline)
                ORDER BY p.name, v.pipeline
                """), logger: logger).map(Self.pipelineVersion)
        }
    }

    public func latestPipeline(project: String, pipeline: String) async throws -> PipelineVersionRecord? {
        try await read { [self] db in
            try await db.row("""
                SELECT \(unescaped: Self.pipelineColumns)
                WHERE p.name = \(project) AND v.pipeline = \(pipeline) ORDER BY v.version DESC LIMIT 1
                """, logger: logger).map(Self.pipelineVersion)
        }
    }

    public func pipelineVersion(id: Int64) async throws -> PipelineVersionRecord? {
        try await read { [self] db in
            try await db.row("SELECT \(unescaped: Self.pipelineColumns) WHERE v.id = \(id)", logger: logger).map(Self.pipelineVersion)
        }
    }

    // MARK: runs and jobs

    public func createRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String,
                          commit: String, trigger: String, triggeredBy: String, now: Int64) async throws -> (RunRecord, [JobRecord]) {
        let logger = logger
        return try await transaction { [self] db in
            let row = try await db.row("""
                INSERT INTO run (project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at, commit_sha,
                                 triggered_by)
                VALUES (\(version.project), \(version.pipeline), \(version.id), \(branch), 'queued', 1, \(trigger), \(now),
                        \(commit), \(triggeredBy))
                RETURNING id
                """, logger: logger)
            var run = RunRecord(id: try row!.get("id"), project: version.project, pipeline: version.pipeline,
                                pipelineVersionID: version.id, branch: branch, status: .queued, attempt: 1,
                                trigger: trigger, createdAt: now)
            run.commit = commit
            run.triggeredBy = triggeredBy
            let jobs = try await Self.insertAttempt(db, run: run, definition: definition, now: now, logger: logger)
            return (run, jobs)
        }
    }

    public func createAttempt(runID: Int64, definition: PipelineDefinition, trigger: String, triggeredBy: String,
                              now: Int64) async throws -> (RunRecord, [JobRecord]) {
        let logger = logger
        return try await transaction { [self] db in
            try await db.query("""
                UPDATE run SET attempt = attempt + 1, status = 'queued', trigger = \(trigger), triggered_by = \(triggeredBy),
                               started_at = NULL, finished_at = NULL WHERE id = \(runID)
                """, logger: logger)
            guard let run = try await Self.fetchRun(db, id: runID, logger: logger) else {
                throw StoreError(.notFound, "run \(runID) does not exist")
            }
            let jobs = try await Self.insertAttempt(db, run: run, definition: definition, now: now, logger: logger)
            return (run, jobs)
        }
    }

    /// The lock every change to the end of the queue takes, so two coordinators appending at
    /// once give their jobs distinct positions.
    static let queueTailLock: Int64 = 0x4865_6464_6C65_0002

    /// Inserts the attempt row of `run.attempt`, its queued jobs (at the end of the queue)
    /// and their pending nodes.
    static func insertAttempt(_ db: PostgresConnection, run: RunRecord, definition: PipelineDefinition, now: Int64,
                              logger: Logger) async throws -> [JobRecord] {
        try await db.query("""
            INSERT INTO attempt (run_id, number, status, trigger, created_at, triggered_by)
            VALUES (\(run.id), \(run.attempt), 'queued', \(run.trigger), \(now), \(run.triggeredBy))
            """, logger: logger)
        try await db.query("SELECT pg_advisory_xact_lock(\(queueTailLock))", logger: logger)
        let maxPosition = try await db.row("""
            SELECT COALESCE(MAX(position), 0) AS position FROM job WHERE status IN ('queued', 'running')
            """, logger: logger).map { try $0.get("position", as: Double.self) } ?? 0
        var jobs: [JobRecord] = []
        for (index, job) in definition.jobs.enumerated() {
            let position = maxPosition + Double(index + 1)
            let labels = try pgJSON(job.labels)
            let row = try await db.row("""
                INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, retry_lost)
                VALUES (\(run.id), \(run.attempt), \(job.name), \(labels)::jsonb, 'queued', \(position), \(now), \(job.retryLost))
                RETURNING id
                """, logger: logger)
            let jobID: Int64 = try row!.get("id")
            for (ordinal, node) in job.nodes.enumerated() {
                try await db.query("""
                    INSERT INTO node (job_id, name, ordinal, run, needs, env, timeout, grace, artifacts, status)
                    VALUES (\(jobID), \(node.name), \(ordinal), \(node.run), \(try pgJSON(node.needs)), \(try pgJSON(node.env)),
                            \(node.timeout), \(node.grace), \(try pgJSON(node.artifacts)), 'pending')
                    """, logger: logger)
            }
            jobs.append(JobRecord(id: jobID, runID: run.id, attempt: run.attempt, name: job.name, labels: job.labels,
                                  status: .queued, runner: nil, epoch: 0, position: position, queuedAt: now,
                                  startedAt: nil, finishedAt: nil, reason: "", retryLost: job.retryLost))
        }
        return jobs
    }

    public func claimJobs(_ claims: [JobClaim], now: Int64) async throws -> [ClaimedJob?] {
        guard !claims.isEmpty else { return [] }
        let logger = logger
        let me = coordinatorID
        return try await transaction { [self] db in
            var repositories: [String: String] = [:]
            var claimed: [ClaimedJob?] = []
            for claim in claims {
                claimed.append(try await Self.claim(db, claim, now: now, repositories: &repositories, holder: me,
                                                    logger: logger))
            }
            return claimed
        }
    }

    public func claimNext(runner: String, labels: Set<String>, epoch: Int64, now: Int64) async throws -> ClaimedJob? {
        let labelsJSON = try pgJSON(labels.sorted())
        let logger = logger
        let me = coordinatorID
        return try await transaction { [self] db in
            // The first queued job, in queue order, whose labels the runner has all of; a job
            // another claim has locked is skipped, not waited for, and cannot be taken twice.
            guard let row = try await db.row("""
                SELECT id FROM job WHERE status = 'queued' AND labels <@ \(labelsJSON)::jsonb
                ORDER BY position, id LIMIT 1 FOR UPDATE SKIP LOCKED
                """, logger: logger) else { return nil }
            var repositories: [String: String] = [:]
            return try await Self.claim(db, JobClaim(jobID: try row.get("id"), runner: runner, epoch: epoch), now: now,
                                        repositories: &repositories, holder: me, logger: logger)
        }
    }

    /// Marks a queued job running on a runner at an epoch, and its run and attempt running;
    /// nil when the job is no longer queued.
    static func claim(_ db: PostgresConnection, _ claim: JobClaim, now: Int64, repositories: inout [String: String],
                      holder: String, logger: Logger) async throws -> ClaimedJob? {
        guard let row = try await db.row("""
            UPDATE job SET status = 'running', runner = \(claim.runner), epoch = \(claim.epoch), started_at = \(now),
                           holder = \(holder)
            WHERE id = \(claim.jobID) AND status = 'queued' RETURNING \(unescaped: jobColumns)
            """, logger: logger) else { return nil }
        let job = try Self.job(row)
        try await db.query("""
            UPDATE run SET status = 'running', started_at = COALESCE(started_at, \(now)) WHERE id = \(job.runID) AND status = 'queued'
            """, logger: logger)
        try await db.query("""
            UPDATE attempt SET status = 'running', started_at = COALESCE(started_at, \(now))
            WHERE run_id = \(job.runID) AND number = \(job.attempt) AND status = 'queued'
            """, logger: logger)
        guard let run = try await fetchRun(db, id: job.runID, logger: logger) else {
            throw StoreError(.inconsistent, "run \(job.runID) of job \(job.id) is missing")
        }
        if repositories[run.project] == nil {
            repositories[run.project] = try await db.row("SELECT repository FROM project WHERE name = \(run.project)", logger: logger)
                .map { try $0.get("repository", as: String.self) } ?? ""
        }
        return ClaimedJob(job: job, run: run, nodes: try await fetchNodes(db, jobIDs: [job.id], logger: logger),
                          repository: repositories[run.project] ?? "")
    }

    /// Refuses, inside the write's transaction, a runner's write whose lease is gone: the job
    /// must be running with this epoch. The job's row stays locked until the transaction
    /// ends, so no requeue or claim from another coordinator can come between.
    ///
    /// The job must also be held by this coordinator (`ClusterStore`): one that lost it to
    /// another (its runner reattached there) writes nothing more about it.
    static func fence(_ db: PostgresConnection, jobID: Int64, epoch: Int64, holder: String, logger: Logger) async throws {
        let row = try await db.row("SELECT epoch, holder FROM job WHERE id = \(jobID) AND status = 'running' FOR UPDATE",
                                   logger: logger)
        guard let row, try row.get("epoch", as: Int64.self) == epoch else { throw StoreError.staleLease(jobID: jobID, epoch: epoch) }
        guard try row.get("holder", as: String?.self) == holder else {
            throw StoreError(.staleLease, "job \(jobID) is held by another coordinator now (its runner reattached there)")
        }
    }

    public func setJobCommit(id: Int64, epoch: Int64, commit: String) async throws {
        let logger = logger
        let me = coordinatorID
        try await transaction { [self] db in
            let changed = try await db.changes("""
                UPDATE job SET commit_sha = \(commit)
                WHERE id = \(id) AND epoch = \(epoch) AND status = 'running' AND holder = \(me) RETURNING 1
                """, logger: logger)
            guard changed == 1 else { throw StoreError.staleLease(jobID: id, epoch: epoch) }
        }
    }

    public func updateNode(jobID: Int64, epoch: Int64, node: String, status: Status, exitCode: Int?, at: Int64) async throws {
        let logger = logger
        let me = coordinatorID
        try await transaction { [self] db in
            try await Self.fence(db, jobID: jobID, epoch: epoch, holder: me, logger: logger)
            if status == .running {
                try await db.query("""
                    UPDATE node SET status = \(status.rawValue), started_at = \(at) WHERE job_id = \(jobID) AND name = \(node)
                    """, logger: logger)
            } else {
                try await db.query("""
                    UPDATE node SET status = \(status.rawValue), exit_code = \(exitCode), finished_at = \(at)
                    WHERE job_id = \(jobID) AND name = \(node)
                    """, logger: logger)
            }
        }
    }

    public func finishJob(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64) async throws -> (RunRecord, JobRecord) {
        let logger = logger
        let me = coordinatorID
        return try await transaction { [self] db in
            if let epoch { try await Self.fence(db, jobID: id, epoch: epoch, holder: me, logger: logger) }
            guard let row = try await db.row("""
                UPDATE job SET status = \(status.rawValue), reason = \(reason), finished_at = \(now),
                               started_at = COALESCE(started_at, \(now))
                WHERE id = \(id) RETURNING \(unescaped: Self.jobColumns)
                """, logger: logger) else { throw StoreError(.notFound, "job \(id) does not exist") }
            let job = try Self.job(row)
            let leftover: Status = status == .cancelled ? .cancelled : .skipped
            let ended = status == .cancelled ? "cancelled" : "failed"
            try await db.query("""
                UPDATE node SET status = CASE WHEN status = 'running' THEN \(ended) ELSE \(leftover.rawValue) END,
                                finished_at = CASE WHEN status = 'running' THEN \(now) ELSE finished_at END
                WHERE job_id = \(id) AND status IN ('pending', 'running')
                """, logger: logger)
            return (try await Self.updateRunStatus(db, runID: job.runID, now: now, logger: logger), job)
        }
    }

    /// Recomputes the latest attempt's status (and so the run's) from its jobs. The run's row
    /// is locked first: two coordinators finishing the last two jobs of one attempt both see
    /// the other's job finished, in turn.
    static func updateRunStatus(_ db: PostgresConnection, runID: Int64, now: Int64, logger: Logger) async throws -> RunRecord {
        guard let locked = try await db.row("SELECT attempt FROM run WHERE id = \(runID) FOR UPDATE", logger: logger) else {
            throw StoreError(.inconsistent, "run \(runID) is missing")
        }
        let attempt: Int = try locked.get("attempt")
        let statuses = try await db.rows("SELECT status FROM job WHERE run_id = \(runID) AND attempt = \(attempt)", logger: logger)
            .compactMap { Status(rawValue: try $0.get("status", as: String.self)) }
        let runStatus = Outcome.attemptStatus(jobs: statuses)
        let finished: Int64? = runStatus.isFinished ? now : nil
        let started: Int64? = runStatus == .queued ? nil : now
        try await db.query("UPDATE run SET status = \(runStatus.rawValue), finished_at = \(finished) WHERE id = \(runID)", logger: logger)
        try await db.query("""
            UPDATE attempt SET status = \(runStatus.rawValue), finished_at = \(finished), started_at = COALESCE(started_at, \(started))
            WHERE run_id = \(runID) AND number = \(attempt)
            """, logger: logger)
        return try await fetchRun(db, id: runID, logger: logger)!
    }

    public func cancelJobs(ids: [Int64], reason: String, now: Int64) async throws -> CancelledJobs {
        guard !ids.isEmpty else { return CancelledJobs(jobIDs: [], runs: []) }
        let logger = logger
        return try await transaction { [self] db in
            let rows = try await db.rows("""
                UPDATE job SET status = 'cancelled', reason = \(reason), finished_at = \(now)
                WHERE id = ANY(\(ids)) AND status = 'queued' RETURNING id, run_id
                """, logger: logger)
            let cancelled = Set(try rows.map { try $0.get("id", as: Int64.self) })
            let runIDs = Set(try rows.map { try $0.get("run_id", as: Int64.self) })
            if !cancelled.isEmpty {
                try await db.query("""
                    UPDATE node SET status = 'cancelled' WHERE job_id = ANY(\(Array(cancelled))) AND status = 'pending'
                    """, logger: logger)
            }
            var runs: [RunRecord] = []
            for runID in runIDs.sorted() {
                runs.append(try await Self.updateRunStatus(db, runID: runID, now: now, logger: logger))
            }
            return CancelledJobs(jobIDs: cancelled, runs: runs)
        }
    }

    public func setPosition(jobID: Int64, position: Double) async throws -> Int {
        let logger = logger
        return try await read { [self] db in
            try await db.changes("UPDATE job SET position = \(position) WHERE id = \(jobID) AND status = 'queued' RETURNING 1",
                                 logger: logger)
        }
    }

    public func renumberQueue(_ positions: [(Int64, Double)]) async throws {
        guard !positions.isEmpty else { return }
        let ids = positions.map(\.0)
        let values = positions.map(\.1)
        let logger = logger
        try await read { [self] db in
            try await db.query("""
                UPDATE job SET position = n.position FROM unnest(\(ids)::bigint[], \(values)::float8[]) AS n(id, position)
                WHERE job.id = n.id
                """, logger: logger)
        }
    }

    public func requeueLostJob(id: Int64, position: Double, reason: String, now: Int64) async throws -> RunRecord {
        let logger = logger
        let me = coordinatorID
        return try await transaction { [self] db in
            guard let row = try await db.row("""
                UPDATE job SET status = 'queued', runner = NULL, started_at = NULL, finished_at = NULL,
                               position = \(position), reason = \(reason), lost_count = lost_count + 1, commit_sha = '',
                               holder = NULL
                WHERE id = \(id) AND status = 'running' AND holder = \(me) RETURNING run_id
                """, logger: logger) else {
                throw StoreError(.staleLease, "job \(id) is no longer running here: another coordinator holds it, or it ended")
            }
            try await db.query("""
                UPDATE node SET status = 'pending', exit_code = NULL, started_at = NULL, finished_at = NULL WHERE job_id = \(id)
                """, logger: logger)
            try await db.query("DELETE FROM log_end WHERE job_id = \(id)", logger: logger)
            try await db.query("DELETE FROM artifact WHERE job_id = \(id)", logger: logger)
            try await db.query("DELETE FROM upload WHERE job_id = \(id)", logger: logger)
            return try await Self.updateRunStatus(db, runID: try row.get("run_id"), now: now, logger: logger)
        }
    }

    // MARK: uploads and revocations

    public func saveUpload(jobID: Int64, name: String, size: Int64, sha256: String, now: Int64) async throws -> UploadRecord {
        let logger = logger
        return try await read { [self] db in
            let row = try await db.row("""
                INSERT INTO upload (job_id, name, size, sha256, created_at) VALUES (\(jobID), \(name), \(size), \(sha256), \(now))
                ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at
                RETURNING id
                """, logger: logger)
            return UploadRecord(id: try row!.get("id"), jobID: jobID, name: name, size: size, sha256: sha256)
        }
    }

    public func uploads() async throws -> [UploadRecord] {
        try await read { [self] db in
            try await db.rows("SELECT id, job_id, name, size, sha256 FROM upload ORDER BY id", logger: logger).map {
                UploadRecord(id: try $0.get("id"), jobID: try $0.get("job_id"), name: try $0.get("name"), size: try $0.get("size"),
                             sha256: try $0.get("sha256"))
            }
        }
    }

    public func deleteUploads(ids: [Int64]) async throws {
        guard !ids.isEmpty else { return }
        try await read { [self] db in try await db.query("DELETE FROM upload WHERE id = ANY(\(ids))", logger: logger) }
    }

    public func revoke(name: String?, fingerprint: String?, now: Int64) async throws {
        try await read { [self] db in
            try await db.query("INSERT INTO revocation (name, fingerprint, revoked_at) VALUES (\(name), \(fingerprint), \(now))",
                               logger: logger)
        }
    }

    public func revocations() async throws -> [Revocation] {
        try await read { [self] db in
            try await db.rows("SELECT name, fingerprint, revoked_at FROM revocation ORDER BY id", logger: logger).map {
                Revocation(name: try $0.get("name"), fingerprint: try $0.get("fingerprint"), revokedAt: try $0.get("revoked_at"))
            }
        }
    }

    // MARK: attempts, projects, runners

    static func attempt(_ row: PostgresRandomAccessRow) throws -> AttemptRecord {
        AttemptRecord(runID: try row.get("run_id"), number: try row.get("number"),
                      status: Status(rawValue: try row.get("status")) ?? .failed, trigger: try row.get("trigger"),
                      createdAt: try row.get("created_at"), startedAt: try row.get("started_at"),
                      finishedAt: try row.get("finished_at"), triggeredBy: try row.get("triggered_by"))
    }

    public func attempts(runID: Int64) async throws -> [AttemptRecord] {
        try await read { [self] db in
            try await db.rows("SELECT * FROM attempt WHERE run_id = \(runID) ORDER BY number", logger: logger).map(Self.attempt)
        }
    }

    public func attempt(runID: Int64, number: Int) async throws -> AttemptRecord? {
        try await read { [self] db in
            try await db.row("SELECT * FROM attempt WHERE run_id = \(runID) AND number = \(number)", logger: logger).map(Self.attempt)
        }
    }

    public func saveProject(name: String, repository: String, now: Int64) async throws -> ProjectRecord {
        try await read { [self] db in
            let row = try await db.row("""
                INSERT INTO project (name, repository, created_at) VALUES (\(name), \(repository), \(now))
                ON CONFLICT (name) DO UPDATE SET repository = excluded.repository
                RETURNING name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook
                """, logger: logger)
            return try Self.project(row!)
        }
    }

    static func project(_ row: PostgresRandomAccessRow) throws -> ProjectRecord {
        ProjectRecord(name: try row.get("name"), repository: try row.get("repository"), createdAt: try row.get("created_at"),
                      hasWebhook: try row.get("has_webhook"))
    }

    public func projects() async throws -> [ProjectRecord] {
        try await read { [self] db in
            try await db.rows("""
                SELECT name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook FROM project ORDER BY name
                """, logger: logger).map(Self.project)
        }
    }

    public func project(name: String) async throws -> ProjectRecord? {
        try await read { [self] db in
            try await db.row("""
                SELECT name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook FROM project WHERE name = \(name)
                """, logger: logger).map(Self.project)
        }
    }

    public func setDrained(runner: String, drained: Bool) async throws {
        try await read { [self] db in
            if drained {
                try await db.query("""
                    INSERT INTO runner_state (name, drained) VALUES (\(runner), TRUE) ON CONFLICT (name) DO UPDATE SET drained = TRUE
                    """, logger: logger)
            } else {
                try await db.query("DELETE FROM runner_state WHERE name = \(runner)", logger: logger)
            }
        }
    }

    public func drainedRunners() async throws -> Set<String> {
        try await read { [self] db in
            Set(try await db.rows("SELECT name FROM runner_state WHERE drained", logger: logger).map { try $0.get("name", as: String.self) })
        }
    }
}
