import NIOCore
import NIOPosix
import Synchronization

/// A loopback TCP proxy for fault injection: forwards 127.0.0.1:port to a target, and can
/// cut every connection through it or stall them (stop reading both ways) and resume.
public final class TCPProxy: Sendable {
    public let port: Int
    private let server: Channel
    private let state: Shared

    struct State {
        var pairs: [(Channel, Channel)] = []
        var stalled = false
        var target: (String, Int)
    }

    final class Shared: Sendable {
        private let mutex: Mutex<State>
        init(_ state: State) { mutex = Mutex(state) }
        func withLock<R>(_ body: (inout State) -> R) -> R { mutex.withLock { body(&$0) } }
    }

    public init(to host: String, port target: Int) async throws {
        let state = Shared(State(target: (host, target)))
        self.state = state
        let group = MultiThreadedEventLoopGroup.singleton
        server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { inbound in
                let (host, port) = state.withLock { $0.target }
                return ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.autoRead, value: false)
                    .connect(host: host, port: port)
                    .flatMap { outbound in
                        let stalled = state.withLock { state -> Bool in
                            state.pairs.append((inbound, outbound))
                            return state.stalled
                        }
                        let (a, b) = Glue.pair()
                        return inbound.pipeline.addHandler(a).flatMap { outbound.pipeline.addHandler(b) }.map {
                            if !stalled {
                                inbound.setOption(.autoRead, value: true).whenComplete { _ in }
                                outbound.setOption(.autoRead, value: true).whenComplete { _ in }
                            }
                        }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = server.localAddress?.port ?? 0
    }

    /// Closes every connection through the proxy; new ones are accepted as before.
    public func cut() async {
        let pairs = state.withLock { state -> [(Channel, Channel)] in
            defer { state.pairs = [] }
            return state.pairs
        }
        for (a, b) in pairs {
            try? await a.close()
            try? await b.close()
        }
    }

    /// Stops moving bytes either way (connections stay open, bytes pile up in the kernel).
    public func stall() async {
        let pairs = state.withLock { state -> [(Channel, Channel)] in
            state.stalled = true
            return state.pairs
        }
        for (a, b) in pairs {
            try? await a.setOption(.autoRead, value: false).get()
            try? await b.setOption(.autoRead, value: false).get()
        }
    }

    public func resume() async {
        let pairs = state.withLock { state -> [(Channel, Channel)] in
            state.stalled = false
            return state.pairs
        }
        for (a, b) in pairs {
            try? await a.setOption(.autoRead, value: true).get()
            try? await b.setOption(.autoRead, value: true).get()
        }
    }

    public func stop() async {
        await cut()
        try? await server.close()
    }
}

/// Forwards what one channel reads to its partner, closing both together.
private final class Glue: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var partner: Glue?
    private var context: ChannelHandlerContext?

    static func pair() -> (Glue, Glue) {
        let a = Glue()
        let b = Glue()
        a.partner = b
        b.partner = a
        return (a, b)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func write(_ buffer: ByteBuffer) {
        guard let context else { return }
        context.eventLoop.execute {
            context.writeAndFlush(NIOAny(buffer), promise: nil)
        }
    }

    private func close() {
        guard let context else { return }
        context.eventLoop.execute { context.close(promise: nil) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        partner?.write(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        partner?.close()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }
}
