import PostgresNIO
import Synchronization

/// Group commit for PostgreSQL: writes that arrive while the transactions on their way are
/// busy (up to `maximumInFlight`) wait, then share the next one. N concurrent writes (job starts, node ends, job ends, new runs)
/// cost one `BEGIN`/`COMMIT` and one WAL flush instead of N. Every caller resumes only after
/// the commit that made its write durable, and every write keeps its own fence (the epoch and
/// holder checks are statements of the write itself), so a batched write is refused exactly
/// as a single one would be.
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
        var run: @Sendable (PostgresConnection) async throws -> @Sendable () -> Void
        var fail: @Sendable (any Error) -> Void
        /// Writes with one statement: alone in a batch, it needs no explicit transaction.
        var oneStatement: Bool
    }

    /// One write of a batch failed on its own: its index, and its error.
    private struct WriteFailed: Error {
        var index: Int
        var error: any Error
    }

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
            let operation = Operation(
                run: { db in
                    let value = try await body(db)
                    return { continuation.resume(returning: value) }
                },
                fail: { continuation.resume(throwing: $0) },
                oneStatement: oneStatement)
            let start = state.withLock { state in
                state.pending.append(operation)
                guard state.running < Self.maximumInFlight else { return false }
                state.running += 1
                return true
            }
            // A loop of the batches, owned by the store (at most `maximumInFlight`): runs
            // while writes wait, then ends.
            if start { Task { await self.drain(store) } }
        }
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

    private func commit(_ batch: [Operation], _ store: PostgresStore) async {
        var remaining = batch
        while !remaining.isEmpty {
            let writes = remaining
            do {
                let started = ContinuousClock.now
                // A write of one statement alone is its own transaction.
                let explicit = writes.count > 1 || !writes[0].oneStatement
                let completions = try await store.transaction(function: "batch of \(writes.count) writes", explicit: explicit) { db in
                    var completions: [@Sendable () -> Void] = []
                    completions.reserveCapacity(writes.count)
                    for (index, write) in writes.enumerated() {
                        do {
                            completions.append(try await write.run(db))
                        } catch let error as PSQLError where error.serverInfo == nil || PostgresStore.isRetryable(error) {
                            throw error  // the connection's or the batch's: retried, or every write fails
                        } catch let error as PSQLError {
                            throw WriteFailed(index: index, error: PostgresStore.storeError(error))
                        } catch {
                            throw WriteFailed(index: index, error: error)
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
            } catch {
                for write in remaining { write.fail(error) }
                return
            }
        }
    }
}
