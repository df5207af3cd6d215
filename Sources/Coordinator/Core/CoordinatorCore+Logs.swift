import Foundation
import Synchronization
import Wire

/// Node logs: chunks are checked and queued in order as they arrive, and a group-commit loop
/// writes whatever is queued to the segment files (`LogFiles`), syncs them once, records the
/// new lengths in the store in one transaction, and only then acknowledges the bytes to the
/// runner and shows them to watchers. A session never waits for a commit before it reads its
/// next frame; it waits only when too many bytes are queued (back-pressure).
extension CoordinatorCore {
    struct PendingLog {
        var jobID: Int64
        var epoch: Int64
        var node: String
        var offset: Int64
        var data: Data
        var done: LogDurability?
    }

    /// Bytes queued for a commit past which sessions stop reading log chunks until it drains.
    /// Bigger lets the network run on while a large batch is written (32 MiB: 1.1 GB/s,
    /// 64 MiB: 1.4 GB/s, 128 MiB: 1.45 GB/s here; see BENCHMARKS.md); it bounds memory.
    static let maximumPendingLogBytes = 64 << 20

    /// Stores a log chunk and returns, once it is durable, the node log's durable length. A
    /// chunk that repeats stored bytes is trimmed; one that would leave a gap is refused.
    public func appendLog(session: UInt64, _ append: Heddle_V1_LogAppend) async throws -> UInt64 {
        let done = LogDurability()
        if let durable = try await queueLog(session: session, append, done: done) { return durable }
        return try await done.value()
    }

    /// Checks a log chunk and queues its new bytes for the next group commit. Returns the
    /// node log's durable length when the chunk added nothing that is not durable already
    /// (the caller acknowledges at once); nil when the commit will acknowledge it.
    public func queueLog(session: UInt64, _ append: Heddle_V1_LogAppend, done: LogDurability? = nil) async throws -> UInt64? {
        while pendingLogBytes >= Self.maximumPendingLogBytes {
            await withCheckedContinuation { logSpaceWaiters.append($0) }
        }
        let jobID = Int64(append.job.jobID)
        _ = try lease(append.job, session: session)
        try await checkNode(append.node, of: jobID)
        if active[jobID]?.logEnds == nil {
            let lengths = try await store.logLengths(jobID: jobID).mapValues { UInt64($0) }
            if active[jobID]?.logEnds == nil {
                active[jobID]?.logEnds = lengths
                active[jobID]?.durableLogEnds = lengths
            }
        }
        // Checked again after the awaits: from here on nothing suspends.
        let job = try lease(append.job, session: session)
        let end = job.logEnds?[append.node] ?? 0
        let chunkEnd = append.offset + UInt64(append.data.count)
        guard append.offset <= end else {
            throw WireError.invalid("log chunk for node '\(append.node)' starts at \(append.offset) but only \(end) bytes are stored")
        }
        let durable = job.durableLogEnds[append.node] ?? 0
        if chunkEnd <= end && durable == end { return durable }
        let fresh = chunkEnd <= end ? Data() : append.offset == end ? append.data : Data(append.data.suffix(Int(chunkEnd - end)))
        active[jobID]?.logEnds?[append.node] = max(end, chunkEnd)
        pendingLogs.append(PendingLog(jobID: jobID, epoch: job.epoch, node: append.node, offset: Int64(end),
                                      data: fresh, done: done))
        pendingLogBytes += fresh.count
        if !flushingLogs {
            flushingLogs = true
            Task { await flushLogs() }
        }
        return nil
    }

