import Foundation

/// Typed requests for admins and automation over one `HeddleConnection`.
public struct HeddleClient: Sendable {
    public let connection: HeddleConnection

    public init(connection: HeddleConnection) {
        self.connection = connection
    }

    public static func connect(to endpoint: Endpoint, tls: TLSFiles) async throws -> HeddleClient {
        HeddleClient(connection: try await HeddleConnection.connect(to: endpoint, tls: tls))
    }

    /// Connects to the first of several coordinators (sharing one database) that answers, in
    /// the order given. When none does, the error names each one's failure. A refusal from a
    /// coordinator that answered (a revoked or unknown certificate) is not tried elsewhere:
    /// the others would refuse it too.
    public static func connect(to endpoints: [Endpoint], tls: TLSFiles) async throws -> HeddleClient {
        var failures: [String] = []
        for endpoint in endpoints {
            do {
                return try await connect(to: endpoint, tls: tls)
            } catch let error as WireError where error.code == .unavailableOrClosed && endpoints.count > 1 {
                failures.append("\(endpoint): \(error.message)")
            }
        }
        throw WireError(.unavailableOrClosed, "no coordinator answered: " + failures.joined(separator: "; "))
    }

    func call<T>(_ body: Envelope.OneOf_Body, _ extract: (Envelope.OneOf_Body) -> T?) async throws -> T {
        let response = try await connection.request(body)
        guard let body = response.body, let value = extract(body) else {
            throw WireError(.badRequest, "unexpected response from the coordinator")
        }
        return value
    }

    public func pushPipeline(project: String, fileName: String, source: String) async throws -> Heddle_V1_PipelinePushed {
        var push = Heddle_V1_PipelinePush()
        push.project = project
        push.fileName = fileName
        push.source = source
        return try await call(.pipelinePush(push)) { if case .pipelinePushed(let m) = $0 { m } else { nil } }
    }

    public func pipelines() async throws -> [Heddle_V1_PipelineInfo] {
        try await call(.pipelineList(.init())) { if case .pipelines(let m) = $0 { m.pipelines } else { nil } }
    }

    public func trigger(project: String, pipeline: String, branch: String, inputs: [String: String] = [:]) async throws -> UInt64 {
        var request = Heddle_V1_TriggerRequest()
        request.project = project
        request.pipeline = pipeline
        request.branch = branch
        request.inputs = inputs
        return try await call(.trigger(request)) { if case .triggered(let m) = $0 { m.runID } else { nil } }
    }

    public func runs(limit: UInt32 = 50, project: String = "", pipeline: String = "", branch: String = "",
                     status: Heddle_V1_Status = .unspecified, trigger: String = "") async throws -> [Heddle_V1_RunSummary] {
        var request = Heddle_V1_RunListRequest()
        request.trigger = trigger
        request.limit = limit
        request.project = project
        request.pipeline = pipeline
        request.branch = branch
        request.status = status
        return try await call(.runList(request)) { if case .runs(let m) = $0 { m.runs } else { nil } }
    }

    /// Adds an attempt to a finished run; returns (run id, attempt).
    public func rerun(_ runID: UInt64, failedOnly: Bool = false) async throws -> (UInt64, UInt32) {
        var request = Heddle_V1_RerunRequest()
        request.runID = runID
        request.failedOnly = failedOnly
        return try await call(.rerun(request)) { if case .triggered(let m) = $0 { (m.runID, m.attempt) } else { nil } }
    }

    public func cancel(runs: [UInt64] = [], jobs: [UInt64] = []) async throws -> Heddle_V1_CancelResult {
        var request = Heddle_V1_CancelRequest()
        request.runIds = runs
        request.jobIds = jobs
        return try await call(.cancel(request)) { if case .cancelled(let m) = $0 { m } else { nil } }
    }

    public func bulkCancel(_ request: Heddle_V1_BulkCancelRequest) async throws -> Heddle_V1_CancelResult {
        try await call(.bulkCancel(request)) { if case .cancelled(let m) = $0 { m } else { nil } }
    }

