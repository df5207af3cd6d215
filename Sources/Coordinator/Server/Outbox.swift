import Synchronization
import Wire

/// The binary front's `EventSink`: frames for one session, the core's events encoded, drained
/// onto the connection by the session's writer, which writes only while the connection is
/// writable.
///
/// It holds a bounded number of frames: a peer that does not read what it is sent overflows
/// it, and its session is closed rather than memory growing. Bulk bytes (log history and
/// catch-up) are sent only while fewer than `byteBudget` bytes wait in it (`room()`), so a
/// reader's pace, not the log's size, decides how much is held.
public struct Outbox: EventSink {
    let continuation: AsyncStream<Envelope>.Continuation
    let overflow: @Sendable () -> Void
    let budget: Budget?

    /// Bytes of log data a session may have waiting to be written before readers of stored
    /// logs wait for it to drain.
    public static let byteBudget = 2 << 20

    public init(_ continuation: AsyncStream<Envelope>.Continuation, overflow: @escaping @Sendable () -> Void = {},
                budget: Budget? = nil) {
        self.continuation = continuation
        self.overflow = overflow
        self.budget = budget
    }

    public func send(_ event: SessionEvent) {
        send(Envelope(event))
    }

    public func send(_ envelope: Envelope) {
        budget?.add(Self.weight(envelope))
        if case .dropped = continuation.yield(envelope) {
            continuation.finish()
            overflow()
        }
    }

    /// Whether the waiting bytes are under the budget now.
    public var hasRoom: Bool { budget?.hasRoom ?? true }

    /// Whether the session closed (its budget was closed).
    public var isClosed: Bool { budget?.isClosed ?? false }

    /// Waits until the waiting bytes are under the budget; false once the session closed.
    public func room() async -> Bool {
        await budget?.room() ?? true
    }

    /// The bytes an envelope counts for in the budget: its bulk data.
    public static func weight(_ envelope: Envelope) -> Int {
        switch envelope.body {
        case .watchEvent(let event):
            if case .log(let chunk) = event.event { return chunk.data.count }
            return 0
        case .artifactData(let data): return data.data.count
        default: return 0
        }
    }

    /// Bytes waiting in one session's outbox, and the readers waiting for them to drain.
    public final class Budget: Sendable {
        private let limit: Int
        private let state = Mutex<(bytes: Int, peak: Int, closed: Bool, waiters: [CheckedContinuation<Bool, Never>])>(
            (0, 0, false, []))

        public init(limit: Int = Outbox.byteBudget) {
            self.limit = limit
        }

        func add(_ bytes: Int) {
            guard bytes > 0 else { return }
            state.withLock {
                $0.bytes += bytes
                $0.peak = max($0.peak, $0.bytes)
            }
        }

        /// The most bytes that ever waited at once.
        public var peak: Int { state.withLock { $0.peak } }

        /// The session wrote an envelope: its bytes no longer wait.
        public func written(_ envelope: Envelope) {
            let bytes = Outbox.weight(envelope)
            guard bytes > 0 else { return }
            let ready = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
                state.bytes -= bytes
                guard state.bytes < limit else { return [] }
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in ready { waiter.resume(returning: true) }
        }

        /// The session ended: nothing waits any more.
        public func close() {
            let waiting = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
                state.closed = true
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiting { waiter.resume(returning: false) }
        }

        var hasRoom: Bool { state.withLock { !$0.closed && $0.bytes < limit } }

        var isClosed: Bool { state.withLock { $0.closed } }

        func room() async -> Bool {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool? in
                    if state.closed { return false }
                    if state.bytes < limit { return true }
                    state.waiters.append(continuation)
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        }
    }
}
