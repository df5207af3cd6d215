import Foundation

/// The queue's side of the lifecycle: entries as watchers see them, moves of the in-memory
/// queue (SQLite), and cancels decided with no `await` between what is queued and what runs.
extension JobLifecycle {
    /// A job as the queue shows it; a queued one with its `place` (1: the next to go), from the
    /// scheduler unless given (in a cluster the store's: `places`).
    func queueEntry(_ job: JobRecord, run: RunRecord, place: Int? = nil) -> QueueEntry {
        var entry = QueueEntry(jobID: job.id, runID: job.runID, attempt: job.attempt, project: run.project,
                               pipeline: run.pipeline, job: job.name, branch: run.branch, labels: job.labels,
                               status: job.status, runner: job.runner, queuedAt: job.queuedAt)
        if job.status == .queued {
            entry.position = place ?? (scheduler.index(of: job.id) ?? -1) + 1
            entry.waitingReason = scheduler.unmatchedReason(for: Set(job.labels))
        }
        return entry
    }

    func publishQueue(_ kind: QueueEvent.Kind, _ entry: QueueEntry) {
        live.publishQueue(QueueEvent(kind: kind, entry: entry))
    }

    /// Queued jobs' places: the scheduler's, or in a cluster the store's (one read).
    func places(_ jobIDs: [Int64]) async throws -> [Int64: Int] {
        guard let cluster else {
            return Dictionary(jobIDs.compactMap { id in scheduler.index(of: id).map { (id, $0 + 1) } }, uniquingKeysWith: { $1 })
        }
        return try await cluster.queuePlaces(jobIDs: jobIDs)
    }

    /// Tells the queue's watchers that jobs were queued (in a cluster, their places are read
    /// only when someone watches). A job claimed here by then (in a cluster, while its place
    /// was read, or by the claim of another trigger stored in the same statement) was told
    /// `CLAIMED` already: not `QUEUED` after it.
    func publishQueued(_ jobs: [JobRecord], run: RunRecord) async {
        guard cluster == nil || live.watchesQueue else { return }
        let places = (try? await places(jobs.map(\.id))) ?? [:]
        for job in jobs where table[job.id] == nil {
            publishQueue(.queued, queueEntry(job, run: run, place: places[job.id] ?? 0))
        }
    }

    /// This coordinator's running jobs, then the first queued ones in dispatch order, up to
    /// `limit` ids, and how many there are in all (SQLite: the queue is the scheduler's).
    func localQueueHead(limit: Int) -> (ids: [Int64], total: Int) {
        let running = table.jobIDs
        let ids = Array(running.prefix(limit)) + scheduler.queue.prefix(max(0, limit - running.count)).map(\.id)
        return (ids, running.count + scheduler.queue.count)
    }

    /// Jobs as the queue shows them, each with its run and, in a cluster, its place.
    func entries(_ jobs: [(job: JobRecord, run: RunRecord, place: Int?)]) -> [QueueEntry] {
        jobs.map { queueEntry($0.job, run: $0.run, place: $0.place) }
    }

    /// Moves a job of the in-memory queue (SQLite). One row changes, whatever the length of
    /// the queue, except when repeated moves into one gap exhaust the precision between two
    /// neighbours: then the queue is renumbered once. False when the job is not queued.
    func moveLocal(jobID: Int64, to target: MoveTarget) async throws -> Bool {
        guard scheduler.isQueued(jobID) else { return false }
        var placement = scheduler.placement(for: jobID, at: target)
        if placement == .crowded {
            try await store.renumberQueue(scheduler.renumber())
            // A dispatch may have taken the job while the store renumbered.
            guard scheduler.isQueued(jobID) else { return false }
            placement = scheduler.placement(for: jobID, at: target)
        }
        guard case .at(let position) = placement else {
            throw CoordinatorError.notFound("the job to move next to is not queued")
        }
        // Moved in memory before the store is written: a dispatch meanwhile sees the new order.
        // If the store refuses, the job goes back where it was (unless a dispatch took it).
        let before = scheduler.position(of: jobID)
        scheduler.reposition(jobID, to: position)
        do {
            _ = try await store.setPosition(jobID: jobID, position: position)
        } catch {
            if let before, scheduler.isQueued(jobID) { scheduler.reposition(jobID, to: before) }
            throw error
        }
        return true
    }

    /// A job just moved, as a queue entry (`place`: the store's, in a cluster), published to
    /// the queue's watchers unless a claim took it while the move was stored (the claim was
    /// published, not a move).
    func moved(_ job: JobRecord, run: RunRecord, place: Int?) -> QueueEntry {
        let entry = queueEntry(job, run: run, place: place)
        if cluster == nil ? scheduler.isQueued(job.id) : place != nil { publishQueue(.moved, entry) }
        return entry
    }

