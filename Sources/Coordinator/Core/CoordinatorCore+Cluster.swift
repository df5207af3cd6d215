import Foundation

/// Reads of the queue from the store, after another coordinator changed it: at most one at a
/// time, and another once it ends when more changes came meanwhile.
struct QueueResync {
    var running = false
    var again = false
    /// Jobs this coordinator queued while a read was on its way (the read may not hold them).
    var queuedMeanwhile: [Int64: Scheduler.QueuedJob] = [:]
}

/// One coordinator of several on one database (`ClusterStore`). What decides is in the store:
/// a claim takes a job only while it is queued, and every write about a running job is fenced
/// by its epoch and its holder. What this adds is keeping each coordinator's working copy
/// close to the store and telling the others what changed:
///
/// - the queue is read again when another coordinator signals a change (and every
///   `resyncPeriod` in case a signal was missed); a job placed here from a stale copy is
///   simply not claimed;
/// - drains, revocations and tokens are read again on a signal (and periodically);
/// - a cancel of a job held elsewhere is signalled to its holder, which stops it;
/// - every coordinator beats; one at a time sweeps for running jobs whose holder stopped
///   beating and takes them over, giving their runners a lease period to come back;
/// - a runner that comes back to another coordinator is adopted there with its jobs.
extension CoordinatorCore {
    /// How often the queue and the shared state are read again without a signal.
    static let resyncPeriod: Duration = .seconds(10)

    /// Tells the other coordinators what changed here: the signal waits in `signals`, in
    /// order and coalesced, for `ClusterMonitor`'s one sending loop.
    func tell(_ signal: ClusterSignal) {
        guard cluster != nil else { return }
        switch signal {
        case .claimed(let ids) where ids.isEmpty: return
        case .run(let ids) where ids.isEmpty: return
        default: break
        }
        signals.add(signal)
    }

    /// Queues a job here (and remembers it while a queue read is on its way).
    func enqueue(_ job: Scheduler.QueuedJob) {
        scheduler.enqueue(job)
        if resync.running { resync.queuedMeanwhile[job.id] = job }
    }

    /// Applies a signal from another coordinator.
    public func apply(_ signal: ClusterSignal) async {
        switch signal {
        case .queue:
            await resyncQueue()
        case .moved(let jobID, let position):
            if scheduler.isQueued(jobID) { scheduler.reposition(jobID, to: position) }
            if resync.running { resync.again = true }
            _ = try? await moved(jobID)  // to this coordinator's queue watchers
        case .claimed(let jobIDs):
            scheduler.removeQueued(Set(jobIDs))
        case .state:
            await reloadSharedState()
        case .cancel(let jobID, let reason):
            stopHeld(jobID: jobID, reason: reason)
        case .run(let runIDs):
            live.readAgain(runIDs: Set(runIDs))
        case .resync:
            await resyncQueue()
            await reloadSharedState()
            live.readAgain(runIDs: nil)
        }
    }

    /// Reads the queued jobs from the store and makes them this coordinator's queue, then
    /// dispatches. Jobs leased here are not queued, whatever the read said.
    public func resyncQueue() async {
        guard cluster != nil else { return }
        if resync.running {
            resync.again = true
            return
        }
        resync.running = true
        defer { resync = QueueResync() }
        repeat {
            resync.again = false
            resync.queuedMeanwhile = [:]
            let jobs: [JobRecord]
            do {
                jobs = try await store.activeJobs()
            } catch {
                logger.warning("cannot read the queue", metadata: ["error": "\(error)"])
                return
            }
            var queued = Dictionary(jobs.filter { $0.status == .queued && table[$0.id] == nil }.map {
                ($0.id, Scheduler.QueuedJob(id: $0.id, labels: Set($0.labels), position: $0.position))
            }, uniquingKeysWith: { $1 })
            for (id, job) in resync.queuedMeanwhile where queued[id] == nil && table[id] == nil { queued[id] = job }
            scheduler.replaceQueue(Array(queued.values))
            await dispatch()
        } while resync.again
    }

    /// Reads drains, revocations and tokens again: what another coordinator changed holds
    /// here too. Sessions of certificates revoked elsewhere are closed.
    public func reloadSharedState() async {
        guard cluster != nil else { return }
        do {
            let drainedNow = try await store.drainedRunners()
            try await access.load()
            // Decided on what was read, with no await from here.
            drained = drainedNow
            for (session, runner) in runners {
                scheduler.setDrained(session, drained.contains(runner.name))
            }
            _ = closeRevokedSessions()
        } catch {
            logger.warning("cannot read drains, revocations and tokens", metadata: ["error": "\(error)"])
        }
        await dispatch()
    }