    /// Moves a queued job; returns it with its new place.
    public func move(job: UInt64, to target: Heddle_V1_QueueMoveRequest.OneOf_Target) async throws -> Heddle_V1_QueueEntry {
        var request = Heddle_V1_QueueMoveRequest()
        request.jobID = job
        request.target = target
        return try await call(.queueMove(request)) { if case .queueList(let m) = $0 { m.jobs.first } else { nil } }
    }

    /// Queue changes as they happen. The stream ends when the connection closes.
    public func watchQueue() async throws -> PushStream<Heddle_V1_QueueEvent> {
        let response = try await connection.request(.queueWatch(.init()))
        let id = response.id
        return PushStream(connection.pushes, closed: "the connection to the coordinator closed") { envelope in
            guard envelope.id == id, case .queueEvent(let event) = envelope.body else { return .skip }
            return .yield(event)
        }
    }

    public func createProject(name: String, repository: String, webhookSecret: Bool = false) async throws -> Heddle_V1_ProjectInfo {
        var request = Heddle_V1_ProjectCreateRequest()
        request.name = name
        request.repository = repository
        request.webhookSecret = webhookSecret
        return try await call(.projectCreate(request)) { if case .projects(let m) = $0 { m.projects.first } else { nil } }
    }

    /// A project's webhook (its URL); with `rotate`, a new secret in the answer.
    public func projectWebhook(name: String, rotate: Bool) async throws -> Heddle_V1_ProjectInfo {
        var request = Heddle_V1_ProjectWebhookRequest()
        request.name = name
        request.rotate = rotate
        return try await call(.projectWebhook(request)) { if case .projects(let m) = $0 { m.projects.first } else { nil } }
    }

    public func deliveries(project: String, limit: UInt32 = 0) async throws -> [Heddle_V1_Delivery] {
        var request = Heddle_V1_DeliveryListRequest()
        request.project = project
        request.limit = limit
        return try await call(.deliveryList(request)) { if case .deliveries(let m) = $0 { m.deliveries } else { nil } }
    }

    /// Saved caches (of `project` when not empty), most recently used first.
    public func caches(project: String = "") async throws -> [Heddle_V1_CacheInfo] {
        var request = Heddle_V1_CacheListRequest()
        request.project = project
        return try await call(.cacheList(request)) { if case .caches(let m) = $0 { m.caches } else { nil } }
    }

    /// Deletes a cache; returns it as it was.
    public func deleteCache(id: UInt64) async throws -> Heddle_V1_CacheInfo? {
        var request = Heddle_V1_CacheDeleteRequest()
        request.id = id
        return try await call(.cacheDelete(request)) { if case .caches(let m) = $0 { m.caches } else { nil } }.first
    }

    /// The schedules of every pipeline, or of `project`'s.
    public func schedules(project: String = "") async throws -> [Heddle_V1_ScheduleInfo] {
        var request = Heddle_V1_ScheduleListRequest()
        request.project = project
        return try await call(.scheduleList(request)) { if case .schedules(let m) = $0 { m.schedules } else { nil } }
    }

    public func projects() async throws -> [Heddle_V1_ProjectInfo] {
        try await call(.projectList(.init())) { if case .projects(let m) = $0 { m.projects } else { nil } }
    }

    /// One page of a search across every run's artifacts.
    public func searchArtifacts(_ request: Heddle_V1_ArtifactSearchRequest) async throws -> Heddle_V1_ArtifactList {
        try await call(.artifactSearch(request)) { if case .artifacts(let m) = $0 { m } else { nil } }
    }

    /// Makes an API token; the secret is in the answer only.
    public func createToken(name: String, role: String, expiresInDays: UInt32 = 0) async throws -> Heddle_V1_TokenCreated {
        var request = Heddle_V1_TokenCreateRequest()
        request.name = name
        request.role = role
        request.expiresInDays = expiresInDays
        return try await call(.tokenCreate(request)) { if case .tokenCreated(let m) = $0 { m } else { nil } }
    }

    public func tokens() async throws -> [Heddle_V1_Token] {
        try await call(.tokenList(Heddle_V1_TokenListRequest())) { if case .tokens(let m) = $0 { m.tokens } else { nil } }
    }

    public func revokeToken(name: String) async throws -> Heddle_V1_Token {
        var request = Heddle_V1_TokenRevokeRequest()
        request.name = name
        return try await call(.tokenRevoke(request)) { if case .tokens(let m) = $0 { m.tokens.first } else { nil } }
    }

