import Coordinator
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
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

        /// Refuses plain HTTP on anything but a loopback address.
        public func validate() throws {
            if case .plain = security, !Self.isLoopback(host) {
                throw HTTPFrontError("--http-plain serves without TLS and is allowed only on a loopback address (127.0.0.1, ::1 or localhost), not \(host)")
            }
        }

        static func isLoopback(_ host: String) -> Bool {
            host == "localhost" || host == "::1" || host.hasPrefix("127.")
        }
    }

    /// The HTTP service, to run beside the binary server in the same service group (and so
    /// stopped by the same signals). `onListening` gets the bound address.
    /// `metrics` is the registry swift-metrics was bootstrapped with, served at `/metrics`.
    public static func service(core: CoordinatorCore, listener: Listener, group: any EventLoopGroup, logger: Logger,
                               metrics: PrometheusCollectorRegistry,
                               onListening: @escaping @Sendable (SocketAddress) -> Void) throws -> some Service {
        try listener.validate()
        let router = Router(context: HeddleRequestContext.self)
        let routes = DocumentedRoutes(document: OpenAPIDocument.json, prefix: "/api/v1",
                                      extra: [("/api/v1/openapi.json", ["GET"]), ("/healthz", ["GET"]), ("/readyz", ["GET"]),
                                               ("/metrics", ["GET"]), ("/hooks/{project}", ["POST"]), ("/", ["GET"]),
                                               ("/assets/{file}", ["GET"])])
        let limiter = FailureLimiter()
        router.add(middleware: ProblemMiddleware(routes: routes, logger: logger))
        router.add(middleware: MetricsMiddleware())
        router.add(middleware: BodyLimitMiddleware())
        router.add(middleware: AuthenticationMiddleware(core: core, limiter: limiter, logger: logger))
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
        StreamRoutes(core: core, streams: StreamCount(), logger: logger).register(on: router)
        WebRoutes(core: core, limiter: limiter, logger: logger).register(on: router)
        try API(core: core).registerHandlers(on: router, serverURL: URL(string: "/api/v1")!,
                                             configuration: .init(jsonEncodingOptions: [.sortedKeys, .withoutEscapingSlashes]))

        let server: HTTPServerBuilder
        switch listener.security {
        case .plain:
            server = .http1()
        case .tls(let certificate, let key, let clientCA):
            var tls = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            tls.minimumTLSVersion = .tlsv12
            tls.trustRoots = .file(clientCA)
            tls.certificateVerification = .optionalVerification
            server = try .tls(.http1(), tlsConfiguration: tls)
        }
        return Application(
            router: router, server: server,
            configuration: .init(address: .hostname(listener.host, port: listener.port), serverName: "heddle"),
            onServerRunning: { channel in
                if let address = channel.localAddress { onListening(address) }
            },
            eventLoopGroupProvider: .shared(group), logger: logger)
    }
}

public struct HTTPFrontError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
