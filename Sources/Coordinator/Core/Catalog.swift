import Foundation
import Logging
import Synchronization
import Wire

/// What the store holds and the coordinator's memory does not: projects, pipeline versions,
/// runs and their attempts, artifacts, stored log bytes and webhook deliveries. Every call is
/// authorized and its input checked here, then answered from the store alone, so it needs no
/// actor: reads from many fronts run side by side, and none waits behind the job lifecycle
/// (`CoordinatorCore`), which owns what is in memory (the queue, leases, sessions, live logs).
public struct Catalog: Sendable {
    let store: any CoordinatorStore
    let artifactStore: any ArtifactStore
    let logStore: any LogStore
    let limits: CoordinatorLimits
    let logger: Logger
    /// Parsed pipeline versions (versions never change).
    let definitions = PipelineDefinitions()
    /// Where node logs' lines start (`LogLineIndexes`), shared with the job lifecycle, which
    /// extends them as bytes are stored.
    var lineIndexes = LogLineIndexes()

    // MARK: projects and pipelines

    public func createProject(name: String, repository: String, as principal: Principal) async throws -> ProjectRecord {
        try Authorization.check(principal, .createProject)
        try Self.validateProjectName(name)
        guard !repository.contains("\0"), !repository.hasPrefix("-") else {
            throw CoordinatorError.invalid("'\(repository)' is not a repository URL or path")
        }
        return try await store.saveProject(name: name, repository: repository, now: Date.nowMilliseconds)
    }

    public func projects(as principal: Principal) async throws -> [ProjectRecord] {
        try Authorization.check(principal, .listProjects)
        return try await store.projects()
    }

    /// One project; not found when it does not exist.
    public func project(_ name: String, as principal: Principal) async throws -> ProjectRecord {
        try Authorization.check(principal, .listProjects)
        guard let project = try await store.project(name: name) else {
            throw CoordinatorError.notFound("project \(name) does not exist")
        }
        return project
    }

    static func validateProjectName(_ name: String) throws(CoordinatorError) {
        if let problem = Names.problem(name, "project name") { throw CoordinatorError.invalid(problem) }
    }

    /// Parses and stores a pipeline file as the pipeline's next version.
    public func pushPipeline(_ push: PipelinePush, as principal: Principal) async throws -> PipelineVersionRecord {
        try Authorization.check(principal, .pushPipeline)
        try Self.validateProjectName(push.project)
        let definition: PipelineDefinition
        do {
            definition = try ActParser(file: push.fileName.flatMap { $0.isEmpty ? nil : $0 } ?? "pipeline.act").parse(push.source)
        } catch {
            throw CoordinatorError.invalid(error.description)
        }
        let limit = limits.maximumFrameLength - AssignmentSize.reserve
        for job in definition.jobs where job.assignmentBytes > limit {
            throw CoordinatorError.invalid("job '\(job.name)' is too large to assign: its nodes take about \(job.assignmentBytes) bytes once expanded (a YAML alias counts at each use), over the limit of \(limit) (the frame limit less 64 KiB)")
        }
        var version = try await store.savePipeline(project: push.project, definition: definition, source: push.source,
                                                   now: Date.nowMilliseconds)
        version.inputs = definition.inputs
        return version
    }

    /// The latest version of every pipeline, or of one project's (not found when the project
    /// does not exist).
    public func pipelines(project: String? = nil, as principal: Principal) async throws -> [PipelineVersionRecord] {
        try Authorization.check(principal, .listPipelines)
        if let project, try await store.project(name: project) == nil {
            throw CoordinatorError.notFound("project \(project) does not exist")
        }
        return try await store.pipelines().filter { project == nil || $0.project == project }.map { version in
            var version = version
            version.inputs = (try? definition(of: version))?.inputs ?? []
            return version
        }
    }

    /// A stored pipeline version, parsed.
    func definition(of version: PipelineVersionRecord) throws(CoordinatorError) -> PipelineDefinition {
        try definitions.parsed(version)
    }

    // MARK: runs

    /// Runs matching the filter, newest first: a page of `limit` (`ListLimit.runs`), and
    /// whether more follow.
    public func runs(_ query: RunQuery, as principal: Principal) async throws -> (runs: [RunRecord], more: Bool) {
        try Authorization.check(principal, .listRuns)
        let limit = try ListLimit.runs.resolve(query.limit)
        if let trigger = query.filter.trigger, !RunRecord.triggers.contains(trigger) {
            throw CoordinatorError.invalid("trigger '\(trigger.prefix(40))' is none of \(RunRecord.triggers.joined(separator: ", "))")
        }
        // One more than asked tells whether another page follows.
        let runs = try await store.runs(limit: limit + 1, filter: query.filter)
        return (Array(runs.prefix(limit)), runs.count > limit)
    }

