import Foundation
import Wire

/// The runner's link to the coordinator across reconnects. Requests wait for a connection and
/// are sent again on the next one when the connection drops before their answer; answers that
/// are errors from the coordinator are final. Log streams are replayed from their
/// acknowledged offset on every new connection.
actor CoordinatorLink {
    private var connection: HeddleConnection?
    private var generation = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []
    private var streams: [JobKey: [String: LogStream]] = [:]

    /// The current connection, without waiting (nil while there is none).
    var live: HeddleConnection? { connection }

    var welcome: Heddle_V1_Welcome? { connection?.welcome }

    func attach(_ connection: HeddleConnection) {
        self.connection = connection
        generation += 1
        let ready = waiters
        waiters = []
        for waiter in ready { waiter.resume() }
    }

    func detach(_ connection: HeddleConnection) {
        if self.connection === connection { self.connection = nil }
    }

    /// The current connection, waiting for one if there is none.
    func current() async -> HeddleConnection {
        while true {
            if let connection { return connection }
            await withCheckedContinuation { waiters.append($0) }
        }
    }

    /// Waits until a connection other than `old` is attached.
    func waitForReplacement(of old: HeddleConnection) async {
        while connection == nil || connection === old {
            await withCheckedContinuation { waiters.append($0) }
        }
    }

    static func isConnectionLoss(_ error: Error) -> Bool {
        (error as? WireError)?.code == .unavailableOrClosed
    }

    /// Sends a request, again on the next connection when the connection ends first (whatever
    /// error its end carried), and
    /// again after a pause (1 s, doubling to `maximumPause`) while the coordinator answers
    /// `UNAVAILABLE` (its storage is full): a node's result is not lost to a full disk.
    /// With `after`, the request goes only once every byte of that log was handed to the
    /// same connection (a node's end after its last output).
    func request(_ body: Envelope.OneOf_Body, after log: LogStream? = nil,
                 maximumPause: Duration = .seconds(30)) async throws -> Envelope {
        var pause = Duration.seconds(1)
        while true {
            let connection = await current()
            if let log, !(await log.flush(to: connection)) {
                // The log could not go on it: it closed, or the link already moved on (then
                // `current()` gives the newer connection, or waits for one).
                if connection.isClosed {
                    detach(connection)
                    await waitForReplacement(of: connection)
                }
                continue
            }
            do {
                return try await connection.request(body)
            } catch where Self.isConnectionLoss(error) || connection.isClosed {
                // Whatever the last frame said (a coordinator closing a connection it heard
                // nothing on says FAILED_PRECONDITION), the request goes on the next connection.
                detach(connection)
                await waitForReplacement(of: connection)
            } catch let error as WireError where error.code == .unavailable {
                try await Task.sleep(for: pause)
                pause = min(pause * 2, maximumPause)
            }
        }
    }

    // MARK: log streams

    func register(_ stream: LogStream, job: JobKey, node: String) {
        streams[job, default: [:]][node] = stream
    }

    func unregister(job: JobKey) {
        streams[job] = nil
    }

    /// Stops the log streams of one assignment: nothing more is sent, nobody waits for
    /// acknowledgements.
    func abandon(job: JobKey) async {
        for stream in streams.removeValue(forKey: job)?.values.map({ $0 }) ?? [] {
            await stream.abandon()
        }
    }

    /// An acknowledgement reaches the stream of the assignment with its epoch.
    func acknowledge(_ ack: Heddle_V1_LogAck) async {
        await streams[JobKey(jobID: ack.jobID, epoch: ack.epoch)]?[ack.node]?.acknowledged(ack.durableOffset, resend: ack.resend)
    }

    /// After a reconnect: every stream sends again what was not acknowledged.
    func replayAll() async {
        for stream in streams.values.flatMap(\.values) {
            await stream.replay()
        }
    }
}

/// One assignment of a job: a job given to the same runner again (after its lease was lost)
/// is another assignment, with a greater epoch, and the two never share state.
struct JobKey: Hashable, Sendable, CustomStringConvertible {
    var jobID: UInt64
    var epoch: UInt64

    init(jobID: UInt64, epoch: UInt64) {
        self.jobID = jobID
        self.epoch = epoch
    }

    init(_ ref: Heddle_V1_JobRef) {
        self.init(jobID: ref.jobID, epoch: ref.epoch)
    }

    var description: String { "\(jobID)@\(epoch)" }
}
