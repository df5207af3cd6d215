import Foundation

/// Dispatch: queued jobs claimed for runners' free slots and assigned.
extension JobLifecycle {
    /// Hands queued jobs to runners with free capacity and matching labels: every job the
    /// scheduler places now is claimed in one store transaction.
    ///
    /// One dispatch at a time: one asked for while another stores its claims runs after it.
    /// So a runner receives its assignments in the order of their epochs, and a heartbeat
    /// listing an epoch proves every earlier assignment to it arrived (`JobTable.notRunning`).
    func dispatch() async {
        if dispatching.running {
            dispatching.again = true
            return
        }
        dispatching.running = true
        await dispatchRounds()
    }

    /// Dispatches until none was asked for meanwhile, then lets the next one start; called with
    /// `dispatching.running` set.
    private func dispatchRounds() async {
        defer { dispatching = (false, false) }
        repeat {
            dispatching.again = false
            if let cluster {
                await dispatchFromStore(cluster)
            } else if await dispatchPlaced() {
                dispatching.again = true
            }
        } while dispatching.again
    }

    /// Ends a dispatch that was not `dispatchRounds` (a trigger's or an end's claim): the next one starts,
    /// and one asked for meanwhile runs now.
    func dispatchDone() async {
        if dispatching.again { await dispatchRounds() } else { dispatching = (false, false) }
    }

    /// Claims for this coordinator's free runner slots from the store, where the queue is when
    /// several coordinators share one database (`ClusterStore.claimQueued`): the first fitting
    /// jobs in queue order, in one transaction, whatever another coordinator claims at once.
    ///
    /// A cancel that comes while the claim is on its way, for a job not in the table, is kept
    /// (`claimCancels`): a job this claim took ends cancelled before its runner is told.
    private func dispatchFromStore(_ cluster: any ClusterStore) async {
        let now = Date.nowMilliseconds
        guard let free = freeSlots(now: now) else { return }
        claimCancels = [:]
        let claimed: [ClaimedJob]
        do {
            claimed = try await cluster.claimQueued(free.slots, now: now)
        } catch {
            claimCancels = nil
            logger.warning("cannot claim jobs now", metadata: ["error": "\(error)"])
            return
        }
        let cancels = claimCancels ?? [:]
        claimCancels = nil
        await settle(claimed, sessionOf: free.sessionOf, cancels: cancels, now: now)
    }

    /// This coordinator's free runner slots, for a claim from the store, each with its epochs
    /// (new, ascending), and which session each epoch was given for; nil when none is free.
    /// `freeing`: a job whose end is being stored, its slot counted free (the end and the
    /// claim are one call, `settleEnd`).
    func freeSlots(now: Int64, freeing: (session: UInt64, jobID: Int64)? = nil) -> (slots: [ClaimSlot], sessionOf: [Int64: UInt64])? {
        var slots: [ClaimSlot] = []
        var sessionOf: [Int64: UInt64] = [:]
        for (session, slot) in scheduler.runners.sorted(by: { $0.key < $1.key }) {
            var slot = slot
            if let freeing, freeing.session == session { slot.running.remove(freeing.jobID) }
            guard slot.free > 0, let runner = runners[session] else { continue }
            let epochs = table.newEpochs(slot.free, now: now)
            for epoch in epochs { sessionOf[epoch] = session }
            slots.append(ClaimSlot(runner: runner.name, labels: slot.labels, running: slot.running.count, epochs: epochs))
        }
        return slots.isEmpty ? nil : (slots, sessionOf)
    }

    /// What a claim from the store took: every claimed job enters the table before anything
    /// awaits, so a command about any of them meanwhile finds it; then, in epoch order (a
    /// runner receives its assignments in the order of their epochs), the assignments go out;
    /// then what must be stored. `cancels`: those that came while the claim was on its way.
    func settle(_ claimed: [ClaimedJob], sessionOf: [Int64: UInt64], cancels: [Int64: String], now: Int64) async {
        tell(.run(runIDs: Array(Set(claimed.map(\.run.id)))))
        var toEnd: [(Int64, JobTable.End?)] = []
        var toAssign: [ClaimedJob] = []
        for record in claimed.sorted(by: { $0.job.epoch < $1.job.epoch }) {
            let job = record.job
            let connected = sessionOf[job.epoch].flatMap { runners[$0] == nil ? nil : $0 }
            if let connected { scheduler.attach(job.id, to: connected) }
            // Still `requeueing` here (its return to the queue stored, the rest on its way): this
            // claim replaces it, with a cancel recorded on it.
            let outcome = table.claimed(record, session: connected, deadline: ContinuousClock.now.advanced(by: limits.lease),
                                        cancelReason: cancels[job.id] ?? table[job.id]?.cancelReason)
            if case .cancelled = outcome {
                logger.info("a job cancelled while it was claimed ends without starting", metadata: ["job.id": "\(job.id)"])
                if let connected { scheduler.finish(job.id, on: connected) }
                table.detach(job.id)
                toEnd.append((job.id, nil))
            } else {
                toAssign.append(record)
            }
        }
        for record in toAssign {
            if let end = assign(record, epoch: record.job.epoch, runner: record.job.runner ?? "", now: now) {
                toEnd.append((record.job.id, end))
            }
        }
        for (jobID, end) in toEnd {
            if let end { await self.end(jobID: jobID, end) } else { await settleEnd(jobID) }
        }
    }