    /// Sets a project's secret (admin); answers the project's secrets afterwards.
    public func setSecret(project: String, name: String, value: Data) async throws -> Heddle_V1_SecretList {
        var request = Heddle_V1_SecretSetRequest()
        request.project = project
        request.name = name
        request.value = value
        return try await call(.secretSet(request)) { if case .secrets(let m) = $0 { m } else { nil } }
    }

    public func secrets(project: String) async throws -> Heddle_V1_SecretList {
        var request = Heddle_V1_SecretListRequest()
        request.project = project
        return try await call(.secretList(request)) { if case .secrets(let m) = $0 { m } else { nil } }
    }

    public func deleteSecret(project: String, name: String) async throws -> Heddle_V1_SecretList {
        var request = Heddle_V1_SecretDeleteRequest()
        request.project = project
        request.name = name
        return try await call(.secretDelete(request)) { if case .secrets(let m) = $0 { m } else { nil } }
    }

    public func setSecretsForForks(project: String, allowed: Bool) async throws -> Heddle_V1_SecretList {
        var request = Heddle_V1_SecretForksRequest()
        request.project = project
        request.allowed = allowed
        return try await call(.secretForks(request)) { if case .secrets(let m) = $0 { m } else { nil } }
    }

    public func revoke(name: String = "", fingerprint: String = "") async throws -> UInt32 {
        var request = Heddle_V1_RevokeRequest()
        request.name = name
        request.fingerprint = fingerprint
        return try await call(.revoke(request)) { if case .revoked(let m) = $0 { m.sessionsClosed } else { nil } }
    }

    public func drain(runner: String, _ drained: Bool) async throws -> [Heddle_V1_RunnerInfo] {
        var request = Heddle_V1_RunnerDrainRequest()
        request.name = runner
        request.drained = drained
        return try await call(.runnerDrain(request)) { if case .runnerList(let m) = $0 { m.runners } else { nil } }
    }

    public func run(_ id: UInt64, attempt: UInt32 = 0) async throws -> Heddle_V1_RunDetail {
        var request = Heddle_V1_RunGetRequest()
        request.runID = id
        request.attempt = attempt
        return try await call(.runGet(request)) { if case .run(let m) = $0 { m } else { nil } }
    }

    /// The first `limit` entries (0: as many as the coordinator lists) and the total.
    public func queue(limit: UInt32 = 0) async throws -> Heddle_V1_QueueList {
        var request = Heddle_V1_QueueRequest()
        request.limit = limit
        return try await call(.queue(request)) { if case .queueList(let m) = $0 { m } else { nil } }
    }

    public func runners() async throws -> [Heddle_V1_RunnerInfo] {
        try await call(.runners(.init())) { if case .runnerList(let m) = $0 { m.runners } else { nil } }
    }

    public func artifacts(runID: UInt64 = 0) async throws -> [Heddle_V1_ArtifactInfo] {
        var request = Heddle_V1_ArtifactListRequest()
        request.runID = runID
        return try await call(.artifactList(request)) { if case .artifacts(let m) = $0 { m.artifacts } else { nil } }
    }

    public func readArtifact(_ id: UInt64, offset: UInt64, length: UInt32) async throws -> Heddle_V1_ArtifactData {
        var request = Heddle_V1_ArtifactReadRequest()
        request.artifactID = id
        request.offset = offset
        request.length = length
        return try await call(.artifactRead(request)) { if case .artifactData(let m) = $0 { m } else { nil } }
    }

