import APITypes
import Foundation
import Wire

/// What `--json` prints: the REST API's schemas (`openapi.yaml`, generated into `APITypes`),
/// made from what the binary protocol answered, so a program reads one shape whichever way it
/// asked. Absent fields are left out, as the REST API leaves them out.
enum REST {
    static func date(_ milliseconds: Int64) -> Date { Date(timeIntervalSince1970: Double(milliseconds) / 1000) }

    /// A time the protocol sends as 0 when the thing has not happened.
    static func date(ifAny milliseconds: Int64) -> Date? { milliseconds == 0 ? nil : date(milliseconds) }

    /// From start to finish, or to now while running; nil before the start.
    static func duration(_ start: Int64, _ end: Int64) -> Int64? {
        guard start != 0 else { return nil }
        return max(0, (end == 0 ? Int64(Date().timeIntervalSince1970 * 1000) : end) - start)
    }

    static func given(_ text: String) -> String? { text.isEmpty ? nil : text }

    static func status(_ status: Heddle_V1_Status) -> Components.Schemas.Status {
        Components.Schemas.Status(rawValue: Output.statusName(status)) ?? .failed
    }

    static func run(_ run: Heddle_V1_RunSummary) -> Components.Schemas.Run {
        .init(id: Int64(run.id), project: run.project, pipeline: run.pipeline, pipelineVersion: Int64(run.pipelineVersion),
              branch: run.branch, status: status(run.status), attempt: Int(run.attempt), trigger: run.trigger,
              triggeredBy: given(run.triggeredBy), commit: given(run.commit),
              inputs: .init(additionalProperties: run.inputs), createdAt: date(run.createdAtMs),
              startedAt: date(ifAny: run.startedAtMs), finishedAt: date(ifAny: run.finishedAtMs),
              durationMs: duration(run.startedAtMs, run.finishedAtMs))
    }

    static func runDetail(_ detail: Heddle_V1_RunDetail) -> Components.Schemas.RunDetail {
        .init(run: run(detail.run),
              attempts: detail.attempts.map {
                  .init(number: Int($0.number), status: status($0.status), trigger: $0.trigger,
                        triggeredBy: given($0.triggeredBy), createdAt: date($0.createdAtMs),
                        startedAt: date(ifAny: $0.startedAtMs), finishedAt: date(ifAny: $0.finishedAtMs))
              },
              jobs: detail.jobs.map(job))
    }

    static func job(_ job: Heddle_V1_JobDetail) -> Components.Schemas.Job {
        .init(id: Int64(job.id), name: job.name, labels: job.labels, status: status(job.status), runner: given(job.runner),
              commit: given(job.commit), reason: job.reason,
              carriedFromAttempt: job.carriedFromAttempt == 0 ? nil : Int(job.carriedFromAttempt), queuedAt: date(ifAny: job.queuedAtMs),
              startedAt: date(ifAny: job.startedAtMs), finishedAt: date(ifAny: job.finishedAtMs),
              durationMs: duration(job.startedAtMs, job.finishedAtMs),
              nodes: job.nodes.map {
                  .init(name: $0.name, needs: $0.needs, status: status($0.status), exitCode: $0.exited ? Int($0.exitCode) : nil,
                        startedAt: date(ifAny: $0.startedAtMs), finishedAt: date(ifAny: $0.finishedAtMs),
                        durationMs: duration($0.startedAtMs, $0.finishedAtMs))
              })
    }

    static func queueEntry(_ entry: Heddle_V1_QueueEntry) -> Components.Schemas.QueueEntry {
        .init(job: Int64(entry.jobID), run: Int64(entry.runID), attempt: Int(entry.attempt), project: entry.project,
              pipeline: entry.pipeline, name: entry.job, branch: entry.branch, labels: entry.labels,
              status: status(entry.status), runner: given(entry.runner), queuedAt: date(entry.queuedAtMs),
              position: entry.position == 0 ? nil : Int(entry.position), waitingReason: given(entry.waitingReason))
    }

    /// A queue change, as the queue's event stream sends it; nil for a kind this CLI does not know.
    static func queueChange(_ event: Heddle_V1_QueueEvent) -> Components.Schemas.QueueChange? {
        let kind: Components.Schemas.QueueChange.Value1Payload.KindPayload
        switch event.kind {
        case .queued: kind = .queued
        case .moved: kind = .moved
        case .claimed: kind = .claimed
        case .finished: kind = .finished
        case .cancelled: kind = .cancelled
        default: return nil
        }
        return .init(value1: .init(kind: kind), value2: queueEntry(event.job))
    }