    /// Cancels jobs (`targets`, read unfinished by the facade). Queued jobs are cancelled in
    /// one transaction; running ones are stopped on their runners, which report them
    /// cancelled. Returns the jobs affected.
    ///
    /// What is queued and what runs is decided, and the queued jobs taken out of the
    /// scheduler, with no `await` in between: a dispatch while the store is written cannot
    /// claim a job this cancel reports cancelled (it would run on, with no `StopJob`).
    func cancel(_ targets: [JobRecord], reason: String) async throws -> CancelResult {
        // No await from here until the queued jobs are out of the scheduler and the stops pushed.
        // (In a cluster the store's queue decides: a job claimed meanwhile is stopped below.)
        let queued = targets.filter { cluster == nil ? scheduler.isQueued($0.id) : $0.status == .queued && table[$0.id] == nil }
        scheduler.removeQueued(Set(queued.map(\.id)))
        var running: [(JobRecord, JobTable.Job)] = []
        var heldElsewhere: [JobRecord] = []
        for job in targets {
            switch table.cancel(jobID: job.id, reason: reason) {
            case .stop(let session, let epoch):
                sink(of: session)?.send(.stopJob(jobID: job.id, epoch: epoch, reason: reason, abandon: false))
                logger.info("stop pushed", metadata: ["job.id": "\(job.id)"])
            case .stopOnReattach:
                break  // a runner that is away gets the stop when it reattaches the job
            case .deferred:
                // Its claim or its return to the queue is being stored: the job ends
                // cancelled once that is settled (`JobTable`).
                logger.info("cancel recorded for a job between phases", metadata: ["job.id": "\(job.id)"])
            case nil where cluster != nil && job.status == .running && table[job.id] == nil:
                // Held by another coordinator of the cluster (or by a claim on its way here).
                cancelHeldElsewhere(job.id, reason: reason)
                heldElsewhere.append(job)
            case nil:
                break
            }
            if let held = table[job.id] { running.append((job, held)) }
        }
        var entries = try await storeCancelled(queued, reason: reason)
        if cluster != nil {
            // Claimed (here or elsewhere) while the store cancelled the others: stopped where it runs.
            let cancelled = Set(entries.map(\.jobID))
            for job in queued where !cancelled.contains(job.id) {
                guard let now = try await store.job(id: job.id), now.status == .running else { continue }
                switch table.cancel(jobID: job.id, reason: reason) {
                case .stop(let session, let epoch):
                    sink(of: session)?.send(.stopJob(jobID: job.id, epoch: epoch, reason: reason, abandon: false))
                case .stopOnReattach, .deferred:
                    break
                case nil:
                    cancelHeldElsewhere(job.id, reason: reason)
                }
                heldElsewhere.append(now)
            }
        }
        for (job, lease) in running {
            guard let run = try await store.run(id: job.runID) else { continue }
            var job = job  // read before it was claimed, perhaps
            job.status = .running
            job.runner = lease.runner
            entries.append(queueEntry(job, run: run))
        }
        for job in heldElsewhere {
            guard let run = try await store.run(id: job.runID) else { continue }
            entries.append(queueEntry(job, run: run))
        }
        return CancelResult(entries)
    }

    /// A cancel of a running job no table here has: its holder (another coordinator) stops
    /// it, and a claim on its way here that took it ends it cancelled.
    func cancelHeldElsewhere(_ jobID: Int64, reason: String) {
        if claimCancels != nil { claimCancels?[jobID] = reason }
        tell(.cancel(jobID: jobID, reason: reason))
    }

    /// Cancels the queued jobs among `matching` (read by the facade), in one transaction.
    /// With `dryRun`, lists them and cancels nothing.
    func cancelQueued(_ matching: [JobRecord], reason: String, dryRun: Bool) async throws -> CancelResult {
        let matching = matching.filter { cluster != nil || scheduler.isQueued($0.id) }
        if dryRun {
            var runs: [Int64: RunRecord] = [:]
            let listed = Array(matching.prefix(CancelResult.maximumListedJobs))
            for job in listed where runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            let places = try await places(listed.map(\.id))
            let entries = listed.compactMap { job in runs[job.runID].map { queueEntry(job, run: $0, place: places[job.id] ?? 0) } }
            return CancelResult(jobs: entries, count: matching.count)
        }
        // Out of the scheduler before any await (see `cancel`).
        scheduler.removeQueued(Set(matching.map(\.id)))
        return CancelResult(try await storeCancelled(matching, reason: reason))
    }

    /// Stores queued jobs, already taken out of the scheduler, as cancelled in one transaction,
    /// and publishes what the store changed. A job the store no longer had queued is left out.
    func storeCancelled(_ jobs: [JobRecord], reason: String) async throws -> [QueueEntry] {
        guard !jobs.isEmpty else { return [] }
        let now = Date.nowMilliseconds
        let result: CancelledJobs
        do {
            result = try await store.cancelJobs(ids: jobs.map(\.id), reason: reason, now: now)
        } catch {
            for job in jobs where table[job.id] == nil && !scheduler.isQueued(job.id) {
                enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            }
            throw error
        }
        let cancelled = jobs.filter { result.jobIDs.contains($0.id) }
        tell(.run(runIDs: result.runs.map(\.id)))
        logger.info("jobs cancelled", metadata: ["count": "\(cancelled.count)", "reason": "\(reason)"])
        CoreMetrics.jobFinished(.cancelled, count: cancelled.count)
        var runs: [Int64: RunRecord] = Dictionary(result.runs.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var entries: [QueueEntry] = []
        for var job in cancelled {
            if runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            guard let run = runs[job.runID] else { continue }
            job.status = .cancelled  // so the entry has no place and no waiting reason to work out
            let entry = queueEntry(job, run: run)
            entries.append(entry)
            publishQueue(.cancelled, entry)
        }
        if live.hasWatchers {
            for job in cancelled {
                var event = JobEvent(job, status: .cancelled, runner: nil, at: nil)
                event.finishedAt = now
                event.reason = reason
                publish(runID: job.runID, attempt: job.attempt, .job(event))
            }
            for run in result.runs where run.status.isFinished {
                publish(runID: run.id, attempt: run.attempt, .end(run))
            }
        }
        return entries
    }
}
