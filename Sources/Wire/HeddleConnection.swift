import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL

/// Where a coordinator listens: `HOST:PORT` (IPv6 as `[::1]:7443`).
public struct Endpoint: Sendable, CustomStringConvertible, Equatable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init(parsing text: String) throws {
        var hostPart: Substring
        var portPart: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(after: close)...].dropFirst()
        } else if let colon = text.lastIndex(of: ":") {
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        } else {
            throw WireError.invalid("'\(text)' is not HOST:PORT")
        }
        guard !hostPart.isEmpty, let port = Int(portPart), (0...65535).contains(port) else {
            throw WireError.invalid("'\(text)' is not HOST:PORT (the port must be 0 to 65535)")
        }
        self.init(host: String(hostPart), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Several coordinators sharing one database, as `HOST:PORT,HOST:PORT` (at least one).
    public static func list(parsing text: String) throws -> [Endpoint] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else {
            throw WireError.invalid("'\(text)' is not HOST:PORT or a list HOST:PORT,HOST:PORT")
        }
        return try parts.map { try Endpoint(parsing: $0) }
    }
}

/// One mutual-TLS session with a coordinator: requests matched to responses by id, pushed
/// frames on `pushes`, heartbeats kept by the handler.
public final class HeddleConnection: Sendable {
    public let welcome: Heddle_V1_Welcome
    /// Frames the coordinator sent on its own: assignments, stop orders, acks, watch events.
    public let pushes: AsyncStream<Envelope>
    private let channel: Channel
    private let handler: ClientHandler

    private init(channel: Channel, handler: ClientHandler, welcome: Heddle_V1_Welcome) {
        self.channel = channel
        self.handler = handler
        self.welcome = welcome
        self.pushes = handler.pushes
    }

    /// Connects, completes the TLS handshake, sends `hello` and waits for `Welcome`. A runner
    /// passes `running`: each heartbeat then carries what it returns.
    public static func connect(
        to endpoint: Endpoint,
        tls: TLSFiles,
        hello: Heddle_V1_Hello = Heddle_V1_Hello(),
        running: (@Sendable () -> Heddle_V1_RunningJobs)? = nil,
        maximumFrameLength: Int = Frame.defaultMaximumLength,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> HeddleConnection {
        try await connect(to: endpoint, configuration: try tls.clientConfiguration(), hello: hello, running: running,
                          maximumFrameLength: maximumFrameLength, group: group)
    }

    /// Connects with a TLS configuration built by the caller.
    public static func connect(
        to endpoint: Endpoint,
        configuration: TLSConfiguration,
        hello: Heddle_V1_Hello = Heddle_V1_Hello(),
        running: (@Sendable () -> Heddle_V1_RunningJobs)? = nil,
        maximumFrameLength: Int = Frame.defaultMaximumLength,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> HeddleConnection {
        let sslContext: NIOSSLContext
        do {
            sslContext = try NIOSSLContext(configuration: configuration)
        } catch {
            throw WireError(.invalidArgument, "cannot use the TLS files: \(error)")
        }
        let isAddress = (try? SocketAddress(ipAddress: endpoint.host, port: 0)) != nil
        let serverHostname = isAddress ? nil : endpoint.host
        let handler = ClientHandler(running: running)
        let channel: Channel
        do {
            channel = try await ClientBootstrap(group: group)
                .connectTimeout(.seconds(10))
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let ssl = try NIOSSLClientHandler(context: sslContext, serverHostname: serverHostname)
                        try channel.pipeline.syncOperations.addHandler(ssl)
                        try channel.pipeline.syncOperations.addFrameCodec(maximumFrameLength: maximumFrameLength)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                }
                .connect(host: endpoint.host, port: endpoint.port)
                .get()
        } catch {
            throw WireError(.unavailableOrClosed,
                            "cannot connect to the coordinator at \(endpoint): \(WireError.describing(error).message)")
        }
        var helloMessage = hello
        // This version's, unless the caller speaks another on purpose (a test double).
        if helloMessage.protocolVersion == 0 {
            helloMessage.protocolVersion = HeddleVersion.protocolVersion
            helloMessage.protocolMinor = HeddleVersion.protocolMinor
        }
        if helloMessage.softwareVersion.isEmpty { helloMessage.softwareVersion = HeddleVersion.software }
        let response: Envelope
        do {
            response = try await request(.hello(helloMessage), on: channel, handler: handler)
        } catch {
            try? await channel.close()
            throw WireError.describing(error)
        }
        guard case .welcome(let welcome) = response.body else {
            try? await channel.close()
            throw WireError(.badRequest, "the coordinator answered Hello with something other than Welcome")
        }
        channel.eventLoop.execute {
            handler.startHeartbeat(interval: .milliseconds(Int64(welcome.heartbeatIntervalMs)))
        }
        return HeddleConnection(channel: channel, handler: handler, welcome: welcome)
    }

    private static func request(_ body: Envelope.OneOf_Body, on channel: Channel,
                                handler: ClientHandler) async throws -> Envelope {
        let promise = channel.eventLoop.makePromise(of: Envelope.self)
        channel.eventLoop.execute { handler.request(body, promise: promise) }
        return try await promise.futureResult.get()
    }

    /// Sends a request and waits for its response. An `Error` response throws `WireError`;
    /// a broken connection throws `WireError` with code `unavailableOrClosed`.
    public func request(_ body: Envelope.OneOf_Body) async throws -> Envelope {
        do {
            return try await Self.request(body, on: channel, handler: handler)
        } catch {
            throw Self.connectionError(error)
        }
    }

    static func connectionError(_ error: Error) -> WireError {
        if let error = error as? WireError { return error }
        return WireError(.unavailableOrClosed, "the connection to the coordinator failed: \(error)")
    }

    /// Sends a one-way frame; returns once it is handed to the socket, so a fast sender is
    /// held back by the connection rather than buffering without bound.
    public func send(_ body: Envelope.OneOf_Body) async throws {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let handler = self.handler
        channel.eventLoop.execute { handler.send(Envelope(body), promise: promise) }
        do {
            try await promise.futureResult.get()
        } catch {
            throw Self.connectionError(error)
        }
    }

    /// Starts closing the connection without waiting for it (from synchronous code, such as a
    /// cancellation handler).
    public func startClosing() {
        channel.close(promise: nil)
    }

    public func close() async {
        try? await channel.close()
    }

    /// Whether the connection is closed (by either side).
    public var isClosed: Bool { !channel.isActive }

    /// Returns when the connection is closed, by either side.
    public func waitClosed() async {
        try? await channel.closeFuture.get()
    }
}