    /// A run attempt (the latest when not given) with its jobs and their nodes.
    public func runDetail(runID: Int64, attempt: Int? = nil, as principal: Principal) async throws -> RunDetail {
        try Authorization.check(principal, .showRun)
        guard var run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        let attempt = try run.attempt(asked: attempt)
        // The attempt's status is read before its jobs: a write landing between the reads
        // then shows jobs newer than the run, never a finished run with a job still running.
        let record = try await store.attempt(runID: runID, number: attempt)
        var jobs = try await store.jobs(runID: runID, attempt: attempt)
        if jobs.contains(where: { $0.carriedFrom != nil }), let version = try await store.pipelineVersion(id: run.pipelineVersionID),
           let definition = try? definition(of: version) {
            // An attempt of a re-run of the failed jobs stores its queued jobs before those it
            // carried over: shown in the pipeline's order, as every other attempt is.
            let order = Dictionary(definition.jobs.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
            jobs.sort { (order[$0.name] ?? Int.max, $0.id) < (order[$1.name] ?? Int.max, $1.id) }
        }
        let nodes = Dictionary(grouping: try await store.nodes(jobIDs: jobs.map(\.id)), by: \.jobID)
        run.attempt = attempt
        if let record {
            run.status = record.status
            run.trigger = record.trigger
            run.triggeredBy = record.triggeredBy
            run.createdAt = record.createdAt
            run.startedAt = record.startedAt
            run.finishedAt = record.finishedAt
        }
        // Jobs carried over by a re-run of the failed ones: the attempt each ran in.
        let carried = jobs.compactMap(\.carriedFrom)
        let ranIn = carried.isEmpty ? [:] : Dictionary(try await store.jobs(ids: carried).map { ($0.id, $0.attempt) },
                                                       uniquingKeysWith: { first, _ in first })
        return RunDetail(run: run, jobs: jobs.map {
            JobDetail(job: $0, nodes: nodes[$0.id] ?? [], carriedFromAttempt: $0.carriedFrom.flatMap { ranIn[$0] })
        }, attempts: try await store.attempts(runID: runID))
    }


    /// One piece (at most 1 MiB) of a node log at or after `offset`, with the log's durable
    /// length now. Not found: the run, the attempt, the job or the node does not exist.
    public func readLog(_ request: LogRead, as principal: Principal) async throws -> LogPiece {
        try Authorization.check(principal, .watchRun)
        guard request.offset >= 0 else { throw CoordinatorError.invalid("a log offset is 0 or more") }
        let (key, length, finished) = try await locate(request)
        var piece = LogPiece(offset: request.offset, data: Data(), length: length, finished: finished)
        if request.offset < length,
           let stored = try await logStore.checkedPiece(of: key, from: request.offset, end: length, limit: limits.maximumLogBytes) {
            piece.offset = stored.offset
            piece.data = stored.data
        }
        return piece
    }

    // MARK: artifacts

    /// A run's artifacts (not found when the run does not exist), or (nil) the latest 1,000
    /// of every run, oldest first.
    public func artifacts(runID: Int64?, as principal: Principal) async throws -> [ArtifactRecord] {
        try Authorization.check(principal, .listArtifacts)
        if let runID, try await store.run(id: runID) == nil { throw CoordinatorError.notFound("run \(runID) does not exist") }
        return try await store.artifacts(runID: runID)
    }

    /// One artifact (viewer).
    public func artifact(id: Int64, as principal: Principal) async throws -> ArtifactRecord {
        try Authorization.check(principal, .listArtifacts)
        guard let artifact = try await store.artifact(id: id) else { throw CoordinatorError.notFound("artifact \(id) does not exist") }
        return artifact
    }

    /// A piece of an artifact's bytes (at most `limits.maximumArtifactChunk`); empty at its end.
    public func readArtifact(_ request: ArtifactRead, as principal: Principal) async throws -> ArtifactSlice {
        try Authorization.check(principal, .readArtifact)
        guard let artifact = try await store.artifact(id: request.artifactID) else {
            throw CoordinatorError.notFound("artifact \(request.artifactID) does not exist")
        }
        let length = min(request.length.flatMap { $0 > 0 ? $0 : nil } ?? limits.maximumArtifactChunk, limits.maximumArtifactChunk)
        let offset = min(max(0, request.offset), artifact.size)
        let bytes = try await artifactStore.read(sha256: artifact.sha256, offset: offset,
                                                 length: min(length, Int(artifact.size - offset)))
        return ArtifactSlice(artifact: artifact, offset: offset, data: Data(bytes))
    }

    /// One page of artifacts of every run matching the query (viewer), and whether more follow.
    public func searchArtifacts(_ query: ArtifactQuery, as principal: Principal) async throws -> (artifacts: [ArtifactRecord], more: Bool) {
        try Authorization.check(principal, .listArtifacts)
        var query = query
        let limit = try ListLimit.artifacts.resolve(query.limit)
        guard query.offset >= 0 else { throw CoordinatorError.invalid("a search's offset is 0 or more") }
        if let name = query.name {
            guard !name.isEmpty, name.utf8.count <= 255 else { throw CoordinatorError.invalid("a name to search for has 1 to 255 bytes") }
        }
        if let prefix = query.sha256Prefix {
            let lowered = prefix.lowercased()
            guard (1...64).contains(lowered.count), lowered.allSatisfy({ $0.isHexDigit && $0.isASCII }) else {
                throw CoordinatorError.invalid("a SHA-256 prefix is 1 to 64 hex digits, not '\(prefix.prefix(70))'")
            }
            query.sha256Prefix = lowered
        }
        if let minimum = query.minimumSize, let maximum = query.maximumSize, minimum > maximum {
            throw CoordinatorError.invalid("the smallest size (\(minimum)) is larger than the largest (\(maximum))")
        }
        if (query.minimumSize ?? 0) < 0 || (query.maximumSize ?? 0) < 0 { throw CoordinatorError.invalid("sizes are 0 or more") }
        // One more than asked tells whether another page follows.
        query.limit = limit + 1
        let found = try await store.searchArtifacts(query)
        return (Array(found.prefix(limit)), found.count > limit)
    }

    // MARK: webhooks

    /// A project's webhook secret, new: shown once by the caller, kept by the coordinator (it
    /// must compute the forge's HMAC with it).
    public func rotateWebhookSecret(project: String, as principal: Principal) async throws -> String {
        try Authorization.check(principal, .createProject)
        var random = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &random)) }.joined()
        guard try await store.setWebhookSecret(project: project, secret: secret) else {
            throw CoordinatorError.notFound("project \(project) does not exist")
        }
        logger.notice("webhook secret replaced", metadata: ["project": "\(project)", "by": "\(principal)"])
        return secret
    }

    /// The project's latest deliveries, newest first (viewer): `limit` (`ListLimit.deliveries`).
    public func deliveries(project: String, limit: Int? = nil, as principal: Principal) async throws -> [DeliveryRecord] {
        try Authorization.check(principal, .listProjects)
        let limit = try ListLimit.deliveries.resolve(limit)
        guard try await store.project(name: project) != nil else { throw CoordinatorError.notFound("project \(project) does not exist") }
        return try await store.deliveries(project: project, limit: limit)
    }

    /// The project's webhook secret, for a front to verify a delivery's signature with; nil
    /// when the project does not exist or has none.
    public func webhookSecret(project: String) async throws -> String? {
        guard Names.problem(project, "project") == nil else { return nil }
        return try await store.webhookSecret(project: project)
    }
}

