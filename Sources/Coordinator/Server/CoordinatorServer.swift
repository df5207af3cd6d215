import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Wire

/// The binary-protocol front of the coordinator: accepts mutual-TLS connections and runs a
/// `Session` for each. A `Service`: `run()` serves until cancelled or gracefully shut down.
public final class CoordinatorServer: Service, Sendable {
    public let core: CoordinatorCore
    let host: String
    let port: Int
    let tls: TLSFiles
    let logger: Logger
    let onListening: @Sendable (SocketAddress) -> Void

    public init(core: CoordinatorCore, host: String, port: Int, tls: TLSFiles, logger: Logger,
                onListening: @escaping @Sendable (SocketAddress) -> Void = { _ in }) {
        self.core = core
        self.host = host
        self.port = port
        self.tls = tls
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let sslContext = try NIOSSLContext(configuration: tls.serverConfiguration())
        let limits = core.limits
        let interval = TimeAmount.nanoseconds(Int64(limits.heartbeatInterval.components.seconds) * 1_000_000_000
                                              + limits.heartbeatInterval.components.attoseconds / 1_000_000_000)
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(NIOSSLServerHandler(context: sslContext))
                    try sync.addFrameCodec(maximumFrameLength: limits.maximumFrameLength)
                    try sync.addHandler(HeartbeatHandler(interval: interval))
                    // Closed on deinit: a connection accepted but not yet taken by the
                    // accept loop when the server is cancelled is dropped with the loop's
                    // buffer, and must then close rather than trap ("Deinited NIOAsyncWriter
                    // without calling finish()", seen with 1,000 connections at shutdown).
                    return try NIOAsyncChannel<Envelope, Envelope>(synchronouslyWrapping: channel)
                }
            }
        if let address = server.channel.localAddress {
            onListening(address)
        }
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    defer { group.cancelAll() }  // shutting down: end every session too
                    for try await connection in inbound {
                        group.addTask {
                            await Session(core: self.core, logger: self.logger,
                                          heartbeatInterval: interval).run(connection)
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }
}
