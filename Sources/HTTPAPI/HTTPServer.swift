import Coordinator
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HTTPTypes
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import OpenAPIHummingbird
import OpenAPIRuntime
import Prometheus
import ServiceLifecycle
import Wire

/// The coordinator's HTTP front: the REST API of `openapi.yaml` under `/api/v1`, the document
/// itself at `/api/v1/openapi.json`, and `/healthz` and `/readyz`. A second front over the
/// same core as the binary protocol: the core authorizes and validates every call.
public enum HTTPFront {
    /// The largest request body read, in bytes (a pipeline's `.act` source travels in one).
    public static let maximumBodyBytes = 1 << 20
    /// The largest webhook delivery read (a push of many commits is large; GitHub sends at
    /// most 25 MB, and pushes that large not at all).
    public static let maximumHookBodyBytes = 8 << 20

    /// Webhook bytes read before their signature is checked, across all connections: two
    /// deliveries of the largest size. Past it a delivery is answered 503 with Retry-After.
    public static let maximumUnsignedBytes = 2 * maximumHookBodyBytes

    /// The largest body a request to this route may carry.
    static func bodyLimit(_ request: Request) -> Int {
        let path = request.uri.path
        if path.hasPrefix("/hooks/") { return maximumHookBodyBytes }
        if path == WebRoutes.sessionPath { return WebRoutes.maximumSignInBytes }
        return maximumBodyBytes
    }

    /// 413 for a body past its route's limit, however it was found (declared, or while read
    /// chunked); the connection is closed after it rather than the rest read.
    static func tooLarge(_ request: Request) -> Problem {
        var problem = Problem(status: .contentTooLarge, code: .resourceExhausted,
                              detail: "the body is larger than \(bodyLimit(request)) bytes")
        problem.headers[.connection] = "close"
        return problem
    }

    /// How the listener is secured.
    public enum Security: Sendable {
        /// HTTPS with this server certificate; client certificates issued by `clientCA` are
        /// accepted (optional) and give their role.
        case tls(certificate: String, key: String, clientCA: String)
        /// Plain HTTP, for a TLS-terminating proxy in front; only on a loopback address.
        case plain
    }

    public struct Listener: Sendable {
        public var host: String
        public var port: Int
        public var security: Security

        public init(host: String, port: Int, security: Security) {
            self.host = host
            self.port = port
            self.security = security
        }

        /// Refuses plain HTTP on anything but a loopback address: an IPv4 address in
        /// 127.0.0.0/8, `::1`, or `localhost` (which the coordinator binds as 127.0.0.1's
        /// name). The address is parsed, not its text compared: `127.evil.example` is a name
        /// and is refused.
        public func validate() throws {
            if case .plain = security, !Self.isLoopback(host) {
                throw HTTPFrontError("--http-plain serves without TLS and is allowed only on a loopback address (127.0.0.1, ::1 or localhost), not \(host)")
            }
        }

        public static func isLoopback(_ host: String) -> Bool {
            if host == "localhost" { return true }
            var v4 = in_addr()
            if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
            var v6 = in6_addr()
            if inet_pton(AF_INET6, host, &v6) == 1 {
                return withUnsafeBytes(of: &v6) { bytes in bytes.prefix(15).allSatisfy { $0 == 0 } && bytes[15] == 1 }
            }
            return false
        }
    }

