import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Wire

/// The limits Heddle is measured against, with the same TLS stack and disk.
enum Baselines {
    /// Raw TLS 1.3 throughput on loopback: NIO + NIOSSL, mutual TLS, no framing; the
    /// median of three.
    static func tlsLoopback(pki: BenchPKI, bytes: Int) async throws -> Double {
        var results: [Double] = []
        for _ in 0..<3 { results.append(try await tlsLoopbackOnce(pki: pki, bytes: bytes)) }
        return results.sorted()[1]
    }

    static func tlsLoopbackOnce(pki: BenchPKI, bytes: Int) async throws -> Double {
        let group = MultiThreadedEventLoopGroup.singleton
        let serverContext = try NIOSSLContext(configuration: pki.files("coordinator").serverConfiguration())
        let clientContext = try NIOSSLContext(configuration: pki.files("admin").clientConfiguration())
        let done = group.next().makePromise(of: Void.self)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: serverContext))
                    try channel.pipeline.syncOperations.addHandler(Sink(expected: bytes, done: done))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: clientContext, serverHostname: nil))
                }
            }
            .connect(host: "127.0.0.1", port: server.localAddress!.port!).get()
        let chunk = ByteBuffer(repeating: 0x5a, count: 256 * 1024)
        let start = ContinuousClock.now
        var sent = 0
        while sent < bytes {
            try await client.writeAndFlush(chunk)
            sent += chunk.readableBytes
        }
        try await done.futureResult.get()
        let elapsed = seconds(since: start)
        try await client.close()
        try await server.close()
        return Double(bytes) / elapsed / 1_000_000
    }

    /// Sequential writes of 1 MiB, then fsync, to a file in the data directory's file system:
    /// the median of three, each after a `sync` so earlier writes do not weigh on it.
    static func diskWrite(path: String, bytes: Int) throws -> Double {
        var results: [Double] = []
        for _ in 0..<3 {
            sync()
            results.append(try diskWriteOnce(path: path, bytes: bytes))
        }
        return results.sorted()[1]
    }

    static func diskWriteOnce(path: String, bytes: Int) throws -> Double {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw POSIXError(.EIO) }
        defer {
            close(fd)
            unlink(path)
        }
        let block = [UInt8](repeating: 0x5a, count: 1 << 20)
        let start = ContinuousClock.now
        var written = 0
        while written < bytes {
            let n = block.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { throw POSIXError(.EIO) }
            written += n
        }
        guard fsync(fd) == 0 else { throw POSIXError(.EIO) }
        return Double(bytes) / seconds(since: start) / 1_000_000
    }

    final class Sink: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        let expected: Int
        let done: EventLoopPromise<Void>
        var received = 0

        init(expected: Int, done: EventLoopPromise<Void>) {
            self.expected = expected
            self.done = done
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            received += unwrapInboundIn(data).readableBytes
            if received >= expected { done.succeed(()) }
        }
    }
}