    /// Downloads an artifact into the file `path` and checks its size and SHA-256. The bytes
    /// go to a temporary file beside it, renamed over `path` only once they are verified: an
    /// existing file at `path` is replaced, nothing else is ever removed, and the temporary
    /// file is removed whatever fails. A directory at `path` is refused. `progress` gets
    /// (bytes so far, total).
    public func downloadArtifact(_ id: UInt64, to path: String,
                                 progress: (UInt64, UInt64) -> Void = { _, _ in }) async throws -> Heddle_V1_ArtifactInfo {
        let target = URL(fileURLWithPath: path)
        let directory = target.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw WireError.invalid("\(path) is a directory; nothing was written")
        }
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw WireError.invalid("cannot write \(path): the directory \(directory) does not exist")
        }
        let temporary = "\(directory)/.\(target.lastPathComponent).heddle-partial-\(getpid())"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw WireError.invalid("cannot write \(path): \(String(cString: strerror(errno))) creating a file in \(directory)")
        }
        let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
        var hasher = SHA256Hasher()
        var offset: UInt64 = 0
        var info: Heddle_V1_ArtifactInfo?
        let chunk = max(64 * 1024, connection.welcome.maxArtifactChunkBytes)
        do {
            defer { try? handle.close() }
            repeat {
                let data = try await readArtifact(id, offset: offset, length: chunk)
                info = data.artifact
                if data.data.isEmpty && offset < data.artifact.size {
                    throw WireError(.internal, "artifact \(id) ended at \(offset) of \(data.artifact.size) bytes; nothing was written")
                }
                do {
                    try handle.write(contentsOf: data.data)
                } catch {
                    throw WireError.invalid("cannot write \(path): \((error as NSError).localizedDescription); nothing was written")
                }
                hasher.update(data.data)
                offset += UInt64(data.data.count)
                progress(offset, data.artifact.size)
            } while offset < info!.size
            try handle.synchronize()
            let digest = hasher.finalize()
            guard digest == info!.sha256 else {
                throw WireError(.internal, "artifact \(id) downloaded with SHA-256 \(hex(digest)), expected \(hex(info!.sha256)); nothing was written")
            }
            // rename(2) replaces a file atomically and refuses to replace a directory.
            guard rename(temporary, path) == 0 else {
                throw WireError.invalid("cannot write \(path): \(String(cString: strerror(errno))); nothing was written")
            }
        } catch {
            unlink(temporary)
            throw error
        }
        return info!
    }

    /// Subscribes to a run attempt's events. The stream ends after the `end` event.
    public func watch(runID: UInt64, attempt: UInt32 = 0, job: String = "", node: String = "",
                      logs: Bool, follow: Bool) async throws -> PushStream<Heddle_V1_WatchEvent> {
        var request = Heddle_V1_WatchRequest()
        request.runID = runID
        request.attempt = attempt
        request.job = job
        request.node = node
        request.logs = logs
        request.follow = follow
        let response = try await connection.request(.watch(request))
        let id = response.id
        return PushStream(connection.pushes, closed: "the connection closed before the run ended") { envelope in
            guard envelope.id == id || envelope.id == 0 else { return .skip }
            switch envelope.body {
            case .watchEvent(let event):
                if case .end = event.event { return .last(event) }
                return .yield(event)
            case .error(let error):
                return .fail(WireError(error))
            default:
                return .skip
            }
        }
    }
}

/// The frames a coordinator pushes for one request (a watch), read from the connection's
/// pushes as they are iterated: no task of its own. It ends with the request's last event, or
/// throws (an error frame; `unavailableOrClosed` when the connection closes first).
public struct PushStream<Element: Sendable>: AsyncSequence, Sendable {
    /// What a pushed frame is to the stream.
    public enum Step: Sendable {
        case yield(Element)
        /// The request's last event: yielded, then the stream ends.
        case last(Element)
        case fail(WireError)
        /// Not this request's.
        case skip
    }

    let pushes: AsyncStream<Envelope>
    let closed: String
    let step: @Sendable (Envelope) -> Step

    init(_ pushes: AsyncStream<Envelope>, closed: String, step: @escaping @Sendable (Envelope) -> Step) {
        self.pushes = pushes
        self.closed = closed
        self.step = step
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(base: pushes.makeAsyncIterator(), closed: closed, step: step)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var base: AsyncStream<Envelope>.Iterator
        let closed: String
        let step: @Sendable (Envelope) -> Step
        var done = false

        public mutating func next() async throws -> Element? {
            guard !done else { return nil }
            while let envelope = await base.next() {
                switch step(envelope) {
                case .yield(let element):
                    return element
                case .last(let element):
                    done = true
                    return element
                case .fail(let error):
                    done = true
                    throw error
                case .skip:
                    continue
                }
            }
            done = true
            throw WireError(.unavailableOrClosed, closed)
        }
    }
}
