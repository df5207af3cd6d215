import APITypes
import Coordinator
import Foundation
import OpenAPIRuntime
import Wire

/// The `/api/v1` operations of `openapi.yaml`: each one reads the caller the authentication
/// middleware found, calls the core (which authorizes and validates, as for the binary
/// front) and renders the answer. Errors are thrown as they are; `ProblemMiddleware` renders
/// them.
struct API: APIProtocol {
    let core: CoordinatorCore

    /// The caller of the request being handled (set by `AuthenticationMiddleware`).
    var caller: Principal {
        get throws {
            guard let principal = Caller.principal else {
                throw CoordinatorError(.unauthenticated, "this request carries no valid credentials")
            }
            return principal
        }
    }

    // MARK: projects and pipelines

    func listProjects(_ input: Operations.ListProjects.Input) async throws -> Operations.ListProjects.Output {
        .ok(.init(body: .json(.init(projects: try await core.catalog.projects(as: caller).map { Self.project($0) }))))
    }

    func createProject(_ input: Operations.CreateProject.Input) async throws -> Operations.CreateProject.Output {
        guard case .json(let body) = input.body else { throw Self.unsupportedBody }
        let project = try await core.catalog.createProject(name: body.name, repository: body.repository ?? "", as: caller)
        return .created(.init(body: .json(Self.project(project, url: core.webhooks.url(project: project.name)))))
    }

    func showProject(_ input: Operations.ShowProject.Input) async throws -> Operations.ShowProject.Output {
        let principal = try caller
        let project = try await core.catalog.project(input.path.project, as: principal)
        let pipelines = try await core.catalog.pipelines(project: project.name, as: principal)
        let url = core.webhooks.url(project: project.name)
        return .ok(.init(body: .json(.init(project: Self.project(project, url: url), pipelines: pipelines.map { Self.pipeline($0) }))))
    }

    func listPipelines(_ input: Operations.ListPipelines.Input) async throws -> Operations.ListPipelines.Output {
        let pipelines = try await core.catalog.pipelines(project: input.path.project, as: caller)
        return .ok(.init(body: .json(.init(pipelines: pipelines.map { Self.pipeline($0) }))))
    }

    func pushPipeline(_ input: Operations.PushPipeline.Input) async throws -> Operations.PushPipeline.Output {
        guard case .json(let body) = input.body else { throw Self.unsupportedBody }
        let version = try await core.catalog.pushPipeline(PipelinePush(project: input.path.project, fileName: body.fileName,
                                                               source: body.source), as: caller)
        return .created(.init(body: .json(Self.pipeline(version, source: true))))
    }

    func showPipeline(_ input: Operations.ShowPipeline.Input) async throws -> Operations.ShowPipeline.Output {
        guard let version = try await core.catalog.pipelines(project: input.path.project, as: caller).first(where: { $0.pipeline == input.path.pipeline }) else {
            throw CoordinatorError(.notFound, "no pipeline \(input.path.project)/\(input.path.pipeline)")
        }
        return .ok(.init(body: .json(Self.pipeline(version, source: true))))
    }

    func listDeliveries(_ input: Operations.ListDeliveries.Input) async throws -> Operations.ListDeliveries.Output {
        let deliveries = try await core.catalog.deliveries(project: input.path.project, limit: input.query.limit, as: caller)
        return .ok(.init(body: .json(.init(deliveries: deliveries.map {
            .init(forge: .init(rawValue: $0.forge) ?? .github, delivery: $0.deliveryID, event: $0.event,
                  receivedAt: Self.date($0.receivedAt), outcome: .init(rawValue: $0.outcome.rawValue) ?? .refused,
                  detail: $0.detail, runs: $0.runIDs)
        }))))
    }

    func listCaches(_ input: Operations.ListCaches.Input) async throws -> Operations.ListCaches.Output {
        .ok(.init(body: .json(.init(caches: try await core.caches.list(project: input.query.project, as: caller).map(Self.cache)))))
    }

    func deleteCache(_ input: Operations.DeleteCache.Input) async throws -> Operations.DeleteCache.Output {
        .ok(.init(body: .json(Self.cache(try await core.caches.delete(id: input.path.cache, as: caller)))))
    }

