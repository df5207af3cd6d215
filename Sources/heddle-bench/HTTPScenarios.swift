import Coordinator
import Crypto
import Foundation
import GRDB
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization
import TestSupport
import Wire

/// The HTTP front of the release coordinator (its own process, `--http`), measured with a
/// small keep-alive HTTP/1.1 client over TLS.
enum HTTPScenarios {
    struct Results {
        var runsListP99 = 0.0
        var searchP99 = 0.0
        var webhookP50 = 0.0
        var downloadMBs = 0.0
        var followers = 0.0
        var followersSeconds = 0.0
        var followersRSS = 0.0
    }

    static func run(pki: BenchPKI, data: String, quick: Bool, artifacts: Int, followers: Int) async throws -> Results {
        _ = DescriptorLimit.raise(forConnections: followers * 2 + 64)
        // A million artifacts, written into the database before the coordinator starts
        // (through the protocol it would take an hour), in 1,000 runs of 1,000.
        try seedArtifacts(data: data, count: artifacts)
        let coordinator = try CoordinatorProcess.start(pki: pki, data: data, extraArguments: ["--http", "127.0.0.1:0"])
        defer { coordinator.stop() }
        guard let url = coordinator.httpURL else { throw WireError(.internal, "the coordinator printed no HTTP address") }
        let fabric = RemoteFabric(endpoint: coordinator.endpoint, pki: pki)
        let admin = try await fabric.admin()
        let token = try await admin.createToken(name: "bench", role: "admin").secret
        var results = Results()
        // Runs: 10,000 in the store (queued: no runner has their label), listed a page at a time.
        _ = try await admin.pushPipeline(project: "api", fileName: "wait.act", source: Scenarios.pipeline("wait", label: "nobody"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<8 {
                group.addTask {
                    let client = try await fabric.admin()
                    for index in stride(from: worker, to: 10_000, by: 8) {
                        _ = try await client.trigger(project: "api", pipeline: "wait", branch: index % 10 == 0 ? "release" : "main")
                    }
                    await client.connection.close()
                }
            }
            try await group.waitForAll()
        }
        let http = try await BenchHTTPClient.connect(url: url, ca: "\(pki.directory)/ca.pem")
        let auth = [("Authorization", "Bearer \(token)")]
        let samples = quick ? 200 : 1000
        var latencies: [Double] = []
        let queries = ["/api/v1/runs", "/api/v1/runs?limit=100", "/api/v1/runs?project=api&branch=release", "/api/v1/runs?status=queued&limit=20"]
        for index in 0..<samples {
            let started = ContinuousClock.now
            let response = try await http.request("GET", queries[index % queries.count], headers: auth)
            latencies.append(seconds(since: started) * 1000)
            guard response.status == 200 else { throw WireError(.internal, "runs list answered \(response.status)") }
        }
        results.runsListP99 = percentile(latencies, 0.99)

        // Artifact search over the million: by name part, glob, SHA-256 prefix, filters and sorts.
        latencies = []
        let searches = [
            "/api/v1/artifacts?name=widget-4711", "/api/v1/artifacts?name=*.whl&limit=20", "/api/v1/artifacts?sha256=ab12",
            "/api/v1/artifacts?project=seed&branch=release&sort=largest&limit=20", "/api/v1/artifacts?run=500",
            "/api/v1/artifacts?minSize=900000&maxSize=1000000&limit=20", "/api/v1/artifacts?name=gadget&sort=newest",
        ]
        var bySearch: [String: [Double]] = [:]
        for index in 0..<samples {
            let started = ContinuousClock.now
            let response = try await http.request("GET", searches[index % searches.count], headers: auth)
            latencies.append(seconds(since: started) * 1000)
            bySearch[searches[index % searches.count], default: []].append(latencies.last!)
            guard response.status == 200 else { throw WireError(.internal, "artifact search answered \(response.status): \(String(decoding: response.body, as: UTF8.self))") }
        }
        results.searchP99 = percentile(latencies, 0.99)
        for (search, times) in bySearch.sorted(by: { $0.key < $1.key }) {
            FileHandle.standardError.write(Data("  artifact search \(search): p50 \(String(format: "%.2f", percentile(times, 0.5))) ms, max \(String(format: "%.2f", times.max() ?? 0)) ms\n".utf8))
        }

        // Webhooks: a signed GitHub push answered 202 once its run is queued.
        let project = try await admin.createProject(name: "hooked", repository: "", webhookSecret: true)
        _ = try await admin.pushPipeline(project: "hooked", fileName: "on-push.act", source: """
            name: on-push
            on: { push: { branches: [main] } }
            jobs:
              j:
                labels: [nobody]
                nodes:
                  n: { run: 'true' }
            """)
        latencies = []
        let key = SymmetricKey(data: Data(project.webhookSecret.utf8))
        for index in 0..<samples {
            let body = Array(try JSONSerialization.data(withJSONObject: ["ref": "refs/heads/main", "after": String(repeating: "a", count: 40)]))
            let mac = HMAC<SHA256>.authenticationCode(for: body, using: key).map { String(format: "%02x", $0) }.joined()
            let started = ContinuousClock.now
            let response = try await http.request("POST", "/hooks/hooked", headers: [
                ("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "bench-\(index)"), ("X-Hub-Signature-256", "sha256=\(mac)"),
                ("Content-Type", "application/json"),
            ], body: body)
            latencies.append(seconds(since: started) * 1000)
            guard response.status == 202 else { throw WireError(.internal, "a delivery answered \(response.status)") }
        }
        results.webhookP50 = percentile(latencies, 0.5)

        // Download: one artifact uploaded by a simulated runner, read whole over HTTPS.
        let size = quick ? 256 << 20 : 1 << 30
        let artifactID = try await upload(fabric, bytes: size)
        let started = ContinuousClock.now
        let downloaded = try await http.download("/api/v1/artifacts/\(artifactID)/content", headers: auth)
        let elapsed = seconds(since: started)
        guard downloaded == size else { throw WireError(.internal, "downloaded \(downloaded) of \(size) bytes") }
        results.downloadMBs = Double(size) / elapsed / 1_000_000
        await http.close()

        // Followers: one live log, every byte to every SSE client, within a deadline (it then
        // counts 0 rather than hanging).
        let follow = await withDeadline(.seconds(240)) {
            try await followLog(fabric, url: url, token: token, ca: "\(pki.directory)/ca.pem", coordinator: coordinator,
                                clients: followers, bytes: quick ? 256 << 10 : 1 << 20)
        }
        switch follow {
        case .success(let follow):
            results.followers = Double(follow.complete)
            results.followersSeconds = follow.seconds
            results.followersRSS = follow.rss
        case .failure(let error):
            FileHandle.standardError.write(Data("heddle-bench: the SSE followers did not finish: \(error)\n".utf8))
            results.followersRSS = coordinator.memory().peak
        }
        await admin.connection.close()
        return results
    }

    /// Writes `count` artifacts (in runs of 1,000) into a fresh data directory's database.
    static func seedArtifacts(data: String, count: Int) throws {
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        _ = try SQLiteStore.open(directory: data)  // makes the schema
        let database = try DatabaseQueue(path: "\(data)/heddle.sqlite")
        let perRun = 1000
        var random = SystemRandomNumberGenerator()
        let words = ["widget", "gadget", "sprocket", "module", "bundle"]
        let kinds = ["tar.gz", "whl", "bin", "txt", "zip"]
        try database.write { db in
            // The name index is built once at the end, not row by row.
            try db.execute(sql: "DROP TRIGGER artifact_name_insert")
            try db.execute(sql: "INSERT INTO project (name, repository, created_at) VALUES ('seed', '', 0)")
            try db.execute(sql: "INSERT INTO pipeline_version (project_id, pipeline, version, source, jobs, created_at) VALUES (1, 'build', 1, '', '[\"j\"]', 0)")
            let run = try db.makeStatement(sql: """
                INSERT INTO run (project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at)
                VALUES ('seed', 'build', 1, ?, 'succeeded', 1, 'api', ?)
                """)
            let job = try db.makeStatement(sql: """
                INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at) VALUES (?, 1, 'j', '[]', 'succeeded', 0, 0)
                """)
            let artifact = try db.makeStatement(sql: """
                INSERT INTO artifact (job_id, name, size, sha256, created_at, run_id, project, pipeline, branch)
                VALUES (?, ?, ?, ?, ?, ?, 'seed', 'build', ?)
                """)
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            for runIndex in 0..<(count + perRun - 1) / perRun {
                let branch = runIndex % 10 == 0 ? "release" : "main"
                try run.execute(arguments: [branch, now - Int64(count / perRun - runIndex) * 60_000])
                let runID = db.lastInsertedRowID
                try job.execute(arguments: [runID])
                let jobID = db.lastInsertedRowID
                for index in 0..<min(perRun, count - runIndex * perRun) {
                    let n = runIndex * perRun + index
                    let sha = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &random)) }.joined()
                    try artifact.execute(arguments: [jobID, "dist/\(words[n % words.count])-\(n).\(kinds[(n / 5) % kinds.count])",
                                                     Int64.random(in: 1...1_000_000, using: &random), sha,
                                                     now - Int64(count - n) * 10, runID, branch])
                }
            }
            try db.execute(sql: """
                INSERT INTO artifact_name(artifact_name) VALUES ('rebuild');
                CREATE TRIGGER artifact_name_insert AFTER INSERT ON artifact BEGIN
                    INSERT INTO artifact_name(rowid, name) VALUES (new.id, new.name);
                END;
                """)
        }
    }

    /// Uploads one artifact of `bytes` through a simulated runner; returns its id.
    static func upload(_ fabric: some Fabric, bytes: Int) async throws -> Int64 {
        let job = try await Scenarios.startJob("download", on: fabric)
        let runner = job.runner
        let chunkSize = Int(runner.welcome.maxArtifactChunkBytes)
        let chunk = Data((0..<chunkSize).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        var hasher = SHA256()
        for index in stride(from: 0, to: bytes, by: chunkSize) { hasher.update(data: chunk.prefix(min(chunkSize, bytes - index))) }
        var declare = Heddle_V1_ArtifactDeclare()
        declare.job = job.assignment.job
        declare.name = "download.bin"
        declare.size = UInt64(bytes)
        declare.sha256 = Data(hasher.finalize())
        guard case .artifactDeclared(let declared) = try await runner.request(.artifactDeclare(declare)).body else {
            throw WireError(.internal, "the artifact was not declared")
        }
        for offset in stride(from: 0, to: bytes, by: chunkSize) {
            var message = Heddle_V1_ArtifactChunk()
            message.job = job.assignment.job
            message.uploadID = declared.uploadID
            message.offset = UInt64(offset)
            message.data = chunk.prefix(min(chunkSize, bytes - offset))
            try await runner.send(.artifactChunk(message))
        }
        var commit = Heddle_V1_ArtifactCommit()
        commit.job = job.assignment.job
        commit.uploadID = declared.uploadID
        guard case .artifactCommitted(let committed) = try await runner.request(.artifactCommit(commit)).body else {
            throw WireError(.internal, "the artifact was not committed")
        }
        await job.close()
        return Int64(committed.artifactID)
    }

    /// `clients` SSE followers of one node log while a simulated runner writes `bytes` to it
    /// in 16 KiB chunks; each counts the bytes it decodes. Returns how many got every byte,
    /// the time from the first byte written to the last client done, and the coordinator's
    /// peak RSS meanwhile.
    static func followLog(_ fabric: some Fabric, url: String, token: String, ca: String, coordinator: CoordinatorProcess,
                          clients: Int, bytes: Int) async throws -> (complete: Int, seconds: Double, rss: Double) {
        let job = try await Scenarios.startJob("followed", on: fabric)
        let path = "/api/v1/runs/\(job.runID)/jobs/j/nodes/n/log"
        var streams: [BenchHTTPClient] = []
        for _ in 0..<clients {
            let client = try await BenchHTTPClient.connect(url: url, ca: ca)
            try await client.startStream(path, headers: [("Authorization", "Bearer \(token)"), ("Accept", "text/event-stream")])
            streams.append(client)
        }
        coordinator.resetPeak()
        let started = ContinuousClock.now
        let complete = try await withThrowingTaskGroup(of: Bool.self) { group in
            for (index, client) in streams.enumerated() {
                group.addTask {
                    let got = try await client.countLogBytes(until: bytes, timeout: .seconds(60))
                    if got != bytes {
                        FileHandle.standardError.write(Data("  follower \(index): \(got) of \(bytes) bytes; \(client.handler.diagnosis)\n".utf8))
                    }
                    return got == bytes
                }
            }
            let line = Data(repeating: UInt8(ascii: "x"), count: 16 << 10 - 1) + Data("\n".utf8)
            for offset in stride(from: 0, to: bytes, by: line.count) {
                try await job.runner.send(Scenarios.logAppend(job.assignment.job, offset: offset, line.prefix(bytes - offset)))
            }
            var count = 0
            for try await done in group where done { count += 1 }
            return count
        }
        let elapsed = seconds(since: started)
        let rss = coordinator.memory().peak
        // Closed together: each TLS close waits up to 5 s for the server's close_notify, which a
        // server still streaming the response does not send (the stream ends at its next write).
        await withTaskGroup(of: Void.self) { group in
            for client in streams { group.addTask { await client.close() } }
        }
        await job.close()
        return (complete, elapsed, rss)
    }
}

