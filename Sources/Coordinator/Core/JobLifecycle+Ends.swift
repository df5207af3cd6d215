import Foundation

/// A job's life on a runner once claimed: started, its nodes reported, finished, lost or requeued,
/// and every end stored before the job leaves the table.
extension JobLifecycle {
    /// Jobs whose runner stayed away past the lease: back to the front of the queue when the
    /// pipeline allows a retry, failed with "runner lost" otherwise. Then the ends and
    /// requeues the store refused before are written again.
    func expireLeases(now: ContinuousClock.Instant = .now) async {
        for (jobID, why) in table.expired(at: now) {
            await lost(jobID: jobID, why: why)
        }
        await settleUnsettled()
    }

    /// Writes again what the coordinator decided about jobs and the store did not take (a
    /// database restarting, a full disk): ends and returns to the queue.
    func settleUnsettled() async {
        for jobID in table.unsettled {
            switch table[jobID]?.phase {
            case .finishing: await settleEnd(jobID)
            case .requeueing: await settleRequeue(jobID)
            default: break
            }
        }
    }

    /// The runner lost the job: it ends (cancelled when a cancel was decided, failed
    /// otherwise) or, with retries left, goes back to the front of the queue. The job stays in
    /// the table until the store has settled which, so a cancel meanwhile is not lost.
    func lost(jobID: Int64, why: String) async {
        guard let (outcome, freed) = table.lose(jobID, why: why) else { return }
        if let freed { scheduler.finish(jobID, on: freed) }
        switch outcome {
        case .end: await settleEnd(jobID)
        case .requeue: await settleRequeue(jobID)
        }
    }