    /// The group-commit loop: runs while chunks are queued.
    func flushLogs() async {
        while !pendingLogs.isEmpty {
            // Chunks of jobs that lost their lease since they were queued are dropped.
            let batch = pendingLogs.filter { active[$0.jobID]?.epoch == $0.epoch }
            let dropped = pendingLogs.filter { active[$0.jobID]?.epoch != $0.epoch }
            pendingLogs = []
            let closing = finishedLogJobs
            finishedLogJobs = []
            for item in dropped {
                item.done?.resolve(.failure(WireError(.staleEpoch, "job \(item.jobID) is no longer leased at epoch \(item.epoch)")))
            }
            do {
                try await persist(batch, closing: closing)
                committed(batch)
            } catch {
                failed(batch, error)
            }
            pendingLogBytes -= batch.reduce(0) { $0 + $1.data.count } + dropped.reduce(0) { $0 + $1.data.count }
            logBatches += 1
            let space = logSpaceWaiters
            logSpaceWaiters = []
            for waiter in space { waiter.resume() }
            let reached = logBarrierWaiters.filter { $0.batch <= logBatches }
            logBarrierWaiters.removeAll { $0.batch <= logBatches }
            for entry in reached { entry.waiter.resume() }
        }
        flushingLogs = false
        let waiting = logBarrierWaiters
        logBarrierWaiters = []
        for entry in waiting { entry.waiter.resume() }
    }

    /// Writes and syncs a batch, then records the node logs' new lengths in one transaction.
    func persist(_ batch: [PendingLog], closing: Set<Int64>) async throws {
        var ends: [LogFiles.LogKey: Int64] = [:]
        var writes: [LogFiles.Write] = []
        for item in batch {
            let key = LogFiles.LogKey(jobID: item.jobID, node: item.node)
            ends[key] = max(ends[key] ?? 0, item.offset + Int64(item.data.count))
            if !item.data.isEmpty { writes.append(LogFiles.Write(key: key, offset: item.offset, data: item.data)) }
        }
        let files = logFiles
        try await blobs.pool.runIfActive { [writes] in try files.writeDurably(writes, closing: closing) }
        try await store.setLogEnds(ends.map { LogEnd(jobID: $0.key.jobID, node: $0.key.node, length: $0.value) })
    }

    /// A batch is durable: acknowledge it to the runner of each job, show it to watchers,
    /// and keep each log under its size limit.
    func committed(_ batch: [PendingLog]) {
        var acks: [LogFiles.LogKey: UInt64] = [:]
        var added: [LogFiles.LogKey: Int64] = [:]
        for item in batch {
            let key = LogFiles.LogKey(jobID: item.jobID, node: item.node)
            let end = UInt64(item.offset) + UInt64(item.data.count)
            acks[key] = max(acks[key] ?? 0, end)
            added[key, default: 0] += Int64(item.data.count)
            item.done?.resolve(.success(end))
            guard !item.data.isEmpty, let job = active[item.jobID] else { continue }
            var chunk = Heddle_V1_LogChunk()
            chunk.jobID = UInt64(item.jobID)
            chunk.job = job.name
            chunk.node = item.node
            chunk.offset = UInt64(item.offset)
            chunk.data = item.data
            publish(runID: job.runID, attempt: job.attempt, .log(chunk))
        }
        for (key, end) in acks.sorted(by: { ($0.key.jobID, $0.key.node) < ($1.key.jobID, $1.key.node) }) {
            guard let job = active[key.jobID] else { continue }
            if end > job.durableLogEnds[key.node] ?? 0 { active[key.jobID]?.durableLogEnds[key.node] = end }
            // The job's current session: after a reconnect, the runner's new connection.
            if let session = job.session, let outbox = runners[session]?.outbox {
                var ack = Heddle_V1_LogAck()
                ack.jobID = UInt64(key.jobID)
                ack.node = key.node
                ack.durableOffset = active[key.jobID]?.durableLogEnds[key.node] ?? end
                outbox.send(Envelope(.logAck(ack)))
            }
        }
        for (key, bytes) in added where bytes > 0 { enforceLogLimit(key, added: bytes) }
    }

