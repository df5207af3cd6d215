import Foundation

/// One coordinator of several on one database (`ClusterStore`). The database is the queue:
/// no coordinator holds a copy of it. A coordinator claims for its runners' free slots from
/// the store (`dispatch`), every write about a running job is fenced by its epoch and its
/// holder, and signals only wake:
///
/// - jobs queued anywhere wake the coordinators with free slots to claim (and every half
///   heartbeat interval they claim anyway, should a signal have been missed);
/// - drains, revocations and tokens are read again on a signal (and periodically);
/// - a cancel of a job held elsewhere is signalled to its holder, which stops it;
/// - every coordinator beats; one at a time sweeps for running jobs whose holder stopped
///   beating and takes them over, giving their runners a lease period to come back;
/// - a runner that comes back to another coordinator is adopted there with its jobs.
extension JobLifecycle {
    /// A cancel decided by another coordinator, of a job held here: stop it on its runner. A
    /// job a claim on its way here may have taken is cancelled when the claim is back.
    func stopHeld(jobID: Int64, reason: String) {
        switch table.cancel(jobID: jobID, reason: reason) {
        case .stop(let session, let epoch):
            sink(of: session)?.send(.stopJob(jobID: jobID, epoch: epoch, reason: reason, abandon: false))
            logger.info("stop pushed", metadata: ["job.id": "\(jobID)", "from": "another coordinator"])
        case nil:
            if claimCancels != nil { claimCancels?[jobID] = reason }
        case .stopOnReattach, .deferred:
            break
        }
    }

    /// Takes over the running jobs of coordinators that stopped beating (their runners have
    /// one lease period to come back, here or to any coordinator, before the jobs are lost),
    /// and takes back jobs whose runners are connected here should another coordinator have
    /// taken them. Called every half heartbeat interval; the beats are `ClusterMonitor`'s.
    func clusterTick(now: ContinuousClock.Instant = .now) async {
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
                table.restore(job: job, deadline: now.advanced(by: limits.lease))
                await uploads.load(jobID: job.id)
                logger.warning("job taken over from a silent coordinator", metadata: ["job.id": "\(job.id)", "runner": "\(job.runner ?? "-")"])
            }
        } catch {
            logger.warning("cluster housekeeping failed", metadata: ["error": "\(error)"])
        }
        // Claims for free slots, should a wake-up have been missed.
        await dispatch()
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
                table.restore(job: job, deadline: ContinuousClock.now.advanced(by: limits.lease))
                await uploads.load(jobID: job.id)
                logger.info("job taken over: its runner came here", metadata: ["job.id": "\(job.id)", "runner": "\(runner)"])
            } catch {
                logger.warning("cannot take over a job", metadata: ["job.id": "\(ref.jobID)", "error": "\(error)"])
            }
        }
    }
}
