import Foundation
import Logging
import Wire

/// Limits the coordinator announces and enforces.
public struct CoordinatorLimits: Sendable {
    public var maximumFrameLength = Frame.defaultMaximumLength
    public var heartbeatInterval: Duration = .seconds(5)
    public var maximumArtifactChunk = 1024 * 1024
    public var maximumArtifactSize: Int64 = 8 * 1024 * 1024 * 1024
    /// Stored bytes per node log; past it the head and the most recent tail are kept.
    public var maximumLogBytes: Int64 = 64 * 1024 * 1024
    /// Frames a session may have waiting to be written before it is closed as too slow.
    public var maximumPendingFrames = 4096

    /// How long a job's lease outlives its runner's silence: three heartbeat intervals.
    public var lease: Duration { heartbeatInterval * 3 }

    public init() {}
}

/// The coordinator's core: queue, scheduler, job lifecycle, subscriptions. It knows
/// nothing of sockets: a front (the binary protocol today) calls it with the caller's
/// identity and an `Outbox` for frames it pushes.
///
/// Decisions are made on in-memory state before any `await`, so the actor's reentrancy at
/// store writes cannot hand one job to two runners.
public actor CoordinatorCore {
    let store: any CoordinatorStore
    let blobs: BlobStore
    let logger: Logger
    public let limits: CoordinatorLimits

    var scheduler = Scheduler()
    /// Runner sessions by session id.
    var runners: [UInt64: RunnerSession] = [:]
    /// Jobs currently leased to a runner.
    var active: [Int64: ActiveJob] = [:]
    var watchers: [Int64: [Watcher]] = [:]
    var uploads: [UInt64: PendingUpload] = [:]
    var nextEpoch: Int64
    /// Names of drained runners (durable in the store).
    var drained: Set<String> = []
    /// Subscribers to queue changes.
    var queueWatchers: [QueueWatcher] = []

    struct QueueWatcher {
        var session: UInt64
        var requestID: UInt64
        var outbox: Outbox
    }

    struct RunnerSession {
        var identity: PeerIdentity
        var labels: [String]
        var capacity: Int
        var outbox: Outbox
        var connectedAt: Int64
        var lastHeartbeat: Int64
    }

    struct ActiveJob {
        var runID: Int64
        var attempt: Int
        var name: String
        /// The session running it; nil while its runner is away (until `leaseDeadline`).
        var session: UInt64?
        var runner: String
        var epoch: Int64
        var leaseDeadline: ContinuousClock.Instant?
        /// Stored bytes of each node's log (less what the size limit dropped), once counted.
        var storedBytes: [String: Int64] = [:]
        /// Length of each node's log, counting bytes queued for the next group commit
        /// (nil until loaded from the store).
        var logEnds: [String: UInt64]?
        /// Durable length of each node's log.
        var durableLogEnds: [String: UInt64] = [:]
        /// Set once a cancel was pushed to the runner.
        var cancelReason: String?
        /// The job's nodes and their statuses, in the pipeline's order (loaded when first
        /// needed after a restart).
        var nodes: [(name: String, status: Status)]?
    }

    struct PendingUpload {
        var jobID: Int64
        var name: String
        var size: Int64
        var sha256: String
        var upload: BlobStore.Upload
    }

    /// Log bytes waiting for the next group commit, in arrival order, and their total.
    var pendingLogs: [PendingLog] = []
    var pendingLogBytes = 0
    /// Whether the group-commit loop runs, how many batches it committed, and who waits.
    var flushingLogs = false
    var logBatches = 0
    var logSpaceWaiters: [CheckedContinuation<Void, Never>] = []
    var logBarrierWaiters: [(batch: Int, waiter: CheckedContinuation<Void, Never>)] = []
    /// Finished jobs whose open log segments the next commit closes.
    var finishedLogJobs: Set<Int64> = []
    let logFiles: LogFiles
    /// Node logs whose middle is being dropped (for the size limit) in the background.
    var trimming: Set<LogFiles.LogKey> = []

    /// Parsed pipeline versions by id.
    var definitions: [Int64: PipelineDefinition] = [:]

    /// Every open session, so a revocation can close them.
    var sessions: [UInt64: OpenSession] = [:]
    var revocations: [Revocation] = []

    struct OpenSession {
        var identity: PeerIdentity
        var close: @Sendable () -> Void
    }

    /// Artifacts live in `blobs`, node logs in `logs/` next to them.
    public init(store: any CoordinatorStore, blobs: BlobStore, limits: CoordinatorLimits = CoordinatorLimits(),
                logger: Logger = Logger(label: "heddle.coordinator")) {
        self.store = store
        self.blobs = blobs
        self.limits = limits
        self.logger = logger
        self.nextEpoch = Date.nowMilliseconds
        // Segments of an eighth of the size limit, so the limit drops whole segments finely.
        self.logFiles = LogFiles(directory: "\(blobs.directory)/logs",
                                 segmentSize: min(8 << 20, max(4096, limits.maximumLogBytes / 8)))
    }

    /// Loads the queue, drained runners, revocations and open uploads from the store. Jobs
    /// that were running keep their lease for one lease period, for their runners to come back
    /// and reattach them.
    public func recover(now: ContinuousClock.Instant = .now) async throws {
        try await importLegacyLogs()
        drained = try await store.drainedRunners()
        revocations = try await store.revocations()
        var maxEpoch: Int64 = 0
        for job in try await store.activeJobs() {
            switch job.status {
            case .queued:
                scheduler.enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            default:
                active[job.id] = ActiveJob(runID: job.runID, attempt: job.attempt, name: job.name, session: nil,
                                           runner: job.runner ?? "", epoch: job.epoch,
                                           leaseDeadline: now.advanced(by: limits.lease))
                maxEpoch = max(maxEpoch, job.epoch)
            }
        }
        nextEpoch = max(nextEpoch, maxEpoch)
        for record in try await store.uploads() {
            guard active[record.jobID] != nil, let upload = try? await blobs.resumeUpload(id: UInt64(record.id)) else {
                try await store.deleteUploads(ids: [record.id])
                continue
            }
            uploads[UInt64(record.id)] = PendingUpload(jobID: record.jobID, name: record.name, size: record.size,
                                                       sha256: record.sha256, upload: upload)
        }
        blobs.removeUploads(except: Set(uploads.keys))
    }

    // MARK: runner sessions

    public func runnerConnected(session: UInt64, identity: PeerIdentity, hello: Heddle_V1_Hello, outbox: Outbox) async {
        let capacity = max(1, Int(hello.capacity))
        let now = Date.nowMilliseconds
        runners[session] = RunnerSession(identity: identity, labels: hello.labels, capacity: capacity,
                                         outbox: outbox, connectedAt: now, lastHeartbeat: now)
        scheduler.addRunner(session, labels: Set(hello.labels), capacity: capacity,
                            drained: drained.contains(identity.name))
        logger.info("runner connected", metadata: ["runner": "\(identity.name)", "labels": "\(hello.labels)",
                                                   "capacity": "\(capacity)", "running": "\(hello.runningJobs.count)"])
        // Reattach what it still runs, if the lease holds; anything else it runs is stale.
        var listed = Set<Int64>()
        for ref in hello.runningJobs {
            let id = Int64(ref.jobID)
            listed.insert(id)
            if var job = active[id], job.runner == identity.name, job.epoch == Int64(ref.epoch) {
                // The same runner, back before the coordinator noticed its old connection die:
                // the job moves to the new session.
                if let old = job.session, old != session { scheduler.finish(id, on: old) }
                job.session = session
                job.leaseDeadline = nil
                active[id] = job
                scheduler.attach(id, to: session)
                logger.info("job reattached", metadata: ["job.id": "\(id)", "runner": "\(identity.name)"])
                if let reason = job.cancelReason {
                    outbox.send(.stopJob(ref.jobID, reason: reason))
                }
            } else {
                outbox.send(.stopJob(ref.jobID, reason: "the lease of job \(ref.jobID) (epoch \(ref.epoch)) is no longer this runner's",
                                     abandon: true))
            }
        }
        // Jobs this runner held but came back without are lost.
        let forgotten = active.filter { $0.value.runner == identity.name && $0.value.session == nil && !listed.contains($0.key) }
        for id in forgotten.keys.sorted() {
            await lost(jobID: id, why: "runner lost: \(identity.name) came back without the job")
        }
        await dispatch()
    }

    /// Jobs whose runner stayed away past the lease: back to the front of the queue when the
    /// pipeline allows a retry, failed with "runner lost" otherwise.
    public func expireLeases(now: ContinuousClock.Instant = .now) async {
        let expired = active.filter { $0.value.session == nil && ($0.value.leaseDeadline.map { $0 <= now } ?? false) }
        for (id, job) in expired.sorted(by: { $0.key < $1.key }) {
            await lost(jobID: id, why: "runner lost: \(job.runner) was silent for longer than its lease")
        }
    }

    func lost(jobID: Int64, why: String) async {
        guard active[jobID] != nil else { return }
        do {
            if let job = try await store.job(id: jobID), job.lostCount < job.retryLost {
                active[jobID] = nil
                await discardUploads(jobID: jobID)
                await logBarrier()  // no log write of the lost execution lands after its log is gone
                let front = (scheduler.queue.first?.position ?? 1) - 1
                let reason = "requeued (\(job.lostCount + 1) of \(job.retryLost)): \(why)"
                let run = try await store.requeueLostJob(id: jobID, position: front, reason: reason, now: Date.nowMilliseconds)
                let files = logFiles
                try await blobs.pool.runIfActive { files.remove(jobID: jobID) }
                scheduler.enqueue(.init(id: jobID, labels: Set(job.labels), position: front))
                logger.warning("job requeued", metadata: ["job.id": "\(jobID)", "reason": "\(reason)"])
                if let updated = try await store.job(id: jobID) { publishQueue(.queued, queueEntry(updated, run: run)) }
                await dispatch()
                return
            }
        } catch {
            logger.error("cannot requeue a lost job", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
        await finish(jobID: jobID, status: .failed, reason: why)
    }

    public func heartbeat(session: UInt64) {
        runners[session]?.lastHeartbeat = Date.nowMilliseconds
    }

    /// A session ended: its watches are dropped; a runner's jobs keep their lease for a while
    /// (see `expireLeases`) and their uploads stay open, for the runner to come back.
    public func sessionClosed(session: UInt64) async {
        endWatches(session: session)  // each watch then removes itself
        queueWatchers.removeAll { $0.session == session }
        sessions[session] = nil
        guard let runner = runners.removeValue(forKey: session) else { return }
        let held = scheduler.removeRunner(session)
        // Its jobs keep their lease until three heartbeat intervals after the runner was last
        // heard from: one that dropped its connection may come back and reattach them; one
        // that fell silent is lost now.
        let silentFor = Duration.milliseconds(max(0, Date.nowMilliseconds - runner.lastHeartbeat))
        let deadline = ContinuousClock.now.advanced(by: limits.lease - silentFor)
        for jobID in held where active[jobID]?.session == session {
            active[jobID]?.session = nil
            active[jobID]?.leaseDeadline = deadline
        }
        logger.info("runner disconnected", metadata: ["runner": "\(runner.identity.name)", "jobs": "\(held.count)"])
        await dispatch()
    }

    /// Registers an open session; refused when its certificate is revoked.
    public func sessionOpened(session: UInt64, identity: PeerIdentity, close: @escaping @Sendable () -> Void) throws(WireError) {
        if isRevoked(identity) {
            throw WireError(.unauthenticated, "certificate \(identity.name) (\(identity.fingerprint.prefix(16))) is revoked")
        }
        sessions[session] = OpenSession(identity: identity, close: close)
    }

    func isRevoked(_ identity: PeerIdentity) -> Bool {
        revocations.contains { revocation in
            if let fingerprint = revocation.fingerprint, fingerprint == identity.fingerprint { return true }
            if let name = revocation.name, name == identity.name,
               // Certificates carry seconds: one issued in the second of the revocation is covered.
               Int64(identity.issuedAt.timeIntervalSince1970.rounded(.down)) <= revocation.revokedAt / 1000 { return true }
            return false
        }
    }

    /// Revokes by name or fingerprint and closes the sessions of what it revoked.
    public func revoke(name: String?, fingerprint: String?) async throws -> Int {
        guard name != nil || fingerprint != nil else { throw WireError.invalid("revoke needs a name or a fingerprint") }
        let revocation = Revocation(name: name, fingerprint: fingerprint?.lowercased(), revokedAt: Date.nowMilliseconds)
        try await store.revoke(name: revocation.name, fingerprint: revocation.fingerprint, now: revocation.revokedAt)
        revocations.append(revocation)
        var closed = 0
        for (id, open) in sessions where isRevoked(open.identity) {
            open.close()
            sessions[id] = nil
            closed += 1
        }
        logger.warning("certificate revoked", metadata: ["name": "\(name ?? "-")", "fingerprint": "\(fingerprint ?? "-")",
                                                         "sessions.closed": "\(closed)"])
        return closed
    }

    /// The runner on `session` shuts down: no new jobs for it.
    public func drainSelf(session: UInt64) {
        scheduler.setDrained(session, true)
    }

    func discardUploads(jobID: Int64) async {
        let ids = uploads.filter { $0.value.jobID == jobID }.map(\.key)
        guard !ids.isEmpty else { return }
        for id in ids {
            if let pending = uploads.removeValue(forKey: id) { blobs.discard(pending.upload) }
        }
        do {
            try await store.deleteUploads(ids: ids.map { Int64($0) })
        } catch {
            logger.error("cannot forget uploads", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
    }

    /// Hands queued jobs to runners with free capacity and matching labels: every job the
    /// scheduler places now is claimed in one store transaction.
    func dispatch() async {
        var claims: [JobClaim] = []
        for assignment in scheduler.assign() {
            guard let runner = runners[assignment.runner] else { continue }
            nextEpoch += 1
            active[assignment.jobID] = ActiveJob(runID: 0, attempt: 0, name: "", session: assignment.runner,
                                                 runner: runner.identity.name, epoch: nextEpoch)
            claims.append(JobClaim(jobID: assignment.jobID, runner: runner.identity.name, epoch: nextEpoch))
        }
        guard !claims.isEmpty else { return }
        let now = Date.nowMilliseconds
        let claimed: [ClaimedJob?]
        do {
            claimed = try await store.claimJobs(claims, now: now)
        } catch {
            logger.error("assignment failed", metadata: ["jobs": "\(claims.map(\.jobID))", "error": "\(error)"])
            for claim in claims {
                await finish(jobID: claim.jobID, status: .failed, reason: "coordinator error: \(error)", fenced: false)
            }
            return
        }
        for (claim, record) in zip(claims, claimed) {
            guard let record else {
                logger.warning("a placed job was no longer queued", metadata: ["job.id": "\(claim.jobID)"])
                if let session = active.removeValue(forKey: claim.jobID)?.session { scheduler.finish(claim.jobID, on: session) }
                continue
            }
            let job = record.job
            let run = record.run
            active[job.id]?.runID = run.id
            active[job.id]?.attempt = job.attempt
            active[job.id]?.name = job.name
            active[job.id]?.nodes = record.nodes.map { ($0.name, $0.status) }
            var message = Heddle_V1_Assignment()
            message.repository = record.repository
            message.job = jobRef(job.id, job.attempt, claim.epoch)
            message.runID = UInt64(run.id)
            message.project = run.project
            message.pipeline = run.pipeline
            message.jobName = job.name
            message.branch = run.branch
            message.env = [
                "HEDDLE_RUN_ID": String(run.id), "HEDDLE_ATTEMPT": String(job.attempt),
                "HEDDLE_JOB": job.name, "HEDDLE_BRANCH": run.branch,
                "HEDDLE_PROJECT": run.project, "HEDDLE_PIPELINE": run.pipeline,
            ]
            message.nodes = record.nodes.map { node in
                var spec = Heddle_V1_NodeSpec()
                spec.name = node.name
                spec.run = node.run
                spec.needs = node.needs
                spec.env = node.env
                spec.timeoutSeconds = UInt32(node.timeout ?? 0)
                spec.killGraceSeconds = UInt32(node.grace ?? 0)
                spec.artifacts = node.artifacts
                return spec
            }
            logger.info("job assigned", metadata: ["job.id": "\(job.id)", "run.id": "\(run.id)", "runner": "\(claim.runner)"])
            // The runner may have gone while the claim was stored: its lease then runs out.
            if let session = active[job.id]?.session { runners[session]?.outbox.send(Envelope(.assignment(message))) }
            publish(runID: run.id, attempt: job.attempt, .job(jobEvent(job, status: .running, runner: claim.runner, at: now)))
            var entry = queueEntry(job, run: run)
            entry.status = .running
            entry.runner = claim.runner
            publishQueue(.claimed, entry)
        }
    }

    func jobRef(_ id: Int64, _ attempt: Int, _ epoch: Int64) -> Heddle_V1_JobRef {
        var ref = Heddle_V1_JobRef()
        ref.jobID = UInt64(id)
        ref.attempt = UInt32(attempt)
        ref.epoch = UInt64(epoch)
        return ref
    }

    func jobEvent(_ job: JobRecord, status: Status, runner: String?, at: Int64) -> Heddle_V1_JobDetail {
        var detail = Heddle_V1_JobDetail()
        detail.id = UInt64(job.id)
        detail.name = job.name
        detail.status = status.proto
        detail.runner = runner ?? ""
        detail.startedAtMs = at
        detail.labels = job.labels
        detail.attempt = UInt32(job.attempt)
        return detail
    }

    /// Checks that a job write comes from the session holding the job's current lease.
    func lease(_ ref: Heddle_V1_JobRef, session: UInt64) throws(WireError) -> ActiveJob {
        let id = Int64(ref.jobID)
        guard let job = active[id] else {
            throw WireError(.failedPrecondition, "job \(ref.jobID) is not running on this runner")
        }
        guard job.epoch == Int64(ref.epoch) else {
            throw WireError(.staleEpoch, "job \(ref.jobID) has lease epoch \(job.epoch), not \(ref.epoch): stop it")
        }
        guard job.session == session else {
            throw WireError(.permissionDenied, "job \(ref.jobID) is not attached to this session")
        }
        return job
    }

    /// Loads a running job's nodes into memory once (a claim sets them; after a restart the
    /// first write about the job reads them).
    func loadNodes(of jobID: Int64) async throws {
        guard active[jobID]?.nodes == nil else { return }
        let nodes = try await store.nodes(jobIDs: [jobID]).map { (name: $0.name, status: $0.status) }
        if active[jobID]?.nodes == nil { active[jobID]?.nodes = nodes }
    }

    /// Refuses a write about a node the job does not have.
    func checkNode(_ node: String, of jobID: Int64) async throws {
        try await loadNodes(of: jobID)
        guard active[jobID]?.nodes?.contains(where: { $0.name == node }) == true else {
            throw WireError.invalid("job \(jobID) has no node '\(node)'")
        }
    }

    public func nodeUpdate(session: UInt64, _ update: Heddle_V1_NodeUpdate) async throws {
        _ = try lease(update.job, session: session)
        try await checkNode(update.node, of: Int64(update.job.jobID))
        guard let status = Status(update.status), status != .queued else {
            throw WireError.invalid("node status \(update.status) is not a node status")
        }
        let exitCode: Int? = update.exited ? Int(update.exitCode) : nil
        let at = update.atMs == 0 ? Date.nowMilliseconds : update.atMs
        // Log bytes the runner sent before this update are committed (and shown) first, so a
        // follower never sees a node end before its last output.
        await logBarrier()
        // Checked again after the awaits: the lease may have gone meanwhile.
        let job = try lease(update.job, session: session)
        try await store.updateNode(jobID: Int64(update.job.jobID), epoch: job.epoch, node: update.node, status: status,
                                   exitCode: exitCode, at: at)
        if let index = active[Int64(update.job.jobID)]?.nodes?.firstIndex(where: { $0.name == update.node }) {
            active[Int64(update.job.jobID)]?.nodes?[index].status = status
        }
        var detail = Heddle_V1_JobDetail()
        detail.id = update.job.jobID
        detail.name = job.name
        detail.status = Status.running.proto
        detail.runner = job.runner
        var node = Heddle_V1_NodeDetail()
        node.name = update.node
        node.status = status.proto
        if status == .running { node.startedAtMs = at } else { node.finishedAtMs = at }
        if let exitCode {
            node.exitCode = Int32(exitCode)
            node.exited = true
        }
        detail.nodes = [node]
        publish(runID: job.runID, attempt: job.attempt, .job(detail))
    }

    public func jobStarted(session: UInt64, _ started: Heddle_V1_JobStarted) async throws {
        let job = try lease(started.job, session: session)
        guard started.commit.count <= 64, started.commit.allSatisfy({ $0.isHexDigit }) else {
            throw WireError.invalid("commit '\(started.commit)' is not a hex commit id")
        }
        try await store.setJobCommit(id: Int64(started.job.jobID), epoch: job.epoch, commit: started.commit)
    }

    public func jobFinished(session: UInt64, _ finish: Heddle_V1_JobFinish) async throws {
        if active[Int64(finish.job.jobID)] == nil, let job = try await store.job(id: Int64(finish.job.jobID)),
           job.status.isFinished, job.epoch == Int64(finish.job.epoch) {
            return  // the result again (its answer was lost with a connection): decided already
        }
        _ = try lease(finish.job, session: session)
        guard let reported = Status(finish.status), [.succeeded, .failed, .cancelled].contains(reported) else {
            throw WireError.invalid("a job finishes as succeeded, failed or cancelled, not \(finish.status)")
        }
        let jobID = Int64(finish.job.jobID)
        // Log bytes sent before the JobFinish are committed (and acknowledged) while the job
        // still holds its lease; node updates sent before it are stored already.
        await logBarrier()
        try await loadNodes(of: jobID)
        // Checked again after the awaits: the lease may have gone meanwhile.
        let nodes = try lease(finish.job, session: session).nodes ?? []
        let (status, reason) = Outcome.jobResult(reported: reported, reason: finish.reason, nodes: nodes)
        if status != reported {
            logger.warning("job result corrected from its nodes", metadata: ["job.id": "\(jobID)", "reported": "\(reported.rawValue)",
                                                                            "reason": "\(reason)"])
        }
        await self.finish(jobID: jobID, status: status, reason: reason)
    }

    /// Finishes a job (stored in one transaction with its run's status), frees its runner's
    /// slot, tells watchers, and dispatches more work.
    /// The store write is fenced by the lease's epoch, unless `fenced` is false (a claim that
    /// never reached the store).
    func finish(jobID: Int64, status: Status, reason: String, fenced: Bool = true) async {
        let job = active.removeValue(forKey: jobID)
        finishedLogJobs.insert(jobID)
        if let session = job?.session { scheduler.finish(jobID, on: session) }
        scheduler.removeQueued(jobID)
        await discardUploads(jobID: jobID)
        do {
            let now = Date.nowMilliseconds
            let (run, record) = try await store.finishJob(id: jobID, epoch: fenced ? job?.epoch : nil, status: status, reason: reason, now: now)
            logger.info("job finished", metadata: ["job.id": "\(jobID)", "status": "\(status.rawValue)",
                                                   "reason": "\(reason)"])
            var detail = jobEvent(record, status: status, runner: record.runner, at: record.startedAt ?? now)
            detail.finishedAtMs = now
            detail.reason = reason
            publish(runID: run.id, attempt: record.attempt, .job(detail))
            var entry = queueEntry(record, run: run)
            entry.status = status.proto
            publishQueue(status == .cancelled ? .cancelled : .finished, entry)
            if run.status.isFinished {
                publish(runID: run.id, attempt: run.attempt, .end(run.proto))
            }
        } catch {
            logger.error("cannot store a job's end", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
        await dispatch()
    }

    // MARK: artifacts

    public func declareArtifact(session: UInt64, _ declare: Heddle_V1_ArtifactDeclare) async throws -> Heddle_V1_ArtifactDeclared {
        _ = try lease(declare.job, session: session)
        try Self.validateArtifactName(declare.name)
        guard declare.sha256.count == 32 else {
            throw WireError.invalid("artifact '\(declare.name)': sha256 must be 32 bytes, got \(declare.sha256.count)")
        }
        guard Int64(clamping: declare.size) <= limits.maximumArtifactSize else {
            throw WireError(.resourceExhausted,
                            "artifact '\(declare.name)' is \(declare.size) bytes; the limit is \(limits.maximumArtifactSize)")
        }
        let jobID = Int64(declare.job.jobID)
        let sha = hex(declare.sha256)
        var declared = Heddle_V1_ArtifactDeclared()
        // The same artifact again (after a reconnect or a coordinator restart): resume it.
        if let (id, pending) = uploads.first(where: { $0.value.jobID == jobID && $0.value.name == declare.name }) {
            // Resumed from what is written, once the chunks still on their way are.
            if pending.size == Int64(declare.size) && pending.sha256 == sha, (try? await pending.upload.settle()) != nil,
               uploads[id] != nil {
                declared.uploadID = id
                declared.committedOffset = UInt64(pending.upload.accepted)
                logger.info("upload resumed", metadata: ["job.id": "\(jobID)", "name": "\(declare.name)",
                                                         "offset": "\(pending.upload.accepted)"])
                return declared
            }
            uploads[id] = nil
            blobs.discard(pending.upload)
        }
        let record = try await store.saveUpload(jobID: jobID, name: declare.name, size: Int64(declare.size),
                                                sha256: sha, now: Date.nowMilliseconds)
        let id = UInt64(record.id)
        let upload = try await blobs.beginUpload(id: id)
        uploads[id] = PendingUpload(jobID: jobID, name: declare.name, size: Int64(declare.size), sha256: sha, upload: upload)
        declared.uploadID = id
        declared.committedOffset = 0
        return declared
    }

    /// Names are relative paths: no "..", no leading "/", no NUL, not empty.
    static func validateArtifactName(_ name: String) throws(WireError) {
        guard !name.isEmpty, name.utf8.count <= 1024 else {
            throw WireError.invalid("artifact name must be 1 to 1024 bytes")
        }
        guard !name.contains("\0") else { throw WireError.invalid("artifact name contains NUL") }
        guard !name.hasPrefix("/") else { throw WireError.invalid("artifact name '\(name)' is an absolute path") }
        guard !name.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == ".." || $0 == "." || $0.isEmpty }) else {
            throw WireError.invalid("artifact name '\(name)' must be a plain relative path (no '..', '.' or empty parts)")
        }
    }

    public func artifactChunk(session: UInt64, _ chunk: Heddle_V1_ArtifactChunk) async throws {
        _ = try lease(chunk.job, session: session)
        guard let pending = uploads[chunk.uploadID], pending.jobID == Int64(chunk.job.jobID) else {
            throw WireError.notFound("upload \(chunk.uploadID) is not open for job \(chunk.job.jobID)")
        }
        guard Int64(chunk.offset) == pending.upload.accepted else {
            throw WireError.invalid("upload \(chunk.uploadID): chunk at \(chunk.offset), expected \(pending.upload.accepted)")
        }
        guard pending.upload.accepted + Int64(chunk.data.count) <= pending.size else {
            uploads[chunk.uploadID] = nil
            blobs.discard(pending.upload)
            try? await store.deleteUploads(ids: [Int64(chunk.uploadID)])
            throw WireError.invalid("artifact '\(pending.name)' is larger than the \(pending.size) bytes declared; upload discarded")
        }
        try await pending.upload.append(chunk.data)
    }

    /// Waits until the chunks of every open upload are on disk (or failed).
    func settleUploads() async throws {
        for pending in uploads.values { try await pending.upload.settle() }
    }

    public func commitArtifact(session: UInt64, _ commit: Heddle_V1_ArtifactCommit) async throws -> Heddle_V1_ArtifactCommitted {
        let job = try lease(commit.job, session: session)
        guard let pending = uploads[commit.uploadID], pending.jobID == Int64(commit.job.jobID) else {
            throw WireError.notFound("upload \(commit.uploadID) is not open for job \(commit.job.jobID)")
        }
        uploads[commit.uploadID] = nil
        do {
            try await blobs.commit(pending.upload, size: pending.size, sha256: pending.sha256)
        } catch {
            try? await store.deleteUploads(ids: [Int64(commit.uploadID)])
            throw error
        }
        try await store.deleteUploads(ids: [Int64(commit.uploadID)])
        let record = try await store.insertArtifact(jobID: pending.jobID, epoch: job.epoch, name: pending.name, size: pending.size,
                                                    sha256: pending.sha256, now: Date.nowMilliseconds)
        logger.info("artifact stored", metadata: ["job.id": "\(pending.jobID)", "name": "\(pending.name)",
                                                  "size": "\(pending.size)", "run.id": "\(job.runID)"])
        var committed = Heddle_V1_ArtifactCommitted()
        committed.artifactID = UInt64(record.id)
        return committed
    }

    public func artifacts(runID: Int64?) async throws -> [Heddle_V1_ArtifactInfo] {
        if let runID, try await store.run(id: runID) == nil { throw WireError.notFound("run \(runID) does not exist") }
        return try await store.artifacts(runID: runID).map(\.proto)
    }

    public func readArtifact(_ request: Heddle_V1_ArtifactReadRequest) async throws -> Heddle_V1_ArtifactData {
        guard let artifact = try await store.artifact(id: Int64(request.artifactID)) else {
            throw WireError.notFound("artifact \(request.artifactID) does not exist")
        }
        let length = min(Int(request.length == 0 ? UInt32(limits.maximumArtifactChunk) : request.length),
                         limits.maximumArtifactChunk)
        let offset = min(Int64(request.offset), artifact.size)
        let bytes = try await blobs.read(sha256: artifact.sha256, offset: offset,
                                         length: min(length, Int(artifact.size - offset)))
        var data = Heddle_V1_ArtifactData()
        data.artifact = artifact.proto
        data.offset = UInt64(offset)
        data.data = Data(bytes)
        return data
    }

    // MARK: pipelines and runs

    public func pushPipeline(_ push: Heddle_V1_PipelinePush) async throws -> Heddle_V1_PipelinePushed {
        let project = push.project
        guard !project.isEmpty, project.allSatisfy({ ActParser.nameCharacters.contains($0) }) else {
            throw WireError.invalid("project name '\(project)' may use only letters, digits, '.', '_' and '-'")
        }
        let definition: PipelineDefinition
        do {
            definition = try ActParser(file: push.fileName.isEmpty ? "pipeline.act" : push.fileName).parse(push.source)
        } catch {
            throw WireError.invalid(error.description)
        }
        let version = try await store.savePipeline(project: project, definition: definition, source: push.source,
                                                   now: Date.nowMilliseconds)
        var pushed = Heddle_V1_PipelinePushed()
        pushed.project = project
        pushed.pipeline = version.pipeline
        pushed.version = UInt32(version.version)
        return pushed
    }

    public func pipelines() async throws -> [Heddle_V1_PipelineInfo] {
        try await store.pipelines().map { version in
            var info = Heddle_V1_PipelineInfo()
            info.project = version.project
            info.pipeline = version.pipeline
            info.version = UInt32(version.version)
            info.updatedAtMs = version.createdAt
            info.jobs = version.jobs
            return info
        }
    }

    /// A stored pipeline version, parsed once (versions never change).
    func definition(of version: PipelineVersionRecord) throws -> PipelineDefinition {
        if let parsed = definitions[version.id] { return parsed }
        do {
            let parsed = try ActParser(file: "\(version.pipeline).act").parse(version.source)
            if definitions.count >= 1024 { definitions.removeAll() }
            definitions[version.id] = parsed
            return parsed
        } catch {
            throw WireError(.internal, "stored pipeline no longer parses: \(error)")
        }
    }

    public func trigger(_ request: Heddle_V1_TriggerRequest, trigger: String) async throws -> Int64 {
        guard let version = try await store.latestPipeline(project: request.project, pipeline: request.pipeline) else {
            throw WireError.notFound("no pipeline \(request.project)/\(request.pipeline); push it with `heddle pipeline push FILE --project \(request.project)`")
        }
        let definition = try self.definition(of: version)
        let branch = request.branch.isEmpty ? "main" : request.branch
        let (run, jobs) = try await store.createRun(version: version, definition: definition, branch: branch,
                                                    trigger: trigger, now: Date.nowMilliseconds)
        for job in jobs {
            scheduler.enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            publishQueue(.queued, queueEntry(job, run: run))
        }
        logger.info("run triggered", metadata: ["run.id": "\(run.id)", "pipeline": "\(run.project)/\(run.pipeline)",
                                                "branch": "\(branch)"])
        await dispatch()
        return run.id
    }

    public func runs(limit: Int, filter: RunFilter = RunFilter()) async throws -> [Heddle_V1_RunSummary] {
        try await store.runs(limit: limit, filter: filter).map(\.proto)
    }

    public func runDetail(runID: Int64, attempt: Int?) async throws -> Heddle_V1_RunDetail {
        guard let run = try await store.run(id: runID) else { throw WireError.notFound("run \(runID) does not exist") }
        let attempt = attempt ?? run.attempt
        guard (1...run.attempt).contains(attempt) else {
            throw WireError.notFound("run \(runID) has no attempt \(attempt) (it has \(run.attempt))")
        }
        let jobs = try await store.jobs(runID: runID, attempt: attempt)
        let nodes = Dictionary(grouping: try await store.nodes(jobIDs: jobs.map(\.id)), by: \.jobID)
        var detail = Heddle_V1_RunDetail()
        detail.run = run.proto
        detail.run.attempt = UInt32(attempt)
        if let record = try await store.attempt(runID: runID, number: attempt) {
            detail.run.status = record.status.proto
            detail.run.trigger = record.trigger
            detail.run.createdAtMs = record.createdAt
            detail.run.startedAtMs = record.startedAt ?? 0
            detail.run.finishedAtMs = record.finishedAt ?? 0
        }
        detail.jobs = jobs.map { job in
            var out = Heddle_V1_JobDetail()
            out.id = UInt64(job.id)
            out.name = job.name
            out.status = job.status.proto
            out.runner = job.runner ?? ""
            out.startedAtMs = job.startedAt ?? 0
            out.finishedAtMs = job.finishedAt ?? 0
            out.reason = job.reason
            out.labels = job.labels
            out.commit = job.commit
            out.attempt = UInt32(job.attempt)
            out.nodes = (nodes[job.id] ?? []).map { node in
                var n = Heddle_V1_NodeDetail()
                n.name = node.name
                n.status = node.status.proto
                n.startedAtMs = node.startedAt ?? 0
                n.finishedAtMs = node.finishedAt ?? 0
                n.exitCode = Int32(node.exitCode ?? 0)
                n.exited = node.exitCode != nil
                n.needs = node.needs
                return n
            }
            return out
        }
        return detail
    }

    public func runnerList() -> [Heddle_V1_RunnerInfo] {
        runners.sorted { $0.key < $1.key }.map { id, runner in
            var info = Heddle_V1_RunnerInfo()
            info.name = runner.identity.name
            info.labels = runner.labels
            info.capacity = UInt32(runner.capacity)
            info.running = UInt32(scheduler.runners[id]?.running.count ?? 0)
            info.connectedAtMs = runner.connectedAt
            info.lastHeartbeatMs = runner.lastHeartbeat
            info.sessionID = String(id)
            info.drained = scheduler.runners[id]?.drained ?? drained.contains(runner.identity.name)
            return info
        }
    }
}
