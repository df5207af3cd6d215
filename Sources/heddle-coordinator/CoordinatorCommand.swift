import ArgumentParser
import Coordinator
import Foundation
import HTTPAPI
import Logging
import NIOCore
import NIOPosix
import Metrics
import Prometheus
import ServiceLifecycle
import Wire

@main
struct CoordinatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heddle-coordinator",
        abstract: "Keeps the queue of runs and jobs and serves runners and admins over mutual TLS.",
        version: HeddleVersion.description)

    @Option(help: "Address to listen on, HOST:PORT (port 0 picks a free port).")
    var listen = "127.0.0.1:7443"

    @Option(help: "Data directory (SQLite database, log segments and artifact content).")
    var data: String

    @Option(help: ArgumentHelp("The store: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE shares one PostgreSQL database between several coordinators (also HEDDLE_STORE); default SQLite in --data.",
                               valueName: "url"))
    var store: String?

    @Option(help: "The fabric's CA certificate (PEM); only certificates it issued are accepted.")
    var ca: String

    @Option(help: "The coordinator's certificate (PEM).")
    var cert: String

    @Option(help: "The coordinator's private key (PEM).")
    var key: String

    @Option(help: "Seconds between heartbeats; a peer silent for three is gone.")
    var heartbeatInterval: Double = 5

    @Option(help: "Largest frame accepted, in bytes.")
    var maxFrameBytes: Int = Frame.defaultMaximumLength

    @Option(help: "Stored bytes per node log; past it the head and the latest tail are kept.")
    var maxLogBytes: Int64 = 64 * 1024 * 1024

    @Option(help: "Largest artifact accepted, in bytes (refused when declared, before any byte).")
    var maxArtifactBytes: Int64 = 8 * 1024 * 1024 * 1024

    @Option(help: "Bytes every project's caches take together at most; past it the least recently used are deleted.")
    var cacheMaxBytes: Int64 = CoordinatorLimits().maximumCacheBytes

    @Option(help: "Connections open at once on the listening port; past it a new one is closed at once. The open-file limit must cover it plus 256.")
    var maxConnections: Int = CoordinatorLimits().maximumConnections

    @Option(help: "Connections open at once on the HTTP front; past it a new one takes the place of the one idle longest (or is closed when all are busy). The open-file limit must cover it with --max-connections plus 256.")
    var maxHttpConnections: Int = HTTPConnectionLimits().maximumConnections

    @Option(help: "Seconds an HTTP connection has, from accept, to finish the TLS handshake and send its first request's header.")
    var httpHeaderTimeout: Double = 10

    @Option(help: "Seconds an HTTP connection may wait between a response and its next request's header, or between two pieces of a request body.")
    var httpIdleTimeout: Double = 30

    @Option(help: ArgumentHelp("A reverse proxy's address (repeat for several): for requests from it, the client is the right-most X-Forwarded-For address that is not a trusted proxy (failed-credential limits count per client).",
                               valueName: "address"))
    var trustedProxy: [String] = []

    @Option(help: "Also serve the HTTP API on HOST:PORT (port 0 picks a free port): HTTPS with --cert and --key unless --http-cert and --http-key are given. Off when absent.")
    var http: String?

    @Option(help: "Certificate (PEM, may hold a chain) for the HTTP listener, say a public one; default --cert.")
    var httpCert: String?

    @Option(help: "Private key (PEM) for --http-cert.")
    var httpKey: String?

    @Flag(help: "Serve --http as plain HTTP, for a TLS-terminating proxy in front; only on a loopback address.")
    var httpPlain = false

    @Option(help: "The HTTP front's address as forges reach it (https://ci.example.com), for webhook URLs; default the --http address.")
    var publicURL: String?

    @Option(help: ArgumentHelp("The key projects' secrets are sealed with (AES-256-GCM): a file of 64 hexadecimal digits (openssl rand -hex 32), mode 600. Every coordinator of a cluster needs the same. Without it secrets cannot be set, and jobs whose nodes name secrets fail.",
                               valueName: "path"))
    var secretsKeyFile: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        _ = try Endpoint(parsing: listen)
        guard heartbeatInterval >= 0.05 else { throw ValidationError("--heartbeat-interval must be at least 0.05 seconds") }
        guard maxFrameBytes >= 64 * 1024 else { throw ValidationError("--max-frame-bytes must be at least 65536") }
        guard maxLogBytes >= 64 * 1024 else { throw ValidationError("--max-log-bytes must be at least 65536") }
        guard maxArtifactBytes >= 0 else { throw ValidationError("--max-artifact-bytes must not be negative") }
        guard cacheMaxBytes >= 0 else { throw ValidationError("--cache-max-bytes must not be negative") }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        guard maxHttpConnections >= 1 else { throw ValidationError("--max-http-connections must be at least 1") }
        guard httpHeaderTimeout >= 0.1, httpIdleTimeout >= 0.1 else {
            throw ValidationError("--http-header-timeout and --http-idle-timeout are at least 0.1 seconds")
        }
        for proxy in trustedProxy where !HTTPFront.isAddress(proxy) {
            throw ValidationError("--trusted-proxy takes an IP address, not '\(proxy)'")
        }
        if (httpCert == nil) != (httpKey == nil) { throw ValidationError("--http-cert and --http-key go together") }
        if http == nil, httpCert != nil || httpPlain { throw ValidationError("--http-cert, --http-key and --http-plain need --http HOST:PORT") }
        if httpPlain, httpCert != nil { throw ValidationError("--http-plain serves without TLS; drop --http-cert and --http-key") }
        if let publicURL {
            guard http != nil else { throw ValidationError("--public-url needs --http HOST:PORT") }
            guard let url = URL(string: publicURL), ["http", "https"].contains(url.scheme ?? ""), url.host != nil,
                  !publicURL.hasSuffix("/") else {
                throw ValidationError("--public-url is like https://ci.example.com (no trailing slash), not '\(publicURL)'")
            }
        }
        if let listener = try httpListener() { try listener.validate() }
        if let address = storeAddress {
            do { _ = try PostgresStore.Location(parsing: address) } catch { throw ValidationError("--store: \(error)") }
        }
    }

    /// --store, else HEDDLE_STORE; nil (or empty) for SQLite in --data.
    var storeAddress: String? {
        let address = store ?? ProcessInfo.processInfo.environment["HEDDLE_STORE"]
        return address.flatMap { $0.isEmpty ? nil : $0 }
    }

    func httpListener() throws -> HTTPFront.Listener? {
        guard let http else { return nil }
        let endpoint: Endpoint
        do { endpoint = try Endpoint(parsing: http) } catch { throw ValidationError("--http: \(error)") }
        let security: HTTPFront.Security = httpPlain ? .plain
            : .tls(certificate: httpCert ?? cert, key: httpKey ?? key, clientCA: ca)
        return HTTPFront.Listener(host: endpoint.host, port: endpoint.port, security: security)
    }

    func run() async throws {
        Console.bootstrapLogging(level: logLevel)
        let metrics = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: metrics)
        let commitBuckets: [Duration] = [.microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                                         .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                         .milliseconds(500), .seconds(1), .seconds(2.5)]
        factory.durationHistogramBuckets = ["heddle_log_commit_seconds": commitBuckets, "heddle_store_commit_seconds": commitBuckets]
        MetricsSystem.bootstrap(factory)
        let logger = Logger(label: "heddle.coordinator")
        let endpoint = try Endpoint(parsing: listen)
        var limits = CoordinatorLimits()
        limits.heartbeatInterval = .milliseconds(Int64(heartbeatInterval * 1000))
        limits.maximumFrameLength = maxFrameBytes
        limits.maximumArtifactChunk = min(limits.maximumArtifactChunk, maxFrameBytes / 2)
        limits.maximumLogBytes = maxLogBytes
        limits.maximumArtifactSize = maxArtifactBytes
        limits.maximumCacheBytes = cacheMaxBytes
        limits.maximumConnections = maxConnections
        var httpLimits = HTTPConnectionLimits()
        httpLimits.firstRequest = .milliseconds(Int64(httpHeaderTimeout * 1000))
        httpLimits.idle = .milliseconds(Int64(httpIdleTimeout * 1000))
        httpLimits.bodyStall = httpLimits.idle
        let httpCap = http == nil ? 0 : maxHttpConnections
        let descriptors = DescriptorLimit.raise(forConnections: maxConnections + httpCap)
        httpLimits.maximumConnections = max(1, HTTPConnectionLimits.fit(descriptors: descriptors.limit, binary: maxConnections, http: httpCap))
        if descriptors.limit < descriptors.needed {
            if http == nil {
                logger.warning("the open-file limit is \(descriptors.limit) (ulimit -n) but --max-connections \(maxConnections) needs about \(descriptors.needed): raise the limit or lower --max-connections; past the limit new connections wait")
            } else {
                logger.warning("the open-file limit is \(descriptors.limit) (ulimit -n) but --max-connections \(maxConnections) with --max-http-connections \(maxHttpConnections) needs about \(descriptors.needed): the HTTP front holds at most \(httpLimits.maximumConnections); raise the limit or lower --max-connections; past the limit new connections wait")
            }
        }
        let secretBox = try secretsKeyFile.map { path in
            do { return try SecretBox(keyFile: path) } catch { throw ValidationError("\(error)") }
        }
        let store: any CoordinatorStore
        if let address = storeAddress {
            let location = try PostgresStore.Location(parsing: address)
            let shared = try await PostgresStore.connect(location, logger: logger)
            do {
                try await shared.checkDataDirectory(data)
            } catch {
                shared.close()
                throw error
            }
            store = shared
            logger.info("store", metadata: ["postgres": "\(location)"])
        } else {
            store = try SQLiteStore.open(directory: data)
        }
        let core = try CoordinatorCore(store: store, directory: data, limits: limits, secretBox: secretBox, logger: logger)
        do {
            try await core.secrets.checkKey()
        } catch {
            (store as? PostgresStore)?.close()
            throw ValidationError("\(error)")
        }
        try await core.recover()
        let server = CoordinatorServer(
            core: core, host: endpoint.host, port: endpoint.port,
            tls: TLSFiles(ca: ca, certificate: cert, key: key), logger: logger,
            onListening: { address in
                let host = address.ipAddress ?? endpoint.host
                let shown = host.contains(":") ? "[\(host)]" : host
                Console.out("listening on \(shown):\(address.port ?? endpoint.port)")
            })
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [.init(service: server), .init(service: LeaseMonitor(core: core)),
                                                                      .init(service: ScheduleMonitor(core: core)),
                                                                      ClusterMonitor(core: core).serviceConfiguration,
                                                                      DataDirectoryMonitor(core: core, directory: data).serviceConfiguration]
        if let listener = try httpListener() {
            let scheme = httpPlain ? "http" : "https"
            services.append(.init(service: try HTTPFront.service(
                core: core, listener: listener, group: MultiThreadedEventLoopGroup.singleton, logger: logger, metrics: metrics,
                connections: httpLimits, clients: ClientAddresses(trustedProxies: trustedProxy),
                onListening: { address in
                    let host = address.ipAddress ?? listener.host
                    let shown = host.contains(":") ? "[\(host)]" : host
                    let url = "\(scheme)://\(shown):\(address.port ?? listener.port)"
                    // Set before the line is printed: whoever reads the line finds webhook URLs.
                    core.webhooks.setHTTPURL(publicURL ?? url)
                    Console.out("http listening on \(url)")
                })))
        }
        let group = ServiceGroup(configuration: .init(
            services: services,
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
