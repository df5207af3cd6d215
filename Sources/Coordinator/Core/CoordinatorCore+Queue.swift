import Foundation
import Wire

/// The queue as admins see it: listing, live changes, moves and cancels.
extension CoordinatorCore {
    func queueEntry(_ job: JobRecord, run: RunRecord) -> Heddle_V1_QueueEntry {
        var entry = Heddle_V1_QueueEntry()
        entry.jobID = UInt64(job.id)
        entry.runID = UInt64(job.runID)
        entry.attempt = UInt32(job.attempt)
        entry.project = run.project
        entry.pipeline = run.pipeline
        entry.job = job.name
        entry.branch = run.branch
        entry.labels = job.labels
        entry.status = job.status.proto
        entry.runner = job.runner ?? ""
        entry.queuedAtMs = job.queuedAt
        if job.status == .queued {
            entry.position = UInt32((scheduler.index(of: job.id) ?? -1) + 1)
            entry.waitingReason = scheduler.unmatchedReason(for: Set(job.labels)) ?? ""
        }
        return entry
    }

    func publishQueue(_ kind: Heddle_V1_QueueEvent.Kind, _ entry: Heddle_V1_QueueEntry) {
        guard !queueWatchers.isEmpty else { return }
        var event = Heddle_V1_QueueEvent()
        event.kind = kind
        event.job = entry
        for watcher in queueWatchers {
            watcher.outbox.send(Envelope(id: watcher.requestID, .queueEvent(event)))
        }
    }

