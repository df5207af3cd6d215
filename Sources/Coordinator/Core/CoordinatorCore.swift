import Foundation
import Logging
import Wire

/// The coordinator's core: sessions, queue, leases, job lifecycle, logs, artifacts and
/// subscriptions, behind an API of its own types. It knows nothing of sockets or encodings:
/// a front (the binary protocol, the HTTP API) opens a session for each caller with the
/// caller's `Principal` and an `EventSink`, calls the core, and renders what it returns. Every
/// call is authorized here (`Authorization`) and its input checked here, so fronts cannot
/// differ.
///
/// A facade over parts that each own their state:
/// - `JobLifecycle` (an actor): every job from the queue to its stored end: placement,
///   leases, dispatch, ends, returns to the queue, cancels, runners;
/// - `LogPipeline` (an actor): log bytes in group commits;
/// - `ArtifactUploads` (an actor): open uploads;
/// - `SessionRegistry` and `AccessControl`: who is connected, tokens and revocations;
/// - `LiveEvents` and `Watches`: who watches what, and the watches themselves;
/// - `Catalog`: what the store answers alone (projects, pipelines, runs, artifacts, logs);
/// - `SignalOutbox`: signals for the other coordinators of a cluster.
public final class CoordinatorCore: Sendable {
    let store: any CoordinatorStore
    let logStore: any LogStore
    let logger: Logger
    public let limits: CoordinatorLimits
    /// Every job the coordinator handles (`JobLifecycle`).
    let jobs: JobLifecycle
    /// Log chunks on their way to storage (`LogPipeline`).
    let logPipeline: LogPipeline
    /// Who watches what (`LiveEvents`), and the watches themselves (`Watches`).
    let live = LiveEvents()
    let watches: Watches
    /// Every open session, by the id the core gave it (`SessionRegistry`).
    let sessions = SessionRegistry()
    /// Open artifact uploads (`ArtifactUploads`).
    let uploads: ArtifactUploads
    /// Projects, pipelines, runs, artifacts and stored logs, answered from the store alone.
    public let catalog: Catalog
    /// Where the HTTP front is reached, for webhook URLs.
    let httpBase = HTTPBase()
    /// The store as one of a cluster's (several coordinators on one database); nil on SQLite.
    let cluster: (any ClusterStore)?
    /// Signals for the other coordinators of the cluster, waiting to be sent.
    let signals = SignalOutbox()
    /// Tokens and revoked certificates: what a front checks a caller by.
    public let access: AccessControl
    /// Projects' secrets (`Secrets`), sealed with this key; nil: the coordinator has none.
    let secretBox: SecretBox?

    public init(store: any CoordinatorStore, artifacts: any ArtifactStore, logs: any LogStore,
                limits: CoordinatorLimits = CoordinatorLimits(), secretBox: SecretBox? = nil,
                logger: Logger = Logger(label: "heddle.coordinator")) {
        self.store = store
        self.secretBox = secretBox
        self.logStore = logs
        self.limits = limits
        self.logger = logger
        self.cluster = store as? any ClusterStore
        self.access = AccessControl(store: store, signals: cluster == nil ? nil : signals, logger: logger)
        self.uploads = ArtifactUploads(store: store, artifactStore: artifacts, logger: logger)
        self.logPipeline = LogPipeline(store: store, logStore: logs, cluster: store as? any ClusterStore,
                                       maximumLogBytes: limits.maximumLogBytes, logger: logger)
        self.watches = Watches(live: live, store: store, logStore: logs, inCluster: store is any ClusterStore,
                               maximumLogBytes: limits.maximumLogBytes, logger: logger)
        let lineIndexes = LogLineIndexes()
        self.catalog = Catalog(store: store, artifactStore: artifacts, logStore: logs, limits: limits, logger: logger,
                               lineIndexes: lineIndexes)
        self.jobs = JobLifecycle(store: store, logStore: logs, logPipeline: logPipeline, uploads: uploads, live: live,
                                 sessions: sessions, signals: signals, limits: limits, secretBox: secretBox,
                                 lineIndexes: lineIndexes, logger: logger)
    }

    /// Projects' secrets (`Secrets`).
    public var secrets: Secrets {
        Secrets(store: store, box: secretBox, logger: logger)
    }

