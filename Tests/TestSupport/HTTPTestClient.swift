import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import Wire

/// A small HTTP/1.1 client for tests of the coordinator's HTTP front: one request per
/// connection, over TLS trusting the fabric's CA (with a client certificate when given) or
/// plain. Every request has a deadline.
public struct HTTPTestClient: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var headers: [(String, String)]
        public var body: [UInt8]

        public init(status: Int, headers: [(String, String)], body: [UInt8]) {
            self.status = status
            self.headers = headers
            self.body = body
        }

        public func header(_ name: String) -> String? {
            headers.first { $0.0.lowercased() == name.lowercased() }?.1
        }

        public var text: String { String(decoding: body, as: UTF8.self) }

        /// The body as a JSON object (or nil).
        public var object: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
        public var json: Any? { try? JSONSerialization.jsonObject(with: Data(body)) }
    }

    public let host: String
    public let port: Int
    let tls: TLSConfiguration?

    /// `url` is `https://HOST:PORT` or `http://HOST:PORT`. With `ca`, TLS trusting only that CA;
    /// with `certificate` and `key`, that client certificate is offered.
    public init(url: String, ca: String?, certificate: String? = nil, key: String? = nil) throws {
        guard let parsed = URLComponents(string: url), let host = parsed.host, let port = parsed.port else {
            throw TestFailure("not a URL with a port: \(url)")
        }
        self.host = host
        self.port = port
        guard parsed.scheme == "https" else {
            tls = nil
            return
        }
        var config = TLSConfiguration.makeClientConfiguration()
        if let ca { config.trustRoots = .file(ca) }
        if let certificate, let key {
            config.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
            config.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
        }
        tls = config
    }

    /// A connection (TLS when the URL is https) whose responses go to `handler`.
    func connect(_ handler: some ChannelInboundHandler & Sendable) async throws -> any Channel {
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port).get()
    }

    /// Sends one request and returns the whole response.
    public func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil,
                        timeout: Duration = .seconds(30)) async throws -> Response {
        let collector = Collector()
        let channel = try await connect(collector)
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        head.headers.add(name: "Connection", value: "close")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        if let body { head.headers.replaceOrAdd(name: "Content-Length", value: String(body.count)) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        // A server may answer (413) and close before taking a large body: its answer counts.
        try? await channel.writeAndFlush(HTTPClientRequestPart.end(nil))
        return try await withThrowingTaskGroup(of: Response.self) { group in
            group.addTask { try await collector.response.futureResult.get() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("no answer to \(method) \(path) within \(timeout)")
            }
            defer {
                group.cancelAll()
                channel.close(promise: nil)
            }
            return try await group.next()!
        }
    }

    /// A JSON request (the body encoded from `json`).
    public func json(_ method: String, _ path: String, _ json: Any? = nil, headers: [(String, String)] = []) async throws -> Response {
        var all = headers
        var body: [UInt8]?
        if let json {
            body = Array(try JSONSerialization.data(withJSONObject: json))
            all.append(("Content-Type", "application/json"))
        }
        return try await request(method, path, headers: all, body: body)
    }

    /// A response read as it arrives (Server-Sent Events): its status and headers, then its
    /// body's bytes until the server ends it or `close()`.
    public final class Stream: Sendable {
        public let status: Int
        public let headers: [(String, String)]
        public let body: AsyncStream<[UInt8]>
        let channel: any Channel

        init(status: Int, headers: [(String, String)], body: AsyncStream<[UInt8]>, channel: any Channel) {
            self.status = status
            self.headers = headers
            self.body = body
            self.channel = channel
        }

        /// Drops the connection.
        public func close() async {
            try? await channel.close()
        }
    }

    /// Sends a GET and returns once the response's head arrived.
    public func stream(_ path: String, headers: [(String, String)] = [], timeout: Duration = .seconds(30)) async throws -> Stream {
        let (body, continuation) = AsyncStream.makeStream(of: [UInt8].self)
        let streamer = Streamer(continuation)
        let channel = try await connect(streamer)
        var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        try await channel.writeAndFlush(HTTPClientRequestPart.end(nil))
        let response = try await withThrowingTaskGroup(of: HTTPResponseHead.self) { group in
            group.addTask { try await streamer.head.futureResult.get() }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("no answer to GET \(path) within \(timeout)")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        return Stream(status: Int(response.status.code), headers: response.headers.map { ($0.name, $0.value) }, body: body,
                      channel: channel)
    }

    final class Streamer: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let head: EventLoopPromise<HTTPResponseHead>
        let continuation: AsyncStream<[UInt8]>.Continuation

        init(_ continuation: AsyncStream<[UInt8]>.Continuation) {
            head = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: HTTPResponseHead.self)
            self.continuation = continuation
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head.succeed(head)
            case .body(let buffer): continuation.yield(Array(buffer.readableBytesView))
            case .end: continuation.finish()
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            head.fail(error)
            continuation.finish()
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            head.fail(TestFailure("the connection closed before a response"))
            continuation.finish()
        }
    }

    final class Collector: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        let response: EventLoopPromise<Response>
        private var head: HTTPResponseHead?
        private var body: [UInt8] = []

        init() {
            response = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Response.self)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head): self.head = head
            case .body(let buffer): body += buffer.readableBytesView
            case .end:
                guard let head else { return }
                response.succeed(Response(status: Int(head.status.code), headers: head.headers.map { ($0.name, $0.value) },
                                          body: body))
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            response.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            response.fail(TestFailure("the connection closed before a whole response"))
        }
    }
}