    /// Claims and assigns what the scheduler places now; true when some placed jobs were no
    /// longer queued (their runners' slots are free again).
    ///
    /// Every placed job is `claiming` in the job table while the claims are stored: a cancel
    /// meanwhile is recorded there and ends the job cancelled once its claim is stored,
    /// without the runner ever being told of it.
    private func dispatchPlaced() async -> Bool {
        var claims: [JobClaim] = []
        for placed in scheduler.assign() {
            guard let runner = runners[placed.runner] else { continue }
            // In the table already (a job taken over while a stale queue still listed it).
            guard table[placed.jobID] == nil else {
                scheduler.finish(placed.jobID, on: placed.runner)
                continue
            }
            let epoch = table.claim(placed.job, session: placed.runner, runner: runner.name, now: Date.nowMilliseconds)
            claims.append(JobClaim(jobID: placed.jobID, runner: runner.name, epoch: epoch))
        }
        guard !claims.isEmpty else { return false }
        let now = Date.nowMilliseconds
        let claimed: [ClaimedJob?]
        do {
            claimed = try await store.claimJobs(claims, now: now)
        } catch {
            // Nothing was claimed (one transaction): the jobs go back to the queue where they
            // were, but for those cancelled meanwhile. In a cluster the queue read that follows
            // the database's return has them too.
            logger.warning("cannot claim jobs now", metadata: ["jobs": "\(claims.map(\.jobID))", "error": "\(error)"])
            for claim in claims {
                guard let failed = table.claimFailed(claim.jobID, epoch: claim.epoch) else { continue }
                if let session = failed.session { scheduler.finish(claim.jobID, on: session) }
                // Queued in the store: a cancel that came meanwhile is stored there. Should that
                // fail too (the store is away), the job is queued here again, still cancellable.
                if let reason = failed.cancelReason, let job = try? await store.job(id: claim.jobID), job.status == .queued,
                   (try? await storeCancelled([job], reason: reason)) != nil {
                    continue
                }
                if table[claim.jobID] == nil && !scheduler.isQueued(claim.jobID) { enqueue(failed.queued) }
            }
            return false
        }
        tell(.run(runIDs: Array(Set(claimed.compactMap { $0?.run.id }))))
        var unclaimed = 0
        for (claim, record) in zip(claims, claimed) {
            switch table.claimSettled(claim.jobID, epoch: claim.epoch, record: record) {
            case .stale:
                continue
            case .notClaimed(let session):
                // Claimed through another coordinator, or cancelled, since this one read the queue.
                logger.info("a placed job was no longer queued", metadata: ["job.id": "\(claim.jobID)"])
                if let session { scheduler.finish(claim.jobID, on: session) }
                unclaimed += 1
                continue
            case .cancelled(_, let session):
                logger.info("a job cancelled while it was claimed ends without starting", metadata: ["job.id": "\(claim.jobID)"])
                if let session { scheduler.finish(claim.jobID, on: session) }
                table.detach(claim.jobID)
                await settleEnd(claim.jobID)
                continue
            case .assign, .runnerAway:
                break
            }
            guard let record else { continue }
            if let end = assign(record, epoch: claim.epoch, runner: claim.runner, now: now) {
                await self.end(jobID: record.job.id, end)
            }
        }
        // Their runners' slots are free again: place the next jobs.
        return unclaimed > 0
    }

    /// Sends a claimed job's assignment to its runner (when it is connected) and tells the
    /// job's and the queue's watchers; no suspension, so a batch of claims is sent before any
    /// command about them is taken. Returns the end of a job too large to assign, for the
    /// caller to store (`end`) once the batch is sent.
    func assign(_ record: ClaimedJob, epoch: Int64, runner: String, now: Int64) -> JobTable.End? {
        let job = record.job
        let run = record.run
        let secrets: [String: [String: String]]
        do {
            secrets = try JobAssignment.openSecrets(record, box: secretBox)
        } catch {
            return .init(status: .failed, reason: error.reason)
        }
        let assignment = JobAssignment(record, epoch: epoch, secrets: secrets)
        // Too large for one frame (a pipeline stored before pushes were checked for this):
        // the job fails for that reason; its runner is not to blame.
        guard assignment.estimatedBytes <= limits.maximumFrameLength else {
            return .init(status: .failed, reason: "the job is too large to assign: about \(assignment.estimatedBytes) bytes, over the frame limit of \(limits.maximumFrameLength)")
        }
        logger.info("job assigned", metadata: ["job.id": "\(job.id)", "run.id": "\(run.id)", "runner": "\(runner)"])
        // The runner may have gone while the claim was stored: its lease then runs out.
        if let session = table[job.id]?.session { sink(of: session)?.send(.assignment(assignment)) }
        publish(runID: run.id, attempt: job.attempt, .job(JobEvent(job, status: .running, runner: runner, at: now)))
        var entry = queueEntry(job, run: run)
        entry.status = .running
        entry.runner = runner
        publishQueue(.claimed, entry)
        return nil
    }
}

