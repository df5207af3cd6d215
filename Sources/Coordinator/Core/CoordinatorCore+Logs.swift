import Foundation
import Synchronization

/// The state of the log pipeline: what waits for the next group commit, who waits for it, and
/// each running job's log lengths.
struct LogCommits {
    struct PendingLog {
        var jobID: Int64
        var epoch: Int64
        var node: String
        var offset: Int64
        var data: Data
        var done: LogDurability?
    }

    /// A running job's node logs.
    struct JobLogs {
        /// Length of each node's log, counting bytes queued for the next group commit.
        var ends: [String: UInt64]
        /// Durable length of each node's log.
        var durable: [String: UInt64]
        /// Stored bytes of each node's log (less what the size limit dropped), once counted.
        var stored: [String: Int64] = [:]
    }

    /// Bytes queued for a commit past which sessions stop reading log chunks until it drains.
    /// Bigger lets the network run on while a large batch is written (32 MiB: 1.1 GB/s,
    /// 64 MiB: 1.4 GB/s, 128 MiB: 1.45 GB/s here; see BENCHMARKS.md); it bounds memory.
    static let maximumPendingBytes = 64 << 20

    /// Log lengths of running jobs (loaded from the store on a job's first chunk here).
    var jobs: [Int64: JobLogs] = [:]
    /// Log bytes waiting for the next group commit, in arrival order, and their total.
    var pending: [PendingLog] = []
    var pendingBytes = 0
    /// Whether the group-commit loop runs, how many batches it committed, and who waits.
    var flushing = false
    var batches = 0
    var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    var barrierWaiters: [(batch: Int, waiter: CheckedContinuation<Void, Never>)] = []
    /// Finished jobs whose open log segments the next commit closes.
    var closing: Set<Int64> = []
    /// Node logs whose middle is being dropped (for the size limit) in the background.
    var trimming: Set<LogKey> = []

    /// A job's lease ended without finishing it (it goes back to the queue).
    mutating func forget(jobID: Int64) {
        jobs[jobID] = nil
    }

    /// A job finished: its logs get no more bytes.
    mutating func finished(jobID: Int64) {
        jobs[jobID] = nil
        closing.insert(jobID)
    }
}

/// Node logs: chunks are checked and queued in order as they arrive, and a group-commit loop
/// writes whatever is queued to the log store (`LogStore`), syncs it once, records the new
/// lengths in the store in one transaction, and only then acknowledges the bytes to the
/// runner and shows them to watchers. A session never waits for a commit before it reads its
/// next frame; it waits only when too many bytes are queued (back-pressure).
extension CoordinatorCore {
    typealias PendingLog = LogCommits.PendingLog

