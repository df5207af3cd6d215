import Wire

/// Where the core sends frames for one session. The session drains it onto its connection.
///
/// It holds a bounded number of frames: a peer that does not read what it is sent (a watcher
/// that stopped reading) overflows it, and its session is closed rather than memory growing.
public struct Outbox: Sendable {
    let continuation: AsyncStream<Envelope>.Continuation
    let overflow: @Sendable () -> Void

    public init(_ continuation: AsyncStream<Envelope>.Continuation, overflow: @escaping @Sendable () -> Void = {}) {
        self.continuation = continuation
        self.overflow = overflow
    }

    public func send(_ envelope: Envelope) {
        if case .dropped = continuation.yield(envelope) {
            continuation.finish()
            overflow()
        }
    }
}

/// One subscriber to a run attempt's events (WatchRequest).
final class Watcher {
    let session: UInt64
    let requestID: UInt64
    let runID: Int64
    let attempt: Int
    let job: String?
    let node: String?
    let logs: Bool
    let outbox: Outbox
    /// Events that arrived while history was being read; nil once live.
    var buffered: [Heddle_V1_WatchEvent]? = []
    /// Bytes of each node log already sent, keyed by "jobID/node".
    var delivered: [String: UInt64] = [:]
    var ended = false

    init(session: UInt64, requestID: UInt64, runID: Int64, attempt: Int, request: Heddle_V1_WatchRequest, outbox: Outbox) {
        self.session = session
        self.requestID = requestID
        self.runID = runID
        self.attempt = attempt
        self.job = request.job.isEmpty ? nil : request.job
        self.node = request.node.isEmpty ? nil : request.node
        self.logs = request.logs
        self.outbox = outbox
    }

    func matches(job: String, node: String?) -> Bool {
        if let wanted = self.job, wanted != job { return false }
        if let wanted = self.node, let node, wanted != node { return false }
        return true
    }

    /// Queues or sends an event; log chunks are trimmed so no byte is sent twice.
    func offer(_ event: Heddle_V1_WatchEvent) {
        if buffered != nil {
            buffered!.append(event)
            return
        }
        deliver(event)
    }

    func deliver(_ event: Heddle_V1_WatchEvent) {
        guard !ended else { return }
        var event = event
        if case .log(var chunk) = event.event {
            let key = "\(chunk.jobID)/\(chunk.node)"
            let sent = delivered[key] ?? 0
            let end = chunk.offset + UInt64(chunk.data.count)
            guard end > sent else { return }
            if chunk.offset > sent && chunk.dropped == 0 {
                chunk.dropped = chunk.offset - sent
            }
            if chunk.offset < sent {
                chunk.data = chunk.data.suffix(Int(end - sent))
                chunk.offset = sent
            }
            delivered[key] = end
            event.event = .log(chunk)
        }
        if case .end = event.event { ended = true }
        outbox.send(Envelope(id: requestID, .watchEvent(event)))
    }

    /// Sends what was buffered and goes live.
    func goLive() {
        let pending = buffered ?? []
        buffered = nil
        for event in pending { deliver(event) }
    }
}
