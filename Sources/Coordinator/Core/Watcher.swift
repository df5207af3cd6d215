/// One subscriber to a run attempt's events (`Watches`).
///
/// Log bytes reach it two ways: read from storage by its pump (history, and catch-up when it
/// fell behind) at the reader's pace, or live, straight from a commit, while it keeps up. While
/// the pump reads, live events wait in a small buffer; log bytes past the buffer's limit are
/// dropped from it and read from storage by the next pass instead. The same offsets decide
/// what is new either way, so no byte is sent twice and none is skipped.
///
/// Unchecked `Sendable`: its mutable state is touched only under its `LiveEvents`' lock.
final class Watcher: @unchecked Sendable {
    let session: UInt64
    let requestID: UInt64
    let runID: Int64
    let attempt: Int
    let job: String?
    let node: String?
    let logs: Bool
    /// Log bytes before this offset are not sent (`WatchRequest.from`).
    let from: UInt64
    let sink: any EventSink

    enum Mode {
        /// The pump reads from storage; live events wait here (log bytes counted).
        case catchingUp(events: [WatchEvent], logBytes: Int, overflowed: Bool)
        case live
    }
    var mode = Mode.catchingUp(events: [], logBytes: 0, overflowed: false)
    /// Bytes of each node log already sent, keyed by "jobID/node".
    var delivered: [String: UInt64] = [:]
    /// The last status sent of each job.
    var jobStatuses: [Int64: Status] = [:]
    var ended = false
    /// The pump, waiting while live: resumed with true when it must catch up, false at the end.
    var waiting: CheckedContinuation<Bool, Never>?

    /// Live log bytes a watcher holds while its pump reads from storage.
    static let bufferLimit = 2 << 20

    init(session: UInt64, requestID: UInt64, runID: Int64, attempt: Int, request: WatchRequest, sink: any EventSink) {
        self.session = session
        self.requestID = requestID
        self.runID = runID
        self.attempt = attempt
        self.job = request.job.flatMap { $0.isEmpty ? nil : $0 }
        self.node = request.node.flatMap { $0.isEmpty ? nil : $0 }
        self.logs = request.logs
        self.from = request.from
        self.sink = sink
    }

    func matches(job: String, node: String?) -> Bool {
        if let wanted = self.job, wanted != job { return false }
        if let wanted = self.node, let node, wanted != node { return false }
        return true
    }

    static func key(_ jobID: Int64, _ node: String) -> String { "\(jobID)/\(node)" }

    /// Bytes of a node log already sent (or skipped by `from`).
    func sent(_ key: String) -> UInt64 { delivered[key] ?? from }

    /// A live event. Sent at once while the watcher keeps up; a log chunk that finds the
    /// sink full sends the watcher back to catching up from storage.
    func offer(_ event: WatchEvent) {
        guard !ended else { return }
        let size: Int
        if case .log(let chunk) = event { size = chunk.data.count } else { size = 0 }
        switch mode {
        case .live:
            if size > 0 && !sink.hasRoom {
                mode = .catchingUp(events: [], logBytes: 0, overflowed: true)
                wake(true)
                return
            }
            deliver(event)
        case .catchingUp(var events, var logBytes, var overflowed):
            if size > 0 && (overflowed || logBytes + size > Self.bufferLimit) {
                // Read from storage by the next pass instead.
                if !overflowed { events.removeAll { if case .log = $0 { true } else { false } } }
                overflowed = true
                logBytes = 0
            } else {
                events.append(event)
                logBytes += size
            }
            mode = .catchingUp(events: events, logBytes: logBytes, overflowed: overflowed)
        }
    }

    /// Sends an event; log chunks are trimmed so no byte is sent twice, and a jump in offsets
    /// is sent as `dropped`.
    func deliver(_ event: WatchEvent) {
        guard !ended else { return }
        var event = event
        if case .log(var chunk) = event {
            let key = Self.key(chunk.jobID, chunk.node)
            let sent = self.sent(key)
            let end = chunk.offset + UInt64(chunk.data.count)
            guard end > sent else { return }
            if chunk.offset > sent && chunk.dropped == 0 {
                chunk.dropped = chunk.offset - sent
            }
            if chunk.offset < sent {
                chunk.data = chunk.data.suffix(Int(end - sent))
                chunk.offset = sent
                chunk.times = chunk.times.from(Int64(sent))
            }
            delivered[key] = end
            event = .log(chunk)
        }
        if case .end = event { end() }
        if case .job(let job) = event { jobStatuses[job.id] = job.status }
        sink.send(.watch(requestID: requestID, event))
    }

    /// After a pass over storage: whether live bytes were dropped meanwhile (another pass is
    /// needed). When none were, what waited is sent and the watcher is live.
    func finishPass() -> Bool {
        guard case .catchingUp(let events, _, let overflowed) = mode else { return false }
        if overflowed {
            mode = .catchingUp(events: events, logBytes: 0, overflowed: false)
            return true
        }
        mode = .live
        for event in events { deliver(event) }
        return false
    }

    private func wake(_ value: Bool) {
        let waiter = waiting
        waiting = nil
        waiter?.resume(returning: value)
    }

    /// The store changed where this coordinator did not see it (another coordinator of a
    /// cluster): the pump reads it again.
    func readAgain() {
        guard !ended else { return }
        switch mode {
        case .live:
            mode = .catchingUp(events: [], logBytes: 0, overflowed: true)
            wake(true)
        case .catchingUp(let events, let logBytes, _):
            mode = .catchingUp(events: events, logBytes: logBytes, overflowed: true)
        }
    }

    /// Nothing more is sent: the end went out, or the session closed.
    func end() {
        ended = true
        wake(false)
    }
}
