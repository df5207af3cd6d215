import Foundation

/// Node logs, the lifecycle's side: chunks checked against their job's lease, and the
/// `LogPipeline`'s commits delivered to the jobs' current holders.
extension JobLifecycle {
    /// Checks a log chunk against its job's current lease and node; returns the lease's epoch.
    func logLease(session: UInt64, _ append: LogBytes) async throws -> Int64 {
        _ = try lease(append.job, session: session)
        try await checkNode(append.node, of: append.job.jobID)
        // Checked again after the await: the lease may have gone meanwhile.
        return try lease(append.job, session: session).epoch
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
            lineIndexes.extend(LogKey(jobID: chunk.jobID, node: chunk.node), with: chunk.data, at: chunk.offset)
            guard let job = table[chunk.jobID] else { continue }
            publish(runID: job.runID, attempt: job.attempt,
                    .log(LogChunk(jobID: chunk.jobID, job: job.name, node: chunk.node, offset: UInt64(chunk.offset), data: chunk.data,
                                  times: chunk.times)))
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
}
