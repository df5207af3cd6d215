import Foundation
import Logging
import Synchronization
import TestSupport
import Wire
@testable import Coordinator

/// A real coordinator server in this process on 127.0.0.1, port 0, with its own data directory.
struct TestCoordinator {
    let endpoint: Endpoint
    let core: CoordinatorCore
    let pki: TestPKI

    /// `store`: the store the core uses, made from the SQLite store in the data directory
    /// (an `InterposedStore` around it, for a test that pauses calls).
    static func with<T: Sendable>(limits: CoordinatorLimits = CoordinatorLimits(),
                                  logger: Logger = Logger(label: "test.coordinator"),
                                  store: (any CoordinatorStore) -> any CoordinatorStore = { $0 },
                                  _ body: (TestCoordinator) async throws -> T) async throws -> T {
        let pki = try TestPKI()
        let data = try TemporaryDirectory("heddle-data")
        defer {
            pki.remove()
            data.remove()
        }
        let core = try CoordinatorCore(store: store(try SQLiteStore.open(directory: data.path)), directory: data.path,
                                       limits: limits, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let server = CoordinatorServer(core: core, host: "127.0.0.1", port: 0, tls: pki.coordinatorTLS,
                                       logger: logger,
                                       onListening: { continuation.yield($0.port ?? 0) })
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            group.addTask { try await LeaseMonitor(core: core).run() }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw TestFailure("the server did not start") }
            let result = try await body(TestCoordinator(endpoint: Endpoint(host: "127.0.0.1", port: port), core: core, pki: pki))
            group.cancelAll()
            return result
        }
    }

    func client(_ name: String) async throws -> HeddleClient {
        try await HeddleClient.connect(to: endpoint, tls: pki.tls(name))
    }
}

/// Collects what the core sends to one pretend session. Reads wait with a deadline: a
/// regression fails the test with a message instead of hanging the suite.
final class RecordingOutbox: Sendable {
    let outbox: Outbox
    /// With a budget, what is sent counts as written to the peer only once the test reads it.
    let budget: Outbox.Budget?
    private let received = Received()

    private final class Received: Sendable {
        let state = Mutex<(envelopes: [Envelope], read: Int)>(([], 0))
    }

    init(budget: Outbox.Budget? = nil) {
        let (stream, continuation) = AsyncStream.makeStream(of: Envelope.self)
        self.budget = budget
        self.outbox = Outbox(continuation, budget: budget)
        Task { [received] in
            for await envelope in stream { received.state.withLock { $0.envelopes.append(envelope) } }
        }
    }

    /// Everything received so far, read or not.
    var all: [Envelope] { received.state.withLock { $0.envelopes } }

    /// The next envelope not read yet, waiting at most `timeout`.
    func next(timeout: Duration = .seconds(30)) async throws -> Envelope {
        var envelope: Envelope?
        try await waitUntil("the next frame sent to this session", timeout: timeout) {
            envelope = received.state.withLock { state -> Envelope? in
                guard state.read < state.envelopes.count else { return nil }
                defer { state.read += 1 }
                return state.envelopes[state.read]
            }
            return envelope != nil
        }
        budget?.written(envelope!)
        return envelope!
    }

    /// Reads envelopes until `match` returns a value for one, waiting at most `timeout` in all.
    func first<T>(_ what: String, timeout: Duration = .seconds(30), _ match: (Envelope) throws -> T?) async throws -> T {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw TestFailure("timed out after \(timeout) waiting for \(what)") }
            let envelope: Envelope
            do { envelope = try await next(timeout: left) } catch { throw TestFailure("timed out after \(timeout) waiting for \(what)") }
            if let value = try match(envelope) { return value }
        }
    }

    /// The next assignment pushed to this session.
    func assignment(timeout: Duration = .seconds(30)) async throws -> Heddle_V1_Assignment {
        try await first("an assignment", timeout: timeout) { envelope in
            if case .assignment(let assignment) = envelope.body { return assignment }
            return nil
        }
    }

    /// Watch events until `end`, with the log bytes of each node (checked contiguous) and the end.
    func watchedLogs(timeout: Duration = .seconds(30)) async throws -> (logs: [String: Data], end: Heddle_V1_RunSummary) {
        var logs: [String: Data] = [:]
        var ends: [String: UInt64] = [:]
        let end = try await first("the end of a watch", timeout: timeout) { envelope -> Heddle_V1_RunSummary? in
            guard case .watchEvent(let event) = envelope.body else { return nil }
            if case .log(let chunk) = event.event {
                let expected = (ends[chunk.node] ?? 0) + chunk.dropped
                guard chunk.offset == expected else {
                    throw TestFailure("node \(chunk.node): a chunk at \(chunk.offset), expected \(expected)")
                }
                ends[chunk.node] = chunk.offset + UInt64(chunk.data.count)
                logs[chunk.node, default: Data()].append(chunk.data)
            }
            if case .end(let run) = event.event { return run }
            return nil
        }
        return (logs, end)
    }
}

/// The caller of the tests' admin calls.
let admin = Principal(name: "root", role: .admin)

extension CoordinatorCore {
    /// Opens a session for a pretend peer whose events `recording` collects.
    func open(_ name: String, _ role: Role, _ recording: RecordingOutbox) async throws -> UInt64 {
        try await openSession(Principal(name: name, role: role), sink: recording.outbox, close: {})
    }

    /// A pretend runner connects with its Hello; returns its session.
    func connectRunner(_ recording: RecordingOutbox, name: String = "r1", labels: [String] = ["linux"], capacity: Int = 1,
                       running: [LeaseRef] = []) async throws -> UInt64 {
        let session = try await open(name, .runner, recording)
        await hello(session: session, RunnerHello(labels: labels, capacity: capacity, running: running))
        return session
    }

    func push(_ project: String, _ source: String) async throws {
        _ = try await catalog.pushPipeline(PipelinePush(project: project, source: source), as: admin)
    }

    func trigger(_ project: String, _ pipeline: String, branch: String? = nil) async throws -> Int64 {
        try await trigger(TriggerRequest(project: project, pipeline: pipeline, branch: branch), as: admin).runID
    }

    /// Starts a watch as a session does, beside the caller's other calls (a following watch
    /// lasts until its end), and returns once it answered Ok. The task ends with the watch.
    /// Without a session, the watch runs in a viewer's session of its own, whose events
    /// `recording` collects.
    func startWatch(session: UInt64? = nil, requestID: UInt64, _ request: WatchRequest,
                    _ recording: RecordingOutbox) async throws -> Task<Void, any Error> {
        let session = if let session { session } else { try await open("viewer", .viewer, recording) }
        let task = Task { try await self.watch(session: session, requestID: requestID, request) }
        _ = try await recording.first("the watch's Ok") { envelope -> Bool? in
            if case .ok = envelope.body { return true }
            if case .error(let error) = envelope.body { throw TestFailure("the watch was refused: \(error.message)") }
            return nil
        }
        return task
    }
}
