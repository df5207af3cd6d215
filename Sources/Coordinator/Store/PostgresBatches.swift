import PostgresNIO
import Synchronization

/// Group commit for PostgreSQL: writes that arrive while the transactions on their way are
/// busy (up to `maximumInFlight`) wait, then share the next one. N concurrent writes (job starts, node ends, job ends, new runs)
/// cost one `BEGIN`/`COMMIT` and one WAL flush instead of N. Every caller resumes only after
/// the commit that made its write durable, and every write keeps its own fence (the epoch and
/// holder checks are statements of the write itself), so a batched write is refused exactly
/// as a single one would be.
///
/// Job ends next to each other in a batch are one statement (`PostgresStore.endJobs`): one
/// round trip for them all, each still fenced on its own, a refused end answered with its
/// refusal without failing the others.
///
/// A batch of one write that writes with one statement (`oneStatement`: a job's end, a
/// node's, a job's commit) runs as that statement's own transaction, without `BEGIN` and
/// `COMMIT`: two round trips fewer when writes come one at a time.
///
/// No savepoints (each would cost two round trips): a write that fails makes the whole
/// transaction roll back; that write is answered with its error and the others run again in a
/// new transaction. A deadlock or a lost connection is the batch's, not one write's: the
/// batch is retried (`PostgresStore.transaction`) or every write gets the error.
final class PostgresBatches: Sendable {
    private let state = Mutex(State())

    private struct State {
        var pending: [Operation] = []
        /// Transactions on their way (at most `maximumInFlight`).
        var running = 0
    }

    /// One write: runs in the shared transaction and returns what to do once it commits.
    private struct Operation: Sendable {
        enum Work: Sendable {
            case write(@Sendable (PostgresConnection) async throws -> @Sendable () -> Void)
            /// A job's end, answered with its result: the ends next to each other in a batch
            /// are one statement (`PostgresStore.endJobs`).
            case end(PostgresStore.JobEnd, @Sendable (Result<(RunRecord, JobRecord), any Error>) -> Void)
        }
        var work: Work
        var fail: @Sendable (any Error) -> Void
        /// Writes with one statement: alone in a batch, it needs no explicit transaction.
        var oneStatement: Bool
    }

    /// One write of a batch failed on its own: its index, and its error.
    private struct WriteFailed: Error {
        var index: Int
        var error: any Error
    }

    /// The statement of several ends failed on its own (not the connection's or the batch's
    /// fault): which end it was is unknown, so the batch goes again with each end alone.
    private struct EndsFailed: Error {}

    /// Largest number of writes one transaction takes.
    static let maximumBatch = 256
    /// Transactions of batches on their way at once, each on a connection of its own: a batch
    /// is a series of round trips, and one at a time would make every write wait for all of
    /// them.
    static let maximumInFlight = 4

    init() {}