    static func cache(_ entry: CacheEntryRecord) -> Components.Schemas.Cache {
        .init(id: entry.id, project: entry.project, branch: entry.branch, key: entry.key, size: entry.size, sha256: entry.sha256,
              createdAt: date(entry.createdAt), lastUsedAt: date(entry.lastUsedAt), hits: entry.hits)
    }

    func listSchedules(_ input: Operations.ListSchedules.Input) async throws -> Operations.ListSchedules.Output {
        let schedules = try await core.schedules.list(project: input.query.project, as: caller)
        return .ok(.init(body: .json(.init(schedules: schedules.map {
            .init(project: $0.project, pipeline: $0.pipeline, cron: $0.cron, timezone: $0.timeZone, branch: $0.branch,
                  nextDue: $0.nextDue.map(Self.date), lastDue: $0.lastDue.map(Self.date), lastRun: $0.lastRunID)
        }))))
    }

    func rotateWebhook(_ input: Operations.RotateWebhook.Input) async throws -> Operations.RotateWebhook.Output {
        let secret = try await core.catalog.rotateWebhookSecret(project: input.path.project, as: caller)
        let url = core.webhooks.url(project: input.path.project) ?? "/hooks/\(input.path.project)"
        return .ok(.init(body: .json(.init(secret: secret, url: url))))
    }

    // MARK: secrets

    func listSecrets(_ input: Operations.ListSecrets.Input) async throws -> Operations.ListSecrets.Output {
        .ok(.init(body: .json(Self.secrets(try await core.secrets.list(project: input.path.project, as: caller)))))
    }

    func setSecret(_ input: Operations.SetSecret.Input) async throws -> Operations.SetSecret.Output {
        guard case .json(let body) = input.body else { throw Self.unsupportedBody }
        return .ok(.init(body: .json(Self.secrets(try await core.secrets.set(project: input.path.project, name: input.path.name,
                                                                            value: body.value, as: caller)))))
    }

    func deleteSecret(_ input: Operations.DeleteSecret.Input) async throws -> Operations.DeleteSecret.Output {
        .ok(.init(body: .json(Self.secrets(try await core.secrets.delete(project: input.path.project, name: input.path.name,
                                                                        as: caller)))))
    }

    func setSecretsForForks(_ input: Operations.SetSecretsForForks.Input) async throws -> Operations.SetSecretsForForks.Output {
        guard case .json(let body) = input.body else { throw Self.unsupportedBody }
        return .ok(.init(body: .json(Self.secrets(try await core.secrets.setForks(project: input.path.project,
                                                                                 allowed: body.allowed, as: caller)))))
    }

    static func secrets(_ list: SecretList) -> Components.Schemas.SecretList {
        .init(project: list.project, secrets: list.secrets.map {
            .init(name: $0.name, createdAt: date($0.createdAt), updatedAt: date($0.updatedAt))
        }, forksAllowed: list.forksAllowed)
    }

    // MARK: runs

    func triggerRun(_ input: Operations.TriggerRun.Input) async throws -> Operations.TriggerRun.Output {
        var branch: String?, commit: String?, inputs: [String: String] = [:]
        if case .json(let body) = input.body {
            (branch, commit, inputs) = (body.branch, body.commit, body.inputs?.additionalProperties ?? [:])
        }
        let triggered = try await core.trigger(TriggerRequest(project: input.path.project, pipeline: input.path.pipeline,
                                                              branch: branch, commit: commit, inputs: inputs), as: caller)
        let url = "/api/v1/runs/\(triggered.runID)"
        return .created(.init(body: .json(.init(run: triggered.runID, attempt: triggered.attempt, url: url))))
    }

    func listRuns(_ input: Operations.ListRuns.Input) async throws -> Operations.ListRuns.Output {
        let query = input.query
        var before: Int64?
        if let cursor = query.cursor {
            guard let id = Int64(cursor), id > 0 else {
                throw CoordinatorError(.invalidArgument, "cursor '\(cursor)' is not one this API gave out")
            }
            before = id
        }
        let (page, more) = try await core.catalog.runs(RunQuery(limit: query.limit, filter: RunFilter(
            project: query.project, pipeline: query.pipeline, branch: query.branch,
            status: query.status.flatMap { Status(rawValue: $0.rawValue) }, trigger: query.trigger?.rawValue,
            before: before)), as: caller)
        let next = more ? page.last.map { String($0.id) } : nil
        return .ok(.init(body: .json(.init(runs: page.map(Self.run), next: next))))
    }

