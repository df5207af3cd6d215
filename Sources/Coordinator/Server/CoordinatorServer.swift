import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
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
        let open = ConnectionCount()
        let refusals = RateLimitedLog(logger: logger, every: .seconds(10))
        let acceptErrors = RateLimitedLog(logger: logger, every: .seconds(10))
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelInitializer { channel in
                // Ahead of NIO's accept back-off (which waits a second after a failed accept,
                // out of descriptors say, and reports nothing): what failed is logged.
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptErrorLogger(log: acceptErrors))
                }
            }
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
                        guard open.enter(limit: limits.maximumConnections) else {
                            refusals.warning("refusing connections: \(limits.maximumConnections) are open (--max-connections)")
                            group.addTask { try? await connection.executeThenClose { _, _ in } }
                            continue
                        }
                        group.addTask {
                            await Session(core: self.core, logger: self.logger,
                                          heartbeatInterval: interval).run(connection)
                            open.leave()
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }
}

/// Connections open now.
final class ConnectionCount: Sendable {
    private let count = Mutex(0)

    /// Counts one more unless `limit` are open.
    func enter(limit: Int) -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() {
        count.withLock { $0 -= 1 }
    }
}

/// A warning logged at most once per period, with how many were held back since the last.
public final class RateLimitedLog: Sendable {
    private let logger: Logger
    private let period: Duration
    private let state = Mutex<(last: ContinuousClock.Instant?, held: Int)>((nil, 0))

    public init(logger: Logger, every period: Duration) {
        self.logger = logger
        self.period = period
    }

    public func warning(_ message: @autoclosure () -> String) {
        let now = ContinuousClock.now
        let held = state.withLock { state -> Int? in
            if let last = state.last, now - last < period {
                state.held += 1
                return nil
            }
            defer { state = (now, 0) }
            return state.held
        }
        guard let held else { return }
        logger.warning("\(message())", metadata: held > 0 ? ["held.back": "\(held)"] : [:])
    }
}

/// When accepting a connection fails (out of descriptors, say): logs it, rate limited, and
/// stops accepting for `pause`. NIO's own accept back-off holds further reads, but the
/// failed accept leaves the listening socket registered for reading, and the event loop
/// spins on it (a core at 100% until a descriptor frees); turning `autoRead` off
/// unregisters it, and turning it on again accepts again.
public final class AcceptErrorLogger: ChannelInboundHandler, Sendable {
    public typealias InboundIn = Any
    let log: RateLimitedLog
    let pause: TimeAmount

    public init(log: RateLimitedLog, pause: TimeAmount = .seconds(1)) {
        self.log = log
        self.pause = pause
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        log.warning("cannot accept a connection (accepting again in 1 s): \(error)")
        if error is IOError, let options = context.channel.syncOptions, (try? options.getOption(.autoRead)) == true {
            try? options.setOption(.autoRead, value: false)
            let channel = context.channel
            context.eventLoop.scheduleTask(in: pause) {
                if channel.isActive { try? channel.syncOptions?.setOption(.autoRead, value: true) }
            }
        }
        context.fireErrorCaught(error)
    }
}

/// The process's open-file limit, and whether it covers the connections the coordinator
/// may hold.
public enum DescriptorLimit {
    /// Descriptors the coordinator needs beside its connections: the database, log and
    /// artifact files, the event loops.
    public static let reserve = 256

    /// Raises the soft open-file limit toward `maximumConnections + reserve` (up to the hard
    /// limit); returns the limit now and what is needed.
    public static func raise(forConnections maximumConnections: Int) -> (limit: Int, needed: Int) {
        let needed = maximumConnections + reserve
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return (needed, needed) }
        if limit.rlim_cur < rlim_t(needed) && limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = min(limit.rlim_max, rlim_t(needed))
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        return (Int(clamping: limit.rlim_cur), needed)
    }
}
