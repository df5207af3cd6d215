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
    /// Set once the last frame was sent: nothing is sent after it.
    private let ended = Ended()

    private final class Ended: Sendable {
        let value = Mutex(false)
    }

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
        let dropped = ended.value.withLock { ended -> Bool in
            guard !ended else { return false }
            budget?.add(envelope)
            guard case .dropped = continuation.yield(envelope) else { return false }
            ended = true
            continuation.finish()
            return true
        }
        if dropped { overflow() }
    }

    /// Sends `last` (if any) as the session's last frame and ends the stream: no frame the
    /// core pushes from another task can follow it.
    public func finish(with last: Envelope? = nil) {
        ended.value.withLock { ended in
            guard !ended else { return }
            ended = true
            if let last {
                budget?.add(last)
                continuation.yield(last)
            }
            continuation.finish()
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

    /// Frames a session may have waiting to be written before the session stops reading
    /// its peer's frames: a peer that sends requests and does not read the answers holds at
    /// most this many answers (each at most one frame) in the coordinator.
    public static let readPauseFrames = 16

    /// Bytes and frames waiting in one session's outbox, the readers of stored logs waiting
    /// for the bytes to drain, and the session's frame reader waiting for the frames to.
    public final class Budget: Sendable {
        private struct State {
            var bytes = 0
            var peak = 0
            var frames = 0
            var closed = false
            var waiters: [CheckedContinuation<Bool, Never>] = []
            var reader: CheckedContinuation<Void, Never>?
        }
        private let limit: Int
        private let frameLimit: Int
        private let state = Mutex(State())

        public init(limit: Int = Outbox.byteBudget, frameLimit: Int = Outbox.readPauseFrames) {
            self.limit = limit
            self.frameLimit = frameLimit
        }

        func add(_ envelope: Envelope) {
            let bytes = Outbox.weight(envelope)
            state.withLock {
                $0.frames += 1
                $0.bytes += bytes
                $0.peak = max($0.peak, $0.bytes)
            }
        }

        /// The most bytes that ever waited at once.
        public var peak: Int { state.withLock { $0.peak } }

        /// The session wrote an envelope: it no longer waits.
        public func written(_ envelope: Envelope) {
            let bytes = Outbox.weight(envelope)
            let (ready, reader) = state.withLock { state -> ([CheckedContinuation<Bool, Never>], CheckedContinuation<Void, Never>?) in
                state.frames -= 1
                var reader: CheckedContinuation<Void, Never>?
                if state.frames < frameLimit {
                    reader = state.reader
                    state.reader = nil
                }
                guard bytes > 0 else { return ([], reader) }
                state.bytes -= bytes
                guard state.bytes < limit else { return ([], reader) }
                defer { state.waiters = [] }
                return (state.waiters, reader)
            }
            reader?.resume()
            for waiter in ready { waiter.resume(returning: true) }
        }

        /// Returns once fewer than `frameLimit` frames wait to be written (or the session
        /// ended): the session reads its peer's next frame only then. One caller at a time.
        public func readable() async {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if state.closed || state.frames < frameLimit { return true }
                    state.reader = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        }

        /// The session ended: nothing waits any more.
        public func close() {
            let (waiting, reader) = state.withLock { state -> ([CheckedContinuation<Bool, Never>], CheckedContinuation<Void, Never>?) in
                state.closed = true
                defer { state.waiters = []; state.reader = nil }
                return (state.waiters, state.reader)
            }
            reader?.resume()
            for waiter in waiting { waiter.resume(returning: false) }
        }

        var hasRoom: Bool { state.withLock { !$0.closed && $0.bytes < limit } }

        /// Frames waiting to be written now.
        var waitingFrames: Int { state.withLock { $0.frames } }

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