/// A keep-alive HTTP/1.1 client over TLS, one request at a time; or one event stream.
final class BenchHTTPClient: @unchecked Sendable {
    struct Response {
        var status: Int
        var body: [UInt8]
    }

    let channel: any Channel
    let handler: Handler
    let host: String

    private init(channel: any Channel, handler: Handler, host: String) {
        self.channel = channel
        self.handler = handler
        self.host = host
    }

    static func connect(url: String, ca: String) async throws -> BenchHTTPClient {
        guard let parsed = URLComponents(string: url), let host = parsed.host, let port = parsed.port else {
            throw WireError(.internal, "not a URL: \(url)")
        }
        var config = TLSConfiguration.makeClientConfiguration()
        config.trustRoots = .file(ca)
        let context = try NIOSSLContext(configuration: config)
        let handler = Handler()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
            .connect(host: host, port: port).get()
        return BenchHTTPClient(channel: channel, handler: handler, host: "\(host):\(port)")
    }

    private func send(_ method: String, _ path: String, headers: [(String, String)], body: [UInt8]?) {
        var head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: method), uri: path)
        head.headers.add(name: "Host", value: host)
        for (name, value) in headers { head.headers.add(name: name, value: value) }
        head.headers.add(name: "Content-Length", value: String(body?.count ?? 0))
        channel.write(HTTPClientRequestPart.head(head), promise: nil)
        if let body { channel.write(HTTPClientRequestPart.body(.byteBuffer(ByteBuffer(bytes: body))), promise: nil) }
        channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
    }

    func request(_ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil) async throws -> Response {
        let promise = channel.eventLoop.makePromise(of: Response.self)
        try await channel.eventLoop.submit { self.handler.expect(.collect(promise)) }.get()
        send(method, path, headers: headers, body: body)
        return try await promise.futureResult.get()
    }

    /// Reads a response's body without keeping it; returns its length.
    func download(_ path: String, headers: [(String, String)]) async throws -> Int {
        let promise = channel.eventLoop.makePromise(of: Int.self)
        try await channel.eventLoop.submit { self.handler.expect(.count(promise)) }.get()
        send("GET", path, headers: headers, body: nil)
        return try await promise.futureResult.get()
    }

    func startStream(_ path: String, headers: [(String, String)]) async throws {
        try await channel.eventLoop.submit { self.handler.expect(.stream) }.get()
        send("GET", path, headers: headers, body: nil)
    }

    /// Log bytes decoded from the stream's `log` events until `total` arrived or the deadline.
    func countLogBytes(until total: Int, timeout: Duration) async throws -> Int {
        let handler = self.handler
        let timer = Task {
            try await Task.sleep(for: timeout)
            handler.giveUp()
        }
        defer { timer.cancel() }
        return await handler.logBytes(reaching: total)
    }

    func close() async {
        try? await channel.close()
    }

    final class Handler: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = HTTPClientResponsePart
        enum Expectation {
            case collect(EventLoopPromise<Response>)
            case count(EventLoopPromise<Int>)
            case stream
        }

        private var expectation: Expectation?
        private var status = 0
        private var body: [UInt8] = []
        private var counted = 0
        // SSE: the text not yet split into events, and the log bytes decoded so far.
        private var pending: [UInt8] = []
        private let seen = Mutex((status: 0, lines: 0, events: [String: Int](), last: ""))
        var diagnosis: String { seen.withLock { "status \($0.status), \($0.lines) lines, events \($0.events), last line '\($0.last.prefix(120))'" } }
        private struct Decoded {
            var bytes = 0
            var target = 0
            var waiter: CheckedContinuation<Int, Never>?
        }
        private let decoded = Mutex(Decoded())

        func expect(_ expectation: Expectation) {
            self.expectation = expectation
            body = []
            counted = 0
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                status = Int(head.status.code)
                seen.withLock { $0.status = status }
            case .body(let buffer):
                switch expectation {
                case .collect: body += buffer.readableBytesView
                case .count: counted += buffer.readableBytes
                case .stream: parse(buffer)
                case nil: break
                }
            case .end:
                switch expectation {
                case .collect(let promise): promise.succeed(Response(status: status, body: body))
                case .count(let promise): promise.succeed(status == 200 ? counted : -status)
                default: break
                }
                expectation = nil
            }
        }

        /// Splits `data: {"bytes":"BASE64",...}` lines out of the stream and counts their bytes.
        private func parse(_ buffer: ByteBuffer) {
            pending += buffer.readableBytesView
            var added = 0
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = pending[..<newline]
                seen.withLock { seen in
                    seen.lines += 1
                    if line.starts(with: Array("event: ".utf8)) { seen.events[String(decoding: line.dropFirst(7), as: UTF8.self), default: 0] += 1 }
                    if !line.isEmpty { seen.last = String(decoding: line, as: UTF8.self) }
                }
                if line.starts(with: Array("data: ".utf8)), let start = line.firstRange(of: Array("\"bytes\":\"".utf8))?.upperBound,
                   let end = line[start...].firstIndex(of: UInt8(ascii: "\"")),
                   let data = Data(base64Encoded: Data(line[start..<end])) {
                    added += data.count
                }
                pending.removeSubrange(...newline)
            }
            guard added > 0 else { return }
            let ready = decoded.withLock { state -> (CheckedContinuation<Int, Never>, Int)? in
                state.bytes += added
                guard let waiter = state.waiter, state.bytes >= state.target else { return nil }
                state.waiter = nil
                return (waiter, state.bytes)
            }
            ready.map { $0.0.resume(returning: $0.1) }
        }

        func logBytes(reaching target: Int) async -> Int {
            await withCheckedContinuation { continuation in
                let now = decoded.withLock { state -> Int? in
                    if state.bytes >= target { return state.bytes }
                    state.target = target
                    state.waiter = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        }

        /// The deadline passed: the waiter gets what arrived so far.
        func giveUp() {
            let waiter = decoded.withLock { state -> (CheckedContinuation<Int, Never>, Int)? in
                defer { state.waiter = nil }
                return state.waiter.map { ($0, state.bytes) }
            }
            waiter.map { $0.0.resume(returning: $0.1) }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            switch expectation {
            case .collect(let promise): promise.fail(error)
            case .count(let promise): promise.fail(error)
            default: break
            }
            expectation = nil
            context.close(promise: nil)
        }
    }
}

