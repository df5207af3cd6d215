import Foundation

/// Node logs, the core's side: a chunk is checked against its job's lease and node, then
/// queued in the `LogPipeline`, which commits in groups; the core runs the commit loop and,
/// for each committed batch, acknowledges the bytes to the job's current runner session,
/// shows them to watchers, and fails what the storage refused. A session never waits for a
/// commit before it reads its next frame; it waits only when too many bytes are queued.
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
        _ = try lease(append.job, session: session)
        try await checkNode(append.node, of: append.job.jobID)
        // Checked again after the await: the lease may have gone meanwhile.
        let job = try lease(append.job, session: session)
        let chunk = LogPipeline.Chunk(jobID: append.job.jobID, epoch: job.epoch, node: append.node,
                                      offset: Int64(append.offset), data: append.data, done: done)
        switch try await logPipeline.queue(chunk) {
        case .durable(let durable):
            return durable
        case .queued(let startLoop):
            // The core's one commit loop: runs while chunks are queued, then ends.
            if startLoop { Task { await commitLogs() } }
            return nil
        }
    }

    /// The commit loop: one batch at a time while chunks are queued. Each batch is committed
    /// for the jobs' holders as they are when it is taken, then delivered.
    func commitLogs() async {
        while let batch = await logPipeline.nextBatch() {
            var holders: [Int64: LogPipeline.Holder] = [:]
            for id in batch.jobIDs {
                if let job = table[id] { holders[id] = .init(epoch: job.epoch, connected: job.session != nil) }
            }
            deliver(await logPipeline.commit(batch, holders: holders))
            await logPipeline.delivered()
        }
    }

    /// Acknowledges a commit to each job's current session (after a reconnect, the runner's
    /// new connection), shows its bytes to watchers, and tells runners what failed.
    func deliver(_ outcome: LogPipeline.Outcome) {
        for chunk in outcome.committed {
            guard let job = table[chunk.jobID] else { continue }
            publish(runID: job.runID, attempt: job.attempt,
                    .log(LogChunk(jobID: chunk.jobID, job: job.name, node: chunk.node, offset: UInt64(chunk.offset), data: chunk.data)))
        }
        for (acks, resend) in [(outcome.acks, false), (outcome.resend, true)] {
            for ack in acks {
                guard let job = table[ack.jobID], let session = job.session, runners[session] != nil else { continue }
                sink(of: session)?.send(.logAck(jobID: ack.jobID, epoch: job.epoch, node: ack.node, durable: ack.durable,
                                                resend: resend))
            }
        }
        if let failure = outcome.failure {
            for jobID in outcome.close {
                guard let session = table[jobID]?.session, let open = sessions[session] else { continue }
                open.sink.send(.failure(failure))
                open.close()
            }
        }
        if cluster != nil {
            let runIDs = Set(outcome.committed.compactMap { table[$0.jobID]?.runID })
            if !runIDs.isEmpty { tell(.run(runIDs: runIDs.sorted())) }
        }
    }

    /// Returns once every chunk queued before the call is committed (or dropped) and shown.
    func logBarrier() async {
        await logPipeline.barrier()
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
