import Synchronization

/// Signals this coordinator owes the others of its cluster, waiting for the one loop that
/// sends them (`ClusterMonitor`), in the order they were told and coalesced: a signal the
/// same as one waiting already is not added again, claimed jobs and changed runs are merged
/// into the one waiting, and a job moved again replaces its waiting move. What waits is
/// bounded: past `maximumPending` everything but the cancels collapses into one `.resync`
/// (every other coordinator reads everything again).
///
/// Every signal is sent after the change it announces was stored, so one sent later than
/// told still tells the truth: a reader reads the store after it.
final class SignalOutbox: Sendable {
    static let maximumPending = 1024
    /// Ids one merged signal carries at most (a PostgreSQL notification holds 8,000 bytes).
    static let maximumIDs = 256

    private struct State {
        var pending: [ClusterSignal] = []
        var waiter: CheckedContinuation<[ClusterSignal], Never>?
        var closed = false
    }
    private let state = Mutex(State())

    /// Adds a signal (at once, without waiting).
    func add(_ signal: ClusterSignal) {
        let ready = state.withLock { state -> (CheckedContinuation<[ClusterSignal], Never>, [ClusterSignal])? in
            guard !state.closed else { return nil }
            Self.coalesce(signal, into: &state.pending)
            guard let waiter = state.waiter else { return nil }
            state.waiter = nil
            defer { state.pending = [] }
            return (waiter, state.pending)
        }
        if let (waiter, batch) = ready { waiter.resume(returning: batch) }
    }

    /// The signals waiting, once there are some; empty once the outbox is closed (or the
    /// caller cancelled). One caller at a time.
    func next() async -> [ClusterSignal] {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let ready = state.withLock { state -> [ClusterSignal]? in
                    if !state.pending.isEmpty || state.closed || Task.isCancelled {
                        defer { state.pending = [] }
                        return state.pending
                    }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            close()
        }
    }

    /// No more signals: a waiting `next()` returns empty.
    func close() {
        let waiter = state.withLock { state -> CheckedContinuation<[ClusterSignal], Never>? in
            state.closed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: [])
    }

    /// What waits after `signal` is added to `pending`.
    static func coalesce(_ signal: ClusterSignal, into pending: inout [ClusterSignal]) {
        switch signal {
        case .queue, .state, .resync:
            if pending.contains(signal) || pending.contains(.resync) && signal == .queue { return }
            pending.append(signal)
        case .claimed(let ids):
            if let index = pending.lastIndex(where: { if case .claimed = $0 { true } else { false } }),
               case .claimed(let waiting) = pending[index], waiting.count + ids.count <= maximumIDs {
                pending[index] = .claimed(jobIDs: waiting + ids.filter { !waiting.contains($0) })
            } else {
                pending.append(signal)
            }
        case .run(let ids):
            if let index = pending.lastIndex(where: { if case .run = $0 { true } else { false } }),
               case .run(let waiting) = pending[index], waiting.count + ids.count <= maximumIDs {
                pending[index] = .run(runIDs: waiting + ids.filter { !waiting.contains($0) })
            } else {
                pending.append(signal)
            }
        case .moved(let jobID, _):
            if let index = pending.firstIndex(where: { if case .moved(jobID, _) = $0 { true } else { false } }) {
                pending[index] = signal
            } else {
                pending.append(signal)
            }
        case .cancel:
            pending.append(signal)
        }
        if pending.count > maximumPending {
            pending = pending.filter { if case .cancel = $0 { true } else { false } } + [.resync]
        }
    }
}
