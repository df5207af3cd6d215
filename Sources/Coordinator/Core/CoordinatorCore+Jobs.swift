import Foundation

/// A job's life on a runner: claimed, started, its nodes reported, finished or lost.
extension CoordinatorCore {
    /// Hands queued jobs to runners with free capacity and matching labels: every job the
    /// scheduler places now is claimed in one store transaction.
    ///
    /// One dispatch at a time: one asked for while another stores its claims runs after it.
    /// So a runner receives its assignments in the order of their epochs, and a heartbeat
    /// listing an epoch proves every earlier assignment to it arrived (`Leases.notRunning`).
    func dispatch() async {
        if dispatching.running {
            dispatching.again = true
            return
        }
        dispatching.running = true
        defer { dispatching = (false, false) }
        repeat {
            dispatching.again = false
            if await dispatchPlaced() { dispatching.again = true }
        } while dispatching.again
    }

    /// Claims and assigns what the scheduler places now; true when some placed jobs were no
    /// longer queued (their runners' slots are free again).
    private func dispatchPlaced() async -> Bool {
        var claims: [JobClaim] = []
        for placed in scheduler.assign() {
            guard let runner = runners[placed.runner] else { continue }
            // Leased here already (a job taken over while a stale queue still listed it).
            guard leases[placed.jobID] == nil else {
                scheduler.finish(placed.jobID, on: placed.runner)
                continue
            }
            let epoch = leases.claim(jobID: placed.jobID, session: placed.runner, runner: runner.name,
                                     now: Date.nowMilliseconds)
            claims.append(JobClaim(jobID: placed.jobID, runner: runner.name, epoch: epoch))
        }
        guard !claims.isEmpty else { return false }
        let now = Date.nowMilliseconds
        let claimed: [ClaimedJob?]
        do {
            claimed = try await store.claimJobs(claims, now: now)
        } catch let error as StoreError where error.code == .unavailable && cluster != nil {
            // The database is out of reach (restarting, fail-over): nothing was claimed. The
            // jobs stay queued there and come back with the queue read that follows its return.
            logger.warning("cannot claim jobs now", metadata: ["jobs": "\(claims.map(\.jobID))", "error": "\(error)"])
            for claim in claims where leases[claim.jobID]?.epoch == claim.epoch {
                if let session = leases.end(jobID: claim.jobID)?.session { scheduler.finish(claim.jobID, on: session) }
            }
            return false
        } catch {
            logger.error("assignment failed", metadata: ["jobs": "\(claims.map(\.jobID))", "error": "\(error)"])
            for claim in claims {
                await finish(jobID: claim.jobID, status: .failed, reason: "coordinator error: \(error)", fenced: false)
            }
            return false
        }
        tell(.claimed(jobIDs: claimed.compactMap { $0?.job.id }))
        tell(.run(runIDs: Array(Set(claimed.compactMap { $0?.run.id }))))
        var unclaimed = 0
        for (claim, record) in zip(claims, claimed) {
            guard let record else {
                // Claimed through another coordinator, or cancelled, since this one read the queue.
                logger.info("a placed job was no longer queued", metadata: ["job.id": "\(claim.jobID)"])
                if leases[claim.jobID]?.epoch == claim.epoch, let session = leases.end(jobID: claim.jobID)?.session {
                    scheduler.finish(claim.jobID, on: session)
                }
                unclaimed += 1
                continue
            }
            let job = record.job
            let run = record.run
            leases.claimed(jobID: job.id, runID: run.id, attempt: job.attempt, name: job.name,
                           nodes: record.nodes.map { ($0.name, $0.status) })
            let assignment = JobAssignment(
                lease: LeaseRef(jobID: job.id, epoch: claim.epoch), attempt: job.attempt, runID: run.id,
                project: run.project, pipeline: run.pipeline, jobName: job.name, branch: run.branch,
                repository: record.repository, commit: run.commit,
                env: ["HEDDLE_RUN_ID": String(run.id), "HEDDLE_ATTEMPT": String(job.attempt),
                      "HEDDLE_JOB": job.name, "HEDDLE_BRANCH": run.branch,
                      "HEDDLE_PROJECT": run.project, "HEDDLE_PIPELINE": run.pipeline],
                nodes: record.nodes)
            // Too large for one frame (a pipeline stored before pushes were checked for this):
            // the job fails for that reason; its runner is not to blame.
            guard assignment.estimatedBytes <= limits.maximumFrameLength else {
                await finish(jobID: job.id, status: .failed, reason: "the job is too large to assign: about \(assignment.estimatedBytes) bytes, over the frame limit of \(limits.maximumFrameLength)")
                continue
            }
            logger.info("job assigned", metadata: ["job.id": "\(job.id)", "run.id": "\(run.id)", "runner": "\(claim.runner)"])
            // The runner may have gone while the claim was stored: its lease then runs out.
            if let session = leases[job.id]?.session { sink(of: session)?.send(.assignment(assignment)) }
            publish(runID: run.id, attempt: job.attempt, .job(jobEvent(job, status: .running, runner: claim.runner, at: now)))
            var entry = queueEntry(job, run: run)
            entry.status = .running
            entry.runner = claim.runner
            publishQueue(.claimed, entry)
        }
        // Their runners' slots are free again: place the next jobs.
        return unclaimed > 0
    }