    /// Running jobs, then queued ones in dispatch order, each queued one with its place and,
    /// when no runner can take it, why.
    /// The order comes from memory; only the jobs listed are read from the store.
    public func queue(limit: Int = .max) async throws -> Heddle_V1_QueueList {
        let running = active.keys.sorted()
        let ids = Array(running.prefix(limit)) + scheduler.queue.prefix(max(0, limit - running.count)).map(\.id)
        var list = Heddle_V1_QueueList()
        list.total = UInt32(running.count + scheduler.queue.count)
        let records = Dictionary(try await store.jobs(ids: ids).map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var runs: [Int64: RunRecord] = [:]
        for id in ids {
            guard let job = records[id] else { continue }
            if runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            guard let run = runs[job.runID] else { continue }
            list.jobs.append(queueEntry(job, run: run))
        }
        return list
    }

    /// Subscribes `outbox` to queue changes (QueueEvents with `requestID`).
    public func watchQueue(session: UInt64, requestID: UInt64, outbox: Outbox) {
        outbox.send(.ok(id: requestID))
        queueWatchers.append(QueueWatcher(session: session, requestID: requestID, outbox: outbox))
    }

    /// Moves a queued job and returns it with its new place. One row changes, whatever the
    /// length of the queue, except when repeated moves into one gap exhaust the precision
    /// between two neighbours: then the queue is renumbered once.
    public func move(jobID: Int64, to target: Scheduler.MoveTarget) async throws -> Heddle_V1_QueueEntry {
        func notQueued() async throws -> WireError {
            guard let job = try await store.job(id: jobID) else { return WireError.notFound("job \(jobID) does not exist") }
            return WireError(.failedPrecondition, "job \(jobID) is \(job.status.rawValue); only queued jobs can be moved")
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
            throw WireError.notFound("the job to move next to is not queued")
        }
        // Moved in memory before the store is written: a dispatch meanwhile sees the new order.
        scheduler.reposition(jobID, to: position)
        _ = try await store.setPosition(jobID: jobID, position: position)
        guard let job = try await store.job(id: jobID), let run = try await store.run(id: job.runID) else {
            throw WireError.notFound("job \(jobID) does not exist")
        }
        let entry = queueEntry(job, run: run)
        // Claimed while the move was stored: the claim was published, not a move.
        if scheduler.isQueued(jobID) { publishQueue(.moved, entry) }
        return entry
    }

    /// Cancels runs (their latest attempt's unfinished jobs) and jobs. Queued jobs are
    /// cancelled in one transaction; running ones are stopped on their runners, which report
    /// them cancelled. Returns the jobs affected.
    ///
    /// What is queued and what runs is decided, and the queued jobs taken out of the
    /// scheduler, with no `await` in between: a dispatch while the store is written cannot
    /// claim a job this cancel reports cancelled (it would run on, with no `StopJob`).
    public func cancel(runIDs: [Int64], jobIDs: [Int64], by who: PeerIdentity) async throws -> Heddle_V1_CancelResult {
        var targets: [JobRecord] = []
        for runID in runIDs {
            guard let run = try await store.run(id: runID) else { throw WireError.notFound("run \(runID) does not exist") }
            targets += try await store.jobs(runID: runID, attempt: run.attempt).filter { !$0.status.isFinished }
        }
        for jobID in jobIDs {
            guard let job = try await store.job(id: jobID) else { throw WireError.notFound("job \(jobID) does not exist") }
            if !job.status.isFinished { targets.append(job) }
        }
        let reason = "cancelled by \(who.name)"
        // No await from here until the queued jobs are out of the scheduler and the stops pushed.
        let queued = targets.filter { scheduler.isQueued($0.id) }
        scheduler.removeQueued(Set(queued.map(\.id)))
        var running: [(JobRecord, ActiveJob)] = []
        for job in targets {
            guard var lease = active[job.id] else { continue }
            if lease.cancelReason == nil {
                lease.cancelReason = reason
                active[job.id] = lease
                // A runner that is away gets the stop when it reattaches the job.
                if let session = lease.session { runners[session]?.outbox.send(.stopJob(UInt64(job.id), reason: reason)) }
                logger.info("stop pushed", metadata: ["job.id": "\(job.id)", "runner": "\(lease.runner)"])
            }
            running.append((job, lease))
        }
        var entries = try await storeCancelled(queued, reason: reason)
        for (job, lease) in running {
            guard let run = try await store.run(id: job.runID) else { continue }
            var job = job  // read before it was claimed, perhaps
            job.status = .running
            job.runner = lease.runner
            entries.append(queueEntry(job, run: run))
        }
        return Self.cancelResult(entries)
    }

    /// Jobs listed in a cancel result; `count` has them all.
    public static let maximumListedJobs = 1000

    static func cancelResult(_ entries: [Heddle_V1_QueueEntry]) -> Heddle_V1_CancelResult {
        var out = Heddle_V1_CancelResult()
        out.jobs = Array(entries.prefix(maximumListedJobs))
        out.count = UInt32(entries.count)
        return out
    }

    /// Cancels every queued job matching all the filters, in one transaction.
    public func bulkCancel(_ request: Heddle_V1_BulkCancelRequest, by who: PeerIdentity) async throws -> Heddle_V1_CancelResult {
        let filter = RunFilter(project: request.project.isEmpty ? nil : request.project,
                               pipeline: request.pipeline.isEmpty ? nil : request.pipeline,
                               branch: request.branch.isEmpty ? nil : request.branch)
        let matching = try await store.queuedJobs(matching: filter).filter {
            scheduler.isQueued($0.id) && (request.label.isEmpty || $0.labels.contains(request.label))
        }
        if request.dryRun {
            var runs: [Int64: RunRecord] = [:]
            for job in matching where runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            return Self.cancelResult(matching.compactMap { job in runs[job.runID].map { queueEntry(job, run: $0) } })
        }
        // Out of the scheduler before any await (see `cancel`).
        scheduler.removeQueued(Set(matching.map(\.id)))
        return Self.cancelResult(try await storeCancelled(matching, reason: "cancelled by \(who.name) (bulk)"))
    }

    /// Stores queued jobs, already taken out of the scheduler, as cancelled in one transaction,
    /// and publishes what the store changed. A job the store no longer had queued is left out.
    private func storeCancelled(_ jobs: [JobRecord], reason: String) async throws -> [Heddle_V1_QueueEntry] {
        guard !jobs.isEmpty else { return [] }
        let now = Date.nowMilliseconds
        let result: CancelledJobs
        do {
            result = try await store.cancelJobs(ids: jobs.map(\.id), reason: reason, now: now)
        } catch {
            for job in jobs where active[job.id] == nil && !scheduler.isQueued(job.id) {
                scheduler.enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            }
            throw error
        }
        let cancelled = jobs.filter { result.jobIDs.contains($0.id) }
        logger.info("jobs cancelled", metadata: ["count": "\(cancelled.count)", "reason": "\(reason)"])
        var runs: [Int64: RunRecord] = Dictionary(result.runs.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var entries: [Heddle_V1_QueueEntry] = []
        for var job in cancelled {
            if runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            guard let run = runs[job.runID] else { continue }
            job.status = .cancelled  // so the entry has no place and no waiting reason to work out
            let entry = queueEntry(job, run: run)
            entries.append(entry)
            publishQueue(.cancelled, entry)
        }
        if !watchers.isEmpty {
            for job in cancelled {
                var detail = jobEvent(job, status: .cancelled, runner: nil, at: 0)
                detail.finishedAtMs = now
                detail.reason = reason
                publish(runID: job.runID, attempt: job.attempt, .job(detail))
            }
            for run in result.runs where run.status.isFinished {
                publish(runID: run.id, attempt: run.attempt, .end(run.proto))
            }
        }
        return entries
    }
}
