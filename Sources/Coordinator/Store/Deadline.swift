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
