import GRDB
import Synchronization

/// Group commit for SQLite: writes that arrive while a transaction is being committed wait
/// and then share the next one, each in its own savepoint. With `synchronous = FULL` a
/// commit costs an fsync, so N concurrent writes cost one fsync instead of N. A write that
/// fails rolls back its savepoint only; the others commit. Every caller resumes after the
/// commit that made its write durable, so what it reads next includes it.
final class GroupCommit: Sendable {
    private let writer: any DatabaseWriter
    private let state = Mutex(State())

    private struct State {
        var pending: [Operation] = []
        var running = false
    }

    /// One write: runs in the shared transaction and returns what to do once it commits.
    private struct Operation: Sendable {
        var run: @Sendable (Database) -> @Sendable () -> Void
        var fail: @Sendable (any Error) -> Void
    }

    /// Largest number of writes one transaction takes.
    static let maximumBatch = 512

    init(writer: any DatabaseWriter) {
        self.writer = writer
    }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let operation = Operation(
                run: { db in
                    do {
                        nonisolated(unsafe) var result: T?
                        try db.inSavepoint {
                            result = try body(db)
                            return .commit
                        }
                        let value = result!
                        return { continuation.resume(returning: value) }
                    } catch {
                        return { continuation.resume(throwing: error) }
                    }
                },
                fail: { continuation.resume(throwing: $0) })
            let start = state.withLock { state in
                state.pending.append(operation)
                defer { state.running = true }
                return !state.running
            }
            // The group commit's one loop: runs while writes are queued, then ends.
            if start { Task { await self.drain() } }
        }
    }

    private func drain() async {
        while true {
            let batch = state.withLock { state -> [Operation] in
                let batch = Array(state.pending.prefix(Self.maximumBatch))
                state.pending.removeFirst(batch.count)
                if batch.isEmpty { state.running = false }
                return batch
            }
            if batch.isEmpty { return }
            do {
                let started = ContinuousClock.now
                let completions = try await writer.write { db in batch.map { $0.run(db) } }
                CoreMetrics.storeCommit.record(duration: ContinuousClock.now - started)
                for completion in completions { completion() }
            } catch {
                for operation in batch { operation.fail(error) }
            }
        }
    }
}
