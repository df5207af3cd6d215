import Foundation

/// The queue as admins see it: listing, live changes, moves and cancels. Reads of the store
/// are done here; what must see the queue and the running jobs at one instant is the
/// `JobLifecycle`'s.
extension CoordinatorCore {
    /// Running jobs, then queued ones in dispatch order, each queued one with its place and,
    /// when no runner can take it, why. The first `limit` (`ListLimit.queue`, at most `most`)
    /// are listed. On SQLite the order comes from memory; in a cluster from the database. Only
    /// the jobs listed are read.
    public func queue(limit: Int? = nil, most: Int? = nil, as principal: Principal) async throws -> QueueList {
        try Authorization.check(principal, .listQueue)
        let limit = try ListLimit.queue.resolve(limit, most: most)
        let records: [JobRecord]
        let total: Int
        if let cluster {
            // The database is the queue: every coordinator's running jobs, then the queued.
            let head = try await cluster.queueHead(limit: limit)
            (records, total) = (head.jobs, head.queued + head.running)
        } else {
            let (ids, all) = await jobs.localQueueHead(limit: limit)
            let byID = Dictionary(try await store.jobs(ids: ids).map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
            (records, total) = (ids.compactMap { byID[$0] }, all)
        }
        var runs: [Int64: RunRecord] = [:]
        var listed: [(job: JobRecord, run: RunRecord, place: Int?)] = []
        var place = 0
        for job in records {
            if runs[job.runID] == nil { runs[job.runID] = try await store.run(id: job.runID) }
            guard let run = runs[job.runID] else { continue }
            if job.status == .queued { place += 1 }
            listed.append((job, run, cluster == nil ? nil : place))
        }
        return QueueList(jobs: await jobs.entries(listed), total: total)
    }

    /// Subscribes the session to queue changes: `subscribed`, then queue events with
    /// `requestID`, until the session ends.
    public func watchQueue(session: UInt64, requestID: UInt64) async throws {
        _ = try authorize(session: session, .watchQueue)
        guard let sink = sink(of: session) else { return }
        sink.send(.subscribed(requestID: requestID))
        live.addQueueWatcher(session: session, requestID: requestID, sink: sink)
    }

    /// Moves a queued job and returns it with its new place. In a cluster the store places it,
    /// where every coordinator's moves meet; on SQLite the in-memory queue and then the store.
    public func move(jobID: Int64, to target: MoveTarget?, as principal: Principal) async throws -> QueueEntry {
        try Authorization.check(principal, .moveInQueue)
        guard let target else {
            throw CoordinatorError.invalid("queue move needs a target: top, bottom, before, after or position")
        }
        if case .position(let n) = target, n < 1 { throw CoordinatorError.invalid("queue positions start at 1") }
        let wasQueued: Bool
        if let cluster {
            switch try await cluster.moveQueued(jobID: jobID, to: target) {
            case .notQueued: wasQueued = false
            case .noSuchAnchor: throw CoordinatorError.notFound("the job to move next to is not queued")
            case .moved(let moved):
                tell(.moved(jobID: jobID, position: moved.position))  // for the other coordinators' watchers
                return await jobs.moved(moved.job, run: moved.run, place: moved.place)
            }
        } else {
            wasQueued = try await jobs.moveLocal(jobID: jobID, to: target)
        }
        guard wasQueued else {
            guard let job = try await store.job(id: jobID) else { throw CoordinatorError.notFound("job \(jobID) does not exist") }
            throw CoordinatorError(.failedPrecondition, "job \(jobID) is \(job.status.rawValue); only queued jobs can be moved")
        }
        return try await moved(jobID, place: nil)
    }

    /// A job just moved (to `place`, in a cluster), as a queue entry, published to the queue's
    /// watchers.
    func moved(_ jobID: Int64, place: Int?) async throws -> QueueEntry {
        guard let job = try await store.job(id: jobID), let run = try await store.run(id: job.runID) else {
            throw CoordinatorError.notFound("job \(jobID) does not exist")
        }
        return await jobs.moved(job, run: run, place: place)
    }

    /// Cancels runs (their latest attempt's unfinished jobs) and jobs. Queued jobs are
    /// cancelled in one transaction; running ones are stopped on their runners, which report
    /// them cancelled. Returns the jobs affected (`JobLifecycle.cancel`).
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
        return try await jobs.cancel(targets, reason: "cancelled by \(principal.name)")
    }

    /// Cancels every queued job matching all the filters, in one transaction.
    /// With `dryRun`, lists them and cancels nothing.
    public func bulkCancel(_ request: BulkCancelRequest, as principal: Principal) async throws -> CancelResult {
        try Authorization.check(principal, .bulkCancel)
        func given(_ value: String?) -> String? { value.flatMap { $0.isEmpty ? nil : $0 } }
        let filter = RunFilter(project: given(request.project), pipeline: given(request.pipeline), branch: given(request.branch))
        let label = given(request.label)
        let matching = try await store.queuedJobs(matching: filter).filter { label.map($0.labels.contains) ?? true }
        return try await jobs.cancelQueued(matching, reason: "cancelled by \(principal.name) (bulk)", dryRun: request.dryRun)
    }
}
