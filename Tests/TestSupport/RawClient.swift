import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Wire

/// A TLS client that sends raw bytes and collects whatever comes back, to check how the
/// coordinator answers broken input.
public final class RawClient: ChannelInboundHandler, @unchecked Sendable {
    public typealias InboundIn = ByteBuffer

    private var received = ByteBuffer()
    private let closed: EventLoopPromise<ByteBuffer>

    private init(closed: EventLoopPromise<ByteBuffer>) {
        self.closed = closed
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        received.writeBuffer(&buffer)
    }

    public func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        closed.succeed(received)
    }

    /// Connects with `tls`, writes `bytes`, and returns everything received until the
    /// coordinator closed the connection. With `reading` false, it never reads (a peer that
    /// sends but does not read).
    public static func exchange(_ bytes: [UInt8], with endpoint: Endpoint, tls: TLSFiles?,
                         reading: Bool = true) async throws -> ByteBuffer {
        try await exchangeReportingWrite(bytes, with: endpoint, tls: tls, reading: reading).received
    }

    /// Like `exchange`, and says whether every byte could be written before the close.
    public static func exchangeReportingWrite(_ bytes: [UInt8], with endpoint: Endpoint, tls: TLSFiles?,
                                       reading: Bool = true) async throws -> (received: ByteBuffer, wroteAll: Bool) {
        let context = try tls.map { try NIOSSLContext(configuration: $0.clientConfiguration()) }
        let group = MultiThreadedEventLoopGroup.singleton
        let promise = group.next().makePromise(of: ByteBuffer.self)
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.autoRead, value: reading)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(RawClient(closed: promise))
                }
            }
            .connect(host: endpoint.host, port: endpoint.port).get()
        // The coordinator may close before taking every byte (that is what some tests provoke).
        var wroteAll = true
        if !bytes.isEmpty {
            do { try await channel.writeAndFlush(ByteBuffer(bytes: bytes)) } catch { wroteAll = false }
        }
        return (try await promise.futureResult.get(), wroteAll)
    }
}

extension ByteBuffer {
    /// Decodes every whole frame in the buffer.
    public func frames() throws -> [Envelope] {
        var copy = self
        var decoder = FrameDecoder()
        var out: [Envelope] = []
        while let frame = try decoder.decode(buffer: &copy) {
            out.append(try Envelope(serializedBytes: Array(frame.readableBytesView)))
        }
        return out
    }
}

/// A plain TCP connection (blocking socket, no TLS) to `endpoint`; the caller closes it.
public func openTCP(_ endpoint: Endpoint) throws -> Int32 {
    let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(endpoint.port).bigEndian
    address.sin_addr.s_addr = inet_addr(endpoint.host)
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard result == 0 else {
        let reason = String(cString: strerror(errno))
        close(socket)
        throw TestFailure("cannot connect to \(endpoint): \(reason)")
    }
    return socket
}

/// Whether the peer has closed a plain socket: a read without waiting sees the end or an error
/// (not "would block"). What arrived meanwhile is read and dropped.
public func closedByPeer(_ socket: Int32) -> Bool {
    var buffer = [UInt8](repeating: 0, count: 512)
    while true {
        let count = recv(socket, &buffer, buffer.count, Int32(MSG_DONTWAIT))
        if count == 0 { return true }
        if count < 0 { return errno != EAGAIN && errno != EWOULDBLOCK }
    }
}
