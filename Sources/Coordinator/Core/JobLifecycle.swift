import Foundation
import Logging
import Wire

/// Every job this coordinator handles, from the queue to its stored end: placement
/// (`Scheduler`), each job past the queue in one phase (`JobTable`), the runners that take them,
/// dispatch, the ends and returns to the queue the store must settle, cancels, and what a
/// runner reports about a held job. `CoordinatorCore`, the facade the fronts call, checks
/// callers and input and reads the store before it comes here.
///
/// A job stays in the `JobTable`, in an in-between phase, until the store has settled where it
/// went: a command that arrives during a store write finds it there and is applied when the
/// phase settles, so the actor's reentrancy at store writes can neither hand one job to two
/// runners nor lose a cancel or an end.
actor JobLifecycle {
    let store: any CoordinatorStore
    /// The store as one of a cluster's (several coordinators on one database); nil on SQLite.
    let cluster: (any ClusterStore)?
    let logStore: any LogStore
    let logPipeline: LogPipeline
    let uploads: ArtifactUploads
    let live: LiveEvents
    let sessions: SessionRegistry
    let signals: SignalOutbox
    let limits: CoordinatorLimits
    let logger: Logger
    /// Opens the secrets a claimed job's nodes name, for its assignment; nil: no key.
    let secretBox: SecretBox?
    /// The line indexes of logs being read, extended with each commit's bytes.
    let lineIndexes: LogLineIndexes

    var scheduler = Scheduler()
    /// Every job past the queue, each in one phase (`JobTable`).
    var table: JobTable
    /// Runner sessions by session id.
    var runners: [UInt64: RunnerSession] = [:]
    /// Names of drained runners (durable in the store).
    var drained: Set<String> = []
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

    init(store: any CoordinatorStore, logStore: any LogStore, logPipeline: LogPipeline, uploads: ArtifactUploads,
         live: LiveEvents, sessions: SessionRegistry, signals: SignalOutbox, limits: CoordinatorLimits,
         secretBox: SecretBox?, lineIndexes: LogLineIndexes, logger: Logger) {
        self.store = store
        self.secretBox = secretBox
        self.lineIndexes = lineIndexes
        self.cluster = store as? any ClusterStore
        self.logStore = logStore
        self.logPipeline = logPipeline
        self.uploads = uploads
        self.live = live
        self.sessions = sessions
        self.signals = signals
        self.limits = limits
        self.logger = logger
        self.table = JobTable(lastEpoch: Date.nowMilliseconds)
    }

    /// Loads drained runners and, on SQLite, the queue and the running jobs (each keeping its
    /// lease for one lease period, for its runner to come back and reattach it) and their open
    /// uploads. In a cluster the queue stays in the database and running jobs with their holders.
    func recover(now: ContinuousClock.Instant) async throws {
        drained = try await store.drainedRunners()
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

    func sink(of session: UInt64) -> (any EventSink)? {
        sessions[session]?.sink
    }

    func publish(runID: Int64, attempt: Int, _ event: WatchEvent) {
        live.publish(runID: runID, attempt: attempt, event)
    }

    /// Tells the other coordinators what changed here (`SignalOutbox`); nothing on SQLite.
    func tell(_ signal: ClusterSignal) {
        if cluster != nil { signals.tell(signal) }
    }

    /// Queues a job in the scheduler; in a cluster the database is the queue, and the job is
    /// there already.
    func enqueue(_ job: Scheduler.QueuedJob) {
        guard cluster == nil else { return }
        scheduler.enqueue(job)
    }

    /// A runner's session ended: its jobs keep their lease for a while (see `expireLeases`)
    /// and their uploads stay open, for the runner to come back.
    func sessionClosed(session: UInt64) async {
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
    func heartbeat(session: UInt64, running: RunningJobs?) {
        guard runners[session] != nil else { return }
        runners[session]?.lastHeartbeat = Date.nowMilliseconds
        guard let running else { return }
        table.seen(epoch: running.assignedThrough)
        let lost = table.notRunning(session: session, running: Set(running.jobs), through: running.assignedThrough)
        guard !lost.isEmpty else { return }
        // The lifecycle's: a job's loss awaits the store, and a heartbeat does not wait for it.
        Task { await self.notRunning(lost) }
    }

    /// Jobs a heartbeat found no longer run by their runner: lost.
    func notRunning(_ jobs: [(jobID: Int64, why: String)]) async {
        for (jobID, why) in jobs {
            logger.warning("the runner no longer runs a job it holds", metadata: ["job.id": "\(jobID)"])
            await lost(jobID: jobID, why: why)
        }
    }

    /// The present state, for `CoordinatorCore.gauges`.
    func counts() -> (queued: Int, running: Int, runners: Int, drained: Int) {
        (scheduler.queuedCount, table.count, runners.count, runners.values.filter { drained.contains($0.name) }.count)
    }
}
