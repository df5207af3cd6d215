import Synchronization

/// Thrown by `withDeadline` when the body was not done in time.
public struct DeadlinePassed: Error, CustomStringConvertible {
    public var limit: Duration
    public var description: String { "not done within \(limit)" }
}

/// The result of `body`, or `DeadlinePassed` once `limit` passed. The body is then left
/// running, not waited for: what a test or a benchmark checks may be a call that never ends
/// (a stuck database query, a stream that never closes), and it must fail rather than hang.
public func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async -> Result<T, any Error> {
    let race = Race<T>()
    @Sendable func finish(_ result: Result<T, any Error>) {
        race.waiter.withLock { $0.take() }?.resume(returning: result)
    }
    return await withCheckedContinuation { continuation in
        race.waiter.withLock { $0 = continuation }
        Task {
            do { finish(.success(try await body())) } catch { finish(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            finish(.failure(DeadlinePassed(limit: limit)))
        }
    }
}

/// Who answers first, the body or the deadline.
private final class Race<T: Sendable>: Sendable {
    let waiter = Mutex<CheckedContinuation<Result<T, any Error>, Never>?>(nil)
}
