import Foundation
import Logging

/// Watching a run attempt: log bytes from storage at the reader's pace, then live. A watch
/// runs outside the core actor: it reads the store and the log store, and takes what the core
/// publishes through `LiveEvents`; many readers of big logs never wait behind the job
/// lifecycle, nor it behind them.
struct Watches: Sendable {
    let live: LiveEvents
    let store: any CoordinatorStore
    let logStore: any LogStore
    /// One of a cluster: job changes another coordinator made are read from the store.
    let inCluster: Bool
    /// The size limit of a node log (what it may have dropped reads as dropped).
    let maximumLogBytes: Int64
    let logger: Logger

    /// Sends `subscribed`, stored log bytes, then live ones and job changes, then `end`.
    /// Returns when the end was sent or the session closed (`LiveEvents.endWatches`).
    ///
    /// Memory stays bounded whatever the log's size: stored bytes are read 1 MiB at a time,
    /// each piece only once the session's sink has room (`EventSink.room()`); a watcher that
    /// falls behind the live tail is fed from storage again the same way.
    func run(session: UInt64, requestID: UInt64, _ request: WatchRequest, sink: any EventSink) async throws {
        let runID = request.runID
        guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        let attempt = try run.attempt(asked: request.attempt)
        let watcher = Watcher(session: session, requestID: requestID, runID: runID, attempt: attempt,
                              request: request, sink: sink)
        // Registered before anything is read: every chunk is either read from storage or
        // offered live after this; offsets drop the overlap.
        live.add(watcher)
        defer { live.remove(watcher) }
        // A session that closed while this waited for the store has ended its watches already.
        guard !sink.isClosed else { return }
        let jobs = try await store.jobs(runID: runID, attempt: attempt)
        if let wanted = watcher.job, !jobs.contains(where: { $0.name == wanted }) {
            throw CoordinatorError.notFound("run \(runID) has no job '\(wanted)' (jobs: \(jobs.map(\.name).joined(separator: ", ")))")
        }
        sink.send(.subscribed(requestID: requestID))
        let selected = jobs.filter { watcher.job == nil || $0.name == watcher.job }
        // Logs by the job they are of: a job carried over by a re-run of the failed jobs has the
        // log of the one it copies.
        let names = Dictionary(uniqueKeysWithValues: selected.map { ($0.logJobID, $0.name) })
        live.with(watcher) { watcher in
            for job in selected { watcher.jobStatuses[job.id] = job.status }
        }
        try await catchUp(watcher, names: names)
        let latest = try await store.run(id: runID) ?? run
        let finished = jobs.allSatisfy(\.status.isFinished) && (latest.attempt > attempt || latest.status.isFinished)
        live.with(watcher) { watcher in
            if (finished || !request.follow) && !watcher.ended {
                var summary = latest
                summary.attempt = attempt
                watcher.deliver(.end(summary))
            }
        }
        while await fellBehind(watcher) {
            do {
                try await catchUp(watcher, names: names)
                if inCluster { try await catchUpJobs(watcher) }
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
    private func catchUpJobs(_ watcher: Watcher) async throws {
        let jobs = try await store.jobs(runID: watcher.runID, attempt: watcher.attempt)
        live.with(watcher) { watcher in
            for job in jobs where !watcher.ended && watcher.matches(job: job.name, node: nil) && watcher.jobStatuses[job.id] != job.status {
                var event = JobEvent(job, status: job.status, runner: job.runner, at: job.startedAt)
                event.finishedAt = job.finishedAt
                event.reason = job.reason
                watcher.deliver(.job(event))
            }
        }
        guard !live.with(watcher, \.ended), jobs.allSatisfy(\.status.isFinished),
              var run = try await store.run(id: watcher.runID), run.attempt > watcher.attempt || run.status.isFinished else { return }
        run.attempt = watcher.attempt
        live.with(watcher) { $0.deliver(.end(run)) }
    }

    /// Sends the watcher the stored log bytes it has not had, at its reader's pace, pass after
    /// pass until one ends with nothing dropped from its live buffer; then it is live.
    private func catchUp(_ watcher: Watcher, names: [Int64: String]) async throws {
        repeat {
            guard watcher.logs else { continue }
            for end in try await store.logEnds(jobIDs: names.keys.sorted(), node: watcher.node) {
                let key = Watcher.key(end.jobID, end.node)
                let logKey = LogKey(jobID: end.jobID, node: end.node)
                // The log's time marks, read once for this pass (not once per piece).
                var marks: [LogTime]?
                while let from = live.with(watcher, { $0.ended ? nil : Int64($0.sent(key)) }), from < end.length {
                    guard await watcher.sink.room() else {
                        live.with(watcher) { $0.end() }
                        return
                    }
                    guard let piece = try await logStore.checkedPiece(of: logKey, from: from, end: end.length,
                                                                        limit: maximumLogBytes) else { break }
                    if marks == nil { marks = try await logStore.times(of: logKey, from: piece.offset, to: end.length) }
                    let times = (marks ?? []).filter { $0.offset < piece.offset + Int64(piece.data.count) }.from(piece.offset)
                    live.with(watcher) {
                        $0.deliver(.log(LogChunk(jobID: piece.jobID, job: names[piece.jobID] ?? "", node: piece.node,
                                                 offset: UInt64(piece.offset), data: piece.data, times: times)))
                    }
                }
            }
        } while live.with(watcher, { !$0.ended && $0.finishPass() })
    }

    /// Waits while the watcher is live: true when it fell behind and must read from storage,
    /// false once it ended or its session closed.
    private func fellBehind(_ watcher: Watcher) async -> Bool {
        await withCheckedContinuation { continuation in
            live.with(watcher) { watcher in
                if watcher.ended {
                    continuation.resume(returning: false)
                } else if case .catchingUp = watcher.mode {
                    continuation.resume(returning: true)
                } else {
                    watcher.waiting = continuation
                }
            }
        }
    }
}

extension JobEvent {
    /// A job's change, as watchers get it.
    init(_ job: JobRecord, status: Status, runner: String?, at: Int64?) {
        self.init(id: job.id, name: job.name, status: status, runner: runner, startedAt: at, labels: job.labels,
                  attempt: job.attempt)
    }
}