/// Server-Sent Events parsed from a stream's bytes.
public struct SSEEvent: Sendable, Equatable {
    public var event: String
    public var id: String?
    public var data: String

    public var object: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: Any] }

    public static func == (a: SSEEvent, b: SSEEvent) -> Bool { a.event == b.event && a.id == b.id && a.data == b.data }
}

/// Splits SSE text into events as bytes arrive (comments and `retry:` skipped).
public struct SSEParser: Sendable {
    var buffer: [UInt8] = []

    public init() {}

    public mutating func feed(_ bytes: [UInt8]) -> [SSEEvent] {
        buffer += bytes
        var events: [SSEEvent] = []
        while let end = Self.blankLine(in: buffer) {
            let block = String(decoding: buffer[..<end.start], as: UTF8.self)
            buffer.removeFirst(end.next)
            var event = SSEEvent(event: "message", id: nil, data: "")
            var sawData = false
            for line in block.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix(":") { continue }
                if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
                if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
                if line.hasPrefix("data: ") {
                    event.data += (sawData ? "\n" : "") + line.dropFirst(6)
                    sawData = true
                }
            }
            if sawData { events.append(event) }
        }
        return events
    }

    static func blankLine(in bytes: [UInt8]) -> (start: Int, next: Int)? {
        guard bytes.count >= 2 else { return nil }
        for index in 0..<(bytes.count - 1) where bytes[index] == 0x0A && bytes[index + 1] == 0x0A {
            return (index, index + 2)
        }
        return nil
    }
}

extension HTTPTestClient {
    /// Sends `bytes` as they are (any framing: chunked, a lying Content-Length, a partial
    /// body) over a new connection, 64 KiB at a time as the server takes them (stopping when
    /// it closes), and returns every byte the server sends until it closes the connection, or
    /// what came by `timeout` (then `closed` is false). Its connections have an event loop of
    /// their own, so a flood of them cannot starve other clients of the test process.
    public func raw(_ bytes: [UInt8], timeout: Duration = .seconds(30)) async throws -> (text: String, closed: Bool) {
        let collector = RawCollector()
        let context = try tls.map { try NIOSSLContext(configuration: $0) }
        let channel = try await ClientBootstrap(group: Self.rawGroup)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let context {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    }
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: host, port: port).get()
        let closed = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                // The server may answer and close before taking everything: its answer counts.
                var offset = 0
                while offset < bytes.count, channel.isActive {
                    let end = min(bytes.count, offset + (64 << 10))
                    do { try await channel.writeAndFlush(ByteBuffer(bytes: bytes[offset..<end])) } catch { break }
                    offset = end
                }
                try await collector.closed.futureResult.get()
                return true
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
        try? await channel.close()
        return (String(decoding: collector.bytes, as: UTF8.self), closed)
    }

    /// The event loop of `raw`'s connections.
    static let rawGroup = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    /// A request head as raw bytes (CRLF line ends, a blank line after).
    public func head(_ method: String, _ path: String, _ headers: [(String, String)]) -> [UInt8] {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: \(host):\(port)\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        return Array((text + "\r\n").utf8)
    }

    final class RawCollector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        private let received = Mutex<[UInt8]>([])
        let closed = HTTPTestClient.rawGroup.next().makePromise(of: Void.self)

        var bytes: [UInt8] { received.withLock { $0 } }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.withLock { $0 += buffer.readableBytesView }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            closed.succeed(())
        }
    }
}
