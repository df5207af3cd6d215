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
    private var streams: [UInt64: [String: LogStream]] = [:]

    var isConnected: Bool { connection != nil }

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

    /// Sends a request, again on the next connection when the connection drops first.
    func request(_ body: Envelope.OneOf_Body) async throws -> Envelope {
        while true {
            let connection = await current()
            do {
                return try await connection.request(body)
            } catch where Self.isConnectionLoss(error) {
                detach(connection)
                await waitForReplacement(of: connection)
            }
        }
    }

    // MARK: log streams

    func register(_ stream: LogStream, job: UInt64, node: String) {
        streams[job, default: [:]][node] = stream
    }

    func unregister(job: UInt64) {
        streams[job] = nil
    }

    /// Stops a job's log streams: nothing more is sent, nobody waits for acknowledgements.
    func abandon(job: UInt64) async {
        for stream in streams.removeValue(forKey: job)?.values.map({ $0 }) ?? [] {
            await stream.abandon()
        }
    }

    func acknowledge(_ ack: Heddle_V1_LogAck) async {
        await streams[ack.jobID]?[ack.node]?.acknowledged(ack.durableOffset)
    }

    /// After a reconnect: every stream sends again what was not acknowledged.
    func replayAll() async {
        for stream in streams.values.flatMap(\.values) {
            await stream.replay()
        }
    }

    /// Jobs this runner still runs, for Hello.
    func jobsWithStreams() -> [UInt64] { Array(streams.keys) }
}
