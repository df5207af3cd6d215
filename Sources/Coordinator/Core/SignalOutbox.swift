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
        /// When a batch with `.queue` was last taken by `next(linger:patience:)`.
        var queueSentAt: ContinuousClock.Instant?
        /// A batch of signals that can wait, waiting for one that cannot (`next(linger:patience:)`),
        /// and whether the others were woken for new jobs when it began.
        var patient: (waiter: CheckedContinuation<Void, Never>, othersWokenForJobs: Bool, wait: UInt64)?
        /// Patient waits so far (a late timer ends only its own).
        var waits: UInt64 = 0
    }
    private let state = Mutex(State())

    /// Adds a signal for the other coordinators (a change of no run is none).
    func tell(_ signal: ClusterSignal) {
        if case .run(let ids) = signal, ids.isEmpty { return }
        add(signal)
    }

    /// Adds a signal (at once, without waiting).
    func add(_ signal: ClusterSignal) {
        let (ready, urgent) = state.withLock { state -> ((CheckedContinuation<[ClusterSignal], Never>, [ClusterSignal])?,
                                                         CheckedContinuation<Void, Never>?) in
            guard !state.closed else { return (nil, nil) }
            Self.coalesce(signal, into: &state.pending)
            // A batch waiting for a signal that cannot wait goes now (this one, or the `.resync`
            // that too many waiting collapsed into).
            var urgent: CheckedContinuation<Void, Never>?
            if let patient = state.patient,
               !state.pending.allSatisfy({ Self.canWait($0, othersWokenForJobs: patient.othersWokenForJobs) }) {
                urgent = patient.waiter
                state.patient = nil
            }
            guard let waiter = state.waiter else { return (nil, urgent) }
            state.waiter = nil
            defer { state.pending = [] }
            return ((waiter, state.pending), urgent)
        }
        if let (waiter, batch) = ready { waiter.resume(returning: batch) }
        urgent?.resume()
    }

    /// The signals waiting, once there are some, and those told within `linger` after the
    /// first, coalesced with them: under load one notification statement carries the signals
    /// of many claims and ends instead of one or two each.
    ///
    /// A batch only of signals that can wait (`canWait`: changed runs, and new jobs when
    /// others were woken for new jobs less than `patience` ago) waits up to `patience`
    /// instead, until a signal that cannot is told: then it goes with that one, `linger` later.
    /// Empty once the outbox is closed (or the caller cancelled). One caller at a time.
    func next(linger: Duration, patience: Duration = .zero) async -> [ClusterSignal] {
        let first = await next()
        guard !first.isEmpty, linger > .zero else { return first }
        let woken = state.withLock { $0.queueSentAt }.map { ContinuousClock.now - $0 < patience } ?? false
        if patience > linger, first.allSatisfy({ Self.canWait($0, othersWokenForJobs: woken) }) {
            await waitForUrgent(upTo: patience - linger, othersWokenForJobs: woken)
        }
        try? await Task.sleep(for: linger)
        return state.withLock { state in
            var batch = first
            for signal in state.pending { Self.coalesce(signal, into: &batch) }
            state.pending = []
            if batch.contains(.queue) { state.queueSentAt = .now }
            return batch
        }
    }

    /// Returns once a signal that cannot wait is told (`add`), or one waits already, after
    /// `limit`, or once the outbox is closed or the caller cancelled.
    private func waitForUrgent(upTo limit: Duration, othersWokenForJobs woken: Bool) async {
        let wait = state.withLock { state in
            state.waits += 1
            return state.waits
        }
        let timer = Task { [weak self] in
            try? await Task.sleep(for: limit)
            self?.endPatience(wait)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if state.closed || Task.isCancelled
                        || !state.pending.allSatisfy({ Self.canWait($0, othersWokenForJobs: woken) }) {
                        return true
                    }
                    state.patient = (continuation, woken, wait)
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            endPatience(wait)
        }
        timer.cancel()
    }

    /// Ends a batch's wait for a signal that cannot wait (`wait`), if it is still on.
    private func endPatience(_ wait: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let patient = state.patient, patient.wait == wait else { return nil }
            state.patient = nil
            return patient.waiter
        }
        waiter?.resume()
    }

    /// Whether a signal may wait for more to share its notification. Changed runs only make
    /// other coordinators' run watchers read those runs again: they see it that much later.
    /// New jobs wake the others to claim for their free slots; once they have been woken,
    /// those with running jobs claim again at each end there anyway, so new jobs that come
    /// soon after can wait: only a coordinator whose runners are idle, with free slots,
    /// learns of them that much later.
    static func canWait(_ signal: ClusterSignal, othersWokenForJobs: Bool) -> Bool {
        switch signal {
        case .run: true
        case .queue: othersWokenForJobs
        case .moved, .state, .cancel, .resync, .hello: false
        }
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

    /// Whether a `next()` waits for a signal now (for tests).
    var hasWaiter: Bool { state.withLock { $0.waiter != nil } }

    /// Whether a batch of signals that can wait waits for one that cannot now (for tests).
    var isPatient: Bool { state.withLock { $0.patient != nil } }

    /// No more signals: a waiting `next()` returns empty.
    func close() {
        let (waiter, patient) = state.withLock { state -> (CheckedContinuation<[ClusterSignal], Never>?, CheckedContinuation<Void, Never>?) in
            state.closed = true
            defer {
                state.waiter = nil
                state.patient = nil
            }
            return (state.waiter, state.patient?.waiter)
        }
        waiter?.resume(returning: [])
        patient?.resume()
    }

    /// What waits after `signal` is added to `pending`.
    static func coalesce(_ signal: ClusterSignal, into pending: inout [ClusterSignal]) {
        switch signal {
        case .queue, .state, .resync, .hello:
            if pending.contains(signal) || pending.contains(.resync) && signal == .queue { return }
            pending.append(signal)
        case .run(let ids):
            merge(ids, into: &pending, { .run(runIDs: $0) }, { if case .run(let ids) = $0 { ids } else { nil } })
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

    /// Adds `ids` to the last waiting signal of their kind (`ids(signal)` is not nil), while
    /// it holds at most `maximumIDs`; else a new signal (`make`) waits after it.
    private static func merge(_ ids: [Int64], into pending: inout [ClusterSignal], _ make: ([Int64]) -> ClusterSignal,
                              _ idsOf: (ClusterSignal) -> [Int64]?) {
        if let index = pending.lastIndex(where: { idsOf($0) != nil }), let waiting = idsOf(pending[index]),
           waiting.count + ids.count <= maximumIDs {
            pending[index] = make(waiting + ids.filter { !waiting.contains($0) })
        } else {
            pending.append(make(ids))
        }
    }
}