    /// A batch could not be made durable. Nothing of it was acknowledged; the sessions of its
    /// jobs are closed, so their runners reconnect and send the bytes again, and what was
    /// queued after it for those jobs is dropped (it would follow bytes that are not there).
    func failed(_ batch: [PendingLog], _ error: any Error) {
        logger.error("cannot store log bytes", metadata: ["error": "\(error)"])
        let jobs = Set(batch.map(\.jobID))
        let wire = WireError(.internal, "cannot store log bytes: \(error)")
        let later = pendingLogs.filter { jobs.contains($0.jobID) }
        pendingLogs.removeAll { jobs.contains($0.jobID) }
        pendingLogBytes -= later.reduce(0) { $0 + $1.data.count }
        for item in batch + later { item.done?.resolve(.failure(wire)) }
        for jobID in jobs {
            active[jobID]?.logEnds = nil
            active[jobID]?.durableLogEnds = [:]
            active[jobID]?.storedBytes = [:]
            if let session = active[jobID]?.session, let open = sessions[session] {
                runners[session]?.outbox.send(.error(wire))
                open.close()
            }
        }
    }

    /// Returns once every chunk queued before the call is committed (or dropped).
    func logBarrier() async {
        guard flushingLogs else { return }
        // The batch in flight may have been taken before the call: wait for the one after.
        let target = logBatches + 2
        await withCheckedContinuation { logBarrierWaiters.append((target, $0)) }
    }

    /// Keeps a node's stored log under the limit: the first half of the limit (the head) and
    /// the most recent bytes (the tail) stay; whole segments between them go. Readers see the
    /// gap as a count of dropped bytes. The files go in the background, off the commit path
    /// (an unlink can wait for the disk); the segment being written is never among them.
    func enforceLogLimit(_ key: LogFiles.LogKey, added: Int64) {
        let limit = limits.maximumLogBytes
        guard let end = active[key.jobID]?.durableLogEnds[key.node].map({ Int64($0) }) else { return }
        // Not counted yet (first commit of the job here): its length is an upper bound.
        let stored = active[key.jobID]?.storedBytes[key.node].map { $0 + added } ?? end
        active[key.jobID]?.storedBytes[key.node] = stored
        // Trim in steps, not at every chunk: allow an eighth of the limit over it.
        guard stored > limit + limit / 8, !trimming.contains(key) else { return }
        trimming.insert(key)
        let files = logFiles
        Task {
            let left = try? await blobs.pool.runIfActive {
                files.drop(key, from: limit / 2, to: end - limit / 2)
                return files.storedBytes(key, end: end)
            }
            self.trimmed(key, left: left, at: end)
        }
    }

    /// A trim is done: `left` bytes were kept up to `end`.
    func trimmed(_ key: LogFiles.LogKey, left: Int64?, at end: Int64) {
        trimming.remove(key)
        guard let left, let now = active[key.jobID]?.durableLogEnds[key.node] else { return }
        active[key.jobID]?.storedBytes[key.node] = left + max(0, Int64(now) - end)
    }

    /// Moves log bytes an older version kept in the database into segment files.
    func importLegacyLogs() async throws {
        while let chunks = try await store.legacyLogChunks(), let jobID = chunks.first?.jobID {
            let writes = chunks.map {
                LogFiles.Write(key: LogFiles.LogKey(jobID: $0.jobID, node: $0.node), offset: $0.offset, data: $0.data)
            }
            let files = logFiles
            try await blobs.pool.runIfActive { try files.writeDurably(writes, closing: [jobID]) }
            try await store.deleteLegacyLogChunks(jobID: jobID)
        }
    }
}

/// The outcome of one queued log chunk, for a caller that waits for it.
public final class LogDurability: Sendable {
    private let state = Mutex<(result: Result<UInt64, any Error>?, waiter: CheckedContinuation<UInt64, any Error>?)>((nil, nil))

    public init() {}

    func resolve(_ result: Result<UInt64, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<UInt64, any Error>? in
            guard state.result == nil else { return nil }
            state.result = result
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(with: result)
    }

    func value() async throws -> UInt64 {
        try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Result<UInt64, any Error>? in
                if let result = state.result { return result }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