    /// Runs `body` in the next transaction of `store`'s batches (every write of one
    /// `PostgresBatches` is of one store).
    func write<T: Sendable>(on store: PostgresStore, oneStatement: Bool,
                            _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            enqueue(Operation(
                work: .write { db in
                    let value = try await body(db)
                    return { continuation.resume(returning: value) }
                },
                fail: { continuation.resume(throwing: $0) },
                oneStatement: oneStatement), store)
        }
    }

    /// Ends a job in the next transaction of `store`'s batches, in one statement with the ends
    /// next to it there.
    func end(_ end: PostgresStore.JobEnd, on store: PostgresStore) async throws -> (RunRecord, JobRecord) {
        try await withCheckedThrowingContinuation { continuation in
            enqueue(Operation(work: .end(end) { continuation.resume(with: $0) },
                              fail: { continuation.resume(throwing: $0) }, oneStatement: true), store)
        }
    }

    private func enqueue(_ operation: Operation, _ store: PostgresStore) {
        let start = state.withLock { state in
            state.pending.append(operation)
            guard state.running < Self.maximumInFlight else { return false }
            state.running += 1
            return true
        }
        // A loop of the batches, owned by the store (at most `maximumInFlight`): runs while
        // writes wait, then ends.
        if start { Task { await self.drain(store) } }
    }

    private func drain(_ store: PostgresStore) async {
        while true {
            let batch = state.withLock { state -> [Operation] in
                let batch = Array(state.pending.prefix(Self.maximumBatch))
                state.pending.removeFirst(batch.count)
                if batch.isEmpty { state.running -= 1 }
                return batch
            }
            if batch.isEmpty { return }
            await commit(batch, store)
        }
    }

    /// What a batch runs, in its order: a write, or ends next to each other (a range of the
    /// batch's indices), one statement.
    private enum Step {
        case write(Int)
        case ends(Range<Int>)
    }

    private static func steps(_ writes: [Operation], endsTogether: Bool) -> [Step] {
        var steps: [Step] = []
        for (index, write) in writes.enumerated() {
            switch write.work {
            case .write: steps.append(.write(index))
            case .end:
                if endsTogether, case .ends(let range) = steps.last {
                    steps[steps.count - 1] = .ends(range.lowerBound..<index + 1)
                } else {
                    steps.append(.ends(index..<index + 1))
                }
            }
        }
        return steps
    }

    private func commit(_ batch: [Operation], _ store: PostgresStore) async {
        var remaining = batch
        var endsTogether = true
        let (holder, logger) = (store.coordinatorID, store.logger)
        while !remaining.isEmpty {
            let writes = remaining
            let steps = Self.steps(writes, endsTogether: endsTogether)
            do {
                let started = ContinuousClock.now
                // One statement alone is its own transaction.
                let explicit: Bool
                switch steps.first {
                case .write(let index) where steps.count == 1: explicit = !writes[index].oneStatement
                case .ends where steps.count == 1: explicit = false
                default: explicit = true
                }
                let completions = try await store.transaction(function: "batch of \(writes.count) writes", explicit: explicit) { db in
                    var completions: [@Sendable () -> Void] = []
                    completions.reserveCapacity(writes.count)
                    for step in steps {
                        switch step {
                        case .write(let index):
                            guard case .write(let run) = writes[index].work else { continue }
                            do {
                                completions.append(try await run(db))
                            } catch let error as PSQLError where error.serverInfo == nil || PostgresStore.isRetryable(error) {
                                throw error  // the connection's or the batch's: retried, or every write fails
                            } catch let error as PSQLError {
                                throw WriteFailed(index: index, error: PostgresStore.storeError(error))
                            } catch {
                                throw WriteFailed(index: index, error: error)
                            }
                        case .ends(let range):
                            let ends = writes[range].map { write -> PostgresStore.JobEnd in
                                guard case .end(let end, _) = write.work else { preconditionFailure("an end's step holds ends only") }
                                return end
                            }
                            do {
                                let results = try await PostgresStore.endJobs(db, ends, holder: holder, logger: logger)
                                for (index, result) in zip(range, results) {
                                    guard case .end(_, let answer) = writes[index].work else { continue }
                                    completions.append { answer(result.mapError { $0 }) }
                                }
                            } catch let error as PSQLError where error.serverInfo == nil || PostgresStore.isRetryable(error) {
                                throw error
                            } catch {
                                guard range.count == 1 else { throw EndsFailed() }
                                throw WriteFailed(index: range.lowerBound,
                                                  error: (error as? PSQLError).map(PostgresStore.storeError) ?? error)
                            }
                        }
                    }
                    return completions
                }
                CoreMetrics.storeCommit.record(duration: ContinuousClock.now - started)
                for completion in completions { completion() }
                return
            } catch let failed as WriteFailed {
                // Rolled back: that write fails, the others go again.
                remaining[failed.index].fail(failed.error)
                remaining.remove(at: failed.index)
            } catch is EndsFailed {
                endsTogether = false
            } catch {
                for write in remaining { write.fail(error) }
                return
            }
        }
    }
}