extension RunRecord {
    /// What may start a run (`trigger`).
    static let triggers = ["manual", "api", "webhook", "schedule"]

    /// The attempt a request names (nil or 0: the latest): not found when the run has no such
    /// attempt, invalid when it is negative. Every read of an attempt (details, logs, watches)
    /// takes this one rule.
    func attempt(asked: Int?) throws(CoordinatorError) -> Int {
        guard let asked, asked != 0 else { return attempt }
        guard asked > 0 else { throw CoordinatorError.invalid("attempt is 1 or more, not \(asked)") }
        guard asked <= attempt else {
            throw CoordinatorError.notFound("run \(id) has no attempt \(asked) (it has \(attempt))")
        }
        return asked
    }
}

/// Pipeline versions parsed once each (a version never changes), the most recent 1,024 kept.
final class PipelineDefinitions: Sendable {
    private let parsed = Mutex<[Int64: PipelineDefinition]>([:])

    func parsed(_ version: PipelineVersionRecord) throws(CoordinatorError) -> PipelineDefinition {
        if let known = parsed.withLock({ $0[version.id] }) { return known }
        let definition: PipelineDefinition
        do {
            definition = try ActParser(file: "\(version.pipeline).act").parse(version.source)
        } catch {
            throw CoordinatorError(.internal, "stored pipeline no longer parses: \(error)")
        }
        parsed.withLock {
            if $0.count >= 1024 { $0.removeAll() }
            $0[version.id] = definition
        }
        return definition
    }
}

/// How many items a list answers with when a request does not say, and the most it may ask
/// for: one table for every front. A limit outside 1 to the most is refused
/// (`INVALID_ARGUMENT`, "limit is 1 to MOST, not N"); the binary protocol's 0 is "not given".
public struct ListLimit: Sendable {
    public let byDefault: Int
    public let most: Int

    /// Runs (`RunQuery`): 50, at most 1,000 a page.
    public static let runs = ListLimit(byDefault: 50, most: 1000)
    /// The queue: 1,000, at most 10,000; an answer of the binary protocol is one frame, so
    /// there at most `maximumQueueInOneFrame`.
    public static let queue = ListLimit(byDefault: 1000, most: 10_000)
    public static let maximumQueueInOneFrame = 1000
    /// A project's webhook deliveries: 100, at most 1,000.
    public static let deliveries = ListLimit(byDefault: 100, most: 1000)
    /// A page of an artifact search: 50, at most 500.
    public static let artifacts = ListLimit(byDefault: 50, most: 500)

    /// The limit to use for `asked` (nil: the default).
    public func resolve(_ asked: Int?, most: Int? = nil) throws(CoordinatorError) -> Int {
        guard let asked else { return min(byDefault, most ?? byDefault) }
        let most = most ?? self.most
        guard (1...most).contains(asked) else { throw CoordinatorError.invalid("limit is 1 to \(most), not \(asked)") }
        return asked
    }
}