    /// Log batches committed so far.
    var logBatches: Int { logs.batches }

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
        while logs.pendingBytes >= LogCommits.maximumPendingBytes {
            await withCheckedContinuation { logs.spaceWaiters.append($0) }
        }
        let jobID = append.job.jobID
        _ = try lease(append.job, session: session)
        try await checkNode(append.node, of: jobID)
        if logs.jobs[jobID] == nil {
            let lengths = try await store.logLengths(jobID: jobID).mapValues { UInt64($0) }
            // Loaded only for a job still leased (its lease may have ended meanwhile).
            if logs.jobs[jobID] == nil && table[jobID] != nil {
                logs.jobs[jobID] = LogCommits.JobLogs(ends: lengths, durable: lengths)
            }
        }
        // Checked again after the awaits: from here on nothing suspends.
        let job = try lease(append.job, session: session)
        let state = logs.jobs[jobID] ?? LogCommits.JobLogs(ends: [:], durable: [:])
        let end = state.ends[append.node] ?? 0
        let chunkEnd = append.offset + UInt64(append.data.count)
        guard append.offset <= end else {
            throw CoordinatorError.invalid("log chunk for node '\(append.node)' starts at \(append.offset) but only \(end) bytes are stored")
        }
        let durable = state.durable[append.node] ?? 0
        if chunkEnd <= end && durable == end { return durable }
        let fresh = chunkEnd <= end ? Data() : append.offset == end ? append.data : Data(append.data.suffix(Int(chunkEnd - end)))
        logs.jobs[jobID, default: state].ends[append.node] = max(end, chunkEnd)
        logs.pending.append(PendingLog(jobID: jobID, epoch: job.epoch, node: append.node, offset: Int64(end),
                                       data: fresh, done: done))
        logs.pendingBytes += fresh.count
        if !logs.flushing {
            logs.flushing = true
            Task { await flushLogs() }
        }
        return nil
    }

    /// The group-commit loop: runs while chunks are queued.
    func flushLogs() async {
        while !logs.pending.isEmpty {
            // Chunks of jobs that lost their lease since they were queued are dropped.
            var batch = logs.pending.filter { table[$0.jobID]?.epoch == $0.epoch }
            var dropped = logs.pending.filter { table[$0.jobID]?.epoch != $0.epoch }
            logs.pending = []
            let closing = logs.closing
            logs.closing = []
            do {
                // The store refuses the lengths of logs whose job another lease holds now.
                let refused = try await persist(batch, closing: closing)
                if !refused.isEmpty {
                    dropped += batch.filter { refused.contains($0.jobID) }
                    batch.removeAll { refused.contains($0.jobID) }
                }
                committed(batch)
            } catch {
                failed(batch, error)
            }
            for item in dropped {
                item.done?.resolve(.failure(CoordinatorError(.staleLease, "job \(item.jobID) is no longer leased at epoch \(item.epoch)")))
            }
            logs.pendingBytes -= batch.reduce(0) { $0 + $1.data.count } + dropped.reduce(0) { $0 + $1.data.count }
            logs.batches += 1
            let space = logs.spaceWaiters
            logs.spaceWaiters = []
            for waiter in space { waiter.resume() }
            let batches = logs.batches
            let reached = logs.barrierWaiters.filter { $0.batch <= batches }
            logs.barrierWaiters.removeAll { $0.batch <= batches }
            for entry in reached { entry.waiter.resume() }
        }
        logs.flushing = false
        let waiting = logs.barrierWaiters
        logs.barrierWaiters = []
        for entry in waiting { entry.waiter.resume() }
    }

    /// Writes and syncs a batch, then records the node logs' new lengths in one transaction,
    /// fenced by each job's epoch; returns the jobs whose lengths the store refused.
    func persist(_ batch: [PendingLog], closing: Set<Int64>) async throws -> Set<Int64> {
        var ends: [LogKey: (length: Int64, epoch: Int64)] = [:]
        var writes: [LogWrite] = []
        for item in batch {
            let key = LogKey(jobID: item.jobID, node: item.node)
            ends[key] = (max(ends[key]?.length ?? 0, item.offset + Int64(item.data.count)), item.epoch)
            if !item.data.isEmpty { writes.append(LogWrite(key: key, offset: item.offset, data: item.data)) }
        }
        let started = ContinuousClock.now
        try await logStore.writeDurably(writes, closing: closing)
        let lengths = ends.map {
            LogEnd(jobID: $0.key.jobID, node: $0.key.node, length: $0.value.length, epoch: $0.value.epoch)
        }
        var refused = try await store.setLogEnds(lengths)
        // Jobs another coordinator took over for orphans while this one was slow to beat (a
        // database restarting): those whose runner is connected here are taken back, their
        // lengths recorded again.
        if !refused.isEmpty, let cluster {
            let connected = refused.compactMap { id in
                table[id].flatMap { $0.session == nil ? nil : LeaseRef(jobID: id, epoch: $0.epoch) }
            }
            let taken = Set(try await cluster.reclaim(connected))
            if !taken.isEmpty {
                for id in taken.sorted() {
                    logger.warning("job taken back: its runner is connected here", metadata: ["job.id": "\(id)"])
                }
                refused.subtract(taken)
                refused.formUnion(try await store.setLogEnds(lengths.filter { taken.contains($0.jobID) }))
            }
        }
        CoreMetrics.logCommit.record(duration: ContinuousClock.now - started)
        CoreMetrics.logBytes.increment(by: writes.reduce(0) { $0 + $1.data.count })
        return refused
    }

    /// A batch is durable: acknowledge it to the runner of each job, show it to watchers,
    /// and keep each log under its size limit.
    func committed(_ batch: [PendingLog]) {
        if storageFullSince != nil {
            storageFullSince = nil
            logger.notice("storage is writable again: log bytes are stored")
        }
        var acks: [LogKey: UInt64] = [:]
        var added: [LogKey: Int64] = [:]
        for item in batch {
            let key = LogKey(jobID: item.jobID, node: item.node)
            let end = UInt64(item.offset) + UInt64(item.data.count)
            acks[key] = max(acks[key] ?? 0, end)
            added[key, default: 0] += Int64(item.data.count)
            item.done?.resolve(.success(end))
            guard !item.data.isEmpty, let job = table[item.jobID] else { continue }
            publish(runID: job.runID, attempt: job.attempt,
                    .log(LogChunk(jobID: item.jobID, job: job.name, node: item.node, offset: UInt64(item.offset), data: item.data)))
        }
        for (key, end) in acks.sorted(by: { ($0.key.jobID, $0.key.node) < ($1.key.jobID, $1.key.node) }) {
            guard let job = table[key.jobID], logs.jobs[key.jobID] != nil else { continue }
            let durable = max(end, logs.jobs[key.jobID]?.durable[key.node] ?? 0)
            logs.jobs[key.jobID]?.durable[key.node] = durable
            // The job's current session: after a reconnect, the runner's new connection.
            if let session = job.session, runners[session] != nil {
                sink(of: session)?.send(.logAck(jobID: key.jobID, epoch: job.epoch, node: key.node, durable: durable))
            }
        }
        for (key, bytes) in added where bytes > 0 { enforceLogLimit(key, added: bytes) }
        if cluster != nil {
            let runIDs = Set(batch.filter { !$0.data.isEmpty }.compactMap { table[$0.jobID]?.runID })
            if !runIDs.isEmpty { tell(.run(runIDs: runIDs.sorted())) }
        }
    }

    /// A batch could not be made durable. Nothing of it was acknowledged, and what was queued
    /// after it for the same jobs is dropped (it would follow bytes that are not there).
    /// When the storage is full, each of those logs' runners is told to send again from the
    /// durable offset after a pause (`LogAck{resend}`) and its session goes on; after any
    /// other failure the sessions are closed, and the runners reconnect and send again.
    func failed(_ batch: [PendingLog], _ error: any Error) {
        let jobs = Set(batch.map(\.jobID))
        let full = CoordinatorError(error).code == .unavailable
        let failure: CoordinatorError
        if full {
            if storageFullSince == nil {
                storageFullSince = Date.nowMilliseconds
                logger.error("storage is full: log bytes wait with their runners until it is not", metadata: ["error": "\(error)"])
            }
            failure = CoordinatorError(.unavailable, "the coordinator's storage is full: log bytes were not stored (\(error)); send them again later")
        } else {
            logger.error("cannot store log bytes", metadata: ["error": "\(error)"])
            failure = CoordinatorError(.internal, "cannot store log bytes: \(error)")
        }
        let later = logs.pending.filter { jobs.contains($0.jobID) }
        logs.pending.removeAll { jobs.contains($0.jobID) }
        logs.pendingBytes -= later.reduce(0) { $0 + $1.data.count }
        for item in batch + later { item.done?.resolve(.failure(failure)) }
        var resend: [(session: UInt64, jobID: Int64, epoch: Int64, node: String, durable: UInt64)] = []
        for jobID in jobs {
            if full, let lease = table[jobID], let session = lease.session {
                let nodes = Set((batch + later).filter { $0.jobID == jobID }.map(\.node))
                for node in nodes.sorted() {
                    resend.append((session, jobID, lease.epoch, node, logs.jobs[jobID]?.durable[node] ?? 0))
                }
            }
            // Its lengths are read from the store again at its next chunk: the durable ones.
            logs.forget(jobID: jobID)
            if !full, let session = table[jobID]?.session, let open = sessions[session] {
                open.sink.send(.failure(failure))
                open.close()
            }
        }
        for item in resend {
            sink(of: item.session)?.send(.logAck(jobID: item.jobID, epoch: item.epoch, node: item.node,
                                                 durable: item.durable, resend: true))
        }
    }

    /// Returns once every chunk queued before the call is committed (or dropped).
    func logBarrier() async {
        guard logs.flushing else { return }
        // The batch in flight may have been taken before the call: wait for the one after.
        let target = logs.batches + 2
        await withCheckedContinuation { logs.barrierWaiters.append((target, $0)) }
    }

    /// Keeps a node's stored log under the limit: the first half of the limit (the head) and
    /// the most recent bytes (the tail) stay; whole segments between them go. Readers see the
    /// gap as a count of dropped bytes. The files go in the background, off the commit path
    /// (an unlink can wait for the disk); the segment being written is never among them.
    func enforceLogLimit(_ key: LogKey, added: Int64) {
        let limit = limits.maximumLogBytes
        guard let end = logs.jobs[key.jobID]?.durable[key.node].map({ Int64($0) }) else { return }
        // Not counted yet (first commit of the job here): its length is an upper bound.
        let stored = logs.jobs[key.jobID]?.stored[key.node].map { $0 + added } ?? end
        logs.jobs[key.jobID]?.stored[key.node] = stored
        // Trim in steps, not at every chunk: allow an eighth of the limit over it.
        guard stored > limit + limit / 8, !logs.trimming.contains(key) else { return }
        logs.trimming.insert(key)
        let logStore = self.logStore
        Task {
            let left = try? await logStore.dropMiddle(of: key, from: limit / 2, to: end - limit / 2, end: end)
            self.trimmed(key, left: left, at: end)
        }
    }

    /// A trim is done: `left` bytes were kept up to `end`.
    func trimmed(_ key: LogKey, left: Int64?, at end: Int64) {
        logs.trimming.remove(key)
        guard let left, let now = logs.jobs[key.jobID]?.durable[key.node] else { return }
        logs.jobs[key.jobID]?.stored[key.node] = left + max(0, Int64(now) - end)
    }
}

extension CoordinatorCore {
    /// Whether the coordinator can do its work now (`/readyz`), and why not.
    public var isReady: (ready: Bool, reason: String) {
        if let since = storageFullSince {
            return (false, "not ready: the coordinator's storage has been full since \(Date(timeIntervalSince1970: Double(since) / 1000))")
        }
        return (true, "ready")
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
