import Foundation
import Coordinator
import Logging
import NIOCore
import NIOEmbedded
import Testing
@testable import HTTPAPI

/// The pieces of the HTTP front that stand between hostile clients and the core, each on its
/// own: one form of every path, who a request comes from, what a loopback address is, entity
/// tags, the failed-credential limiter and the connection cap's share of descriptors.
@Suite struct HostileClientUnitTests {
    @Test func everyPathHasOneForm() {
        #expect(CanonicalPath.of("/metrics/") == "/metrics")
        #expect(CanonicalPath.of("//metrics") == "/metrics")
        #expect(CanonicalPath.of("/%6Detrics") == "/metrics")
        #expect(CanonicalPath.of("/api//v1///runs/") == "/api/v1/runs")
        #expect(CanonicalPath.of("/") == "/")
        #expect(CanonicalPath.of("") == "/")
        // Reserved or non-ASCII escapes stay as they are: they mean something else decoded.
        #expect(CanonicalPath.of("/assets/a%2Fb") == "/assets/a%2Fb")
        #expect(CanonicalPath.of("/x/%E2%82%AC") == "/x/%E2%82%AC")
        #expect(CanonicalPath.of("/x/%zz%4") == "/x/%zz%4")
    }

    @Test func forwardedForCountsOnlyFromTrustedProxies() {
        let none = ClientAddresses()
        #expect(none.client(peer: "10.1.1.1", forwardedFor: "192.0.2.9") == "10.1.1.1")
        let proxied = ClientAddresses(trustedProxies: ["127.0.0.1", "10.0.0.2"])
        #expect(proxied.client(peer: "127.0.0.1", forwardedFor: "192.0.2.9") == "192.0.2.9")
        // The right-most hop that is not a proxy: what a client wrote before it is not believed.
        #expect(proxied.client(peer: "127.0.0.1", forwardedFor: "6.6.6.6, 192.0.2.9, 10.0.0.2") == "192.0.2.9")
        #expect(proxied.client(peer: "127.0.0.1", forwardedFor: nil) == "127.0.0.1")
        #expect(proxied.client(peer: "10.9.9.9", forwardedFor: "192.0.2.9") == "10.9.9.9")
    }

