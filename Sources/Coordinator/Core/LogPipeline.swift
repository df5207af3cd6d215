import Foundation
import Logging
import Synchronization

/// The log pipeline: node log chunks are checked and queued in order as they arrive, and a
/// group commit writes whatever is queued to the log store (`LogStore`), syncs it once, records
/// the new lengths in the store in one transaction, and only then resolves the bytes. It owns
/// what waits for the next commit, who waits for it (back-pressure, barriers), each running
/// job's log lengths, the size limit's trims and whether the storage is full.
///
/// It knows nothing of leases or sessions: the lifecycle says under which epoch a chunk came,
/// which epoch each job holds when a batch is committed, and it acknowledges, shows and fails
/// what the commit's `Outcome` lists (`JobLifecycle+Logs.swift`). The lifecycle runs the commit loop
/// (`nextBatch`, `commit`, `delivered`) one batch at a time.
actor LogPipeline {
    struct Chunk: Sendable {
        var jobID: Int64
        var epoch: Int64
        var node: String
        var offset: Int64
        var data: Data
        var times: [LogTime] = []
        var done: LogDurability?
    }

    /// A running job's node logs, under one epoch.
    struct JobLogs {
        var epoch: Int64
        /// Length of each node's log, counting bytes queued for the next group commit.
        var ends: [String: UInt64]
        /// Durable length of each node's log.
        var durable: [String: UInt64]
        /// Stored bytes of each node's log (less what the size limit dropped), once counted.
        var stored: [String: Int64] = [:]
    }

    /// The job a batch's chunks belong to as the core holds it now.
    struct Holder: Sendable {
        var epoch: Int64
        /// Its runner is connected to this coordinator.
        var connected: Bool
    }

    struct Batch: Sendable {
        var chunks: [Chunk]
        /// Finished jobs whose open log segments this commit closes.
        var closing: Set<Int64>
        var jobIDs: Set<Int64> { Set(chunks.map(\.jobID)) }
    }

    /// What a commit came to, for the core to acknowledge, show and fail.
    struct Outcome: Sendable {
        /// Chunks now durable, in arrival order.
        var committed: [Chunk] = []
        /// The durable length of each node log a runner is acknowledged.
        var acks: [(jobID: Int64, node: String, durable: UInt64)] = []
        /// Runners told to send again from the durable length (the storage is full).
        var resend: [(jobID: Int64, node: String, durable: UInt64)] = []
        /// Jobs whose sessions are closed with `failure` (any other storage failure).
        var close: [Int64] = []
        var failure: CoordinatorError?
    }

    /// Bytes queued for a commit past which sessions stop reading log chunks until it drains.
    /// Bigger lets the network run on while a large batch is written (32 MiB: 1.1 GB/s,
    /// 64 MiB: 1.4 GB/s, 128 MiB: 1.45 GB/s here; see BENCHMARKS.md); it bounds memory.
    static let maximumPendingBytes = 64 << 20

    let store: any CoordinatorStore
    let logStore: any LogStore
    let cluster: (any ClusterStore)?
    let maximumLogBytes: Int64
    let logger: Logger
    /// Since when (milliseconds) the storage is full, as the last failed write said; nil once
    /// a write succeeds again. Read without waiting (`/readyz`, the runner list).
    nonisolated let fullSince = Mutex<Int64?>(nil)

    /// Log lengths of running jobs (loaded from the store on a job's first chunk here).
    private var jobs: [Int64: JobLogs] = [:]
    /// Chunks waiting for the next group commit, in arrival order, and their bytes.
    private var pending: [Chunk] = []
    private var pendingBytes = 0
    /// Whether a commit loop runs, and how many batches it committed.
    private var flushing = false
    private(set) var batches = 0
    private var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    private var barrierWaiters: [(batch: Int, waiter: CheckedContinuation<Void, Never>)] = []
    private var closing: Set<Int64> = []
    /// Node logs whose middle is being dropped (for the size limit) in the background.
    private var trimming: Set<LogKey> = []

    init(store: any CoordinatorStore, logStore: any LogStore, cluster: (any ClusterStore)?, maximumLogBytes: Int64,
         logger: Logger) {
        self.store = store
        self.logStore = logStore
        self.cluster = cluster
        self.maximumLogBytes = maximumLogBytes
        self.logger = logger
    }

    enum Queued {
        /// Nothing new: the node log's durable length, to acknowledge at once.
        case durable(UInt64)
        /// Queued; the caller starts the commit loop when `startLoop`.
        case queued(startLoop: Bool)
    }

    /// Checks a chunk against the node log's length and queues its new bytes. A chunk that
    /// repeats stored bytes is trimmed; one that would leave a gap is refused.
    func queue(_ chunk: Chunk) async throws -> Queued {
        while pendingBytes >= Self.maximumPendingBytes {
            await withCheckedContinuation { spaceWaiters.append($0) }
        }
        let jobID = chunk.jobID
        if jobs[jobID]?.epoch != chunk.epoch {
            let lengths = try await store.logLengths(jobID: jobID).mapValues { UInt64($0) }
            if jobs[jobID]?.epoch != chunk.epoch {
                jobs[jobID] = JobLogs(epoch: chunk.epoch, ends: lengths, durable: lengths)
            }
        }
        // From here on nothing suspends.
        let state = jobs[jobID] ?? JobLogs(epoch: chunk.epoch, ends: [:], durable: [:])
        let end = state.ends[chunk.node] ?? 0
        let offset = UInt64(chunk.offset)
        let chunkEnd = offset + UInt64(chunk.data.count)
        guard offset <= end else {
            throw CoordinatorError.invalid("log chunk for node '\(chunk.node)' starts at \(offset) but only \(end) bytes are stored")
        }
        let durable = state.durable[chunk.node] ?? 0
        if chunkEnd <= end && durable == end { return .durable(durable) }
        var fresh = chunk
        fresh.offset = Int64(end)
        fresh.data = chunkEnd <= end ? Data() : offset == end ? chunk.data : Data(chunk.data.suffix(Int(chunkEnd - end)))
        fresh.times = fresh.data.isEmpty ? [] : chunk.times.filter { $0.offset < Int64(chunkEnd) }.from(Int64(end))
        jobs[jobID, default: state].ends[chunk.node] = max(end, chunkEnd)
        pending.append(fresh)
        pendingBytes += fresh.data.count
        guard !flushing else { return .queued(startLoop: false) }
        flushing = true
        return .queued(startLoop: true)
    }

    /// What is queued, for the next commit; nil (and the loop ends) when nothing is.
    func nextBatch() -> Batch? {
        guard !pending.isEmpty else {
            flushing = false
            let waiting = barrierWaiters
            barrierWaiters = []
            for entry in waiting { entry.waiter.resume() }
            return nil
        }
        defer { (pending, closing) = ([], []) }
        return Batch(chunks: pending, closing: closing)
    }

    /// Commits a batch: chunks of jobs whose holder changed since they were queued are
    /// dropped; the rest is written, synced and its lengths recorded, fenced by each job's
    /// epoch. Resolves every chunk's `done` and frees the space the batch took.
    func commit(_ batch: Batch, holders: [Int64: Holder]) async -> Outcome {
        var kept = batch.chunks.filter { holders[$0.jobID]?.epoch == $0.epoch }
        var dropped = batch.chunks.filter { holders[$0.jobID]?.epoch != $0.epoch }
        for id in Set(dropped.map(\.jobID)) where jobs[id]?.epoch != holders[id]?.epoch { jobs[id] = nil }
        var outcome = Outcome()
        do {
            // The store refuses the lengths of logs whose job another lease holds now.
            let refused = try await persist(kept, closing: batch.closing, holders: holders)
            if !refused.isEmpty {
                dropped += kept.filter { refused.contains($0.jobID) }
                kept.removeAll { refused.contains($0.jobID) }
            }
            committed(kept, into: &outcome)
        } catch {
            failed(kept, error, into: &outcome)
        }
        for chunk in dropped {
            chunk.done?.resolve(.failure(CoordinatorError(.staleLease, "job \(chunk.jobID) is no longer leased at epoch \(chunk.epoch)")))
        }
        pendingBytes -= (kept + dropped).reduce(0) { $0 + $1.data.count }
        batches += 1
        let space = spaceWaiters
        spaceWaiters = []
        for waiter in space { waiter.resume() }
        return outcome
    }

    /// The core has acknowledged and shown a batch: barriers it reached return.
    func delivered() {
        let reached = barrierWaiters.filter { $0.batch <= batches }
        barrierWaiters.removeAll { $0.batch <= batches }
        for entry in reached { entry.waiter.resume() }
    }

    /// Returns once every chunk queued before the call is committed (or dropped) and delivered.
    func barrier() async {
        guard flushing else { return }
        // The batch in flight may have been taken before the call: wait for the one after.
        let target = batches + 2
        await withCheckedContinuation { barrierWaiters.append((target, $0)) }
    }

    /// A job's lease ended without finishing it (it goes back to the queue).
    func forget(jobID: Int64) {
        jobs[jobID] = nil
    }

    /// A job finished: its logs get no more bytes; the next commit closes their segments.
    func finished(jobID: Int64) {
        jobs[jobID] = nil
        closing.insert(jobID)
    }

    /// Writes and syncs a batch, then records the node logs' new lengths in one transaction,
    /// fenced by each job's epoch; returns the jobs whose lengths the store refused.
    private func persist(_ batch: [Chunk], closing: Set<Int64>, holders: [Int64: Holder]) async throws -> Set<Int64> {
        var ends: [LogKey: (length: Int64, epoch: Int64)] = [:]
        var writes: [LogWrite] = []
        for item in batch {
            let key = LogKey(jobID: item.jobID, node: item.node)
            ends[key] = (max(ends[key]?.length ?? 0, item.offset + Int64(item.data.count)), item.epoch)
            if !item.data.isEmpty { writes.append(LogWrite(key: key, offset: item.offset, data: item.data, times: item.times)) }
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
                holders[id].flatMap { $0.connected ? LeaseRef(jobID: id, epoch: $0.epoch) : nil }
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

    /// A batch is durable: each chunk resolved, each node log's durable length recorded for
    /// its runner's acknowledgement, and each log kept under its size limit.
    private func committed(_ batch: [Chunk], into outcome: inout Outcome) {
        if fullSince.withLock({ $0.take() }) != nil {
            logger.notice("storage is writable again: log bytes are stored")
        }
        var ends: [LogKey: UInt64] = [:]
        var added: [LogKey: Int64] = [:]
        for item in batch {
            let key = LogKey(jobID: item.jobID, node: item.node)
            let end = UInt64(item.offset) + UInt64(item.data.count)
            ends[key] = max(ends[key] ?? 0, end)
            added[key, default: 0] += Int64(item.data.count)
            item.done?.resolve(.success(end))
            if !item.data.isEmpty { outcome.committed.append(item) }
        }
        for (key, end) in ends.sorted(by: { ($0.key.jobID, $0.key.node) < ($1.key.jobID, $1.key.node) }) {
            guard jobs[key.jobID] != nil else { continue }
            let durable = max(end, jobs[key.jobID]?.durable[key.node] ?? 0)
            jobs[key.jobID]?.durable[key.node] = durable
            outcome.acks.append((key.jobID, key.node, durable))
        }
        for (key, bytes) in added where bytes > 0 { enforceLimit(key, added: bytes) }
    }

    /// A batch could not be made durable. Nothing of it was acknowledged, and what was queued
    /// after it for the same jobs is dropped (it would follow bytes that are not there).
    /// When the storage is full, each of those logs' runners is told to send again from the
    /// durable offset after a pause (`LogAck{resend}`) and its session goes on; after any
    /// other failure the sessions are closed, and the runners reconnect and send again.
    private func failed(_ batch: [Chunk], _ error: any Error, into outcome: inout Outcome) {
        let failedJobs = Set(batch.map(\.jobID))
        let full = CoordinatorError(error).code == .unavailable
        let failure: CoordinatorError
        if full {
            let first = fullSince.withLock { since in
                guard since == nil else { return false }
                since = Date.nowMilliseconds
                return true
            }
            if first {
                logger.error("storage is full: log bytes wait with their runners until it is not", metadata: ["error": "\(error)"])
            }
            failure = CoordinatorError(.unavailable, "the coordinator's storage is full: log bytes were not stored (\(error)); send them again later")
        } else {
            logger.error("cannot store log bytes", metadata: ["error": "\(error)"])
            failure = CoordinatorError(.internal, "cannot store log bytes: \(error)")
        }
        let later = pending.filter { failedJobs.contains($0.jobID) }
        pending.removeAll { failedJobs.contains($0.jobID) }
        pendingBytes -= later.reduce(0) { $0 + $1.data.count }
        for item in batch + later { item.done?.resolve(.failure(failure)) }
        outcome.failure = failure
        for jobID in failedJobs.sorted() {
            if full {
                let nodes = Set((batch + later).filter { $0.jobID == jobID }.map(\.node))
                for node in nodes.sorted() { outcome.resend.append((jobID, node, jobs[jobID]?.durable[node] ?? 0)) }
            } else {
                outcome.close.append(jobID)
            }
            // Its lengths are read from the store again at its next chunk: the durable ones.
            jobs[jobID] = nil
        }
    }

    /// Keeps a node's stored log under the limit: the first half of the limit (the head) and
    /// the most recent bytes (the tail) stay; whole segments between them go. Readers see the
    /// gap as a count of dropped bytes. The files go in a task of the pipeline's, off the
    /// commit path (an unlink can wait for the disk); the segment being written is never among
    /// them.
    private func enforceLimit(_ key: LogKey, added: Int64) {
        let limit = maximumLogBytes
        guard let end = jobs[key.jobID]?.durable[key.node].map({ Int64($0) }) else { return }
        // Not counted yet (first commit of the job here): its length is an upper bound.
        let stored = jobs[key.jobID]?.stored[key.node].map { $0 + added } ?? end
        jobs[key.jobID]?.stored[key.node] = stored
        // Trim in steps, not at every chunk: allow an eighth of the limit over it.
        guard stored > limit + limit / 8, !trimming.contains(key) else { return }
        trimming.insert(key)
        let logStore = self.logStore
        Task {
            let left = try? await logStore.dropMiddle(of: key, from: limit / 2, to: end - limit / 2, end: end)
            self.trimmed(key, left: left, at: end)
        }
    }

    /// A trim is done: `left` bytes were kept up to `end`.
    private func trimmed(_ key: LogKey, left: Int64?, at end: Int64) {
        trimming.remove(key)
        guard let left, let now = jobs[key.jobID]?.durable[key.node] else { return }
        jobs[key.jobID]?.stored[key.node] = left + max(0, Int64(now) - end)
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