    /// Jobs whose runner stayed away past the lease: back to the front of the queue when the
    /// pipeline allows a retry, failed with "runner lost" otherwise.
    public func expireLeases(now: ContinuousClock.Instant = .now) async {
        for (jobID, why) in leases.expired(at: now) {
            await lost(jobID: jobID, why: why)
        }
    }

    func lost(jobID: Int64, why: String) async {
        guard let lease = leases[jobID] else { return }
        // A cancel was decided: the job ends cancelled, not requeued, whether or not its runner
        // heard of it.
        if let reason = lease.cancelReason {
            await finish(jobID: jobID, status: .cancelled, reason: "\(reason) (\(why) before it confirmed)")
            return
        }
        do {
            if let job = try await store.job(id: jobID), job.lostCount < job.retryLost {
                _ = leases.end(jobID: jobID)
                logs.forget(jobID: jobID)
                await discardUploads(jobID: jobID)
                await logBarrier()  // no log write of the lost execution lands after its log is gone
                let front = (scheduler.queue.first?.position ?? 1) - 1
                let reason = "requeued (\(job.lostCount + 1) of \(job.retryLost)): \(why)"
                let run = try await store.requeueLostJob(id: jobID, position: front, reason: reason, now: Date.nowMilliseconds)
                try await logStore.removeLogs(jobID: jobID)
                enqueue(.init(id: jobID, labels: Set(job.labels), position: front))
                logger.warning("job requeued", metadata: ["job.id": "\(jobID)", "reason": "\(reason)"])
                tell(.queue)
                if let updated = try await store.job(id: jobID) { publishQueue(.queued, queueEntry(updated, run: run)) }
                await dispatch()
                return
            }
        } catch let error as StoreError where error.code == .staleLease {
            // Another coordinator of the cluster holds the job now (its runner went there).
            logger.info("a job whose runner left is held elsewhere now", metadata: ["job.id": "\(jobID)"])
            await finish(jobID: jobID, status: .failed, reason: why)
            return
        } catch {
            logger.error("cannot requeue a lost job", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
        await finish(jobID: jobID, status: .failed, reason: why)
    }

    /// Finishes a job (stored in one transaction with its run's status), frees its runner's
    /// slot, tells watchers, and dispatches more work.
    /// The store write is fenced by the lease's epoch, unless `fenced` is false (a claim that
    /// never reached the store).
    func finish(jobID: Int64, status: Status, reason: String, fenced: Bool = true) async {
        let lease = leases.end(jobID: jobID)
        logs.finished(jobID: jobID)
        if let session = lease?.session { scheduler.finish(jobID, on: session) }
        scheduler.removeQueued(jobID)
        await discardUploads(jobID: jobID)
        do {
            let now = Date.nowMilliseconds
            let finish = { [store] in
                try await store.finishJob(id: jobID, epoch: fenced ? lease?.epoch : nil, status: status, reason: reason, now: now)
            }
            // A job whose runner is connected here is this coordinator's, should a sweep have
            // taken it meanwhile.
            let (run, record) = if let lease, lease.session != nil {
                try await heldHere(LeaseRef(jobID: jobID, epoch: lease.epoch), attached: true, finish)
            } else {
                try await finish()
            }
            logger.info("job finished", metadata: ["job.id": "\(jobID)", "status": "\(status.rawValue)",
                                                   "reason": "\(reason)"])
            CoreMetrics.jobFinished(status)
            tell(.run(runIDs: [run.id]))
            var event = jobEvent(record, status: status, runner: record.runner, at: record.startedAt ?? now)
            event.finishedAt = now
            event.reason = reason
            publish(runID: run.id, attempt: record.attempt, .job(event))
            var entry = queueEntry(record, run: run)
            entry.status = status
            publishQueue(status == .cancelled ? .cancelled : .finished, entry)
            if run.status.isFinished {
                publish(runID: run.id, attempt: run.attempt, .end(run))
            }
        } catch let error as StoreError where error.code == .staleLease {
            logger.info("a job's end was not stored: its lease is no longer this coordinator's",
                        metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        } catch {
            logger.error("cannot store a job's end", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
        await dispatch()
    }

    func jobEvent(_ job: JobRecord, status: Status, runner: String?, at: Int64?) -> JobEvent {
        JobEvent(id: job.id, name: job.name, status: status, runner: runner, startedAt: at, labels: job.labels,
                 attempt: job.attempt)
    }

    /// Checks that a write about a job comes from a runner's session holding the job's
    /// current lease.
    func lease(_ ref: LeaseRef, session: UInt64) throws -> Leases.Lease {
        _ = try authorize(session: session, .runJobs)
        return try leases.check(ref, session: session)
    }

    /// Loads a running job's nodes into memory once (a claim sets them; after a restart the
    /// first write about the job reads them).
    func loadNodes(of jobID: Int64) async throws {
        guard leases[jobID]?.nodes == nil else { return }
        let nodes = try await store.nodes(jobIDs: [jobID]).map { (name: $0.name, status: $0.status) }
        leases.loadNodes(nodes, of: jobID)
    }

    /// Refuses a write about a node the job does not have.
    func checkNode(_ node: String, of jobID: Int64) async throws {
        try await loadNodes(of: jobID)
        guard leases[jobID]?.nodes?.contains(where: { $0.name == node }) == true else {
            throw CoordinatorError.invalid("job \(jobID) has no node '\(node)'")
        }
    }

    /// A node started or ended. Log bytes the runner sent before are committed first.
    public func nodeUpdate(session: UInt64, _ report: NodeReport) async throws {
        _ = try lease(report.job, session: session)
        try await checkNode(report.node, of: report.job.jobID)
        guard let status = report.status, status != .queued else {
            throw CoordinatorError.invalid("node status \(report.status?.rawValue ?? "unknown") is not a node status")
        }
        let at = report.at ?? Date.nowMilliseconds
        // Log bytes the runner sent before this update are committed (and shown) first, so a
        // follower never sees a node end before its last output.
        await logBarrier()
        // Checked again after the awaits: the lease may have gone meanwhile.
        let job = try lease(report.job, session: session)
        try await heldHere(report.job) {
            try await store.updateNode(jobID: report.job.jobID, epoch: job.epoch, node: report.node, status: status,
                                       exitCode: report.exitCode, at: at)
        }
        leases.setNode(report.node, of: report.job.jobID, to: status)
        var node = NodeEvent(name: report.node, status: status, exitCode: report.exitCode)
        if status == .running { node.startedAt = at } else { node.finishedAt = at }
        publish(runID: job.runID, attempt: job.attempt,
                .job(JobEvent(id: report.job.jobID, name: job.name, status: .running, runner: job.runner,
                              attempt: job.attempt, nodes: [node])))
    }

    /// The job's workspace is ready, at a commit (hex, or empty without a repository).
    public func jobStarted(session: UInt64, _ start: JobStart) async throws {
        let job = try lease(start.job, session: session)
        guard start.commit.count <= 64, start.commit.allSatisfy({ $0.isHexDigit }) else {
            throw CoordinatorError.invalid("commit '\(start.commit)' is not a hex commit id")
        }
        try await heldHere(start.job) { try await store.setJobCommit(id: start.job.jobID, epoch: job.epoch, commit: start.commit) }
    }

    /// The runner's result for a job. The stored result follows the job's nodes
    /// (`Outcome.jobResult`); log bytes sent before it are committed and acknowledged first.
    /// The same result again (its answer was lost with a connection) is accepted and changes
    /// nothing.
    public func jobFinished(session: UInt64, _ result: JobResult) async throws {
        _ = try authorize(session: session, .runJobs)
        if try await isDecided(result.job) { return }
        _ = try leases.check(result.job, session: session)
        let reported = try Self.reportedResult(result.status)
        // From here the runner may no longer list the job in its heartbeats.
        leases.finishing(jobID: result.job.jobID, epoch: result.job.epoch, true)
        do {
            try await finishReported(session: session, result.job, reported: reported, reason: result.reason)
        } catch {
            leases.finishing(jobID: result.job.jobID, epoch: result.job.epoch, false)
            throw error
        }
    }

    /// Whether the job's result is stored already, from this lease.
    func isDecided(_ ref: LeaseRef) async throws -> Bool {
        guard leases[ref.jobID] == nil, let job = try await store.job(id: ref.jobID) else { return false }
        return job.status.isFinished && job.epoch == ref.epoch
    }

    static func reportedResult(_ status: Status?) throws -> Status {
        guard let status, status == .succeeded || status == .failed || status == .cancelled else {
            throw CoordinatorError.invalid(
                "a job finishes as succeeded, failed or cancelled, not \(status?.rawValue ?? "an unknown status")")
        }
        return status
    }

    func finishReported(session: UInt64, _ ref: LeaseRef, reported: Status, reason: String) async throws {
        // Log bytes sent before the JobFinish are committed (and acknowledged) while the job
        // still holds its lease; node updates sent before it are stored already.
        await logBarrier()
        try await loadNodes(of: ref.jobID)
        // Checked again after the awaits: the lease may have gone meanwhile.
        let nodes = try lease(ref, session: session).nodes ?? []
        let (status, why) = Outcome.jobResult(reported: reported, reason: reason, nodes: nodes)
        if status != reported {
            logger.warning("job result corrected from its nodes", metadata: ["job.id": "\(ref.jobID)", "reported": "\(reported.rawValue)",
                                                                            "reason": "\(why)"])
        }
        await finish(jobID: ref.jobID, status: status, reason: why)
    }
}
