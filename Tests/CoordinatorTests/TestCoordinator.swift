import Foundation
import Logging
import TestSupport
import Wire
@testable import Coordinator

/// A real coordinator server in this process on 127.0.0.1, port 0, with its own data directory.
struct TestCoordinator {
    let endpoint: Endpoint
    let core: CoordinatorCore
    let pki: TestPKI

    static func with<T: Sendable>(limits: CoordinatorLimits = CoordinatorLimits(),
                                  logger: Logger = Logger(label: "test.coordinator"),
                                  _ body: (TestCoordinator) async throws -> T) async throws -> T {
        let pki = try TestPKI()
        let data = try TemporaryDirectory("heddle-data")
        defer {
            pki.remove()
            data.remove()
        }
        let core = CoordinatorCore(store: try SQLiteStore.open(directory: data.path),
                                   blobs: try BlobStore(directory: data.path), limits: limits,
                                   logger: logger)
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

/// Collects what the core sends to one pretend session.
final class RecordingOutbox: Sendable {
    let outbox: Outbox
    let stream: AsyncStream<Envelope>

    init() {
        let (stream, continuation) = AsyncStream.makeStream(of: Envelope.self)
        self.stream = stream
        self.outbox = Outbox(continuation)
    }
}

