import NIOCore
import NIOPosix
import NIOSSL
import Wire

/// What the coordinators of tests' own (`HostileCoordinator`, `ScriptedCoordinator`) share: a
/// TLS listener on 127.0.0.1 and a port the OS picks, with the fabric's coordinator
/// certificate, and the Welcome they answer a runner's Hello with.
enum TestCoordinatorServer {
    /// Listens; `handlers` adds a connection's handlers after the TLS one.
    static func listen(tls: TLSFiles,
                       handlers: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void) async throws -> Channel {
        let context = try NIOSSLContext(configuration: try tls.serverConfiguration())
        return try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    try handlers(channel.pipeline.syncOperations)
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// A Welcome for a runner: heartbeats every 60 s (so none matter in a test), the
    /// default frame limit, 1 MiB artifact chunks, this version.
    static func welcome(session: String) -> Heddle_V1_Welcome {
        var welcome = Heddle_V1_Welcome()
        welcome.sessionID = session
        welcome.heartbeatIntervalMs = 60_000
        welcome.maxFrameBytes = UInt32(Frame.defaultMaximumLength)
        welcome.peerName = "runner"
        welcome.role = "runner"
        welcome.maxArtifactChunkBytes = 1 << 20
        welcome.softwareVersion = HeddleVersion.software
        welcome.protocolVersion = HeddleVersion.protocolVersion
        welcome.protocolMinor = HeddleVersion.protocolMinor
        return welcome
    }
}