    func showRun(_ input: Operations.ShowRun.Input) async throws -> Operations.ShowRun.Output {
        if let attempt = input.query.attempt, attempt < 1 {
            throw CoordinatorError(.invalidArgument, "attempt is 1 or more, not \(attempt)")
        }
        let detail = try await core.catalog.runDetail(runID: input.path.run, attempt: input.query.attempt, as: caller)
        return .ok(.init(body: .json(.init(
            run: Self.run(detail.run),
            attempts: detail.attempts.map {
                .init(number: $0.number, status: Self.status($0.status), trigger: $0.trigger,
                      triggeredBy: $0.triggeredBy.isEmpty ? nil : $0.triggeredBy, createdAt: Self.date($0.createdAt),
                      startedAt: $0.startedAt.map(Self.date), finishedAt: $0.finishedAt.map(Self.date))
            },
            jobs: detail.jobs.map(Self.job)))))
    }

    func rerunRun(_ input: Operations.RerunRun.Input) async throws -> Operations.RerunRun.Output {
        let triggered = try await core.rerun(runID: input.path.run, failedOnly: input.query.failed ?? false, as: caller)
        let url = "/api/v1/runs/\(triggered.runID)"
        return .created(.init(body: .json(.init(run: triggered.runID, attempt: triggered.attempt, url: url))))
    }

    func cancelRun(_ input: Operations.CancelRun.Input) async throws -> Operations.CancelRun.Output {
        .ok(.init(body: .json(Self.cancelResult(try await core.cancel(runIDs: [input.path.run], jobIDs: [], as: caller)))))
    }

    func cancelJob(_ input: Operations.CancelJob.Input) async throws -> Operations.CancelJob.Output {
        .ok(.init(body: .json(Self.cancelResult(try await core.cancel(runIDs: [], jobIDs: [input.path.job], as: caller)))))
    }

    // MARK: artifacts

    func searchArtifacts(_ input: Operations.SearchArtifacts.Input) async throws -> Operations.SearchArtifacts.Output {
        let query = input.query
        var offset = 0
        if let cursor = query.cursor {
            guard let value = Int(cursor), value > 0 else {
                throw CoordinatorError(.invalidArgument, "cursor '\(cursor)' is not one this API gave out")
            }
            offset = value
        }
        let search = ArtifactQuery(
            name: query.name, project: query.project, pipeline: query.pipeline, branch: query.branch, runID: query.run,
            sha256Prefix: query.sha256, minimumSize: query.minSize, maximumSize: query.maxSize,
            createdAfter: query.after.map { Int64($0.timeIntervalSince1970 * 1000) },
            createdBefore: query.before.map { Int64($0.timeIntervalSince1970 * 1000) },
            sort: query.sort.flatMap { ArtifactQuery.Sort(rawValue: $0.rawValue) } ?? .newest, limit: query.limit, offset: offset)
        let (artifacts, more) = try await core.catalog.searchArtifacts(search, as: caller)
        return .ok(.init(body: .json(.init(artifacts: artifacts.map(Self.artifact),
                                           next: more ? String(offset + artifacts.count) : nil))))
    }

    func showArtifact(_ input: Operations.ShowArtifact.Input) async throws -> Operations.ShowArtifact.Output {
        .ok(.init(body: .json(Self.artifact(try await core.catalog.artifact(id: input.path.artifact, as: caller)))))
    }

    func runArtifacts(_ input: Operations.RunArtifacts.Input) async throws -> Operations.RunArtifacts.Output {
        let principal = try caller
        _ = try await core.catalog.runDetail(runID: input.path.run, as: principal)  // not found: said so
        let artifacts = try await core.catalog.artifacts(runID: input.path.run, as: principal)
        return .ok(.init(body: .json(.init(artifacts: artifacts.map(Self.artifact)))))
    }

    // MARK: queue and runners