/// The HTTP front under hostile clients (issue 28): idle connections piled up against a
/// coordinator at a 1,024-file limit, and unsigned webhook deliveries of 8 MiB at once.
enum HostileScenarios {
    /// Idle TCP connections (not a byte sent) opened 100 at a time up to `total`; after each
    /// step a new HTTPS client asks `/healthz`. Returns the most idle connections still open
    /// at a step where `/healthz` answered in under 100 ms, and the slowest answer seen.
    static func idleConnections(pki: BenchPKI, data: String, total: Int) async throws -> (held: Int, slowestMs: Double) {
        _ = DescriptorLimit.raise(forConnections: total + 64)
        let coordinator = try CoordinatorProcess.start(pki: pki, data: data, extraArguments: ["--http", "127.0.0.1:0"],
                                                       descriptorLimit: 1024)
        defer { coordinator.stop() }
        guard let url = coordinator.httpURL, let port = Int(url.split(separator: ":").last ?? "") else {
            throw WireError(.internal, "the coordinator printed no HTTP address")
        }
        let client = try HTTPTestClient(url: url, ca: "\(pki.directory)/ca.pem")
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        var held = 0
        var slowest = 0.0
        while sockets.count < total {
            for _ in 0..<100 { sockets.append(try openTCP(Endpoint(host: "127.0.0.1", port: port))) }
            let started = ContinuousClock.now
            let health = try await client.request("GET", "/healthz", timeout: .seconds(10))
            let ms = seconds(since: started) * 1000
            slowest = max(slowest, ms)
            guard health.status == 200 else { throw WireError(.internal, "/healthz answered \(health.status)") }
            let open = sockets.filter { !closedByPeer($0) }.count
            if ms < 100 { held = max(held, open) }
        }
        return (held, slowest)
    }

