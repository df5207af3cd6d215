/// What the coordinator's core needs from durable storage. Every method that changes state
/// is one transaction. SQLite (`SQLiteStore`) is the embedded default; another backend
/// (PostgreSQL for several coordinators) implements the same protocol.
public protocol CoordinatorStore: Sendable {
    func savePipeline(project: String, definition: PipelineDefinition, source: String, now: Int64) async throws -> PipelineVersionRecord
    func pipelines() async throws -> [PipelineVersionRecord]
    /// The pipeline's latest version, or nil. PostgreSQL's store answers from the versions it
    /// read or saved before, which another coordinator's push may have passed since: a
    /// trigger creates its run with `createLatestRun`, which then refuses it.
    func latestPipeline(project: String, pipeline: String) async throws -> PipelineVersionRecord?

    /// Creates the run, its first attempt, its jobs (queued) and their nodes (pending); `fork`:
    /// a run of a pull request from another repository; `inputs`: the values of the
    /// pipeline's inputs, resolved (`PipelineDefinition.resolveInputs`).
    func createRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                   trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                   now: Int64) async throws -> (RunRecord, [JobRecord])
    /// `createRun` of what `latestPipeline` answered: nil, and nothing written, when a later
    /// version than `version` exists (read the latest again, which then answers it).
    func createLatestRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                         trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                         now: Int64) async throws -> (RunRecord, [JobRecord])?
    /// Creates the run a schedule's due time starts (`start.due`; its trigger is "schedule")
    /// like `createRun`, and records the due time as the schedule's latest started, in one
    /// transaction; nil, and nothing written, when a run of that schedule for this due time or a
    /// later one was created before, by this coordinator or another.
    func createScheduledRun(_ start: ScheduleStart, version: PipelineVersionRecord, definition: PipelineDefinition,
                            branch: String, triggeredBy: String, inputs: [String: String],
                            now: Int64) async throws -> (RunRecord, [JobRecord])?
    /// The cache a job restores: for each of `branches` in order, the entry with exactly
    /// `key`, else for each of `prefixes` in order the most recently used entry whose key
    /// starts with it; marked used at `now` (a hit). nil when none is.
    func findCache(project: String, branches: [String], key: String, prefixes: [String], now: Int64) async throws -> CacheEntryRecord?
    /// Records a saved cache; nil, and nothing written, when the branch of the project has
    /// that key already.
    func saveCache(project: String, branch: String, key: String, sha256: String, size: Int64, now: Int64) async throws -> CacheEntryRecord?
    func cache(id: Int64) async throws -> CacheEntryRecord?
    /// Every cache (of `project` when given), most recently used first.
    func caches(project: String?) async throws -> [CacheEntryRecord]
    func deleteCache(id: Int64) async throws -> CacheEntryRecord?
    /// Removes the least recently used caches until those left take at most `maximumBytes`
    /// together; returns what it removed.
    func evictCaches(maximumBytes: Int64) async throws -> [CacheEntryRecord]
    /// Whether an artifact or a cache has the blob of this SHA-256 (lower-case hex).
    func blobInUse(sha256: String) async throws -> Bool
    /// Every schedule's latest due time that started a run.
    func scheduleStarts() async throws -> [ScheduleStart]
    /// Adds attempt N+1 to a run, with queued jobs at the end of the queue; the jobs named in
    /// `carried` are instead copied, finished, from attempt N (with their nodes, each pointing
    /// at the job it copies: `JobRecord.carriedFrom`). Returns the queued jobs.
    func createAttempt(runID: Int64, definition: PipelineDefinition, carried: Set<String>, trigger: String,
                       triggeredBy: String, now: Int64) async throws -> (RunRecord, [JobRecord])
    func attempt(runID: Int64, number: Int) async throws -> AttemptRecord?
    func pipelineVersion(id: Int64) async throws -> PipelineVersionRecord?
    /// Marks queued jobs running, each on its runner with a new lease epoch (their runs become
    /// running), in one transaction; returns what their assignments carry, in the same order
    /// (nil for a job that was no longer queued).
    func claimJobs(_ claims: [JobClaim], now: Int64) async throws -> [ClaimedJob?]
    // Writes from a runner carry the epoch of its lease and are refused (`StoreError.staleLease`,
    // nothing written) unless the job is running with that epoch: a runner that was cut off
    // cannot overwrite a reassigned job, whichever coordinator it talks to.
    func setJobCommit(id: Int64, epoch: Int64, commit: String) async throws
    /// Cancels those of these jobs that are still queued (one transaction); returns their ids
    /// and their runs afterwards.
    func cancelJobs(ids: [Int64], reason: String, now: Int64) async throws -> CancelledJobs
    /// Moves a queued job; returns the number of rows changed.
    func setPosition(jobID: Int64, position: Double) async throws -> Int
    func renumberQueue(_ positions: [(Int64, Double)]) async throws
    func updateNode(jobID: Int64, epoch: Int64, node: String, status: Status, exitCode: Int?, at: Int64) async throws
    /// Finishes a job; nodes not yet finished become skipped (or cancelled when the job was).
    /// Returns the run and the job as they are afterwards. With an epoch (a runner's result, or
    /// the end of a lease) it is fenced like the writes above; without, it is the
    /// coordinator's own decision about a job no runner holds.
    func finishJob(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64) async throws -> (RunRecord, JobRecord)

    /// Records the durable length of node logs (their bytes are in a `LogStore`), one
    /// transaction. A length with an epoch is fenced like the writes above: it is not recorded
    /// unless its job is running with that epoch. Returns the jobs whose lengths were refused.
    func setLogEnds(_ ends: [LogEnd]) async throws -> Set<Int64>
    /// The durable length of each node log of a job.
    func logLengths(jobID: Int64) async throws -> [String: Int64]
    /// The durable lengths of the node logs of jobs, by job and then node order.
    func logEnds(jobIDs: [Int64], node: String?) async throws -> [LogEnd]

    func insertArtifact(jobID: Int64, epoch: Int64, name: String, size: Int64, sha256: String, now: Int64) async throws -> ArtifactRecord
    /// A run's artifacts, or (nil) the latest 1,000 of every run, oldest first.
    func artifacts(runID: Int64?) async throws -> [ArtifactRecord]
    func artifact(id: Int64) async throws -> ArtifactRecord?
    /// Artifacts of every run matching all of the query's filters, in its order, one page.
    func searchArtifacts(_ query: ArtifactQuery) async throws -> [ArtifactRecord]

    func runs(limit: Int, filter: RunFilter) async throws -> [RunRecord]
    func run(id: Int64) async throws -> RunRecord?
    func jobs(runID: Int64, attempt: Int) async throws -> [JobRecord]
    func job(id: Int64) async throws -> JobRecord?
    /// The jobs with these ids, in no particular order.
    func jobs(ids: [Int64]) async throws -> [JobRecord]
    func nodes(jobIDs: [Int64]) async throws -> [NodeRecord]
    /// Jobs queued or running, in dispatch order.
    func activeJobs() async throws -> [JobRecord]
    /// Queued jobs, in dispatch order, of runs matching the filter's project, pipeline and
    /// branch (its status is not used).
    func queuedJobs(matching filter: RunFilter) async throws -> [JobRecord]

    /// Puts a running job back at the front of the queue (before every queued job), its nodes
    /// pending again and what its lost execution stored removed.
    func requeueLostJob(id: Int64, reason: String, now: Int64) async throws -> RunRecord
    func saveUpload(jobID: Int64, name: String, size: Int64, sha256: String, now: Int64) async throws -> UploadRecord
    func uploads() async throws -> [UploadRecord]
    func deleteUploads(ids: [Int64]) async throws
    func revoke(name: String?, fingerprint: String?, now: Int64) async throws
    func revocations() async throws -> [Revocation]

    func saveProject(name: String, repository: String, now: Int64) async throws -> ProjectRecord
    func projects() async throws -> [ProjectRecord]
    func project(name: String) async throws -> ProjectRecord?
    /// Every attempt of a run, first to last.
    func attempts(runID: Int64) async throws -> [AttemptRecord]

    /// Sets a project's webhook secret; false when there is no such project.
    func setWebhookSecret(project: String, secret: String) async throws -> Bool
    func webhookSecret(project: String) async throws -> String?
    /// Records a delivery, unless one with its forge and id was recorded for the project:
    /// then nothing is written and that one is returned.
    func recordDelivery(_ delivery: DeliveryRecord) async throws -> DeliveryRecord?
    /// Sets a recorded delivery's outcome, detail and runs.
    func updateDelivery(_ delivery: DeliveryRecord) async throws
    /// The project's latest deliveries, newest first.
    func deliveries(project: String, limit: Int) async throws -> [DeliveryRecord]

    /// Stores a new API token; false (nothing stored) when one of that name exists.
    func saveToken(_ token: TokenRecord) async throws -> Bool
    func tokens() async throws -> [TokenRecord]
    /// Marks the token revoked (once); returns it as it is afterwards, nil when there is none.
    func revokeToken(name: String, now: Int64) async throws -> TokenRecord?

    /// Stores a browser session; removes sessions expired at `now`, and the token's oldest
    /// ones past `maximumPerToken`.
    func saveWebSession(_ session: WebSessionRecord, maximumPerToken: Int) async throws
    func webSession(secretSHA256: String) async throws -> WebSessionRecord?
    func deleteWebSession(secretSHA256: String) async throws

    func setDrained(runner: String, drained: Bool) async throws
    func drainedRunners() async throws -> Set<String>

    /// Stores a project's secret, sealed (`SecretBox`), new or replacing one of that name;
    /// false (nothing stored) when there is no such project.
    func setSecret(project: String, name: String, sealed: [UInt8], now: Int64) async throws -> Bool
    /// A project's secrets by name, without their values.
    func secrets(project: String) async throws -> [SecretRecord]
    /// False when the project has no secret of that name.
    func deleteSecret(project: String, name: String) async throws -> Bool
    /// Whether runs of forks' pull requests get the project's secrets; false when there is no
    /// such project.
    func setForkSecrets(project: String, allowed: Bool) async throws -> Bool
    /// One stored secret, any, to check the key at start; nil when there is none.
    func anySealedSecret() async throws -> SealedSecret?
}