    @Test func plainHTTPOnlyOnLoopbackAddresses() {
        for host in ["127.0.0.1", "127.8.9.10", "::1", "localhost"] {
            #expect(HTTPFront.Listener.isLoopback(host), "\(host)")
        }
        for host in ["127.evil.example", "127.0.0.1.nip.io", "0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "::2", "localhost.example"] {
            #expect(!HTTPFront.Listener.isLoopback(host), "\(host)")
        }
        #expect(throws: HTTPFrontError.self) {
            try HTTPFront.Listener(host: "127.evil.example", port: 0, security: .plain).validate()
        }
    }

    @Test func weakTagsMatchIfNoneMatch() {
        let tag = "\"abc\""
        #expect(StreamRoutes.anyTagMatches("\"abc\"", tag))
        #expect(StreamRoutes.anyTagMatches("W/\"abc\"", tag))
        #expect(StreamRoutes.anyTagMatches("\"x\", W/\"abc\"", tag))
        #expect(StreamRoutes.anyTagMatches("*", tag))
        #expect(!StreamRoutes.anyTagMatches("\"abcd\"", tag))
        #expect(!StreamRoutes.anyTagMatches("W/\"x\"", tag))
    }

    @Test func onlyFailuresAreLimitedPerAddressAndPerCredential() {
        let limiter = FailureLimiter(logger: Logger(label: "test"))
        let now: Int64 = 1_000_000
        for index in 0..<FailureLimiter.maximumFailures {
            #expect(throws: Never.self) {
                try limiter.failed(client: "10.0.0.1", credential: "Bearer heddle_\(UUID().uuidString)", path: "/", reason: "x", now: now + Int64(index))
            }
        }
        // The address is past the limit: its next failure is 429 with the seconds left.
        do {
            try limiter.failed(client: "10.0.0.1", credential: nil, path: "/", reason: "x", now: now + 30_000)
            Issue.record("no 429 past the limit")
        } catch {
            #expect(error.status == .tooManyRequests && error.headers[.retryAfter] == "30")
        }
        // Another address with fresh credentials: still 401s.
        #expect(throws: Never.self) {
            try limiter.failed(client: "10.0.0.2", credential: "Bearer heddle_other", path: "/", reason: "x", now: now)
        }
        // One credential prefix from many addresses: limited by its prefix.
        var refused = 0
        for index in 0...FailureLimiter.maximumFailures {
            do {
                try limiter.failed(client: "10.1.0.\(index)", credential: "Bearer heddle_samesame-\(index)", path: "/", reason: "x", now: now)
            } catch { refused += 1 }
        }
        #expect(refused == 1)
        // After the minute, the address starts again.
        #expect(throws: Never.self) {
            try limiter.failed(client: "10.0.0.1", credential: nil, path: "/", reason: "x", now: now + 61_000)
        }
    }

    @Test func theHTTPCapLeavesDescriptorsForTheBinaryPort() {
        // Enough descriptors: the configured cap.
        #expect(HTTPConnectionLimits.fit(descriptors: 1 << 20, binary: 16_384, http: 1024) == 1024)
        // 1,024 files: at most half of what is left after the reserve.
        #expect(HTTPConnectionLimits.fit(descriptors: 1024, binary: 16_384, http: 1024) == 384)
        #expect(HTTPConnectionLimits.fit(descriptors: 256, binary: 16_384, http: 1024) == 96)
        #expect(HTTPConnectionLimits.fit(descriptors: 64, binary: 16_384, http: 1024) == 24)
    }
}

/// The HTTP front's connection cap: past it the connection idle longest makes room, and a new
/// one is refused only when every connection is busy with a request.
@Suite struct ConnectionCapTests {
    @Test func theLongestIdleMakesRoomAndBusyOnesAreNeverClosed() async throws {
        var limits = HTTPConnectionLimits()
        limits.maximumConnections = 2
        let connections = HTTPConnections(limits: limits, refusals: RateLimitedLog(logger: Logger(label: "test"), every: .seconds(10)))
        let channels = (0..<4).map { _ in EmbeddedChannel() }
        for channel in channels { try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get() }
        let ids = channels.map { ObjectIdentifier($0) }
        let start = NIODeadline.now()
        #expect(connections.open(ids[0], channel: channels[0], now: start))
        #expect(connections.open(ids[1], channel: channels[1], now: start + .seconds(1)))
        // Both wait for a request; the third takes the place of the first (waiting longest).
        #expect(connections.open(ids[2], channel: channels[2], now: start + .seconds(2)))
        #expect(!channels[0].isActive && channels[1].isActive && connections.count == 2)
        // Both now answer requests: a fourth is refused and nothing is closed.
        connections.waiting(ids[1], since: nil)
        connections.waiting(ids[2], since: nil)
        #expect(!connections.open(ids[3], channel: channels[3], now: start + .seconds(3)))
        #expect(channels[1].isActive && channels[2].isActive && connections.count == 2)
        // One closes: room again.
        connections.close(ids[1])
        #expect(connections.open(ids[3], channel: channels[3], now: start + .seconds(4)))
        // Both wait again; the one that never sent a byte makes room first, though newer.
        let fifth = EmbeddedChannel()
        try await fifth.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        connections.waiting(ids[2], since: start + .seconds(3))
        connections.spoke(ids[2])
        #expect(connections.open(ObjectIdentifier(fifth), channel: fifth, now: start + .seconds(6)))
        #expect(channels[2].isActive && !channels[3].isActive)
        _ = try? await fifth.close()
        for channel in channels { _ = try? await channel.close() }
    }
}