    static func cancelResult(_ result: Heddle_V1_CancelResult) -> Components.Schemas.CancelResult {
        .init(jobs: result.jobs.map(queueEntry), count: Int(result.count))
    }

    static func runner(_ runner: Heddle_V1_RunnerInfo) -> Components.Schemas.Runner {
        .init(name: runner.name, labels: runner.labels, capacity: Int(runner.capacity), running: Int(runner.running),
              connectedAt: date(runner.connectedAtMs), lastHeartbeat: date(runner.lastHeartbeatMs), session: runner.sessionID,
              drained: runner.drained, stalled: given(runner.stalled), version: given(runner.softwareVersion),
              _protocol: given(runner.protocolVersion))
    }

    static func artifact(_ artifact: Heddle_V1_ArtifactInfo) -> Components.Schemas.Artifact {
        .init(id: Int64(artifact.id), run: Int64(artifact.runID), attempt: Int(artifact.attempt), job: Int64(artifact.jobID),
              jobName: artifact.job, name: artifact.name, size: Int64(artifact.size), sha256: hex(artifact.sha256),
              project: artifact.project, pipeline: artifact.pipeline, branch: artifact.branch,
              createdAt: date(artifact.createdAtMs), url: "/api/v1/artifacts/\(artifact.id)/content")
    }

    static func pipeline(_ pipeline: Heddle_V1_PipelineInfo) -> Components.Schemas.Pipeline {
        .init(project: pipeline.project, name: pipeline.pipeline, version: Int(pipeline.version), jobs: pipeline.jobs,
              inputs: pipeline.inputs.map {
                  .init(name: $0.name, _default: $0.required ? nil : $0.defaultValue, options: $0.options,
                        description: given($0.description_p))
              },
              createdAt: date(pipeline.updatedAtMs))
    }

    static func project(_ project: Heddle_V1_ProjectInfo) -> Components.Schemas.Project {
        .init(name: project.name, repository: project.repository, createdAt: date(project.createdAtMs),
              webhook: project.webhookEnabled, webhookUrl: project.webhookEnabled ? given(project.webhookURL) : nil)
    }

    static func delivery(_ delivery: Heddle_V1_Delivery) -> Components.Schemas.Delivery {
        .init(forge: .init(rawValue: delivery.forge) ?? .github, delivery: delivery.deliveryID, event: delivery.event,
              receivedAt: date(delivery.receivedAtMs), outcome: .init(rawValue: delivery.outcome) ?? .refused,
              detail: delivery.detail, runs: delivery.runIds.map { Int64($0) })
    }

    static func cache(_ cache: Heddle_V1_CacheInfo) -> Components.Schemas.Cache {
        .init(id: Int64(cache.id), project: cache.project, branch: cache.branch, key: cache.key, size: Int64(cache.size),
              sha256: cache.sha256, createdAt: date(cache.createdAtMs), lastUsedAt: date(cache.lastUsedAtMs), hits: Int64(cache.hits))
    }

    static func schedule(_ schedule: Heddle_V1_ScheduleInfo) -> Components.Schemas.Schedule {
        .init(project: schedule.project, pipeline: schedule.pipeline, cron: schedule.cron, timezone: schedule.timezone,
              branch: schedule.branch, nextDue: date(ifAny: schedule.nextDueMs), lastDue: date(ifAny: schedule.lastDueMs),
              lastRun: schedule.lastRunID == 0 ? nil : Int64(schedule.lastRunID))
    }

    static func token(_ token: Heddle_V1_Token) -> Components.Schemas.Token {
        .init(name: token.name, role: .init(rawValue: token.role) ?? .viewer, createdAt: date(token.createdAtMs),
              expiresAt: date(ifAny: token.expiresAtMs), revoked: token.revokedAtMs != 0)
    }

    static func secrets(_ list: Heddle_V1_SecretList) -> Components.Schemas.SecretList {
        .init(project: list.project, secrets: list.secrets.map {
            .init(name: $0.name, createdAt: date($0.createdAtMs), updatedAt: date($0.updatedAtMs))
        }, forksAllowed: list.forksAllowed)
    }

    static func triggered(run: UInt64, attempt: UInt32) -> Components.Schemas.Triggered {
        .init(run: Int64(run), attempt: Int(attempt), url: "/api/v1/runs/\(run)")
    }
}