    /// Jobs' caches (`Caches`).
    public var caches: Caches {
        Caches(store: store, jobs: jobs, uploads: uploads, artifactStore: catalog.artifactStore,
               maximumBytes: limits.maximumCacheBytes, maximumChunk: limits.maximumArtifactChunk, logger: logger)
    }

    /// Forge deliveries: what starts what (`Webhooks`).
    public var webhooks: Webhooks {
        Webhooks(core: self, catalog: catalog, base: httpBase)
    }

    /// A core keeping artifacts and logs in files under `directory` (`blobs/`, `uploads/`,
    /// `logs/`).
    public convenience init(store: any CoordinatorStore, directory: String, limits: CoordinatorLimits = CoordinatorLimits(),
                secretBox: SecretBox? = nil, logger: Logger = Logger(label: "heddle.coordinator")) throws {
        // Segments of an eighth of the size limit, so the limit drops whole segments finely.
        let logs = LogFiles(directory: "\(directory)/logs",
                            segmentSize: min(8 << 20, max(4096, limits.maximumLogBytes / 8)))
        self.init(store: store, artifacts: try BlobStore(directory: directory), logs: logs, limits: limits, secretBox: secretBox,
                  logger: logger)
    }

    /// Loads revocations, tokens, drained runners and (on SQLite) the queue and running jobs
    /// from the store (`JobLifecycle.recover`). Jobs that were running keep their lease for one
    /// lease period, for their runners to come back and reattach them.
    ///
    /// In a cluster, the queue stays in the database (dispatch claims from it), and running
    /// jobs are left to their holders: a job whose holder is gone is taken over by the sweep
    /// (`clusterTick`), or by the coordinator its runner comes back to.
    public func recover(now: ContinuousClock.Instant = .now) async throws {
        try await cluster?.beat(othersWithin: .zero)
        try await access.load()
        try await jobs.recover(now: now)
    }

    // MARK: sessions

    /// Opens a session for a caller and returns its id; refused when the caller's certificate
    /// is revoked. Events for the session go to `sink`; `close` ends it from the core's side
    /// (a revocation, a log failure).
    public func openSession(_ principal: Principal, sink: any EventSink,
                            close: @escaping @Sendable () -> Void) async throws(CoordinatorError) -> UInt64 {
        try access.checkNotRevoked(principal)
        return sessions.open(.init(principal: principal, sink: sink, close: close))
    }

    /// The caller of an open session, if it may do `action`.
    func authorize(session: UInt64, _ action: Action) throws -> Principal {
        try sessions.authorize(session, action)
    }

    func sink(of session: UInt64) -> (any EventSink)? {
        sessions[session]?.sink
    }

    /// A session ended: its watches are dropped; a runner's jobs keep their lease for a while
    /// (see `expireLeases`) and their uploads stay open, for the runner to come back.
    public func sessionClosed(session: UInt64) async {
        endWatches(session: session)  // each watch then removes itself
        live.removeQueueWatchers(session: session)
        sessions.remove(session)
        await jobs.sessionClosed(session: session)
    }

    /// A heartbeat from `session`. From a runner, it may list the jobs the runner runs: a job
    /// leased to this session that the runner has received but no longer lists is lost now,
    /// not after a lease that its runner keeps renewing.
    public func heartbeat(session: UInt64, running: RunningJobs? = nil) async {
        await jobs.heartbeat(session: session, running: running)
    }

    /// Jobs whose runner stayed away past the lease: back to the front of the queue when the
    /// pipeline allows a retry, failed with "runner lost" otherwise. Then the ends and
    /// requeues the store refused before are written again.
    public func expireLeases(now: ContinuousClock.Instant = .now) async {
        await jobs.expireLeases(now: now)
    }

    /// Revokes certificates by name or fingerprint (64 hex digits) and closes the sessions
    /// of what it revoked; returns how many it closed.
    public func revoke(name: String?, fingerprint: String?, as principal: Principal) async throws -> Int {
        let revocation = try await access.revoke(name: name, fingerprint: fingerprint, as: principal)
        let closed = closeRevokedSessions()
        logger.warning("certificate revoked", metadata: ["name": "\(revocation.name ?? "-")",
                                                         "fingerprint": "\(revocation.fingerprint ?? "-")",
                                                         "sessions.closed": "\(closed)"])
        return closed
    }

    /// Closes the sessions of revoked certificates; returns how many.
    func closeRevokedSessions() -> Int {
        sessions.closeRevoked { access.isRevoked($0) }
    }
}
