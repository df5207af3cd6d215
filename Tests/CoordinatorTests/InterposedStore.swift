import Foundation
import Synchronization
@testable import Coordinator

/// A store that forwards every call to a real one, with hooks a test uses to make an
/// interleaving deterministic (pause a call until the test lets it go on) or to make a call
/// fail on demand.
class InterposedStore: CoordinatorStore, @unchecked Sendable {
    let base: any CoordinatorStore
    let hooks = StoreHooks()

    init(_ base: any CoordinatorStore) {
        self.base = base
    }

    func savePipeline(project: String, definition: PipelineDefinition, source: String, now: Int64) async throws -> PipelineVersionRecord {
        try await hooks.enter("savePipeline")
        return try await base.savePipeline(project: project, definition: definition, source: source, now: now)
    }
    func pipelines() async throws -> [PipelineVersionRecord] {
        try await hooks.enter("pipelines")
        return try await base.pipelines()
    }
    func latestPipeline(project: String, pipeline: String) async throws -> PipelineVersionRecord? {
        try await hooks.enter("latestPipeline")
        return try await base.latestPipeline(project: project, pipeline: pipeline)
    }
    func createRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String, trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String], now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await hooks.enter("createRun")
        return try await base.createRun(version: version, definition: definition, branch: branch, commit: commit, trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now)
    }
    func createLatestRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String, trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String], now: Int64) async throws -> (RunRecord, [JobRecord])? {
        try await hooks.enter("createRun")
        return try await base.createLatestRun(version: version, definition: definition, branch: branch, commit: commit, trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now)
    }
    func createScheduledRun(_ start: ScheduleStart, version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, triggeredBy: String, inputs: [String: String], now: Int64) async throws -> (RunRecord, [JobRecord])? {
        try await hooks.enter("createScheduledRun")
        return try await base.createScheduledRun(start, version: version, definition: definition, branch: branch, triggeredBy: triggeredBy, inputs: inputs, now: now)
    }
    func findCache(project: String, branches: [String], key: String, prefixes: [String], now: Int64) async throws -> CacheEntryRecord? {
        try await hooks.enter("findCache")
        return try await base.findCache(project: project, branches: branches, key: key, prefixes: prefixes, now: now)
    }
    func saveCache(project: String, branch: String, key: String, sha256: String, size: Int64, now: Int64) async throws -> CacheEntryRecord? {
        try await hooks.enter("saveCache")
        return try await base.saveCache(project: project, branch: branch, key: key, sha256: sha256, size: size, now: now)
    }
    func cache(id: Int64) async throws -> CacheEntryRecord? {
        try await hooks.enter("cache")
        return try await base.cache(id: id)
    }
    func caches(project: String?) async throws -> [CacheEntryRecord] {
        try await hooks.enter("caches")
        return try await base.caches(project: project)
    }
    func deleteCache(id: Int64) async throws -> CacheEntryRecord? {
        try await hooks.enter("deleteCache")
        return try await base.deleteCache(id: id)
    }
    func evictCaches(maximumBytes: Int64) async throws -> [CacheEntryRecord] {
        try await hooks.enter("evictCaches")
        return try await base.evictCaches(maximumBytes: maximumBytes)
    }
    func blobInUse(sha256: String) async throws -> Bool {
        try await hooks.enter("blobInUse")
        return try await base.blobInUse(sha256: sha256)
    }
    func scheduleStarts() async throws -> [ScheduleStart] {
        try await hooks.enter("scheduleStarts")
        return try await base.scheduleStarts()
    }
    func createAttempt(runID: Int64, definition: PipelineDefinition, carried: Set<String>, trigger: String, triggeredBy: String, now: Int64) async throws -> (RunRecord, [JobRecord]) {
        try await hooks.enter("createAttempt")
        return try await base.createAttempt(runID: runID, definition: definition, carried: carried, trigger: trigger, triggeredBy: triggeredBy, now: now)
    }
    func attempt(runID: Int64, number: Int) async throws -> AttemptRecord? {
        try await hooks.enter("attempt")
        return try await base.attempt(runID: runID, number: number)
    }
    func pipelineVersion(id: Int64) async throws -> PipelineVersionRecord? {
        try await hooks.enter("pipelineVersion")
        return try await base.pipelineVersion(id: id)
    }
    func claimJobs(_ claims: [JobClaim], now: Int64) async throws -> [ClaimedJob?] {
        try await hooks.enter("claimJobs")
        return try await base.claimJobs(claims, now: now)
    }
    func setJobCommit(id: Int64, epoch: Int64, commit: String) async throws {
        try await hooks.enter("setJobCommit")
        return try await base.setJobCommit(id: id, epoch: epoch, commit: commit)
    }
    func cancelJobs(ids: [Int64], reason: String, now: Int64) async throws -> CancelledJobs {
        try await hooks.enter("cancelJobs")
        return try await base.cancelJobs(ids: ids, reason: reason, now: now)
    }
    func setPosition(jobID: Int64, position: Double) async throws -> Int {
        try await hooks.enter("setPosition")
        return try await base.setPosition(jobID: jobID, position: position)
    }
    func renumberQueue(_ positions: [(Int64, Double)]) async throws {
        try await hooks.enter("renumberQueue")
        return try await base.renumberQueue(positions)
    }
    func updateNode(jobID: Int64, epoch: Int64, node: String, status: Status, exitCode: Int?, at: Int64) async throws {
        try await hooks.enter("updateNode")
        return try await base.updateNode(jobID: jobID, epoch: epoch, node: node, status: status, exitCode: exitCode, at: at)
    }
    func finishJob(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64) async throws -> (RunRecord, JobRecord) {
        try await hooks.enter("finishJob")
        return try await base.finishJob(id: id, epoch: epoch, status: status, reason: reason, now: now)
    }
    func setLogEnds(_ ends: [LogEnd]) async throws -> Set<Int64> {
        try await hooks.enter("setLogEnds")
        return try await base.setLogEnds(ends)
    }
    func logLengths(jobID: Int64) async throws -> [String: Int64] {
        try await hooks.enter("logLengths")
        return try await base.logLengths(jobID: jobID)
    }
    func logEnds(jobIDs: [Int64], node: String?) async throws -> [LogEnd] {
        try await hooks.enter("logEnds")
        return try await base.logEnds(jobIDs: jobIDs, node: node)
    }
    func insertArtifact(jobID: Int64, epoch: Int64, name: String, size: Int64, sha256: String, now: Int64) async throws -> ArtifactRecord {
        try await hooks.enter("insertArtifact")
        return try await base.insertArtifact(jobID: jobID, epoch: epoch, name: name, size: size, sha256: sha256, now: now)
    }
    func artifacts(runID: Int64?) async throws -> [ArtifactRecord] {
        try await hooks.enter("artifacts")
        return try await base.artifacts(runID: runID)
    }
    func artifact(id: Int64) async throws -> ArtifactRecord? {
        try await hooks.enter("artifact")
        return try await base.artifact(id: id)
    }
    func runs(limit: Int, filter: RunFilter) async throws -> [RunRecord] {
        try await hooks.enter("runs")
        return try await base.runs(limit: limit, filter: filter)
    }
    func run(id: Int64) async throws -> RunRecord? {
        try await hooks.enter("run")
        return try await base.run(id: id)
    }
    func jobs(runID: Int64, attempt: Int) async throws -> [JobRecord] {
        try await hooks.enter("jobs")
        return try await base.jobs(runID: runID, attempt: attempt)
    }
    func job(id: Int64) async throws -> JobRecord? {
        try await hooks.enter("job")
        return try await base.job(id: id)
    }
    func jobs(ids: [Int64]) async throws -> [JobRecord] {
        try await hooks.enter("jobs")
        return try await base.jobs(ids: ids)
    }
    func nodes(jobIDs: [Int64]) async throws -> [NodeRecord] {
        try await hooks.enter("nodes")
        return try await base.nodes(jobIDs: jobIDs)
    }
    func activeJobs() async throws -> [JobRecord] {
        try await hooks.enter("activeJobs")
        return try await base.activeJobs()
    }
    func queuedJobs(matching filter: RunFilter) async throws -> [JobRecord] {
        try await hooks.enter("queuedJobs")
        return try await base.queuedJobs(matching: filter)
    }
    func requeueLostJob(id: Int64, reason: String, now: Int64) async throws -> RunRecord {
        try await hooks.enter("requeueLostJob")
        return try await base.requeueLostJob(id: id, reason: reason, now: now)
    }
    func saveUpload(jobID: Int64, name: String, size: Int64, sha256: String, now: Int64) async throws -> UploadRecord {
        try await hooks.enter("saveUpload")
        return try await base.saveUpload(jobID: jobID, name: name, size: size, sha256: sha256, now: now)
    }
    func uploads() async throws -> [UploadRecord] {
        try await hooks.enter("uploads")
        return try await base.uploads()
    }
    func deleteUploads(ids: [Int64]) async throws {
        try await hooks.enter("deleteUploads")
        return try await base.deleteUploads(ids: ids)
    }
    func revoke(name: String?, fingerprint: String?, now: Int64) async throws {
        try await hooks.enter("revoke")
        return try await base.revoke(name: name, fingerprint: fingerprint, now: now)
    }
    func revocations() async throws -> [Revocation] {
        try await hooks.enter("revocations")
        return try await base.revocations()
    }
    func saveProject(name: String, repository: String, now: Int64) async throws -> ProjectRecord {
        try await hooks.enter("saveProject")
        return try await base.saveProject(name: name, repository: repository, now: now)
    }
    func projects() async throws -> [ProjectRecord] {
        try await hooks.enter("projects")
        return try await base.projects()
    }
    func project(name: String) async throws -> ProjectRecord? {
        try await hooks.enter("project")
        return try await base.project(name: name)
    }
    func setDrained(runner: String, drained: Bool) async throws {
        try await hooks.enter("setDrained")
        return try await base.setDrained(runner: runner, drained: drained)
    }
    func setWebhookSecret(project: String, secret: String) async throws -> Bool {
        try await hooks.enter("setWebhookSecret")
        return try await base.setWebhookSecret(project: project, secret: secret)
    }

    func webhookSecret(project: String) async throws -> String? {
        try await hooks.enter("webhookSecret")
        return try await base.webhookSecret(project: project)
    }

    func recordDelivery(_ delivery: DeliveryRecord) async throws -> DeliveryRecord? {
        try await hooks.enter("recordDelivery")
        return try await base.recordDelivery(delivery)
    }

    func updateDelivery(_ delivery: DeliveryRecord) async throws {
        try await hooks.enter("updateDelivery")
        try await base.updateDelivery(delivery)
    }

    func deliveries(project: String, limit: Int) async throws -> [DeliveryRecord] {
        try await hooks.enter("deliveries")
        return try await base.deliveries(project: project, limit: limit)
    }

    func searchArtifacts(_ query: ArtifactQuery) async throws -> [ArtifactRecord] {
        try await hooks.enter("searchArtifacts")
        return try await base.searchArtifacts(query)
    }

    func attempts(runID: Int64) async throws -> [AttemptRecord] {
        try await hooks.enter("attempts")
        return try await base.attempts(runID: runID)
    }

    func saveToken(_ token: TokenRecord) async throws -> Bool {
        try await hooks.enter("saveToken")
        return try await base.saveToken(token)
    }

    func tokens() async throws -> [TokenRecord] {
        try await hooks.enter("tokens")
        return try await base.tokens()
    }

    func revokeToken(name: String, now: Int64) async throws -> TokenRecord? {
        try await hooks.enter("revokeToken")
        return try await base.revokeToken(name: name, now: now)
    }
    func saveWebSession(_ session: WebSessionRecord, maximumPerToken: Int) async throws {
        try await hooks.enter("saveWebSession")
        try await base.saveWebSession(session, maximumPerToken: maximumPerToken)
    }
    func webSession(secretSHA256: String) async throws -> WebSessionRecord? {
        try await hooks.enter("webSession")
        return try await base.webSession(secretSHA256: secretSHA256)
    }
    func deleteWebSession(secretSHA256: String) async throws {
        try await hooks.enter("deleteWebSession")
        try await base.deleteWebSession(secretSHA256: secretSHA256)
    }

    func drainedRunners() async throws -> Set<String> {
        try await hooks.enter("drainedRunners")
        return try await base.drainedRunners()
    }
    func setSecret(project: String, name: String, sealed: [UInt8], now: Int64) async throws -> Bool {
        try await hooks.enter("setSecret")
        return try await base.setSecret(project: project, name: name, sealed: sealed, now: now)
    }
    func secrets(project: String) async throws -> [SecretRecord] {
        try await hooks.enter("secrets")
        return try await base.secrets(project: project)
    }
    func deleteSecret(project: String, name: String) async throws -> Bool {
        try await hooks.enter("deleteSecret")
        return try await base.deleteSecret(project: project, name: name)
    }
    func setForkSecrets(project: String, allowed: Bool) async throws -> Bool {
        try await hooks.enter("setForkSecrets")
        return try await base.setForkSecrets(project: project, allowed: allowed)
    }
    func anySealedSecret() async throws -> SealedSecret? {
        try await hooks.enter("anySealedSecret")
        return try await base.anySealedSecret()
    }
}

