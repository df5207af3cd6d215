import Foundation

/// Watching a run attempt: log bytes from storage at the reader's pace, then live.
extension CoordinatorCore {
    /// Most watches one session may have open at once.
    public static let maximumWatchesPerSession = 16

    /// Subscribes the session to a run attempt (the latest when not given): `subscribed`,
    /// stored log bytes, then live ones and job changes, then `end`. It returns when the end
    /// was sent or the session closed (`endWatches`), so a front runs it beside the session's
    /// other requests.
    ///
    /// Memory stays bounded whatever the log's size: stored bytes are read 1 MiB at a time,
    /// each piece only once the session's sink has room (`EventSink.room()`); a watcher that
    /// falls behind the live tail is fed from storage again the same way.
    public func watch(session: UInt64, requestID: UInt64, _ request: WatchRequest) async throws {
        _ = try authorize(session: session, .watchRun)
        guard let sink = sink(of: session) else { return }
        let runID = request.runID
        guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        let attempt = request.attempt.flatMap { $0 == 0 ? nil : $0 } ?? run.attempt
        guard (1...run.attempt).contains(attempt) else {
            throw CoordinatorError.notFound("run \(runID) has no attempt \(attempt)")
        }
        let watcher = Watcher(session: session, requestID: requestID, runID: runID, attempt: attempt,
                              request: request, sink: sink)
        // Registered before anything is read: every chunk is either read from storage or
        // offered live after this; offsets drop the overlap.
        subscriptions.add(watcher)
        defer { subscriptions.remove(watcher) }
        // A session that closed while this waited for the store has ended its watches already.
        guard !sink.isClosed, sessions[session] != nil else { return }
        let jobs = try await store.jobs(runID: runID, attempt: attempt)
        if let wanted = watcher.job, !jobs.contains(where: { $0.name == wanted }) {
            throw CoordinatorError.notFound("run \(runID) has no job '\(wanted)' (jobs: \(jobs.map(\.name).joined(separator: ", ")))")
        }
        sink.send(.subscribed(requestID: requestID))
        let selected = jobs.filter { watcher.job == nil || $0.name == watcher.job }
        let names = Dictionary(uniqueKeysWithValues: selected.map { ($0.id, $0.name) })
        for job in selected { watcher.jobStatuses[job.id] = job.status }
        try await catchUp(watcher, names: names)
        let latest = try await store.run(id: runID) ?? run
        let finished = jobs.allSatisfy(\.status.isFinished) && (latest.attempt > attempt || latest.status.isFinished)
        if (finished || !request.follow) && !watcher.ended {
            var summary = latest
            summary.attempt = attempt
            watcher.deliver(.end(summary))
        }
        while await fellBehind(watcher) {
            do {
                try await catchUp(watcher, names: names)
                if cluster != nil { try await catchUpJobs(watcher) }
            } catch let error as StoreError where error.code == .unavailable {
                // The store is out of reach for a moment (a database restarting): the watcher
                // stays behind and reads again shortly, until its session ends.
                logger.info("a watch waits for the store", metadata: ["run.id": "\(runID)", "error": "\(error)"])
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// In a cluster: job changes and the attempt's end that another coordinator made, read
    /// from the store (each status once: the watcher remembers what it sent).
    func catchUpJobs(_ watcher: Watcher) async throws {
        let jobs = try await store.jobs(runID: watcher.runID, attempt: watcher.attempt)
        for job in jobs where !watcher.ended && watcher.matches(job: job.name, node: nil) && watcher.jobStatuses[job.id] != job.status {
            var event = jobEvent(job, status: job.status, runner: job.runner, at: job.startedAt)
            event.finishedAt = job.finishedAt
            event.reason = job.reason
            watcher.deliver(.job(event))
        }
        guard !watcher.ended, jobs.allSatisfy(\.status.isFinished),
              var run = try await store.run(id: watcher.runID), run.attempt > watcher.attempt || run.status.isFinished else { return }
        run.attempt = watcher.attempt
        watcher.deliver(.end(run))
    }

    /// Sends the watcher the stored log bytes it has not had, at its reader's pace, pass after
    /// pass until one ends with nothing dropped from its live buffer; then it is live.
    func catchUp(_ watcher: Watcher, names: [Int64: String]) async throws {
        repeat {
            guard watcher.logs else { continue }
            for end in try await store.logEnds(jobIDs: names.keys.sorted(), node: watcher.node) {
                let key = Watcher.key(end.jobID, end.node)
                let logKey = LogKey(jobID: end.jobID, node: end.node)
                while !watcher.ended, Int64(watcher.sent(key)) < end.length {
                    guard await watcher.sink.room() else {
                        watcher.end()
                        return
                    }
                    let from = Int64(watcher.sent(key))
                    guard let piece = try await logStore.piece(of: logKey, from: from, end: end.length) else { break }
                    watcher.deliver(.log(LogChunk(jobID: piece.jobID, job: names[piece.jobID] ?? "", node: piece.node,
                                                  offset: UInt64(piece.offset), data: piece.data)))
                }
            }
        } while !watcher.ended && watcher.finishPass()
    }

    /// Waits while the watcher is live: true when it fell behind and must read from storage,
    /// false once it ended or its session closed.
    func fellBehind(_ watcher: Watcher) async -> Bool {
        if watcher.ended { return false }
        if case .catchingUp = watcher.mode { return true }
        return await withCheckedContinuation { watcher.waiting = $0 }
    }

    /// The session's watches end (it is closing): their `watch` calls return.
    public func endWatches(session: UInt64) {
        subscriptions.endWatches(session: session)
    }

    func publish(runID: Int64, attempt: Int, _ event: WatchEvent) {
        subscriptions.publish(runID: runID, attempt: attempt, event)
    }
}