    /// A cancel decided by another coordinator, of a job held here: stop it on its runner.
    func stopHeld(jobID: Int64, reason: String) {
        switch table.cancel(jobID: jobID, reason: reason) {
        case .stop(let session, let epoch):
            sink(of: session)?.send(.stopJob(jobID: jobID, epoch: epoch, reason: reason, abandon: false))
            logger.info("stop pushed", metadata: ["job.id": "\(jobID)", "from": "another coordinator"])
        case .stopOnReattach, .deferred, nil:
            break
        }
    }

    /// Takes over the running jobs of coordinators that stopped beating (their runners have
    /// one lease period to come back, here or to any coordinator, before the jobs are lost),
    /// and takes back jobs whose runners are connected here should another coordinator have
    /// taken them. Called every half heartbeat interval; the beats are `ClusterMonitor`'s.
    public func clusterTick(now: ContinuousClock.Instant = .now) async {
        guard let cluster else { return }
        let wallNow = Date.nowMilliseconds
        do {
            // Only runners that beat here lately: a runner cut off from this coordinator (its
            // connection not yet seen closed) may have reattached its jobs elsewhere.
            let recent = wallNow - Int64(limits.heartbeatInterval * 3 / 2 / .milliseconds(1))
            let connected = table.jobIDs.compactMap { id -> LeaseRef? in
                guard let lease = table[id], let session = lease.session,
                      let runner = runners[session], runner.lastHeartbeat >= recent else { return nil }
                return LeaseRef(jobID: id, epoch: lease.epoch)
            }
            for id in try await cluster.reclaim(connected) {
                logger.warning("job taken back: its runner is connected here", metadata: ["job.id": "\(id)"])
            }
            // Silent for two and a half heartbeat intervals (it beats every half interval): gone.
            // Found within three intervals, as a runner's silence is.
            let orphans = try await cluster.adoptOrphans(silentFor: limits.heartbeatInterval * 5 / 2)
            for job in orphans where table[job.id] == nil {
                scheduler.removeQueued(job.id)
                table.restore(job: job, deadline: now.advanced(by: limits.lease))
                await uploads.load(jobID: job.id)
                logger.warning("job taken over from a silent coordinator", metadata: ["job.id": "\(job.id)", "runner": "\(job.runner ?? "-")"])
            }
        } catch {
            logger.warning("cluster housekeeping failed", metadata: ["error": "\(error)"])
        }
    }

    /// A write about a job leased here to a connected runner (`attached`: known already, as
    /// when the lease just ended), refused by the store because another coordinator took the
    /// job over for an orphan (this one was slow to beat): the job is taken back and the
    /// write tried once more.
    func heldHere<T: Sendable>(_ ref: LeaseRef, attached: Bool = false, _ write: () async throws -> T) async throws -> T {
        do {
            return try await write()
        } catch let error as StoreError where error.code == .staleLease && cluster != nil {
            let connected = attached || (table[ref.jobID].map { $0.epoch == ref.epoch && $0.session != nil } ?? false)
            guard connected, let cluster, try await cluster.reclaim([ref]).contains(ref.jobID) else { throw error }
            logger.warning("job taken back: its runner is connected here", metadata: ["job.id": "\(ref.jobID)"])
            return try await write()
        }
    }

    /// A runner greeting this coordinator lists jobs no lease here knows: those it holds the
    /// current lease of (by the store) are taken over from the coordinator that held them.
    func adoptListed(_ running: [LeaseRef], runner: String) async {
        guard let cluster else { return }
        for ref in running where table[ref.jobID] == nil {
            do {
                guard let job = try await cluster.adopt(jobID: ref.jobID, epoch: ref.epoch, runner: runner),
                      table[ref.jobID] == nil else { continue }
                scheduler.removeQueued(job.id)
                table.restore(job: job, deadline: ContinuousClock.now.advanced(by: limits.lease))
                await uploads.load(jobID: job.id)
                logger.info("job taken over: its runner came here", metadata: ["job.id": "\(job.id)", "runner": "\(runner)"])
            } catch {
                logger.warning("cannot take over a job", metadata: ["job.id": "\(ref.jobID)", "error": "\(error)"])
            }
        }
    }
}
