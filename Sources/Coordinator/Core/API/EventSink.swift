/// What the core pushes to one session, unasked.
public enum SessionEvent: Sendable {
    /// To a runner: run this job.
    case assignment(JobAssignment)
    /// To a runner: stop this job's assignment with lease `epoch`; with `abandon`, that lease
    /// is gone and nothing more about it is accepted (else it reports the job cancelled).
    case stopJob(jobID: Int64, epoch: Int64, reason: String, abandon: Bool)
    /// To a runner: this node log, written under lease `epoch`, is durable up to `durable` bytes;
    /// with `resend`, what was sent after it was not stored and is to be sent again later.
    case logAck(jobID: Int64, epoch: Int64, node: String, durable: UInt64, resend: Bool = false)
    /// A subscription (`watch`, `watchQueue`) with this request id was accepted; its events follow.
    case subscribed(requestID: UInt64)
    case watch(requestID: UInt64, WatchEvent)
    case queue(requestID: UInt64, QueueEvent)
    /// The core closes the session because of this.
    case failure(CoordinatorError)
}

/// Where the core sends a session's events; a front delivers them in its own encoding.
///
/// A sink is bounded. Events are sent without waiting; bulk bytes (log history and catch-up)
/// are sent only while the sink has room, so the reader's pace, not a log's size, decides
/// how much is held. A sink that cannot deliver (its peer does not read) closes its session.
public protocol EventSink: Sendable {
    func send(_ event: SessionEvent)
    /// Whether bulk bytes waiting to be delivered are under the sink's budget now.
    var hasRoom: Bool { get }
    /// Whether the session ended: nothing sent is delivered any more.
    var isClosed: Bool { get }
    /// Waits until `hasRoom`; false once the session ended.
    func room() async -> Bool
}
