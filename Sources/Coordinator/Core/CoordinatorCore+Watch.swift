import Foundation
import Wire

/// Watching a run attempt: log bytes from storage at the reader's pace, then live.
extension CoordinatorCore {
    /// Most watches one session may have open at once.
    public static let maximumWatchesPerSession = 16

    /// Subscribes `outbox` to a run attempt: stored log bytes, then live ones, then `end`. It
    /// returns when the end was sent or the session closed (`endWatches`), so a front runs it
    /// beside the session's other requests.
    ///
    /// Memory stays bounded whatever the log's size: stored bytes are read 1 MiB at a time,
    /// each piece only once the session's outbox has room (`Outbox.room()`); a watcher that
    /// falls behind the live tail is fed from storage again the same way.
    public func watch(session: UInt64, requestID: UInt64, _ request: Heddle_V1_WatchRequest, outbox: Outbox) async throws {
        let runID = Int64(request.runID)
        guard let run = try await store.run(id: runID) else { throw WireError.notFound("run \(runID) does not exist") }
        let attempt = request.attempt == 0 ? run.attempt : Int(request.attempt)
        guard (1...run.attempt).contains(attempt) else {
            throw WireError.notFound("run \(runID) has no attempt \(attempt)")
        }
        let watcher = Watcher(session: session, requestID: requestID, runID: runID, attempt: attempt,
                              request: request, outbox: outbox)
        // Registered before anything is read: every chunk is either read from storage or
        // offered live after this; offsets drop the overlap.
        watchers[runID, default: []].append(watcher)
        defer { removeWatcher(watcher) }
        // A session that closed while this waited for the store has ended its watches already.
        guard !outbox.isClosed else { return }
        let jobs = try await store.jobs(runID: runID, attempt: attempt)
        if let wanted = watcher.job, !jobs.contains(where: { $0.name == wanted }) {
            throw WireError.notFound("run \(runID) has no job '\(wanted)' (jobs: \(jobs.map(\.name).joined(separator: ", ")))")
        }
        outbox.send(.ok(id: requestID))
        let selected = jobs.filter { watcher.job == nil || $0.name == watcher.job }
        let names = Dictionary(uniqueKeysWithValues: selected.map { ($0.id, $0.name) })
        try await catchUp(watcher, names: names)
        let latest = try await store.run(id: runID) ?? run
        let finished = jobs.allSatisfy(\.status.isFinished) && (latest.attempt > attempt || latest.status.isFinished)
        if (finished || !request.follow) && !watcher.ended {
            var summary = latest.proto
            summary.attempt = UInt32(attempt)
            var event = Heddle_V1_WatchEvent()
            event.end = summary
            watcher.deliver(event)
        }
        while await fellBehind(watcher) {
            try await catchUp(watcher, names: names)
        }
    }

    /// Sends the watcher the stored log bytes it has not had, at its reader's pace, pass after
    /// pass until one ends with nothing dropped from its live buffer; then it is live.
    func catchUp(_ watcher: Watcher, names: [Int64: String]) async throws {
        repeat {
            guard watcher.logs else { continue }
            for end in try await store.logEnds(jobIDs: names.keys.sorted(), node: watcher.node) {
                let key = Watcher.key(UInt64(end.jobID), end.node)
                let logKey = LogFiles.LogKey(jobID: end.jobID, node: end.node)
                while !watcher.ended, Int64(watcher.delivered[key] ?? 0) < end.length {
                    guard await watcher.outbox.room() else {
                        watcher.end()
                        return
                    }
                    let from = Int64(watcher.delivered[key] ?? 0)
                    let files = logFiles
                    guard let piece = try await blobs.pool.runIfActive({ try files.read(logKey, from: from, end: end.length) })
                    else { break }
                    var event = Heddle_V1_WatchEvent()
                    event.log.jobID = UInt64(piece.jobID)
                    event.log.job = names[piece.jobID] ?? ""
                    event.log.node = piece.node
                    event.log.offset = UInt64(piece.offset)
                    event.log.data = piece.data
                    watcher.deliver(event)
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

    func removeWatcher(_ watcher: Watcher) {
        watcher.end()
        watchers[watcher.runID]?.removeAll { $0 === watcher }
        if watchers[watcher.runID]?.isEmpty == true { watchers[watcher.runID] = nil }
    }

    /// The session's watches end (it is closing): their `watch` calls return.
    public func endWatches(session: UInt64) {
        for list in watchers.values {
            for watcher in list where watcher.session == session { watcher.end() }
        }
    }

    func publish(runID: Int64, attempt: Int, _ event: Heddle_V1_WatchEvent.OneOf_Event) {
        guard let list = watchers[runID], !list.isEmpty else { return }
        var message = Heddle_V1_WatchEvent()
        message.event = event
        for watcher in list where watcher.attempt == attempt {
            switch event {
            case .log(let chunk):
                guard watcher.logs, watcher.matches(job: chunk.job, node: chunk.node) else { continue }
            case .job(let job):
                guard watcher.matches(job: job.name, node: nil) else { continue }
            case .end:
                break
            }
            watcher.offer(message)
        }
    }
}