    func listQueue(_ input: Operations.ListQueue.Input) async throws -> Operations.ListQueue.Output {
        let list = try await core.queue(limit: input.query.limit, as: caller)
        return .ok(.init(body: .json(.init(jobs: list.jobs.map(Self.queueEntry), total: list.total))))
    }

    func moveJob(_ input: Operations.MoveJob.Input) async throws -> Operations.MoveJob.Output {
        guard case .json(let body) = input.body else { throw Self.unsupportedBody }
        let target: MoveTarget
        switch body.to {
        case .top: target = .top
        case .bottom: target = .bottom
        case .before, .after:
            guard let other = body.job else {
                throw CoordinatorError(.invalidArgument, "a move \(body.to.rawValue) another job needs `job`, that job's id")
            }
            target = body.to == .before ? .before(other) : .after(other)
        case .position:
            guard let position = body.position, position >= 1 else {
                throw CoordinatorError(.invalidArgument, "a move to a position needs `position`, 1 or more")
            }
            target = .position(position)
        }
        return .ok(.init(body: .json(Self.queueEntry(try await core.move(jobID: input.path.job, to: target, as: caller)))))
    }

    func bulkCancel(_ input: Operations.BulkCancel.Input) async throws -> Operations.BulkCancel.Output {
        guard case .json(let body) = input.body else { throw Self.unsupportedBody }
        let result = try await core.bulkCancel(BulkCancelRequest(project: body.project, pipeline: body.pipeline,
                                                                 branch: body.branch, label: body.label,
                                                                 dryRun: body.dryRun ?? false), as: caller)
        return .ok(.init(body: .json(Self.cancelResult(result))))
    }

    func listRunners(_ input: Operations.ListRunners.Input) async throws -> Operations.ListRunners.Output {
        .ok(.init(body: .json(.init(runners: try await core.runners(as: caller).map(Self.runner)))))
    }

    func drainRunner(_ input: Operations.DrainRunner.Input) async throws -> Operations.DrainRunner.Output {
        let runners = try await core.setDrained(runner: input.path.runner, true, as: caller)
        return .ok(.init(body: .json(.init(runners: runners.map(Self.runner)))))
    }

    func undrainRunner(_ input: Operations.UndrainRunner.Input) async throws -> Operations.UndrainRunner.Output {
        let runners = try await core.setDrained(runner: input.path.runner, false, as: caller)
        return .ok(.init(body: .json(.init(runners: runners.map(Self.runner)))))
    }

    // MARK: tokens

    func listTokens(_ input: Operations.ListTokens.Input) async throws -> Operations.ListTokens.Output {
        .ok(.init(body: .json(.init(tokens: try core.access.tokenList(as: caller).map(Self.token)))))
    }

    func createToken(_ input: Operations.CreateToken.Input) async throws -> Operations.CreateToken.Output {
        guard case .json(let body) = input.body else { throw Self.unsupportedBody }
        let role = Role(rawValue: body.role.rawValue) ?? .viewer
        let (token, secret) = try await core.access.createToken(name: body.name, role: role, expiresInDays: body.expiresInDays,
                                                         as: caller)
        return .created(.init(body: .json(.init(token: Self.token(token), secret: secret))))
    }

    func revokeToken(_ input: Operations.RevokeToken.Input) async throws -> Operations.RevokeToken.Output {
        .ok(.init(body: .json(Self.token(try await core.access.revokeToken(name: input.path.name, as: caller)))))
    }

    // MARK: rendering