    /// 40 deliveries of 8 MiB with a wrong signature, all at once, to a project with a webhook
    /// secret: the coordinator's RSS growth (peak over the deliveries, less RSS before), in MB.
    static func unsignedWebhooks(pki: BenchPKI, data: String, deliveries: Int = 40) async throws -> Double {
        let coordinator = try CoordinatorProcess.start(pki: pki, data: data, extraArguments: ["--http", "127.0.0.1:0"])
        defer { coordinator.stop() }
        guard let url = coordinator.httpURL else { throw WireError(.internal, "the coordinator printed no HTTP address") }
        let admin = try await RemoteFabric(endpoint: coordinator.endpoint, pki: pki).admin()
        _ = try await admin.createProject(name: "hooked", repository: "", webhookSecret: true)
        await admin.connection.close()
        let client = try HTTPTestClient(url: url, ca: "\(pki.directory)/ca.pem")
        let size = 8 << 20
        let request = client.head("POST", "/hooks/hooked", [
            ("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "unsigned"), ("Content-Type", "application/json"),
            ("X-Hub-Signature-256", "sha256=" + String(repeating: "ab", count: 32)), ("Content-Length", "\(size)"),
        ]) + [UInt8](repeating: 0x7B, count: size)
        let before = coordinator.memory().rss
        coordinator.resetPeak()
        let answers = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<deliveries { group.addTask { String(try await client.raw(request, timeout: .seconds(120)).text.prefix(12)) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        guard answers.allSatisfy({ $0 == "HTTP/1.1 401" || $0 == "HTTP/1.1 503" }) else {
            throw WireError(.internal, "unsigned deliveries were answered \(answers)")
        }
        return coordinator.memory().peak - before
    }
}
