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
            case end(PostgresStore.JobEnd, @Sendable (Result<EndedAndClaimed, any Error>) -> Void)
            /// A run to store (and claim for), answered with what was: the runs of a batch are
            /// one statement (`PostgresStore.insertRuns`), with at most one claim.
            case create(PostgresStore.RunInsert, @Sendable (Result<CreatedAndClaimed?, any Error>) -> Void)
        }
        var work: Work
        var fail: @Sendable (any Error) -> Void
        /// Writes with one statement: alone in a batch, it needs no explicit transaction.
        var oneStatement: Bool

        var kind: Kind {
            switch work {
            case .write: .write
            case .end(let end, _): .end(claims: !end.slots.isEmpty)
            case .create(let run, _): .create(claims: !run.slots.isEmpty)
            }
        }
    }

    /// One write of a batch failed on its own: its index, and its error.
    private struct WriteFailed: Error {
        var index: Int
        var error: any Error
    }

    /// The statement of several ends failed on its own (not the connection's or the batch's
    /// fault): which end it was is unknown, so the batch goes again with each end alone.
    private struct EndsFailed: Error {}

    /// The same for the statement of several runs.
    private struct RunsFailed: Error {}

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
    func end(_ end: PostgresStore.JobEnd, on store: PostgresStore) async throws -> EndedAndClaimed {
        try await withCheckedThrowingContinuation { continuation in
            enqueue(Operation(work: .end(end) { continuation.resume(with: $0) },
                              fail: { continuation.resume(throwing: $0) }, oneStatement: true), store)
        }
    }

    /// Stores a run (and claims for its slots) in the next transaction of `store`'s batches, in
    /// one statement with the other runs there.
    func create(_ run: PostgresStore.RunInsert, on store: PostgresStore) async throws -> CreatedAndClaimed? {
        try await withCheckedThrowingContinuation { continuation in
            enqueue(Operation(work: .create(run) { continuation.resume(with: $0) },
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

    /// What a batch runs, in its order: a write; ends next to each other (a range of the
    /// batch's indices), one statement; runs, one statement where the first of them is.
    enum Step: Equatable {
        case write(Int)
        case ends(Range<Int>)
        case creates([Int])
    }

    /// What one write of a batch is, for `steps`.
    enum Kind: Equatable {
        case write
        /// A job's end; `claims`: with slots to claim for once it is stored.
        case end(claims: Bool)
        /// A run to store; `claims`: with slots to claim for.
        case create(claims: Bool)
    }

    /// The steps of a batch of writes of `kinds`. Writes and ends keep their order; ends next
    /// to each other are one step, but for a second end with slots to claim for, which starts
    /// a step of its own (one claim per statement). Runs depend on no other write of a batch
    /// (each is new), so they all join the first run's statement, but for a second run with
    /// slots, likewise. Without `together`, each end and each run is a step of its own.
    static func steps(_ kinds: [Kind], together: Bool) -> [Step] {
        var steps: [Step] = []
        var creates: Int?  // the step that takes the next run
        var createClaims = false  // whether a run of that step claims
        var endClaims = false  // whether an end of the last step, if ends, claims
        for (index, kind) in kinds.enumerated() {
            switch kind {
            case .write: steps.append(.write(index))
            case .end(let claiming):
                if together, case .ends(let range) = steps.last, range.upperBound == index, !(endClaims && claiming) {
                    steps[steps.count - 1] = .ends(range.lowerBound..<index + 1)
                    endClaims = endClaims || claiming
                } else {
                    steps.append(.ends(index..<index + 1))
                    endClaims = claiming
                }
            case .create(let claiming):
                if together, let step = creates, case .creates(let indices) = steps[step], !(createClaims && claiming) {
                    steps[step] = .creates(indices + [index])
                    createClaims = createClaims || claiming
                } else {
                    steps.append(.creates([index]))
                    creates = steps.count - 1
                    createClaims = claiming
                }
            }
        }
        return steps
    }

    /// Runs the writes at `indices` of `writes` (ends, or runs: `item` takes each one's value
    /// and answer) as one statement (`run`), and returns their answers, to give once the batch
    /// commits. A failure of the statement is the batch's when it is the connection's or a
    /// deadlock (thrown as it is); otherwise the write's when it is alone (`WriteFailed`), or
    /// `failed` (the batch goes again with each write alone).
    private static func oneStatement<Item, Answer: Sendable>(
        _ indices: [Int], of writes: [Operation], failed: some Error,
        _ run: ([Item]) async throws -> [Result<Answer, any Error>],
        item: (Operation.Work) -> (Item, @Sendable (Result<Answer, any Error>) -> Void)?
    ) async throws -> [@Sendable () -> Void] {
        let items = indices.compactMap { item(writes[$0].work) }
        precondition(items.count == indices.count, "a step holds writes of one kind")
        do {
            let results = try await run(items.map(\.0))
            return zip(items, results).map { item, result in
                let answer = item.1
                return { answer(result) }
            }
        } catch let error as PSQLError where error.serverInfo == nil || PostgresStore.isRetryable(error) {
            throw error
        } catch {
            guard indices.count == 1 else { throw failed }
            throw WriteFailed(index: indices[0], error: (error as? PSQLError).map(PostgresStore.storeError) ?? error)
        }
    }

    private func commit(_ batch: [Operation], _ store: PostgresStore) async {
        var remaining = batch
        var together = true
        let (holder, logger) = (store.coordinatorID, store.logger)
        while !remaining.isEmpty {
            let writes = remaining
            let steps = Self.steps(writes.map(\.kind), together: together)
            do {
                let started = ContinuousClock.now
                // One statement alone is its own transaction.
                let explicit: Bool
                switch steps.first {
                case .write(let index) where steps.count == 1: explicit = !writes[index].oneStatement
                case .ends where steps.count == 1, .creates where steps.count == 1: explicit = false
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
                            completions += try await Self.oneStatement(Array(range), of: writes, failed: EndsFailed()) { ends in
                                try await PostgresStore.endJobs(db, ends, holder: holder, logger: logger).map { $0.mapError { $0 } }
                            } item: { work in
                                if case .end(let end, let answer) = work { (end, answer) } else { nil }
                            }
                        case .creates(let indices):
                            completions += try await Self.oneStatement(indices, of: writes, failed: RunsFailed()) { runs in
                                try await PostgresStore.insertRuns(db, runs, holder: holder, logger: logger).map { .success($0) }
                            } item: { work in
                                if case .create(let run, let answer) = work { (run, answer) } else { nil }
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
            } catch is EndsFailed, is RunsFailed {
                together = false
            } catch {
                for write in remaining { write.fail(error) }
                return
            }
        }
    }
}