    static let unsupportedBody = CoordinatorError(.badRequest, "the body must be application/json")

    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }

    static func duration(_ start: Int64?, _ end: Int64?) -> Int64? {
        guard let start else { return nil }
        return max(0, (end ?? Date.nowMilliseconds) - start)
    }

    static func status(_ status: Status) -> Components.Schemas.Status {
        Components.Schemas.Status(rawValue: status.rawValue) ?? .failed
    }

    static func project(_ project: ProjectRecord, url: String? = nil) -> Components.Schemas.Project {
        .init(name: project.name, repository: project.repository, createdAt: date(project.createdAt), webhook: project.hasWebhook,
              webhookUrl: project.hasWebhook ? url : nil)
    }

    static func pipeline(_ version: PipelineVersionRecord, source: Bool = false) -> Components.Schemas.Pipeline {
        .init(project: version.project, name: version.pipeline, version: version.version, jobs: version.jobs,
                     inputs: version.inputs.map { .init(name: $0.name, _default: $0.defaultValue, options: $0.options,
                                                description: $0.description.isEmpty ? nil : $0.description) },
                     createdAt: date(version.createdAt), source: source ? version.source : nil)
    }

    static func run(_ run: RunRecord) -> Components.Schemas.Run {
        .init(id: run.id, project: run.project, pipeline: run.pipeline, pipelineVersion: run.pipelineVersionID,
              branch: run.branch, status: status(run.status), attempt: run.attempt, trigger: run.trigger,
              triggeredBy: run.triggeredBy.isEmpty ? nil : run.triggeredBy, commit: run.commit.isEmpty ? nil : run.commit,
              inputs: .init(additionalProperties: run.inputs), createdAt: date(run.createdAt), startedAt: run.startedAt.map(date), finishedAt: run.finishedAt.map(date),
              durationMs: duration(run.startedAt, run.finishedAt))
    }

    static func job(_ job: JobDetail) -> Components.Schemas.Job {
        .init(id: job.id, name: job.name, labels: job.labels, status: status(job.status), runner: job.runner,
              commit: job.commit.isEmpty ? nil : job.commit, reason: job.reason, carriedFromAttempt: job.carriedFromAttempt,
              queuedAt: date(job.queuedAt),
              startedAt: job.startedAt.map(date), finishedAt: job.finishedAt.map(date),
              durationMs: duration(job.startedAt, job.finishedAt),
              nodes: job.nodes.sorted { $0.ordinal < $1.ordinal }.map {
                  .init(name: $0.name, needs: $0.needs, status: status($0.status), exitCode: $0.exitCode,
                        startedAt: $0.startedAt.map(date), finishedAt: $0.finishedAt.map(date),
                        durationMs: duration($0.startedAt, $0.finishedAt))
              })
    }

    static func queueEntry(_ entry: QueueEntry) -> Components.Schemas.QueueEntry {
        .init(job: entry.jobID, run: entry.runID, attempt: entry.attempt, project: entry.project, pipeline: entry.pipeline,
              name: entry.job, branch: entry.branch, labels: entry.labels, status: status(entry.status), runner: entry.runner,
              queuedAt: date(entry.queuedAt), position: entry.position, waitingReason: entry.waitingReason)
    }

    static func cancelResult(_ result: CancelResult) -> Components.Schemas.CancelResult {
        .init(jobs: result.jobs.map(queueEntry), count: result.count)
    }

    static func runner(_ runner: RunnerInfo) -> Components.Schemas.Runner {
        .init(name: runner.name, labels: runner.labels, capacity: runner.capacity, running: runner.running,
              connectedAt: date(runner.connectedAt), lastHeartbeat: date(runner.lastHeartbeat),
              session: String(runner.sessionID), drained: runner.drained, stalled: runner.stalled,
              version: runner.software.isEmpty ? nil : runner.software,
              _protocol: runner.protocolVersion.isEmpty ? nil : runner.protocolVersion)
    }

    static func artifact(_ artifact: ArtifactRecord) -> Components.Schemas.Artifact {
        .init(id: artifact.id, run: artifact.runID, attempt: artifact.attempt, job: artifact.jobID, jobName: artifact.job,
              name: artifact.name, size: artifact.size, sha256: artifact.sha256, project: artifact.project,
              pipeline: artifact.pipeline, branch: artifact.branch, createdAt: date(artifact.createdAt),
              url: "/api/v1/artifacts/\(artifact.id)/content")
    }

    static func token(_ token: TokenRecord) -> Components.Schemas.Token {
        .init(name: token.name, role: Components.Schemas.Role(rawValue: token.role.rawValue) ?? .viewer,
              createdAt: date(token.createdAt), expiresAt: token.expiresAt.map(date), revoked: token.revokedAt != nil)
    }
}

/// The caller of the request being handled, found by `AuthenticationMiddleware`.
enum Caller {
    @TaskLocal static var principal: Principal?
    /// When the request was signed in by the session cookie: that session.
    @TaskLocal static var session: WebSession?
}