extension CoordinatorStore {
    /// Attempt N+1 with every job queued again.
    public func createAttempt(runID: Int64, definition: PipelineDefinition, trigger: String, triggeredBy: String,
                              now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await createAttempt(runID: runID, definition: definition, carried: [], trigger: trigger, triggeredBy: triggeredBy,
                                now: now)
    }

    /// Where `latestPipeline` reads the store each time (SQLite: the process is its only
    /// writer), the version it answered is the latest.
    public func createLatestRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                                trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                                now: Int64) async throws -> (RunRecord, [JobRecord])? {
        try await createRun(version: version, definition: definition, branch: branch, commit: commit, trigger: trigger,
                            triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now)
    }

    /// A run without inputs.
    public func createRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                          trigger: String, triggeredBy: String, fork: Bool, now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await createRun(version: version, definition: definition, branch: branch, commit: commit, trigger: trigger,
                            triggeredBy: triggeredBy, fork: fork, inputs: [:], now: now)
    }

    /// A run that is not of a fork's pull request.
    public func createRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                          trigger: String, triggeredBy: String, now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await createRun(version: version, definition: definition, branch: branch, commit: commit, trigger: trigger,
                            triggeredBy: triggeredBy, fork: false, now: now)
    }
}

/// A stored secret with its sealed value.
public struct SealedSecret: Sendable, Equatable {
    public var project: String
    public var name: String
    public var sealed: [UInt8]
}