/// An `InterposedStore` of a store shared by several coordinators: the core runs as one of a
/// cluster (the database is the queue). `claimQueued` also offers a pause after the claim is
/// stored (`claimQueued.stored`), before the core has it back; `createRunAndClaim` and
/// `finishJobAndClaim` the same (`createRunAndClaim.stored`, `finishJobAndClaim.stored`).
final class InterposedClusterStore: InterposedStore, ClusterStore, @unchecked Sendable {
    let cluster: any ClusterStore

    init(_ base: any ClusterStore) {
        cluster = base
        super.init(base)
    }

    var coordinatorID: String { cluster.coordinatorID }
    func beat(othersWithin within: Duration) async throws -> Int { try await cluster.beat(othersWithin: within) }
    func adopt(jobID: Int64, epoch: Int64, runner: String) async throws -> JobRecord? {
        try await hooks.enter("adopt")
        return try await cluster.adopt(jobID: jobID, epoch: epoch, runner: runner)
    }
    func adoptOrphans(silentFor: Duration) async throws -> [JobRecord] { try await cluster.adoptOrphans(silentFor: silentFor) }
    func reclaim(_ jobs: [LeaseRef]) async throws -> [Int64] { try await cluster.reclaim(jobs) }
    func claimQueued(_ slots: [ClaimSlot], now: Int64) async throws -> [ClaimedJob] {
        try await hooks.enter("claimQueued")
        let claimed = try await cluster.claimQueued(slots, now: now)
        try await hooks.enter("claimQueued.stored")
        return claimed
    }
    /// A run's insert: fails or pauses as `createRun`; then a pause after it is stored with its
    /// claim (`createRunAndClaim.stored`), before the core has them back.
    func createRunAndClaim(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                           trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String], now: Int64,
                           latestOnly: Bool, slots: [ClaimSlot]) async throws -> CreatedAndClaimed? {
        try await hooks.enter("createRun")
        let created = try await cluster.createRunAndClaim(version: version, definition: definition, branch: branch, commit: commit,
                                                          trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs,
                                                          now: now, latestOnly: latestOnly, slots: slots)
        try await hooks.enter("createRunAndClaim.stored")
        return created
    }
    /// A job's end: fails or pauses as `finishJob`; then a pause after it is stored with its
    /// claim (`finishJobAndClaim.stored`), before the core has them back.
    func finishJobAndClaim(id: Int64, epoch: Int64?, status: Status, reason: String, now: Int64,
                           slots: [ClaimSlot]) async throws -> EndedAndClaimed {
        try await hooks.enter("finishJob")
        let ended = try await cluster.finishJobAndClaim(id: id, epoch: epoch, status: status, reason: reason, now: now, slots: slots)
        try await hooks.enter("finishJobAndClaim.stored")
        return ended
    }
    func queueHead(limit: Int) async throws -> (jobs: [JobRecord], queued: Int, running: Int) {
        try await cluster.queueHead(limit: limit)
    }
    func queuePlaces(jobIDs: [Int64]) async throws -> [Int64: Int] {
        try await hooks.enter("queuePlaces")
        return try await cluster.queuePlaces(jobIDs: jobIDs)
    }
    func checkDataDirectory(_ directory: String) async throws { try await cluster.checkDataDirectory(directory) }
    func moveQueued(jobID: Int64, to target: MoveTarget) async throws -> QueueMove {
        try await hooks.enter("moveQueued")
        return try await cluster.moveQueued(jobID: jobID, to: target)
    }
    func signal(_ signals: [ClusterSignal]) async throws { try await cluster.signal(signals) }
    func listen(_ received: @Sendable (ClusterSignal) -> Void) async { await cluster.listen(received) }
}

