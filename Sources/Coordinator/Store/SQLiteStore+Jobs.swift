import Foundation
import GRDB
import Wire

/// Pipelines, runs and jobs: creation, claims, fenced runner writes, ends, cancels, moves.
extension SQLiteStore {
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
                          commit: String, trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                          now: Int64) async throws -> (RunRecord, [JobRecord]) {
        let inputsJSON = try json(inputs)
        return try await group.write { db in
            try Self.insertRun(db, version: version, definition: definition, branch: branch, commit: commit, trigger: trigger,
                               triggeredBy: triggeredBy, fork: fork, inputs: inputs, inputsJSON: inputsJSON, now: now)
        }
    }

    static func insertRun(_ db: Database, version: PipelineVersionRecord, definition: PipelineDefinition, branch: String,
                          commit: String, trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                          inputsJSON: String, now: Int64) throws -> (RunRecord, [JobRecord]) {
        try db.cachedStatement(sql: """
            INSERT INTO run (project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at, commit_sha,
                             triggered_by, fork, inputs)
            VALUES (?, ?, ?, ?, 'queued', 1, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [version.project, version.pipeline, version.id, branch, trigger, now, commit, triggeredBy,
                                     fork, inputsJSON])
        var run = RunRecord(id: db.lastInsertedRowID, project: version.project, pipeline: version.pipeline,
                            pipelineVersionID: version.id, branch: branch, status: .queued, attempt: 1,
                            trigger: trigger, createdAt: now)
        run.commit = commit
        run.triggeredBy = triggeredBy
        run.fork = fork
        run.inputs = inputs
        let jobs = try insertAttempt(db, run: run, definition: definition, now: now)
        return (run, jobs)
    }

    public func createScheduledRun(_ start: ScheduleStart, version: PipelineVersionRecord, definition: PipelineDefinition,
                                   branch: String, triggeredBy: String, inputs: [String: String],
                                   now: Int64) async throws -> (RunRecord, [JobRecord])? {
        let inputsJSON = try json(inputs)
        return try await group.write { db in
            // The due time first: a schedule's run of this due time or a later one stops here.
            try db.execute(sql: """
                INSERT INTO schedule_start (project, pipeline, schedule, due) VALUES (?, ?, ?, ?)
                ON CONFLICT (project, pipeline, schedule) DO UPDATE SET due = excluded.due, run_id = NULL
                WHERE schedule_start.due < excluded.due
                """, arguments: [start.project, start.pipeline, start.schedule, start.due])
            guard db.changesCount == 1 else { return nil }
            let (run, jobs) = try Self.insertRun(db, version: version, definition: definition, branch: branch, commit: "",
                                                 trigger: "schedule", triggeredBy: triggeredBy, fork: false, inputs: inputs,
                                                 inputsJSON: inputsJSON, now: now)
            try db.execute(sql: "UPDATE schedule_start SET run_id = ? WHERE project = ? AND pipeline = ? AND schedule = ?",
                           arguments: [run.id, start.project, start.pipeline, start.schedule])
            return (run, jobs)
        }
    }

    public func scheduleStarts() async throws -> [ScheduleStart] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT project, pipeline, schedule, due, run_id FROM schedule_start").map {
                ScheduleStart(project: $0["project"], pipeline: $0["pipeline"], schedule: $0["schedule"], due: $0["due"],
                              runID: $0["run_id"])
            }
        }
    }

    public func createAttempt(runID: Int64, definition: PipelineDefinition, carried: Set<String>, trigger: String,
                              triggeredBy: String, now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await group.write { db in
            try db.cachedStatement(sql: """
                UPDATE run SET attempt = attempt + 1, status = 'queued', trigger = ?, triggered_by = ?, started_at = NULL,
                               finished_at = NULL WHERE id = ?
                """).execute(arguments: [trigger, triggeredBy, runID])
            guard let run = try Self.fetchRun(db, id: runID) else {
                throw StoreError(.notFound, "run \(runID) does not exist")
            }
            var fresh = definition
            fresh.jobs.removeAll { carried.contains($0.name) }
            let jobs = try Self.insertAttempt(db, run: run, definition: fresh, now: now)
            if !carried.isEmpty {
                // Copies of the previous attempt's jobs, finished as they were, and their nodes;
                // each points at the job that ran (a copy of a copy at the first).
                let names = try json(carried.sorted())
                try db.execute(sql: """
                    INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, started_at, finished_at, runner, epoch,
                                     reason, commit_sha, retry_lost, carried_from, cache)
                    SELECT run_id, attempt + 1, name, labels, status, position, queued_at, started_at, finished_at, runner, epoch,
                           CASE WHEN carried_from IS NULL THEN 'carried over from attempt ' || attempt ELSE reason END,
                           commit_sha, retry_lost, COALESCE(carried_from, id), cache
                    FROM job WHERE run_id = ? AND attempt = ? AND name IN (SELECT value FROM json_each(?))
                    """, arguments: [runID, run.attempt - 1, names])
                try db.execute(sql: """
                    INSERT INTO node (job_id, name, ordinal, run, needs, env, timeout, grace, artifacts, network, memory_limit,
                                      cpu_limit_millis, pids_limit, secrets, image, status, exit_code, started_at, finished_at)
                    SELECT j.id, n.name, n.ordinal, n.run, n.needs, n.env, n.timeout, n.grace, n.artifacts, n.network, n.memory_limit,
                           n.cpu_limit_millis, n.pids_limit, n.secrets, n.image, n.status, n.exit_code, n.started_at, n.finished_at
                    FROM job j JOIN node n ON n.job_id = j.carried_from
                    WHERE j.run_id = ? AND j.attempt = ? AND j.carried_from IS NOT NULL
                    """, arguments: [runID, run.attempt])
            }
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
                    INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, retry_lost, cache)
                    VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?)
                    """).execute(arguments: [run.id, run.attempt, job.name, try json(job.labels), position, now, job.retryLost,
                                             try job.cacheColumn()])
                let jobID = db.lastInsertedRowID
                for (ordinal, node) in job.nodes.enumerated() {
                    try db.cachedStatement(sql: """
                        INSERT INTO node (job_id, name, ordinal, run, needs, env, timeout, grace, artifacts, network, memory_limit,
                                          cpu_limit_millis, pids_limit, secrets, image, status)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending')
                        """).execute(arguments: [jobID, node.name, ordinal, node.run, try json(node.needs),
                                         try json(node.env), node.timeout, node.grace, try json(node.artifacts), node.network,
                                         node.limits.memory, node.limits.cpuMillis, node.limits.pids, try json(node.secrets),
                                         node.image])
                }
                jobs.append(JobRecord(id: jobID, runID: run.id, attempt: run.attempt, name: job.name, labels: job.labels,
                                      status: .queued, runner: nil, epoch: 0, position: position, queuedAt: now,
                                      startedAt: nil, finishedAt: nil, reason: "", retryLost: job.retryLost, cache: job.cache))
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
        let nodes = try Self.fetchNodes(db, jobIDs: [job.id])
        var claimed = ClaimedJob(job: job, run: run, nodes: nodes, repository: repositories[run.project] ?? "")
        let named = Set(nodes.flatMap(\.secrets))
        if !named.isEmpty {
            for row in try Row.fetchAll(db, sql: """
                SELECT name, sealed FROM secret WHERE project = ? AND name IN (\(databaseQuestionMarks(count: named.count)))
                """, arguments: StatementArguments([run.project] + named.sorted())) {
                claimed.sealedSecrets[row["name"]] = [UInt8](row["sealed"] as Data)
            }
            claimed.forkSecrets = try Bool.fetchOne(db, sql: "SELECT fork_secrets FROM project WHERE name = ?",
                                                    arguments: [run.project]) ?? false
        }
        return claimed
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

    /// Puts a job whose runner was lost back at the front of the queue for a fresh start:
    /// its nodes pending again, the lost execution's log and artifacts removed.
    public func requeueLostJob(id: Int64, reason: String, now: Int64) async throws -> RunRecord {
        try await group.write { db in
            try db.cachedStatement(sql: """
                UPDATE job SET status = 'queued', runner = NULL, started_at = NULL, finished_at = NULL,
                               position = (SELECT COALESCE(MIN(position), 1) - 1 FROM job WHERE status = 'queued'),
                               reason = ?, lost_count = lost_count + 1, commit_sha = ''
                WHERE id = ?
                """).execute(arguments: [reason, id])
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
}