    /// Puts a lost job back in the queue: stored first, then queued here. A cancel recorded
    /// before the store has it queued ends it cancelled instead; one recorded while the store
    /// queued it cancels it there. A write the store refuses is tried again
    /// (`settleUnsettled`).
    func settleRequeue(_ jobID: Int64) async {
        guard let job = table[jobID], job.phase == .requeueing, !job.writing else { return }
        if !job.requeued, let reason = job.cancelReason {
            table.beginEnd(jobID, .init(status: .cancelled, reason: "\(reason) (\(job.lostBecause) before it confirmed)"))
            await settleEnd(jobID)
            return
        }
        // Held until the job leaves the table (or a write fails): one settling at a time.
        table.writing(jobID, true)
        if !job.requeued {
            await logPipeline.forget(jobID: jobID)
            await uploads.discard(jobID: jobID)
            await logBarrier()  // no log write of the lost execution lands after its log is gone
            let reason = "requeued (\(job.lostCount + 1) of \(job.retryLost)): \(job.lostBecause)"
            do {
                _ = try await store.requeueLostJob(id: jobID, reason: reason, now: Date.nowMilliseconds)
            } catch let error as StoreError where error.code == .staleLease {
                // Another coordinator of the cluster holds the job now (its runner went there).
                logger.info("a job whose runner left is held elsewhere now", metadata: ["job.id": "\(jobID)"])
                table.requeueSettled(jobID)
                return
            } catch {
                table.requeueFailed(jobID)
                logger.error("cannot requeue a lost job now; trying again", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
                return
            }
            table.requeueStored(jobID)
            do {
                try await logStore.removeLogs(jobID: jobID)
            } catch {
                logger.error("cannot remove a requeued job's log", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
            }
            logger.warning("job requeued", metadata: ["job.id": "\(jobID)", "reason": "\(reason)"])
            tell(.queue)
        }
        // The store has it queued: queue it here, or cancel it there when a cancel came.
        let record: JobRecord
        do {
            guard let read = try await store.job(id: jobID) else {
                table.requeueSettled(jobID)
                return
            }
            record = read
        } catch {
            table.requeueFailed(jobID)
            logger.error("cannot read a requeued job; trying again", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
            return
        }
        // Claimed again meanwhile (several coordinators): the claim has it now.
        guard table[jobID]?.phase == .requeueing else { return }
        if let reason = table[jobID]?.cancelReason {
            do {
                _ = try await storeCancelled([record], reason: reason)
            } catch {
                table.requeueFailed(jobID)
                logger.error("cannot cancel a requeued job now; trying again", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
                return
            }
            table.requeueSettled(jobID)
            return
        }
        table.requeueSettled(jobID)
        enqueue(.init(id: jobID, labels: Set(record.labels), position: record.position))
        if let run = try? await store.run(id: record.runID) { await publishQueued([record], run: run) }
        await dispatch()
    }

    /// Decides a job's end and stores it: the coordinator's own decision (a job too large, a
    /// cancel before it started), tried again until the store takes it.
    func end(jobID: Int64, _ end: JobTable.End) async {
        guard table.beginEnd(jobID, end) else { return }
        if let session = table[jobID]?.session {
            scheduler.finish(jobID, on: session)
            table.detach(jobID)
        }
        await settleEnd(jobID)
    }

    /// Stores the end a job in `finishing` has (in one transaction with its run's status),
    /// then it leaves the table: its runner's slot is freed, watchers told, and more work
    /// dispatched. The write is fenced by the job's epoch (unless `fenced` is false).
    ///
    /// When the store refuses (a database restarting, a full disk), the job stays
    /// `finishing`: an end its runner reported is answered `UNAVAILABLE` (thrown) and the
    /// runner sends it again; the coordinator's own end is tried again (`settleUnsettled`).
    @discardableResult
    func settleEnd(_ jobID: Int64) async -> CoordinatorError? {
        guard let job = table[jobID], job.phase == .finishing, let end = job.end else { return nil }
        guard !job.writing else {
            return CoordinatorError(.unavailable, "the end of job \(jobID) is being stored; send it again later")
        }
        table.writing(jobID, true)
        await logPipeline.finished(jobID: jobID)
        await uploads.discard(jobID: jobID)
        let now = Date.nowMilliseconds
        // In a cluster, with no dispatch on its way, this end is the dispatch: the slot it frees
        // and the others free here are claimed for in the end's own call (`finishJobAndClaim`;
        // a claim of its own would be a second round trip and commit). A cancel that comes
        // meanwhile for a job it takes ends that job before its runner is told, as with any
        // claim.
        let claim = cluster != nil && !dispatching.running ? freeSlots(now: now, freeing: job.session.map { ($0, jobID) }) : nil
        if claim != nil {
            dispatching.running = true
            claimCancels = [:]
        }
        let ended: EndedAndClaimed
        do {
            let finish = { [store, cluster] () async throws -> EndedAndClaimed in
                let epoch = end.fenced ? job.epoch : nil
                if let claim, let cluster {
                    return try await cluster.finishJobAndClaim(id: jobID, epoch: epoch, status: end.status, reason: end.reason,
                                                               now: now, slots: claim.slots)
                }
                let (run, record) = try await store.finishJob(id: jobID, epoch: epoch, status: end.status, reason: end.reason, now: now)
                return EndedAndClaimed(run: run, job: record, claimed: [])
            }
            // A job whose runner is connected here is this coordinator's, should a sweep have
            // taken it meanwhile.
            ended = if job.session != nil {
                try await heldHere(LeaseRef(jobID: jobID, epoch: job.epoch), attached: true, finish)
            } else {
                try await finish()
            }
        } catch let error as StoreError where error.code == .staleLease {
            logger.info("a job's end was not stored: its lease is no longer this coordinator's",
                        metadata: ["job.id": "\(jobID)", "error": "\(error)"])
            if let session = table.settled(jobID)?.session { scheduler.finish(jobID, on: session) }
            if claim != nil {
                claimCancels = nil
                await dispatchDone()
            }
            await dispatch()
            return CoordinatorError(error)
        } catch {
            table.writing(jobID, false)
            if claim != nil {
                claimCancels = nil
                await dispatchDone()
            }
            logger.error(end.reported ? "cannot store a job's end now; its runner sends it again"
                                      : "cannot store a job's end now; trying again",
                         metadata: ["job.id": "\(jobID)", "error": "\(error)"])
            return CoordinatorError(.unavailable, "the end of job \(jobID) could not be stored (\(CoordinatorError(error).message)); send it again later")
        }
        let (run, record) = (ended.run, ended.job)
        let settled = table.settled(jobID)
        if let session = settled?.session { scheduler.finish(jobID, on: session) }
        scheduler.removeQueued(jobID)  // a stale queue read may still list it
        logger.info("job finished", metadata: ["job.id": "\(jobID)", "status": "\(end.status.rawValue)",
                                               "reason": "\(end.reason)"])
        CoreMetrics.jobFinished(end.status)
        tell(.run(runIDs: [run.id]))
        var event = JobEvent(record, status: end.status, runner: record.runner, at: record.startedAt ?? now)
        event.finishedAt = now
        event.reason = end.reason
        publish(runID: run.id, attempt: record.attempt, .job(event))
        var entry = queueEntry(record, run: run)
        entry.status = end.status
        publishQueue(end.status == .cancelled ? .cancelled : .finished, entry)
        if run.status.isFinished {
            publish(runID: run.id, attempt: run.attempt, .end(run))
        }
        if let claim {
            let cancels = claimCancels ?? [:]
            claimCancels = nil
            await settle(ended.claimed, sessionOf: claim.sessionOf, cancels: cancels, now: now)
            await dispatchDone()
        } else {
            await dispatch()
        }
        return nil
    }

    /// Checks that a write about a job comes from a runner's session holding the job's
    /// current lease.
    func lease(_ ref: LeaseRef, session: UInt64) throws -> JobTable.Job {
        _ = try sessions.authorize(session, .runJobs)
        return try table.check(ref, session: session)
    }

    /// Loads a running job's nodes into memory once (a claim sets them; after a restart the
    /// first write about the job reads them).
    func loadNodes(of jobID: Int64) async throws {
        guard table[jobID]?.nodes == nil else { return }
        let nodes = try await store.nodes(jobIDs: [jobID]).map { (name: $0.name, status: $0.status) }
        table.loadNodes(nodes, of: jobID)
    }

    /// Refuses a write about a node the job does not have.
    func checkNode(_ node: String, of jobID: Int64) async throws {
        try await loadNodes(of: jobID)
        guard table[jobID]?.nodes?.contains(where: { $0.name == node }) == true else {
            throw CoordinatorError.invalid("job \(jobID) has no node '\(node)'")
        }
    }

    /// A node started or ended. Log bytes the runner sent before are committed first.
    func nodeUpdate(session: UInt64, _ report: NodeReport) async throws {
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
        table.setNode(report.node, of: report.job.jobID, to: status)
        var node = NodeEvent(name: report.node, status: status, exitCode: report.exitCode)
        if status == .running { node.startedAt = at } else { node.finishedAt = at }
        publish(runID: job.runID, attempt: job.attempt,
                .job(JobEvent(id: report.job.jobID, name: job.name, status: .running, runner: job.runner,
                              attempt: job.attempt, nodes: [node])))
    }

    /// The job's workspace is ready, at a commit (hex, or empty without a repository).
    func jobStarted(session: UInt64, _ start: JobStart) async throws {
        let job = try lease(start.job, session: session)
        guard start.commit.count <= 64, start.commit.allSatisfy({ $0.isHexDigit }) else {
            throw CoordinatorError.invalid("commit '\(start.commit)' is not a hex commit id")
        }
        try await heldHere(start.job) { try await store.setJobCommit(id: start.job.jobID, epoch: job.epoch, commit: start.commit) }
    }

    /// The runner's result for a job. The stored result follows the job's nodes
    /// (`Outcome.jobResult`); log bytes sent before it are committed and acknowledged first.
    /// It is answered only once stored: when the store refuses, `UNAVAILABLE` is thrown, the
    /// job stays `finishing` on its runner, and the runner sends the same result again.
    /// The same result again after it was stored (its answer was lost with a connection) is
    /// accepted and changes nothing.
    func jobFinished(session: UInt64, _ result: JobResult) async throws {
        _ = try sessions.authorize(session, .runJobs)
        if try await isDecided(result.job) { return }
        let ref = result.job
        _ = try table.check(ref, session: session, finishing: true)
        let reported = try Self.reportedResult(result.status)
        // From here the job is `finishing`: its runner may no longer list it in its
        // heartbeats, and a cancel changes nothing. The end is completed (corrected from the
        // nodes) before it is written.
        guard table.beginEnd(ref.jobID, .init(status: reported, reason: result.reason, reported: true)) else {
            throw CoordinatorError(.unavailable, "the end of job \(ref.jobID) is being stored; send it again later")
        }
        table.writing(ref.jobID, true)
        let end: JobTable.End
        do {
            end = try await reportedEnd(ref, reported: reported, reason: result.reason)
        } catch {
            table.writing(ref.jobID, false)
            let failure = CoordinatorError(error)
            throw failure.code == .internal ? CoordinatorError(.unavailable, "\(failure.message); send it again later") : failure
        }
        table.completeEnd(ref.jobID, end)
        if let failure = await settleEnd(ref.jobID) { throw failure }
    }

    /// Whether the job's result is stored already, from this lease.
    func isDecided(_ ref: LeaseRef) async throws -> Bool {
        guard table[ref.jobID] == nil, let job = try await store.job(id: ref.jobID) else { return false }
        return job.status.isFinished && job.epoch == ref.epoch
    }

    static func reportedResult(_ status: Status?) throws -> Status {
        guard let status, status == .succeeded || status == .failed || status == .cancelled else {
            throw CoordinatorError.invalid(
                "a job finishes as succeeded, failed or cancelled, not \(status?.rawValue ?? "an unknown status")")
        }
        return status
    }

    /// The end a runner reported, as its nodes say it is.
    func reportedEnd(_ ref: LeaseRef, reported: Status, reason: String) async throws -> JobTable.End {
        // Log bytes sent before the JobFinish are committed (and acknowledged) while the job
        // still holds its lease; node updates sent before it are stored already.
        await logBarrier()
        try await loadNodes(of: ref.jobID)
        let nodes = table[ref.jobID]?.nodes ?? []
        let (status, why) = Outcome.jobResult(reported: reported, reason: reason, nodes: nodes)
        if status != reported {
            logger.warning("job result corrected from its nodes", metadata: ["job.id": "\(ref.jobID)", "reported": "\(reported.rawValue)",
                                                                            "reason": "\(why)"])
        }
        return .init(status: status, reason: why, reported: true)
    }
}

extension JobLifecycle {
    /// Refuses a write about a job unless it comes from the runner's session holding the job's
    /// current lease.
    func checkLease(_ ref: LeaseRef, session: UInt64) throws {
        _ = try lease(ref, session: session)
    }

    /// The run of a job the session holds the lease of.
    func leasedRun(_ ref: LeaseRef, session: UInt64) throws -> Int64 {
        try lease(ref, session: session).runID
    }

    /// Records an artifact whose bytes are stored, fenced by the job's current lease; returns
    /// it and its job's run.
    func insertArtifact(_ pending: ArtifactUploads.Upload, ref: LeaseRef, session: UInt64) async throws -> (ArtifactRecord, Int64) {
        let job = try lease(ref, session: session)
        let record = try await heldHere(ref) {
            try await store.insertArtifact(jobID: pending.jobID, epoch: job.epoch, name: pending.name, size: pending.size,
                                           sha256: pending.sha256, now: Date.nowMilliseconds)
        }
        return (record, job.runID)
    }
}
