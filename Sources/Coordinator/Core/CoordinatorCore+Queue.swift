import Foundation

/// The queue as admins see it: listing, live changes, moves and cancels.
extension CoordinatorCore {
    /// Jobs listed in a cancel result; `count` has them all.
    public static let maximumListedJobs = 1000

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
    /// only when someone watches).
    func publishQueued(_ jobs: [JobRecord], run: RunRecord) async {
        guard cluster == nil || live.watchesQueue else { return }
        let places = (try? await places(jobs.map(\.id))) ?? [:]
        for job in jobs { publishQueue(.queued, queueEntry(job, run: run, place: places[job.id] ?? 0)) }
    }

    /// Running jobs, then queued ones in dispatch order, each queued one with its place and,
    /// when no runner can take it, why.
    /// The first `limit` (`ListLimit.queue`, at most `most`) are listed.
    /// The order comes from memory; only the jobs listed are read from the store.
    public func queue(limit: Int? = nil, most: Int? = nil, as principal: Principal) async throws -> QueueList {
        try Authorization.check(principal, .listQueue)
        let limit = try ListLimit.queue.resolve(limit, most: most)
        let records: [JobRecord]
        var list: QueueList
        if let cluster {
            // The database is the queue: every coordinator's running jobs, then the queued.
            let head = try await cluster.queueHead(limit: limit)
            records = head.jobs
            list = QueueList(jobs: [], total: head.queued + head.running)
        } else {
            let running = table.jobIDs
            let ids = Array(running.prefix(limit)) + scheduler.queue.prefix(max(0, limit - running.count)).map(\.id)
            let byID = Dictionary(try await store.jobs(ids: ids).map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
            records = ids.compactMap { byID[$0] }
            list = QueueList(jobs: [], total: running.count + scheduler.queue.count)
        }
        var runs: [Int64: RunRecord] = [:]
        var place = 0
        for job in records {
            if runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            guard let run = runs[job.runID] else { continue }
            if job.status == .queued { place += 1 }
            list.jobs.append(queueEntry(job, run: run, place: cluster == nil ? nil : place))
        }
        return list
    }

    /// Subscribes the session to queue changes: `subscribed`, then queue events with
    /// `requestID`, until the session ends.
    public func watchQueue(session: UInt64, requestID: UInt64) throws {
        _ = try authorize(session: session, .watchQueue)
        guard let sink = sink(of: session) else { return }
        sink.send(.subscribed(requestID: requestID))
        live.addQueueWatcher(session: session, requestID: requestID, sink: sink)
    }

    /// Moves a queued job and returns it with its new place. One row changes, whatever the
    /// length of the queue, except when repeated moves into one gap exhaust the precision
    /// between two neighbours: then the queue is renumbered once.
    public func move(jobID: Int64, to target: MoveTarget?, as principal: Principal) async throws -> QueueEntry {
        try Authorization.check(principal, .moveInQueue)
        guard let target else {
            throw CoordinatorError.invalid("queue move needs a target: top, bottom, before, after or position")
        }
        if case .position(let n) = target, n < 1 { throw CoordinatorError.invalid("queue positions start at 1") }
        func notQueued() async throws -> CoordinatorError {
            guard let job = try await store.job(id: jobID) else { return CoordinatorError.notFound("job \(jobID) does not exist") }
            return CoordinatorError(.failedPrecondition, "job \(jobID) is \(job.status.rawValue); only queued jobs can be moved")
        }
        if let cluster {
            // Placed by the store, where every coordinator's moves meet.
            switch try await cluster.moveQueued(jobID: jobID, to: target) {
            case .notQueued: throw try await notQueued()
            case .noSuchAnchor: throw CoordinatorError.notFound("the job to move next to is not queued")
            case .moved(let position, _):
                tell(.moved(jobID: jobID, position: position))  // for the other coordinators' watchers
            }
            return try await moved(jobID)
        }
        guard scheduler.isQueued(jobID) else { throw try await notQueued() }
        var placement = scheduler.placement(for: jobID, at: target)
        if placement == .crowded {
            try await store.renumberQueue(scheduler.renumber())
            // A dispatch may have taken the job while the store renumbered.
            guard scheduler.isQueued(jobID) else { throw try await notQueued() }
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
        return try await moved(jobID)
    }

    /// A job just moved, as a queue entry, published to the queue's watchers.
    func moved(_ jobID: Int64) async throws -> QueueEntry {
        guard let job = try await store.job(id: jobID), let run = try await store.run(id: job.runID) else {
            throw CoordinatorError.notFound("job \(jobID) does not exist")
        }
        let place: Int? = if let cluster { try await cluster.queuePlaces(jobIDs: [jobID])[jobID] } else { nil }
        let entry = queueEntry(job, run: run, place: place)
        // Claimed while the move was stored: the claim was published, not a move.
        if cluster == nil ? scheduler.isQueued(jobID) : place != nil { publishQueue(.moved, entry) }
        return entry
    }

    /// Cancels runs (their latest attempt's unfinished jobs) and jobs. Queued jobs are
    /// cancelled in one transaction; running ones are stopped on their runners, which report
    /// them cancelled. Returns the jobs affected.
    ///
    /// What is queued and what runs is decided, and the queued jobs taken out of the
    /// scheduler, with no `await` in between: a dispatch while the store is written cannot
    /// claim a job this cancel reports cancelled (it would run on, with no `StopJob`).
    public func cancel(runIDs: [Int64], jobIDs: [Int64], as principal: Principal) async throws -> CancelResult {
        try Authorization.check(principal, .cancel)
        guard !runIDs.isEmpty || !jobIDs.isEmpty else {
            throw CoordinatorError.invalid("cancel needs at least one run or job id")
        }
        var targets: [JobRecord] = []
        for runID in runIDs {
            guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
            targets += try await store.jobs(runID: runID, attempt: run.attempt).filter { !$0.status.isFinished }
        }
        for jobID in jobIDs {
            guard let job = try await store.job(id: jobID) else { throw CoordinatorError.notFound("job \(jobID) does not exist") }
            if !job.status.isFinished { targets.append(job) }
        }
        let reason = "cancelled by \(principal.name)"
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
        return Self.cancelResult(entries)
    }

    /// A cancel of a running job no table here has: its holder (another coordinator) stops
    /// it, and a claim on its way here that took it ends it cancelled.
    func cancelHeldElsewhere(_ jobID: Int64, reason: String) {
        if claimCancels != nil { claimCancels?[jobID] = reason }
        tell(.cancel(jobID: jobID, reason: reason))
    }

    static func cancelResult(_ entries: [QueueEntry]) -> CancelResult {
        CancelResult(jobs: Array(entries.prefix(maximumListedJobs)), count: entries.count)
    }

    /// Cancels every queued job matching all the filters, in one transaction.
    /// With `dryRun`, lists them and cancels nothing.
    public func bulkCancel(_ request: BulkCancelRequest, as principal: Principal) async throws -> CancelResult {
        try Authorization.check(principal, .bulkCancel)
        func given(_ value: String?) -> String? { value.flatMap { $0.isEmpty ? nil : $0 } }
        let filter = RunFilter(project: given(request.project), pipeline: given(request.pipeline), branch: given(request.branch))
        let label = given(request.label)
        let matching = try await store.queuedJobs(matching: filter).filter {
            (cluster != nil || scheduler.isQueued($0.id)) && (label.map($0.labels.contains) ?? true)
        }
        if request.dryRun {
            var runs: [Int64: RunRecord] = [:]
            let listed = Array(matching.prefix(Self.maximumListedJobs))
            for job in listed where runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            let places = try await places(listed.map(\.id))
            let entries = listed.compactMap { job in runs[job.runID].map { queueEntry(job, run: $0, place: places[job.id] ?? 0) } }
            return CancelResult(jobs: entries, count: matching.count)
        }
        // Out of the scheduler before any await (see `cancel`).
        scheduler.removeQueued(Set(matching.map(\.id)))
        return Self.cancelResult(try await storeCancelled(matching, reason: "cancelled by \(principal.name) (bulk)"))
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
