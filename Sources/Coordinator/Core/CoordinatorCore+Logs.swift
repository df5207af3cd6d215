import Foundation

/// Node logs, the core's side: a chunk is checked against its job's lease and node
/// (`JobLifecycle`), then queued in the `LogPipeline`, which commits in groups; the lifecycle
/// runs the commit loop and, for each committed batch, acknowledges the bytes to the job's
/// current runner session, shows them to watchers, and fails what the storage refused. A
/// session never waits for a commit before it reads its next frame; it waits only when too
/// many bytes are queued.
extension CoordinatorCore {
    /// Log batches committed so far.
    var logBatches: Int {
        get async { await logPipeline.batches }
    }

    /// Stores a log chunk and returns, once it is durable, the node log's durable length. A
    /// chunk that repeats stored bytes is trimmed; one that would leave a gap is refused.
    public func appendLog(session: UInt64, _ append: LogBytes) async throws -> UInt64 {
        let done = LogDurability()
        if let durable = try await queueLog(session: session, append, done: done) { return durable }
        return try await done.value()
    }

    /// Checks a log chunk and queues its new bytes for the next group commit. Returns the
    /// node log's durable length when the chunk added nothing that is not durable already
    /// (the caller acknowledges at once); nil when the commit will acknowledge it.
    public func queueLog(session: UInt64, _ append: LogBytes, done: LogDurability? = nil) async throws -> UInt64? {
        let epoch = try await jobs.logLease(session: session, append)
        let chunk = LogPipeline.Chunk(jobID: append.job.jobID, epoch: epoch, node: append.node,
                                      offset: Int64(append.offset), data: append.data, times: append.times, done: done)
        switch try await logPipeline.queue(chunk) {
        case .durable(let durable):
            return durable
        case .queued(let startLoop):
            // The core's one commit loop: runs while chunks are queued, then ends.
            if startLoop { Task { [jobs] in await jobs.commitLogs() } }
            return nil
        }
    }

    /// Since when (milliseconds) the storage is full; nil when it is not.
    nonisolated var storageFullSince: Int64? {
        logPipeline.fullSince.withLock { $0 }
    }

    /// Whether the coordinator can do its work now (`/readyz`), and why not.
    public nonisolated var isReady: (ready: Bool, reason: String) {
        if let since = storageFullSince {
            return (false, "not ready: the coordinator's storage has been full since \(Date(timeIntervalSince1970: Double(since) / 1000))")
        }
        return (true, "ready")
    }
}