/// What an `InterposedStore` does before it forwards a call.
final class StoreHooks: Sendable {
    private struct State {
        /// Calls to pause: the method and how many of its calls to let through first.
        var pause: (method: String, skip: Int)?
        var paused: CheckedContinuation<Void, Never>?
        var reachedPause = false
        var failing: Set<String> = []
    }
    private let state = Mutex(State())

    struct Injected: Error, CustomStringConvertible {
        var method: String
        var description: String { "injected failure of \(method)" }
    }

    /// The next call of `method` after `skip` others waits in `enter` until `resume()`.
    func pause(_ method: String, skip: Int = 0) {
        state.withLock { $0.pause = (method, skip); $0.reachedPause = false }
    }

    /// Takes back a pause no call reached.
    func disarm() {
        state.withLock { $0.pause = nil }
    }

    /// Every call of these methods throws until `fail([])`.
    func fail(_ methods: Set<String>) {
        state.withLock { $0.failing = methods }
    }

    /// Whether a call reached the pause.
    var reachedPause: Bool { state.withLock { $0.reachedPause } }

    /// Lets the paused call go on.
    func resume() {
        state.withLock { state -> CheckedContinuation<Void, Never>? in
            defer { state.paused = nil }
            return state.paused
        }?.resume()
    }

    func enter(_ method: String) async throws {
        if state.withLock({ $0.failing.contains(method) }) { throw Injected(method: method) }
        let stop = state.withLock { state -> Bool in
            guard let pause = state.pause, pause.method == method else { return false }
            if pause.skip > 0 {
                state.pause = (method, pause.skip - 1)
                return false
            }
            state.pause = nil
            return true
        }
        guard stop else { return }
        await withCheckedContinuation { continuation in
            state.withLock {
                $0.paused = continuation
                $0.reachedPause = true
            }
        }
    }
}

/// A flag one task sets and another reads.
final class Flag: Sendable {
    private let state = Mutex(false)
    func set() { state.withLock { $0 = true } }
    var isSet: Bool { state.withLock { $0 } }
}
