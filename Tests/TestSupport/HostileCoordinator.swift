import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import Wire

/// A coordinator that lies: it completes the TLS handshake with the fabric's coordinator
/// certificate, answers a runner's Hello with a Welcome, then writes the next of its scripted
/// byte strings (a broken frame, say) on that connection. Each new connection gets the next
/// one; once the script is used up, connections are only welcomed. Counts the Hellos answered.
public final class HostileCoordinator: Sendable {
    public let port: Int
    private let server: Channel
    private let state: Shared

    final class Shared: Sendable {
        struct State {
            var script: [[UInt8]]
            var hellos = 0
        }
        let mutex: Mutex<State>
        init(script: [[UInt8]]) { mutex = Mutex(State(script: script)) }
    }

    public init(tls: TLSFiles, script: [[UInt8]]) async throws {
        let state = Shared(script: script)
        self.state = state
        server = try await TestCoordinatorServer.listen(tls: tls) { try $0.addHandler(Handler(state: state)) }
        port = server.localAddress?.port ?? 0
    }

    /// Connections whose Hello was answered.
    public var hellos: Int { state.mutex.withLock { $0.hellos } }

    public func stop() async {
        try? await server.close()
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let state: Shared
        var buffer = ByteBuffer()
        var welcomed = false

        init(state: Shared) { self.state = state }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            guard !welcomed else { return }  // what the runner sends after Hello is not read
            buffer.writeBuffer(&bytes)
            guard buffer.readableBytes >= 5, let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self),
                  buffer.readableBytes >= 5 + Int(length),
                  let payload = buffer.getBytes(at: buffer.readerIndex + 5, length: Int(length)),
                  let hello = try? Envelope(serializedBytes: payload), case .hello = hello.body else { return }
            welcomed = true
            var welcome = Envelope()
            welcome.id = hello.id
            welcome.body = .welcome(TestCoordinatorServer.welcome(session: "hostile"))
            let encoded: [UInt8] = (try? welcome.serializedBytes()) ?? []
            var out = context.channel.allocator.buffer(capacity: encoded.count + 5)
            out.writeInteger(UInt8(0))
            out.writeInteger(UInt32(encoded.count))
            out.writeBytes(encoded)
            let next = state.mutex.withLock { state -> [UInt8]? in
                state.hellos += 1
                return state.script.isEmpty ? nil : state.script.removeFirst()
            }
            if let next { out.writeBytes(next) }
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        }

        func errorCaught(context: ChannelHandlerContext, error: Error) {
            context.close(promise: nil)
        }
    }
}