extension JobLifecycle {
    /// Stores a run's new jobs queued (`create`: a trigger, a re-run, a forge's delivery) and
    /// queues them here with no other command between, shows them, and claims them here
    /// first; in a cluster, the other coordinators are woken only when some were not claimed
    /// (no free slot here fits them, or a claim was already on its way): a wake-up costs every
    /// other coordinator with free slots a claim. Returns the run.
    func queue(_ create: @Sendable () async throws -> (RunRecord, [JobRecord])) async throws -> RunRecord {
        let (run, jobs) = try await create()
        return await queued(run, jobs)
    }

    /// `queue`, for a creation that may find nothing to create (a schedule's due time another
    /// coordinator started): nil, nothing queued.
    func queueIfCreated(_ create: @Sendable () async throws -> (RunRecord, [JobRecord])?) async throws -> RunRecord? {
        guard let (run, jobs) = try await create() else { return nil }
        return await queued(run, jobs)
    }

    /// Stores a triggered run and queues its jobs (`queueIfCreated`). In a cluster, when
    /// runners here have free slots and no dispatch is on its way, the run is stored and those
    /// slots claimed in one call (`ClusterStore.createRunAndClaim`): this is then the dispatch
    /// (one at a time), and a cancel that comes meanwhile for a job it took ends the job before
    /// its runner is told, as with any claim. Nil, nothing queued: `create` found nothing to
    /// create (`NewRun.latestOnly`).
    func queueRun(_ new: NewRun) async throws -> RunRecord? {
        let now = Date.nowMilliseconds
        guard let cluster, !dispatching.running, let free = freeSlots(now: now) else {
            return try await queueIfCreated { [store] in try await new.create(in: store, now: now) }
        }
        dispatching.running = true
        claimCancels = [:]
        let created: CreatedAndClaimed?
        do {
            created = try await new.createAndClaim(in: cluster, slots: free.slots, now: now)
        } catch {
            claimCancels = nil
            await dispatchDone()
            throw error
        }
        guard let created else {
            claimCancels = nil
            await dispatchDone()
            return nil
        }
        // The queue's watchers see the new jobs its claim did not take queued (those it took were
        // never in the queue to them: they see them claimed).
        let taken = Set(created.claimed.map(\.job.id))
        await publishQueued(created.jobs.filter { !taken.contains($0.id) }, run: created.run)
        let cancels = claimCancels ?? [:]
        claimCancels = nil
        await settle(created.claimed, sessionOf: free.sessionOf, cancels: cancels, now: now)
        await dispatchDone()
        if created.jobs.contains(where: { table[$0.id] == nil }) { tell(.queue) }
        return created.run
    }

    private func queued(_ run: RunRecord, _ jobs: [JobRecord]) async -> RunRecord {
        for job in jobs { enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position)) }
        await publishQueued(jobs, run: run)
        await dispatch()
        if cluster != nil, jobs.contains(where: { table[$0.id] == nil }) { tell(.queue) }
        return run
    }
}

/// A run a trigger makes (`JobLifecycle.queueRun`).
struct NewRun: Sendable {
    var version: PipelineVersionRecord
    var definition: PipelineDefinition
    var branch: String
    var commit: String
    var trigger: String
    var triggeredBy: String
    var fork: Bool
    var inputs: [String: String]
    /// Nothing is stored when `version` is no longer its pipeline's latest
    /// (`CoordinatorStore.createLatestRun`).
    var latestOnly: Bool

    func create(in store: any CoordinatorStore, now: Int64) async throws -> (RunRecord, [JobRecord])? {
        guard latestOnly else {
            return try await store.createRun(version: version, definition: definition, branch: branch, commit: commit,
                                             trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now)
        }
        return try await store.createLatestRun(version: version, definition: definition, branch: branch, commit: commit,
                                               trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now)
    }

    func createAndClaim(in cluster: any ClusterStore, slots: [ClaimSlot], now: Int64) async throws -> CreatedAndClaimed? {
        try await cluster.createRunAndClaim(version: version, definition: definition, branch: branch, commit: commit,
                                            trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now,
                                            latestOnly: latestOnly, slots: slots)
    }
}
