import Foundation
import Wire

/// Projects, pipelines, runs and their attempts.
extension CoordinatorCore {
    /// Lists and shows return at most this many runs.
    public static let maximumListedRuns = 10_000

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
        return try await store.savePipeline(project: push.project, definition: definition, source: push.source,
                                            now: Date.nowMilliseconds)
    }

    /// The latest version of every pipeline.
    public func pipelines(as principal: Principal) async throws -> [PipelineVersionRecord] {
        try Authorization.check(principal, .listPipelines)
        return try await store.pipelines()
    }

    /// A stored pipeline version, parsed once (versions never change).
    func definition(of version: PipelineVersionRecord) throws -> PipelineDefinition {
        if let parsed = definitions[version.id] { return parsed }
        do {
            let parsed = try ActParser(file: "\(version.pipeline).act").parse(version.source)
            if definitions.count >= 1024 { definitions.removeAll() }
            definitions[version.id] = parsed
            return parsed
        } catch {
            throw CoordinatorError(.internal, "stored pipeline no longer parses: \(error)")
        }
    }

    /// How a run was triggered, from who triggered it: "manual" (an admin) or "api".
    static func triggerSource(_ principal: Principal) -> String {
        principal.role == .admin ? "manual" : "api"
    }

    /// Makes a run of the pipeline's latest version on a branch ("main" when not given), its
    /// jobs queued.
    public func trigger(_ request: TriggerRequest, as principal: Principal) async throws -> Triggered {
        try Authorization.check(principal, .trigger)
        guard let version = try await store.latestPipeline(project: request.project, pipeline: request.pipeline) else {
            throw CoordinatorError.notFound("no pipeline \(request.project)/\(request.pipeline); push it with `heddle pipeline push FILE --project \(request.project)`")
        }
        let branch = request.branch.flatMap { $0.isEmpty ? nil : $0 } ?? "main"
        if let problem = Names.branchProblem(branch) { throw CoordinatorError.invalid(problem) }
        let commit = request.commit.flatMap { $0.isEmpty ? nil : $0.lowercased() } ?? ""
        if !commit.isEmpty, let problem = Self.commitProblem(commit) { throw CoordinatorError.invalid(problem) }
        return try await startRun(version, branch: branch, commit: commit, trigger: Self.triggerSource(principal),
                                  by: principal.name)
    }

    /// Why `commit` is no commit id (40 or 64 hex digits), or nil.
    static func commitProblem(_ commit: String) -> String? {
        guard [40, 64].contains(commit.count), commit.allSatisfy({ $0.isHexDigit && $0.isASCII }) else {
            return "a commit is its full id, 40 (or 64) hex digits, not '\(commit.prefix(70))'"
        }
        return nil
    }

    /// Makes a run of a pipeline version and queues its jobs.
    func startRun(_ version: PipelineVersionRecord, branch: String, commit: String, trigger: String,
                  by who: String) async throws -> Triggered {
        let definition = try self.definition(of: version)
        let (run, jobs) = try await store.createRun(version: version, definition: definition, branch: branch, commit: commit,
                                                    trigger: trigger, triggeredBy: who, now: Date.nowMilliseconds)
        for job in jobs {
            enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            publishQueue(.queued, queueEntry(job, run: run))
        }
        tell(.queue)
        logger.info("run triggered", metadata: ["run.id": "\(run.id)", "pipeline": "\(run.project)/\(run.pipeline)",
                                                "branch": "\(branch)", "commit": "\(commit.isEmpty ? "head" : commit)",
                                                "by": "\(who)"])
        await dispatch()
        // A trigger makes a new run, whose first attempt this is.
        return Triggered(runID: run.id, attempt: 1)
    }

    /// Adds attempt N+1 to a finished run, with new jobs from the pipeline version it used.
    public func rerun(runID: Int64, as principal: Principal) async throws -> Triggered {
        try Authorization.check(principal, .rerun)
        guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        guard run.status.isFinished else {
            throw CoordinatorError(.failedPrecondition,
                                   "run \(runID) is still \(run.status.rawValue); wait for it or cancel it before a re-run")
        }
        guard let version = try await store.pipelineVersion(id: run.pipelineVersionID) else {
            throw CoordinatorError(.internal, "the pipeline version of run \(runID) is missing")
        }
        let definition = try self.definition(of: version)
        let (updated, jobs) = try await store.createAttempt(runID: runID, definition: definition,
                                                            trigger: Self.triggerSource(principal), triggeredBy: principal.name,
                                                            now: Date.nowMilliseconds)
        for job in jobs {
            enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            publishQueue(.queued, queueEntry(job, run: updated))
        }
        tell(.queue)
        logger.info("run re-run", metadata: ["run.id": "\(runID)", "attempt": "\(updated.attempt)", "by": "\(principal)"])
        await dispatch()
        return Triggered(runID: runID, attempt: updated.attempt)
    }

    /// Runs matching the filter, newest first: `limit` of them (50 when not given, at most
    /// `maximumListedRuns`).
    public func runs(_ query: RunQuery, as principal: Principal) async throws -> [RunRecord] {
        try Authorization.check(principal, .listRuns)
        let limit = query.limit.flatMap { $0 > 0 ? min($0, Self.maximumListedRuns) : nil } ?? 50
        return try await store.runs(limit: limit, filter: query.filter)
    }

    /// A run attempt (the latest when not given) with its jobs and their nodes.
    public func runDetail(runID: Int64, attempt: Int? = nil, as principal: Principal) async throws -> RunDetail {
        try Authorization.check(principal, .showRun)
        guard var run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        let attempt = attempt.flatMap { $0 == 0 ? nil : $0 } ?? run.attempt
        guard (1...run.attempt).contains(attempt) else {
            throw CoordinatorError.notFound("run \(runID) has no attempt \(attempt) (it has \(run.attempt))")
        }
        // The attempt's status is read before its jobs: a write landing between the reads
        // then shows jobs newer than the run, never a finished run with a job still running.
        let record = try await store.attempt(runID: runID, number: attempt)
        let jobs = try await store.jobs(runID: runID, attempt: attempt)
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
        return RunDetail(run: run, jobs: jobs.map { JobDetail(job: $0, nodes: nodes[$0.id] ?? []) },
                         attempts: try await store.attempts(runID: runID))
    }
}
