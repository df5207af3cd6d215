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
        let saved = try await transaction { [self] db in
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
        remember(saved)
        return saved
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

    /// From `latestVersions` when known (no round trip); a trigger's `createLatestRun` checks it.
    public func latestPipeline(project: String, pipeline: String) async throws -> PipelineVersionRecord? {
        if let known = latestVersions.withLock({ $0[Self.pipelineKey(project, pipeline)] }) { return known }
        let found = try await read { [self] db in
            try await db.rows(LatestPipeline(project: project, pipeline: pipeline), logger: logger).first.map(Self.pipelineVersion)
        }
        if let found { remember(found) }
        return found
    }

    static func pipelineKey(_ project: String, _ pipeline: String) -> String { "\(project)\u{0}\(pipeline)" }

    /// Keeps `version` as its pipeline's latest unless a later one is known.
    func remember(_ version: PipelineVersionRecord) {
        latestVersions.withLock { known in
            let key = Self.pipelineKey(version.project, version.pipeline)
            if (known[key]?.version ?? 0) < version.version { known[key] = version }
        }
    }

    /// Forgets `version` as its pipeline's latest (a later one exists), unless another
    /// version is known by now.
    func forget(_ version: PipelineVersionRecord) {
        latestVersions.withLock { known in
            let key = Self.pipelineKey(version.project, version.pipeline)
            if known[key]?.id == version.id { known[key] = nil }
        }
    }

    public func pipelineVersion(id: Int64) async throws -> PipelineVersionRecord? {
        try await read { [self] db in
            try await db.row("SELECT \(unescaped: Self.pipelineColumns) WHERE v.id = \(id)", logger: logger).map(Self.pipelineVersion)
        }
    }

    // MARK: runs and jobs

    public func createRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String,
                          commit: String, trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                          now: Int64) async throws -> (RunRecord, [JobRecord]) {
        guard let created = try await createRunAndClaim(version: version, definition: definition, branch: branch, commit: commit,
                                                        trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs,
                                                        now: now, latestOnly: false, slots: []) else {
            throw StoreError(.inconsistent, "a run of \(version.project)/\(version.pipeline) was not stored")
        }
        return (created.run, created.jobs)
    }

    public func createLatestRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String,
                                commit: String, trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                                now: Int64) async throws -> (RunRecord, [JobRecord])? {
        try await createRunAndClaim(version: version, definition: definition, branch: branch, commit: commit, trigger: trigger,
                                    triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now, latestOnly: true,
                                    slots: []).map { ($0.run, $0.jobs) }
    }

    public func createRunAndClaim(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String,
                                  commit: String, trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                                  now: Int64, latestOnly: Bool, slots: [ClaimSlot]) async throws -> CreatedAndClaimed? {
        let insert = RunInsert(version: version, definition: definition, json: try jobsJSON(version, definition), branch: branch,
                               commit: commit, trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs,
                               inputsJSON: try pgJSON(inputs), now: now, latestOnly: latestOnly,
                               slots: slots.filter { !$0.epochs.isEmpty })
        // With the runs and ends waiting now: runs together are one statement (`insertRuns`).
        let created = try await batches.create(insert, on: self)
        // Another coordinator pushed a later version: read it at the next `latestPipeline`.
        if created == nil && latestOnly { forget(version) }
        return created
    }

    /// A run to store, as `createRunAndClaim` is asked for it, its jobs and inputs encoded.
    struct RunInsert: Sendable {
        var version: PipelineVersionRecord, definition: PipelineDefinition, json: JobsJSON
        var branch: String, commit: String, trigger: String, triggeredBy: String, fork: Bool
        var inputs: [String: String], inputsJSON: String, now: Int64
        /// Only while no later version of the pipeline exists.
        var latestOnly: Bool
        /// Free slots to claim for once the run is stored (none empty).
        var slots: [ClaimSlot]
    }

    /// Stores `runs` in one statement (`CreateRuns`: one round trip, and, alone, one commit),
    /// then claims for the slots of the first that lists any, once it is stored (a
    /// `PostgresBatches` step holds at most one such run); for each run, in order, what was
    /// stored (and claimed), or nil when `latestOnly` and a later version exists.
    static func insertRuns(_ db: PostgresConnection, _ runs: [RunInsert], holder: String,
                           logger: Logger) async throws -> [CreatedAndClaimed?] {
        let claimer = runs.firstIndex { !$0.slots.isEmpty }
        let statement = CreateRuns(runs: runs, claimer: claimer.map { Int64($0 + 1) } ?? 0,
                                   slots: try slotsJSON(claimer.map { runs[$0].slots } ?? []), holder: holder)
        var created = [[PostgresRandomAccessRow]](repeating: [], count: runs.count)
        var claims: [PostgresRandomAccessRow] = []
        for row in try await db.rows(statement, logger: logger) {
            guard let ordinal = try row.get("created_ordinal", as: Int64?.self) else {
                claims.append(row)
                continue
            }
            guard created.indices.contains(Int(ordinal) - 1) else { throw StoreError(.inconsistent, "a run was stored for no run asked") }
            created[Int(ordinal) - 1].append(row)
        }
        var claimed: [ClaimedJob] = []
        if let claimer {
            claimed = try await Self.claimedInEpochOrder(db, claims, now: runs[claimer].now, logger: logger)
        }
        return try runs.indices.map { index in
            let insert = runs[index]
            guard let runID = try created[index].first?.get("created_run", as: Int64.self) else { return nil }
            var run = RunRecord(id: runID, project: insert.version.project, pipeline: insert.version.pipeline,
                                pipelineVersionID: insert.version.id, branch: insert.branch, status: .queued, attempt: 1,
                                trigger: insert.trigger, createdAt: insert.now)
            run.commit = insert.commit
            run.triggeredBy = insert.triggeredBy
            run.fork = insert.fork
            run.inputs = insert.inputs
            return CreatedAndClaimed(run: run, jobs: try Self.jobRecords(Self.created(created[index]), run: run,
                                                                         definition: insert.definition, now: insert.now),
                                     claimed: index == claimer ? claimed : [])
        }
    }

    public func createScheduledRun(_ start: ScheduleStart, version: PipelineVersionRecord, definition: PipelineDefinition,
                                   branch: String, triggeredBy: String, inputs: [String: String],
                                   now: Int64) async throws -> (RunRecord, [JobRecord])? {
        let logger = logger
        let holder = coordinatorID
        let insert = RunInsert(version: version, definition: definition, json: try jobsJSON(version, definition), branch: branch,
                               commit: "", trigger: "schedule", triggeredBy: triggeredBy, fork: false, inputs: inputs,
                               inputsJSON: try pgJSON(inputs), now: now, latestOnly: false, slots: [])
        return try await transaction { db in
            // The due time first: a second coordinator's insert of the same due time waits on
            // this row and then finds its due not later: nothing to start.
            let claimed = try await db.rows("""
                INSERT INTO schedule_start (project, pipeline, schedule, due)
                VALUES (\(start.project), \(start.pipeline), \(start.schedule), \(start.due))
                ON CONFLICT (project, pipeline, schedule) DO UPDATE SET due = excluded.due, run_id = NULL
                WHERE schedule_start.due < excluded.due
                RETURNING due
                """, logger: logger)
            guard !claimed.isEmpty else { return nil }
            guard let created = try await Self.insertRuns(db, [insert], holder: holder, logger: logger).first ?? nil else {
                throw StoreError(.inconsistent, "a run of \(version.project)/\(version.pipeline) was not stored")
            }
            try await db.query("""
                UPDATE schedule_start SET run_id = \(created.run.id)
                WHERE project = \(start.project) AND pipeline = \(start.pipeline) AND schedule = \(start.schedule)
                """, logger: logger)
            return (created.run, created.jobs)
        }
    }

    /// The jobs `CreateRuns` stored for one run, by name: id and position.
    static func created(_ rows: [PostgresRandomAccessRow]) throws -> [String: (id: Int64, position: Double)] {
        var placed: [String: (id: Int64, position: Double)] = [:]
        for row in rows { placed[try row.get("created_name")] = (try row.get("created_id"), try row.get("created_position")) }
        return placed
    }

    public func scheduleStarts() async throws -> [ScheduleStart] {
        try await read { [self] db in
            var starts: [ScheduleStart] = []
            for try await (project, pipeline, schedule, due, runID) in try await db.query(
                "SELECT project, pipeline, schedule, due, run_id FROM schedule_start", logger: logger
            ).decode((String, String, String, Int64, Int64?).self) {
                starts.append(ScheduleStart(project: project, pipeline: pipeline, schedule: schedule, due: due, runID: runID))
            }
            return starts
        }
    }

    /// The jobs an insert returned (`id`, `name`, `position`), in the pipeline's order.
    static func jobRecords(_ rows: [PostgresRandomAccessRow], run: RunRecord, definition: PipelineDefinition,
                           now: Int64) throws -> [JobRecord] {
        var placed: [String: (id: Int64, position: Double)] = [:]
        for row in rows { placed[try row.get("name")] = (try row.get("id"), try row.get("position")) }
        return try jobRecords(placed, run: run, definition: definition, now: now)
    }

    /// The jobs an insert placed (by name: id and position), in the pipeline's order.
    static func jobRecords(_ placed: [String: (id: Int64, position: Double)], run: RunRecord, definition: PipelineDefinition,
                           now: Int64) throws -> [JobRecord] {
        try definition.jobs.map { job in
            guard let (id, position) = placed[job.name] else {
                throw StoreError(.inconsistent, "job \(job.name) of run \(run.id) was not stored")
            }
            return JobRecord(id: id, runID: run.id, attempt: run.attempt, name: job.name, labels: job.labels,
                             status: .queued, runner: nil, epoch: 0, position: position, queuedAt: now,
                             startedAt: nil, finishedAt: nil, reason: "", retryLost: job.retryLost, cache: job.cache)
        }
    }

    public func createAttempt(runID: Int64, definition: PipelineDefinition, carried: Set<String>, trigger: String,
                              triggeredBy: String, now: Int64) async throws -> (RunRecord, [JobRecord]) {
        let logger = logger
        var definitionFresh = definition
        definitionFresh.jobs.removeAll { carried.contains($0.name) }
        let fresh = definitionFresh
        let jobsJSON = try Self.jobsJSON(fresh)
        let names = carried.sorted()
        return try await transaction { [self] db in
            try await db.query("""
                UPDATE run SET attempt = attempt + 1, status = 'queued', trigger = \(trigger), triggered_by = \(triggeredBy),
                               started_at = NULL, finished_at = NULL WHERE id = \(runID)
                """, logger: logger)
            guard let run = try await Self.fetchRun(db, id: runID, logger: logger) else {
                throw StoreError(.notFound, "run \(runID) does not exist")
            }
            let jobs = try await Self.insertAttempt(db, run: run, definition: fresh, jobs: jobsJSON, now: now, logger: logger)
            if !names.isEmpty {
                // Copies of the previous attempt's jobs, finished as they were, and their nodes;
                // each points at the job that ran (a copy of a copy at the first).
                try await db.query("""
                    INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, started_at, finished_at, runner, epoch,
                                     reason, commit_sha, retry_lost, carried_from, cache)
                    SELECT run_id, attempt + 1, name, labels, status, position, queued_at, started_at, finished_at, runner, epoch,
                           CASE WHEN carried_from IS NULL THEN 'carried over from attempt ' || attempt ELSE reason END,
                           commit_sha, retry_lost, COALESCE(carried_from, id), cache
                    FROM job WHERE run_id = \(runID) AND attempt = \(Int64(run.attempt - 1)) AND name = ANY(\(names))
                    """, logger: logger)
                try await db.query("""
                    INSERT INTO node (job_id, name, ordinal, run, needs, env, timeout, grace, artifacts, network, memory_limit,
                                      cpu_limit_millis, pids_limit, secrets, image, status, exit_code, started_at, finished_at)
                    SELECT j.id, n.name, n.ordinal, n.run, n.needs, n.env, n.timeout, n.grace, n.artifacts, n.network, n.memory_limit,
                           n.cpu_limit_millis, n.pids_limit, n.secrets, n.image, n.status, n.exit_code, n.started_at, n.finished_at
                    FROM job j JOIN node n ON n.job_id = j.carried_from
                    WHERE j.run_id = \(runID) AND j.attempt = \(Int64(run.attempt)) AND j.carried_from IS NOT NULL
                    """, logger: logger)
            }
            return (run, jobs)
        }
    }

    /// The lock queue moves take, one at a time whichever coordinator moves.
    static let queueMoveLock: Int64 = 0x4865_6464_6C65_0002

    /// A node's columns, as `jobsJSON` writes them (the keys of its `Node`) and with their types
    /// for `jsonb_to_recordset`: both statements that insert nodes (`CreateRuns`,
    /// `insertAttempt`) take them from here.
    static let nodeFields: [(column: String, type: String)] = [
        ("name", "text"), ("ordinal", "bigint"), ("run", "text"), ("needs", "text"), ("env", "text"), ("timeout", "bigint"),
        ("grace", "bigint"), ("artifacts", "text"), ("network", "boolean"), ("memory_limit", "bigint"),
        ("cpu_limit_millis", "bigint"), ("pids_limit", "bigint"), ("secrets", "text"),
        ("image", "text"),
    ]
    static let nodeColumns = nodeFields.map(\.column).joined(separator: ", ")
    /// `jsonb_to_recordset`'s column definitions: the job's name, then `nodeFields`.
    static let nodeRecordset = (["job text"] + nodeFields.map { "\($0.column) \($0.type)" }).joined(separator: ", ")

    typealias JobsJSON = (jobs: String, nodes: String)

    /// `jobsJSON(_:)` of `version`, whose definition is `definition`: encoded once per version
    /// and pipeline (`jobsJSONByPipeline`).
    func jobsJSON(_ version: PipelineVersionRecord, _ definition: PipelineDefinition) throws -> JobsJSON {
        let key = Self.pipelineKey(version.project, version.pipeline)
        if let known = jobsJSONByPipeline.withLock({ $0[key] }), known.versionID == version.id { return known.json }
        let json = try Self.jobsJSON(definition)
        jobsJSONByPipeline.withLock { $0[key] = (version.id, json) }
        return json
    }

    /// A pipeline's jobs and their nodes as JSON rows for `jsonb_to_recordset`: one statement
    /// inserts every job, one every node, whatever the pipeline's size.
    static func jobsJSON(_ definition: PipelineDefinition) throws -> JobsJSON {
        struct Job: Encodable { var ordinal: Int; var name: String; var labels: String; var retry_lost: Int; var cache: String }
        struct Node: Encodable {
            var job: String; var name: String; var ordinal: Int; var run: String; var needs: String; var env: String
            var timeout: Int?; var grace: Int?; var artifacts: String; var network: Bool
            var memory_limit: Int64?; var cpu_limit_millis: Int64?; var pids_limit: Int64?; var secrets: String; var image: String
        }
        var jobs: [Job] = []
        var nodes: [Node] = []
        for (index, job) in definition.jobs.enumerated() {
            jobs.append(Job(ordinal: index, name: job.name, labels: try pgJSON(job.labels), retry_lost: job.retryLost,
                            cache: try job.cacheColumn()))
            for (ordinal, node) in job.nodes.enumerated() {
                nodes.append(Node(job: job.name, name: node.name, ordinal: ordinal, run: node.run, needs: try pgJSON(node.needs),
                                  env: try pgJSON(node.env), timeout: node.timeout, grace: node.grace,
                                  artifacts: try pgJSON(node.artifacts), network: node.network,
                                  memory_limit: node.limits.memory, cpu_limit_millis: node.limits.cpuMillis,
                                  pids_limit: node.limits.pids, secrets: try pgJSON(node.secrets), image: node.image))
            }
        }
        return (try pgJSON(jobs), try pgJSON(nodes))
    }

    /// Inserts the attempt row of `run.attempt`, its queued jobs (at the end of the queue, in
    /// the pipeline's order, places from `job_position`) and their pending nodes.
    static func insertAttempt(_ db: PostgresConnection, run: RunRecord, definition: PipelineDefinition,
                              jobs json: JobsJSON, now: Int64, logger: Logger) async throws -> [JobRecord] {
        try await db.query("""
            INSERT INTO attempt (run_id, number, status, trigger, created_at, triggered_by)
            VALUES (\(run.id), \(run.attempt), 'queued', \(run.trigger), \(now), \(run.triggeredBy))
            """, logger: logger)
        // `nextval` in the select list is evaluated after the sort: places follow the pipeline's order.
        let rows = try await db.rows("""
            INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at, retry_lost, cache)
            SELECT \(run.id), \(run.attempt), j.name, j.labels::jsonb, 'queued', nextval('job_position')::float8, \(now), j.retry_lost,
                   j.cache
            FROM jsonb_to_recordset(\(json.jobs)::jsonb) AS j(ordinal bigint, name text, labels text, retry_lost bigint, cache text)
            ORDER BY j.ordinal
            RETURNING id, name, position
            """, logger: logger)
        try await db.query("""
            INSERT INTO node (job_id, \(unescaped: Self.nodeColumns), status)
            SELECT job.id, \(unescaped: Self.qualified(Self.nodeColumns, by: "n")), 'pending'
            FROM jsonb_to_recordset(\(json.nodes)::jsonb) AS n(\(unescaped: Self.nodeRecordset))
            JOIN job ON job.run_id = \(run.id) AND job.attempt = \(run.attempt) AND job.name = n.job
            """, logger: logger)
        return try jobRecords(rows, run: run, definition: definition, now: now)
    }

    public func claimJobs(_ claims: [JobClaim], now: Int64) async throws -> [ClaimedJob?] {
        guard !claims.isEmpty else { return [] }
        let logger = logger
        let me = coordinatorID
        return try await transaction { db in
            let claimed = try await Self.claim(db, claims, now: now, holder: me, logger: logger)
            return claims.map { claimed[$0.jobID] }
        }
    }

    public func claimQueued(_ slots: [ClaimSlot], now: Int64) async throws -> [ClaimedJob] {
        let slots = slots.filter { !$0.epochs.isEmpty }
        guard !slots.isEmpty else { return [] }
        let logger = logger
        let me = coordinatorID
        let json = try Self.slotsJSON(slots)
        // The pick and the claim in one statement, so in its own transaction: one round trip.
        return try await transaction(explicit: false) { db in
            let rows = try await db.rows(ClaimQueued(slots: json, now: now, holder: me), logger: logger)
            return try await Self.claimedInEpochOrder(db, rows, now: now, logger: logger)
        }
    }

    /// Free slots as `heddle_claim_queued` reads them.
    static func slotsJSON(_ slots: [ClaimSlot]) throws -> String {
        struct Slot: Encodable { var runner: String, labels: [String], running: Int, epochs: [Int64] }
        return try pgJSON(slots.map { Slot(runner: $0.runner, labels: $0.labels.sorted(), running: $0.running, epochs: $0.epochs) })
    }

    /// Marks queued jobs running, each on its runner at its epoch, held by `holder`, and their
    /// runs and attempts running, in a few statements whatever their number; the jobs no
    /// longer queued are left out.
    static func claim(_ db: PostgresConnection, _ claims: [JobClaim], now: Int64, holder: String,
                      logger: Logger) async throws -> [Int64: ClaimedJob] {
        guard !claims.isEmpty else { return [:] }
        let rows = try await db.rows(ClaimJobs(ids: claims.map(\.jobID), runners: claims.map(\.runner), epochs: claims.map(\.epoch),
                                               now: now, holder: holder), logger: logger)
        return try await claimed(db, rows, now: now, logger: logger)
    }

    /// `claimed`, in the order of the claims' epochs (the order their runners are told).
    static func claimedInEpochOrder(_ db: PostgresConnection, _ rows: [PostgresRandomAccessRow], now: Int64,
                                    logger: Logger) async throws -> [ClaimedJob] {
        try await claimed(db, rows, now: now, logger: logger).values.sorted { $0.job.epoch < $1.job.epoch }
    }

    /// The claimed jobs from a claim statement's rows (`claimSQL`), with the sealed secrets
    /// their nodes name.
    static func claimed(_ db: PostgresConnection, _ rows: [PostgresRandomAccessRow], now: Int64,
                        logger: Logger) async throws -> [Int64: ClaimedJob] {
        guard !rows.isEmpty else { return [:] }
        // A row per job and node, a job's rows together; the runs as they were before the
        // claim: those it started (`started`, read from a run's first row) are patched.
        var jobs: [JobRecord] = []
        var runs: [Int64: RunRecord] = [:]
        var repositories: [Int64: String] = [:]
        var nodes: [Int64: [NodeRecord]] = [:]
        for row in rows {
            let jobID: Int64 = try row.get("id")
            if jobs.last?.id != jobID {
                jobs.append(try Self.job(row))
                var run = try Self.run(row, prefix: "r_")
                if runs[run.id] == nil {
                    if try row.get("started", as: Bool.self) {
                        run.status = .running
                        run.startedAt = run.startedAt ?? now
                    }
                    runs[run.id] = run
                    repositories[run.id] = try row.get("repository")
                }
            }
            if try row.get("n_name", as: String?.self) != nil {
                nodes[jobID, default: []].append(try Self.node(row, prefix: "n_"))
            }
        }
        var claimed: [Int64: ClaimedJob] = [:]
        var named: [String: Set<String>] = [:]
        for job in jobs {
            guard let run = runs[job.runID] else { throw StoreError(.inconsistent, "run \(job.runID) of job \(job.id) is missing") }
            let jobNodes = (nodes[job.id] ?? []).sorted { $0.ordinal < $1.ordinal }
            claimed[job.id] = ClaimedJob(job: job, run: run, nodes: jobNodes, repository: repositories[run.id] ?? "")
            named[run.project, default: []].formUnion(jobNodes.flatMap(\.secrets))
        }
        named = named.filter { !$0.value.isEmpty }
        guard !named.isEmpty else { return claimed }
        // Only jobs whose nodes name secrets cost this statement: their projects' secrets of
        // those names, sealed, and whether forks get them.
        let projects = named.keys.sorted()
        var sealed: [String: [String: [UInt8]]] = [:]
        var forks: [String: Bool] = [:]
        for row in try await db.rows("""
            SELECT p.name AS project, p.fork_secrets, s.name, s.sealed FROM project p
            LEFT JOIN secret s ON s.project = p.name WHERE p.name = ANY(\(projects))
            """, logger: logger) {
            let project: String = try row.get("project")
            forks[project] = try row.get("fork_secrets")
            if let name = try row.get("name", as: String?.self), named[project]?.contains(name) == true,
               let bytes = Data(base64Encoded: try row.get("sealed", as: String.self)) {
                sealed[project, default: [:]][name] = [UInt8](bytes)
            }
        }
        for (id, job) in claimed where named[job.run.project] != nil {
            claimed[id]?.sealedSecrets = sealed[job.run.project] ?? [:]
            claimed[id]?.forkSecrets = forks[job.run.project] ?? false
        }
        return claimed
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
            throw StoreError.heldElsewhere(jobID: jobID)
        }
    }

    /// Why a fenced write changed nothing: the job is not running at that epoch, or another
    /// coordinator holds it.
    static func refusal(_ db: PostgresConnection, jobID: Int64, epoch: Int64, logger: Logger) async throws -> StoreError {
        let row = try await db.row("SELECT epoch FROM job WHERE id = \(jobID) AND status = 'running'", logger: logger)
        guard let row, try row.get("epoch", as: Int64.self) == epoch else { return StoreError.staleLease(jobID: jobID, epoch: epoch) }
        return StoreError.heldElsewhere(jobID: jobID)
    }

    public func setJobCommit(id: Int64, epoch: Int64, commit: String) async throws {
        let logger = logger
        let me = coordinatorID
        try await batched(oneStatement: true) { db in
            let changed = try await db.changes("""
                UPDATE job SET commit_sha = \(commit)
                WHERE id = \(id) AND epoch = \(epoch) AND status = 'running' AND holder = \(me) RETURNING 1
                """, logger: logger)
            guard changed == 1 else { throw try await Self.refusal(db, jobID: id, epoch: epoch, logger: logger) }
        }
    }

    public func updateNode(jobID: Int64, epoch: Int64, node: String, status: Status, exitCode: Int?, at: Int64) async throws {
        let logger = logger
        let me = coordinatorID
        try await batched(oneStatement: true) { db in
            // Fenced in the statement: the node changes only while its job runs at this epoch, held here.
            let changed = try await db.changes("""
                UPDATE node SET status = \(status.rawValue),
                    started_at = CASE WHEN \(status == .running) THEN \(at) ELSE node.started_at END,
                    exit_code = CASE WHEN \(status == .running) THEN node.exit_code ELSE \(exitCode) END,
                    finished_at = CASE WHEN \(status == .running) THEN node.finished_at ELSE \(at) END
                FROM job WHERE node.job_id = \(jobID) AND node.name = \(node)
                  AND job.id = node.job_id AND job.status = 'running' AND job.epoch = \(epoch) AND job.holder = \(me)
                RETURNING 1
                """, logger: logger)
            guard changed == 1 else { throw try await Self.refusal(db, jobID: jobID, epoch: epoch, logger: logger) }
        }
    }

    /// A job's end as `finishJob` is asked for it: fenced when `epoch` is given; `slots`, free
    /// slots to claim for once it is stored (`finishJobAndClaim`).
    struct JobEnd: Sendable {
        var id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64
        var slots: [ClaimSlot] = []
    }

    /// Fenced (with an epoch) in the statement that ends the job, which locks its row; its
    /// nodes not yet finished end with it (skipped, or cancelled when the job was); then the
    /// run's status. Ends waiting together are one statement (`PostgresBatches`, `endJobs`).
    public func finishJob(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64) async throws -> (RunRecord, JobRecord) {
        let ended = try await batches.end(JobEnd(id: id, epoch: epoch, status: status, reason: reason, now: now), on: self)
        return (ended.run, ended.job)
    }

    public func finishJobAndClaim(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64,
                                  slots: [ClaimSlot]) async throws -> EndedAndClaimed {
        try await batches.end(JobEnd(id: id, epoch: epoch, status: status, reason: reason, now: now,
                                     slots: slots.filter { !$0.epochs.isEmpty }), on: self)
    }

    /// Ends `ends` in one statement (`FinishJobs`), then claims for the slots of the first
    /// that lists any, once it is ended (a `PostgresBatches` step holds at most one such end);
    /// for each, in order: its job and its run as they are now (and, for that one, what the
    /// claim took), or why nothing changed (`staleLease`; `notFound` for an end without an
    /// epoch of no job). A refused end does not fail the others.
    static func endJobs(_ db: PostgresConnection, _ ends: [JobEnd], holder: String,
                        logger: Logger) async throws -> [Result<EndedAndClaimed, StoreError>] {
        let claimer = ends.firstIndex { !$0.slots.isEmpty }
        let statement = FinishJobs(ends: ends, holder: holder, claimer: claimer.map { Int64($0 + 1) } ?? 0,
                                   slots: try slotsJSON(claimer.map { ends[$0].slots } ?? []))
        var results = [Result<EndedAndClaimed, StoreError>?](repeating: nil, count: ends.count)
        var claims: [PostgresRandomAccessRow] = []
        for row in try await db.rows(statement, logger: logger) {
            guard let ordinal = try row.get("end_ordinal", as: Int64?.self) else {
                claims.append(row)
                continue
            }
            let k = Int(ordinal) - 1
            guard results.indices.contains(k) else { throw StoreError(.inconsistent, "an end was answered for no job asked") }
            let end = ends[k]
            switch try row.get("end_outcome", as: String.self) {
            case "ended": results[k] = .success(EndedAndClaimed(run: try Self.run(row, prefix: "r_"), job: try Self.job(row), claimed: []))
            case "held": results[k] = .failure(.heldElsewhere(jobID: end.id))
            case "missing" where end.epoch == nil: results[k] = .failure(StoreError(.notFound, "job \(end.id) does not exist"))
            default: results[k] = .failure(.staleLease(jobID: end.id, epoch: end.epoch ?? 0))
            }
        }
        if let claimer, case .success(var ended) = results[claimer] {
            ended.claimed = try await Self.claimedInEpochOrder(db, claims, now: ends[claimer].now, logger: logger)
            results[claimer] = .success(ended)
        }
        return try zip(ends, results).map { end, result in
            guard let result else { throw StoreError(.inconsistent, "the end of job \(end.id) was not answered") }
            return result
        }
    }

    /// Recomputes the latest attempt's status (and so the run's) from its jobs, the run's row
    /// locked first (`PostgresStore.runStatusFunction`).
    static func updateRunStatus(_ db: PostgresConnection, runID: Int64, now: Int64, logger: Logger) async throws -> RunRecord {
        guard let run = try await db.rows(RunStatus(runID: runID, now: now), logger: logger).first else {
            throw StoreError(.inconsistent, "run \(runID) is missing")
        }
        return try Self.run(run)
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

    public func requeueLostJob(id: Int64, reason: String, now: Int64) async throws -> RunRecord {
        let logger = logger
        let me = coordinatorID
        return try await transaction { [self] db in
            guard let row = try await db.row("""
                UPDATE job SET status = 'queued', runner = NULL, started_at = NULL, finished_at = NULL,
                               position = (SELECT COALESCE(MIN(position), 1) - 1 FROM job WHERE status = 'queued'), reason = \(reason), lost_count = lost_count + 1, commit_sha = '',
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
                RETURNING name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook, fork_secrets
                """, logger: logger)
            return try Self.project(row!)
        }
    }

    static func project(_ row: PostgresRandomAccessRow) throws -> ProjectRecord {
        ProjectRecord(name: try row.get("name"), repository: try row.get("repository"), createdAt: try row.get("created_at"),
                      hasWebhook: try row.get("has_webhook"), forkSecrets: try row.get("fork_secrets"))
    }

    public func projects() async throws -> [ProjectRecord] {
        try await read { [self] db in
            try await db.rows("""
                SELECT name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook, fork_secrets FROM project ORDER BY name
                """, logger: logger).map(Self.project)
        }
    }

    public func project(name: String) async throws -> ProjectRecord? {
        try await read { [self] db in
            try await db.row("""
                SELECT name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook, fork_secrets FROM project WHERE name = \(name)
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

    // MARK: secrets (sealed values as base64 text)

    public func setSecret(project: String, name: String, sealed: [UInt8], now: Int64) async throws -> Bool {
        let text = Data(sealed).base64EncodedString()
        return try await read { [self] db in
            try await db.changes("""
                INSERT INTO secret (project, name, sealed, created_at, updated_at)
                SELECT name, \(name), \(text), \(now), \(now) FROM project WHERE name = \(project)
                ON CONFLICT (project, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at
                RETURNING 1
                """, logger: logger) == 1
        }
    }

    public func secrets(project: String) async throws -> [SecretRecord] {
        try await read { [self] db in
            try await db.rows("SELECT name, created_at, updated_at FROM secret WHERE project = \(project) ORDER BY name",
                              logger: logger).map {
                SecretRecord(name: try $0.get("name"), createdAt: try $0.get("created_at"), updatedAt: try $0.get("updated_at"))
            }
        }
    }

    public func deleteSecret(project: String, name: String) async throws -> Bool {
        try await read { [self] db in
            try await db.changes("DELETE FROM secret WHERE project = \(project) AND name = \(name) RETURNING 1", logger: logger) == 1
        }
    }

    public func setForkSecrets(project: String, allowed: Bool) async throws -> Bool {
        try await read { [self] db in
            try await db.changes("UPDATE project SET fork_secrets = \(allowed) WHERE name = \(project) RETURNING 1", logger: logger) == 1
        }
    }

    public func anySealedSecret() async throws -> SealedSecret? {
        try await read { [self] db in
            try await db.row("SELECT project, name, sealed FROM secret LIMIT 1", logger: logger).map {
                SealedSecret(project: try $0.get("project"), name: try $0.get("name"),
                             sealed: [UInt8](Data(base64Encoded: try $0.get("sealed", as: String.self)) ?? Data()))
            }
        }
    }
}
