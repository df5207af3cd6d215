import Foundation
import Synchronization
import NIOCore
import NIOPosix
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Peers that stall, flood or churn: each is cut off, and the coordinator serves on.
@Suite struct HostileInputTests {
    static var fast: CoordinatorLimits {
        var limits = CoordinatorLimits()
        limits.heartbeatInterval = .milliseconds(200)
        limits.maximumPendingFrames = 64
        return limits
    }

    /// A legitimate admin is served. With these short heartbeats (3 × 200 ms to finish a
    /// handshake) a loaded machine running the rest of the suite may be too slow for one
    /// attempt, so it tries again until the usual deadline.
    func stillServes(_ coordinator: TestCoordinator) async throws {
        try await waitUntil("a legitimate admin to be served") {
            guard let admin = try? await coordinator.client("admin") else { return false }
            let served = (try? await admin.runners())?.isEmpty == true
            await admin.connection.close()
            return served
        }
    }

    func hello() throws -> [UInt8] {
        var hello = Heddle_V1_Hello()
        hello.protocolVersion = 1
        return frame(try Envelope(id: 1, .hello(hello)).serializedBytes())
    }

    func frame(_ payload: [UInt8]) -> [UInt8] {
        [0] + withUnsafeBytes(of: UInt32(payload.count).bigEndian, Array.init) + payload
    }

    @Test func aPeerThatNeverFinishesTheHandshakeIsClosed() async throws {
        try await TestCoordinator.with(limits: Self.fast) { coordinator in
            // Plain TCP, no TLS: the handshake never completes.
            _ = try await RawClient.exchange([], with: coordinator.endpoint, tls: nil)
            try await stillServes(coordinator)
        }
    }

    @Test func aPeerThatNeverFinishesAFrameIsClosed() async throws {
        // Three seconds: the handshake and Hello before the stall must fit in three intervals
        // even while the rest of the suite loads both cores (one second was seen too short).
        var limits = Self.fast
        limits.heartbeatInterval = .seconds(3)
        try await TestCoordinator.with(limits: limits) { coordinator in
            let partial = try hello() + [0, 0, 0, 0, 100, 1, 2, 3]
            let received = try await RawClient.exchange(partial, with: coordinator.endpoint, tls: coordinator.pki.tls("admin"))
            #expect(try received.frames().contains { if case .welcome = $0.body { true } else { false } })
            try await stillServes(coordinator)
        }
    }

    /// The coordinator stops reading a peer whose answers pile up unread (back-pressure), and
    /// a peer that then sends nothing the coordinator reads for three heartbeats is closed.
    @Test func aPeerThatSendsButNeverReadsIsCutOff() async throws {
        try await TestCoordinator.with(limits: Self.fast) { coordinator in
            var flood = try hello()
            let request = frame(try Envelope(id: 2, .runners(.init())).serializedBytes())
            for _ in 0..<200_000 { flood += request }
            let (_, wroteAll) = try await RawClient.exchangeReportingWrite(
                flood, with: coordinator.endpoint, tls: coordinator.pki.tls("admin"), reading: false)
            // Answers pile up unread; past the bound the session is closed, mid-flood, instead
            // of the coordinator reading on and buffering every answer.
            #expect(!wroteAll, "the coordinator read the whole flood without cutting the peer off")
            try await stillServes(coordinator)
        }
    }

    /// Past `maximumConnections` open connections a new one is closed at once (not after the
    /// heartbeat timeout); once one closes, connections are served again.
    @Test func connectionsPastTheMaximumAreClosedAtOnce() async throws {
        var limits = Self.fast
        limits.heartbeatInterval = .seconds(10)  // idle connections stay open for 30 s
        limits.maximumConnections = 2
        try await TestCoordinator.with(limits: limits) { coordinator in
            // Three idle connections (no TLS handshake). Which two count first is up to the
            // event loops that set them up; the other one is closed at once.
            var idle = try (0..<3).map { _ in try openTCP(coordinator.endpoint) }
            defer { for socket in idle { close(socket) } }
            var closed: [Int32] = []
            let started = ContinuousClock.now
            try await waitUntil("one of three connections to be closed", timeout: .seconds(10)) {
                closed = idle.filter { socket in
                    var byte: UInt8 = 0
                    return recv(socket, &byte, 1, Int32(MSG_DONTWAIT)) == 0
                }
                return !closed.isEmpty
            }
            #expect(closed.count == 1)
            #expect(ContinuousClock.now - started < .seconds(10))
            // The two others are still open.
            #expect(idle.filter { !closed.contains($0) }.allSatisfy { socket in
                var byte: UInt8 = 0
                return recv(socket, &byte, 1, Int32(MSG_DONTWAIT)) == -1 && errno == EAGAIN
            })
            for socket in closed { close(socket) }
            idle.removeAll { closed.contains($0) }
            close(idle.removeFirst())
            try await stillServes(coordinator)
        }
    }

    /// What the core pushes on its own (watch events, queue events) waits in a bounded outbox;
    /// a session that lets it overflow is closed.
    @Test func anOverflowingOutboxClosesItsSession() {
        let (stream, continuation) = AsyncStream.makeStream(of: Envelope.self, bufferingPolicy: .bufferingOldest(3))
        let closed = Counter()
        let outbox = Outbox(continuation, overflow: { closed.increment() })
        for _ in 0..<3 { outbox.send(.ok(id: 1)) }
        #expect(closed.value == 0)
        outbox.send(.ok(id: 1))
        #expect(closed.value == 1)
        _ = stream
    }

    @Test func aThousandConnectionsOpenedAndDroppedLeaveItServing() async throws {
        try await TestCoordinator.with(limits: Self.fast) { coordinator in
            let group = MultiThreadedEventLoopGroup.singleton
            for _ in 0..<10 {
                try await withThrowingTaskGroup(of: Void.self) { tasks in
                    for _ in 0..<100 {
                        tasks.addTask {
                            let channel = try await ClientBootstrap(group: group)
                                .connect(host: coordinator.endpoint.host, port: coordinator.endpoint.port).get()
                            // The coordinator may have closed it first (it was silent).
                            try? await channel.close()
                        }
                    }
                    try await tasks.waitForAll()
                }
            }
            try await stillServes(coordinator)
        }
    }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