    /// Whether `text` is an IPv4 or IPv6 address (not a name).
    public static func isAddress(_ text: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// TLS 1.2 suites offered: ECDHE with AES-GCM or ChaCha20-Poly1305 only (no CBC, no
    /// SHA-1). TLS 1.3 offers only AEAD suites anyway.
    static let tls12CipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    /// The HTTP service, to run beside the binary server in the same service group (and so
    /// stopped by the same signals). `onListening` gets the bound address.
    /// `metrics` is the registry swift-metrics was bootstrapped with, served at `/metrics`.
    public static func service(core: CoordinatorCore, listener: Listener, group: any EventLoopGroup, logger: Logger,
                               metrics: PrometheusCollectorRegistry, connections limits: HTTPConnectionLimits = .init(),
                               clients: ClientAddresses = .init(),
                               onListening: @escaping @Sendable (SocketAddress) -> Void) throws -> some Service {
        try listener.validate()
        let router = Router(context: HeddleRequestContext.self)
        let routes = DocumentedRoutes(document: OpenAPIDocument.json, prefix: "/api/v1",
                                      extra: [("/api/v1/openapi.json", ["GET"]), ("/healthz", ["GET"]), ("/readyz", ["GET"]),
                                               ("/metrics", ["GET"]), ("/hooks/{project}", ["POST"]), ("/", ["GET"]),
                                               ("/assets/{file}", ["GET"])])
        let limiter = FailureLimiter(logger: logger)
        // Metrics outermost, so they count the answers (401, 404, ...) the problems become;
        // credentials before any body is read.
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: ProblemMiddleware(routes: routes, logger: logger))
        router.add(middleware: AuthenticationMiddleware(core: core, limiter: limiter, logger: logger))
        router.add(middleware: BodyLimitMiddleware())
        router.get("/healthz") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: "ok\n")))
        }
        router.get("/readyz") { _, _ in
            let ready = core.isReady
            return Response(status: ready.ready ? .ok : .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(string: ready.reason + "\n")))
        }
        router.get("/metrics") { _, _ in
            let gauges = await core.gauges()
            for (name, value) in [("heddle_queue_jobs", gauges.queued), ("heddle_running_jobs", gauges.running),
                                  ("heddle_runners_connected", gauges.runnersConnected),
                                  ("heddle_runners_drained", gauges.runnersDrained), ("heddle_sessions", gauges.sessions),
                                  ("heddle_storage_full", gauges.storageFull ? 1 : 0)] {
                metrics.makeGauge(name: name).set(Double(value))
            }
            var buffer: [UInt8] = []
            metrics.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
        router.get("/api/v1/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        StreamRoutes(core: core, streams: StreamCount(), unsigned: ByteBudget(limit: maximumUnsignedBytes), logger: logger).register(on: router)
        WebRoutes(core: core, limiter: limiter, logger: logger).register(on: router)
        try API(core: core).registerHandlers(on: router, serverURL: URL(string: "/api/v1")!,
                                             configuration: .init(jsonEncodingOptions: [.sortedKeys, .withoutEscapingSlashes]))

        let acceptErrors = RateLimitedLog(logger: logger, every: .seconds(10))
        let open = HTTPConnections(limits: limits, refusals: RateLimitedLog(logger: logger, every: .seconds(10)))
        let http1 = HTTP1Channel.Configuration(additionalChannelHandlers: [ConnectionGuard(connections: open)])
        let server: HTTPServerBuilder
        switch listener.security {
        case .plain:
            server = .http1(configuration: http1)
        case .tls(let certificate, let key, let clientCA):
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            tls.minimumTLSVersion = .tlsv12
            tls.trustRoots = .file(clientCA)
            tls.certificateVerification = .optionalVerification
            tls.cipherSuites = tls12CipherSuites
            server = try .tls(.http1(configuration: http1), tlsConfiguration: tls)
        }
        return Application(
            responder: CanonicalPaths(inner: router.buildResponder(), clients: clients), server: server,
            configuration: .init(address: .hostname(listener.host, port: listener.port), serverName: "heddle", backlog: 1024),
            onServerRunning: { channel in
                HTTPListener.guardAccepts(channel, log: acceptErrors)
                if let address = channel.localAddress { onListening(address) }
            },
            eventLoopGroupProvider: .shared(group), logger: logger)
    }
}

/// Every request's path in one form before anything reads it (authentication, routes,
/// metrics): empty segments dropped (`//metrics`, `/metrics/` are `/metrics`) and
/// percent-encoded unreserved characters decoded (`/%6Detrics` is `/metrics`); and the
/// client's address resolved once (`ClientAddresses`).
struct CanonicalPaths<Inner: HTTPResponder>: HTTPResponder where Inner.Context == HeddleRequestContext {
    let inner: Inner
    let clients: ClientAddresses

    func respond(to request: Request, context: HeddleRequestContext) async throws -> Response {
        var context = context
        context.client = clients.client(peer: context.channel.remoteAddress?.ipAddress, forwardedFor: request.headers[.xForwardedFor])
        let path = request.uri.path
        let canonical = CanonicalPath.of(path)
        guard canonical != path else { return try await inner.respond(to: request, context: context) }
        var head = request.head
        head.path = canonical + (request.uri.query.map { "?" + $0 } ?? "")
        return try await inner.respond(to: Request(head: head, body: request.body), context: context)
    }
}

enum CanonicalPath {
    static func of(_ path: String) -> String {
        let segments = path.split(separator: "/", omittingEmptySubsequences: true).map { segment -> String in
            guard segment.contains("%") else { return String(segment) }
            return decodeUnreserved(String(segment))
        }
        return "/" + segments.joined(separator: "/")
    }

    /// `%41` → `A` for letters, digits and `-._~` (RFC 3986 §6.2.2.2); other escapes stay.
    static func decodeUnreserved(_ segment: String) -> String {
        var bytes = Array(segment.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var index = 0
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count, let high = hex(bytes[index + 1]),
               let low = hex(bytes[index + 2]) {
                let value = high << 4 | low
                let unreserved = (0x41...0x5A).contains(value) || (0x61...0x7A).contains(value) || (0x30...0x39).contains(value)
                    || [0x2D, 0x2E, 0x5F, 0x7E].contains(value)
                if unreserved {
                    out.append(value)
                    index += 3
                    continue
                }
            }
            out.append(bytes[index])
            index += 1
        }
        bytes = out
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension HTTPField.Name {
    static let xForwardedFor = HTTPField.Name("X-Forwarded-For")!
}

public struct HTTPFrontError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
