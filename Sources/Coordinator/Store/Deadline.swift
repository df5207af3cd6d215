import Synchronization

/// A continuation resumed once, by whichever comes first (a call or its deadline).
public final class Once<T: Sendable>: Sendable {
    private let state = Mutex<(done: Bool, waiter: CheckedContinuation<T, Never>?)>((false, nil))

    public init() {}

    public func set(_ waiter: CheckedContinuation<T, Never>) { state.withLock { $0.waiter = waiter } }

    /// Whether `finish` was called.
    public var isDone: Bool { state.withLock { $0.done } }

    public func finish(_ value: T) {
        let waiter = state.withLock { state -> CheckedContinuation<T, Never>? in
            guard !state.done else { return nil }
            state.done = true
            return state.waiter
        }
        waiter?.resume(returning: value)
    }
}

/// Thrown by `withDeadline` when the body was not done in time.
public struct DeadlinePassed: Error, CustomStringConvertible {
    public var limit: Duration
    public var description: String { "not done within \(limit)" }
}

/// The result of `body`, or `DeadlinePassed` once `limit` passed (the body is then left
/// running, not waited for: it may be one that never ends).
public func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async -> Result<T, any Error> {
    let once = Once<Result<T, any Error>>()
    return await withCheckedContinuation { continuation in
        once.set(continuation)
        Task {
            do { once.finish(.success(try await body())) } catch { once.finish(.failure(error)) }
        }
        Task {
            try? await Task.sleep(for: limit)
            once.finish(.failure(DeadlinePassed(limit: limit)))
        }
    }
}
