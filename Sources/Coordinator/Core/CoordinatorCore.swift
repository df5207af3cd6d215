import Foundation
import Logging
import Wire

/// The coordinator's core: sessions, queue, leases, job lifecycle, logs, artifacts and
/// subscriptions, behind an API of its own types. It knows nothing of sockets or encodings:
/// a front (the binary protocol today) opens a session for each caller with the caller's
/// `Principal` and an `EventSink`, calls the core, and renders what it returns. Every call is
/// authorized here (`Authorization`) and its input checked here, so fronts cannot differ.
///
/// The actor is the job lifecycle. What the store answers alone (projects, pipelines, runs,
/// artifacts, stored logs) is the `Catalog`'s, and forge deliveries are `Webhooks`', both
/// outside it. It orchestrates parts that each do one job: `Scheduler` (placement), `JobTable`
/// (every job past the queue in one phase: who holds it, under which epoch, and which store
/// write it waits for), `LogPipeline` (the log group commit, an actor of its own),
/// `LiveEvents` (who watches what, behind a lock; `Watches` run outside the actor),
/// `AccessControl` (tokens, revocations), `ArtifactUploads` (open uploads),
/// `SignalOutbox` (signals for the other coordinators of a cluster), the store (the authority
/// on everything durable) and a `LogStore`. A job stays in the `JobTable`, in an in-between
/// phase, until the store has settled where it went: a command that arrives during a store
/// write finds it there and is applied when the phase settles, so the actor's reentrancy at
/// store writes can neither hand one job to two runners nor lose a cancel or an end.
public actor CoordinatorCore {
    let store: any CoordinatorStore
    let artifactStore: any ArtifactStore
    let logStore: any LogStore
    let logger: Logger
    public let limits: CoordinatorLimits

    var scheduler = Scheduler()
    /// Every job past the queue, each in one phase (`JobTable`).
    var table: JobTable
    /// Log chunks on their way to storage (`LogPipeline`).
    let logPipeline: LogPipeline
    /// Who watches what (`LiveEvents`), and the watches themselves (`Watches`).
    let live = LiveEvents()
    nonisolated let watches: Watches
    /// Every open session, by the id the core gave it (`SessionRegistry`).
    nonisolated let sessions = SessionRegistry()
    /// Runner sessions by session id.
    var runners: [UInt64: RunnerSession] = [:]
    /// Open artifact uploads (`ArtifactUploads`).
    let uploads: ArtifactUploads
    /// Names of drained runners (durable in the store).
    var drained: Set<String> = []
    /// Projects, pipelines, runs, artifacts and stored logs, answered from the store alone.
    public nonisolated let catalog: Catalog
    /// Where the HTTP front is reached, for webhook URLs.
    let httpBase = HTTPBase()
    /// The store as one of a cluster's (several coordinators on one database); nil on SQLite.
    let cluster: (any ClusterStore)?
    /// Signals for the other coordinators of the cluster, waiting to be sent.
    let signals = SignalOutbox()
    /// Tokens and revoked certificates: what a front checks a caller by.
    public nonisolated let access: AccessControl
    /// While a claim from the store is on its way (several coordinators: the database is the
    /// queue), cancels of jobs in no table, by job: a job the claim took ends cancelled.
    var claimCancels: [Int64: String]?
    /// A dispatch is storing its claims (`running`); another was asked for meanwhile (`again`).
    var dispatching = (running: false, again: false)

    struct RunnerSession {
        var name: String
        var labels: [String]
        var capacity: Int
        var connectedAt: Int64
        var lastHeartbeat: Int64
        var software: String = ""
        var protocolVersion: String = ""
    }

    public init(store: any CoordinatorStore, artifacts: any ArtifactStore, logs: any LogStore,
                limits: CoordinatorLimits = CoordinatorLimits(), logger: Logger = Logger(label: "heddle.coordinator")) {
        self.store = store
        self.artifactStore = artifacts
        self.logStore = logs
        self.limits = limits
        self.logger = logger
        self.table = JobTable(lastEpoch: Date.nowMilliseconds)
        self.cluster = store as? any ClusterStore
        self.access = AccessControl(store: store, signals: cluster == nil ? nil : signals, logger: logger)
        self.uploads = ArtifactUploads(store: store, artifactStore: artifacts, logger: logger)
        self.logPipeline = LogPipeline(store: store, logStore: logs, cluster: store as? any ClusterStore,
                                       maximumLogBytes: limits.maximumLogBytes, logger: logger)
        self.watches = Watches(live: live, store: store, logStore: logs, inCluster: store is any ClusterStore,
                               maximumLogBytes: limits.maximumLogBytes, logger: logger)
        self.catalog = Catalog(store: store, artifactStore: artifacts, logStore: logs, limits: limits, logger: logger)
    }

    /// Forge deliveries: what starts what (`Webhooks`).
    public nonisolated var webhooks: Webhooks {
        Webhooks(core: self, catalog: catalog, base: httpBase)
    }

    /// A core keeping artifacts and logs in files under `directory` (`blobs/`, `uploads/`,
    /// `logs/`).
    public init(store: any CoordinatorStore, directory: String, limits: CoordinatorLimits = CoordinatorLimits(),
                logger: Logger = Logger(label: "heddle.coordinator")) throws {
        // Segments of an eighth of the size limit, so the limit drops whole segments finely.
        let logs = LogFiles(directory: "\(directory)/logs",
                            segmentSize: min(8 << 20, max(4096, limits.maximumLogBytes / 8)))
        self.init(store: store, artifacts: try BlobStore(directory: directory), logs: logs, limits: limits, logger: logger)
    }

    /// Loads the queue, drained runners, revocations and open uploads from the store. Jobs
    /// that were running keep their lease for one lease period, for their runners to come back
    /// and reattach them.
    ///
    /// In a cluster, the queue stays in the database (`dispatch` claims from it), and running
    /// jobs are left to their holders: a job whose holder is gone is taken over by the sweep
    /// (`clusterTick`), or by the coordinator its runner comes back to.
    public func recover(now: ContinuousClock.Instant = .now) async throws {
        try await cluster?.beat()
        drained = try await store.drainedRunners()
        try await access.load()
        // In a cluster the queue is the database's, and running jobs and their open uploads
        // belong to their holders.
        guard cluster == nil else { return }
        for job in try await store.activeJobs() {
            switch job.status {
            case .queued: scheduler.enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            default: table.restore(job: job, deadline: now.advanced(by: limits.lease))
            }
        }
        let leased = Set(table.jobIDs)
        try await uploads.recover(keep: { leased.contains($0) })
    }

    // MARK: sessions

    /// Opens a session for a caller and returns its id; refused when the caller's certificate
    /// is revoked. Events for the session go to `sink`; `close` ends it from the core's side
    /// (a revocation, a log failure).
    public func openSession(_ principal: Principal, sink: any EventSink,
                            close: @escaping @Sendable () -> Void) throws(CoordinatorError) -> UInt64 {
        try access.checkNotRevoked(principal)
        return sessions.open(.init(principal: principal, sink: sink, close: close))
    }

    /// The caller of an open session, if it may do `action`.
    nonisolated func authorize(session: UInt64, _ action: Action) throws -> Principal {
        try sessions.authorize(session, action)
    }

    nonisolated func sink(of session: UInt64) -> (any EventSink)? {
        sessions[session]?.sink
    }

    /// A session ended: its watches are dropped; a runner's jobs keep their lease for a while
    /// (see `expireLeases`) and their uploads stay open, for the runner to come back.
    public func sessionClosed(session: UInt64) async {
        endWatches(session: session)  // each watch then removes itself
        live.removeQueueWatchers(session: session)
        sessions.remove(session)
        guard let runner = runners.removeValue(forKey: session) else { return }
        let held = scheduler.removeRunner(session)
        // Its jobs keep their lease until three heartbeat intervals after the runner was last
        // heard from: one that dropped its connection may come back and reattach them; one
        // that fell silent is lost now.
        let silentFor = Duration.milliseconds(max(0, Date.nowMilliseconds - runner.lastHeartbeat))
        var left = limits.lease - silentFor
        // In a cluster, a runner cut off from this coordinator leaves it after three silent
        // intervals too, for another coordinator: one more interval to reattach its jobs there.
        if cluster != nil { left = max(left, limits.heartbeatInterval) }
        table.disconnect(session: session, jobs: held, deadline: ContinuousClock.now.advanced(by: left))
        logger.info("runner disconnected", metadata: ["runner": "\(runner.name)", "jobs": "\(held.count)"])
        await dispatch()
    }

    /// A heartbeat from `session`. From a runner, it may list the jobs the runner runs: a job
    /// leased to this session that the runner has received but no longer lists is lost now
    /// (in a task of its own), not after a lease that its runner keeps renewing.
    ///
    /// Synchronous: a session's task keeps the largest async frames it ever ran, and every
    /// connection calls this every interval (an async version cost 6 KB per connection).
    public func heartbeat(session: UInt64, running: RunningJobs? = nil) {
        guard runners[session] != nil else { return }
        runners[session]?.lastHeartbeat = Date.nowMilliseconds
        guard let running else { return }
        table.seen(epoch: running.assignedThrough)
        let lost = table.notRunning(session: session, running: Set(running.jobs), through: running.assignedThrough)
        guard !lost.isEmpty else { return }
        // The core's: a job's loss awaits the store, and a heartbeat does not wait for it.
        Task { await self.notRunning(lost) }
    }

    /// Jobs a heartbeat found no longer run by their runner: lost.
    func notRunning(_ jobs: [(jobID: Int64, why: String)]) async {
        for (jobID, why) in jobs {
            logger.warning("the runner no longer runs a job it holds", metadata: ["job.id": "\(jobID)"])
            await lost(jobID: jobID, why: why)
        }
    }

    /// Revokes certificates by name or fingerprint (64 hex digits) and closes the sessions
    /// of what it revoked; returns how many it closed.
    public nonisolated func revoke(name: String?, fingerprint: String?, as principal: Principal) async throws -> Int {
        let revocation = try await access.revoke(name: name, fingerprint: fingerprint, as: principal)
        let closed = closeRevokedSessions()
        logger.warning("certificate revoked", metadata: ["name": "\(revocation.name ?? "-")",
                                                         "fingerprint": "\(revocation.fingerprint ?? "-")",
                                                         "sessions.closed": "\(closed)"])
        return closed
    }

    /// Closes the sessions of revoked certificates; returns how many.
    nonisolated func closeRevokedSessions() -> Int {
        sessions.closeRevoked { access.isRevoked($0) }
    }
}
