import Foundation
import Wire

// The binary front's translation between the protocol's messages and the core's types. The
// protocol's conventions live here and only here: 0 and "" mean "not given", times are
// milliseconds with 0 for "not yet".

extension Status {
    var proto: Heddle_V1_Status {
        switch self {
        case .queued: .queued
        case .pending: .pending
        case .running: .running
        case .succeeded: .succeeded
        case .failed: .failed
        case .cancelled: .cancelled
        case .skipped: .skipped
        }
    }

    /// Nil for a value that is no status (unspecified, or one this version does not know).
    init?(_ proto: Heddle_V1_Status) {
        switch proto {
        case .queued: self = .queued
        case .pending: self = .pending
        case .running: self = .running
        case .succeeded: self = .succeeded
        case .failed: self = .failed
        case .cancelled: self = .cancelled
        case .skipped: self = .skipped
        default: return nil
        }
    }
}

extension WireError {
    /// What a peer is told about an error from the core.
    init(_ error: CoordinatorError) {
        let code: Heddle_V1_ErrorCode = switch error.code {
        case .badRequest: .badRequest
        case .unauthenticated: .unauthenticated
        case .permissionDenied: .permissionDenied
        case .notFound: .notFound
        case .invalidArgument: .invalidArgument
        case .failedPrecondition: .failedPrecondition
        case .staleLease: .staleEpoch
        case .resourceExhausted: .resourceExhausted
        case .internal: .internal
        case .unavailable: .unavailable
        }
        self.init(code, error.message)
    }
}

extension Principal {
    /// The caller a verified client certificate names.
    public init(_ identity: PeerIdentity) {
        self.init(name: identity.name, role: identity.role,
                  certificate: Certificate(fingerprint: identity.fingerprint, issuedAt: identity.issuedAt))
    }
}

/// A proto3 field left at its default: not given.
func given(_ text: String) -> String? { text.isEmpty ? nil : text }
func given<T: BinaryInteger>(_ number: T) -> Int? { number == 0 ? nil : Int(clamping: number) }

// MARK: from the peer

extension LeaseRef {
    init(_ ref: Heddle_V1_JobRef) {
        self.init(jobID: Int64(clamping: ref.jobID), epoch: Int64(clamping: ref.epoch))
    }
}

extension RunningJobs {
    init(_ running: Heddle_V1_RunningJobs) {
        self.init(jobs: running.jobs.map(LeaseRef.init), assignedThrough: Int64(clamping: running.assignedThroughEpoch))
    }
}

extension RunnerHello {
    init(_ hello: Heddle_V1_Hello) {
        self.init(labels: hello.labels, capacity: Int(hello.capacity), running: hello.runningJobs.map(LeaseRef.init),
                  software: String(String.UnicodeScalarView(hello.softwareVersion.unicodeScalars.filter {
                      $0.value >= 0x20 && $0.value < 0x7F  // shown in terminals: printable ASCII only
                  }.prefix(64))),
                  protocolVersion: "\(hello.protocolVersion).\(hello.protocolMinor)")
    }
}

extension NodeReport {
    init(_ update: Heddle_V1_NodeUpdate) {
        self.init(job: LeaseRef(update.job), node: update.node, status: Status(update.status),
                  exitCode: update.exited ? Int(update.exitCode) : nil, at: update.atMs == 0 ? nil : update.atMs)
    }
}

extension LogBytes {
    init(_ append: Heddle_V1_LogAppend) {
        self.init(job: LeaseRef(append.job), node: append.node, offset: append.offset, data: append.data,
                  times: append.times.map { LogTime(offset: Int64(clamping: $0.offset), at: $0.atMs) })
    }
}

extension WatchRequest {
    init(_ request: Heddle_V1_WatchRequest) {
        self.init(runID: Int64(clamping: request.runID), attempt: given(request.attempt), job: given(request.job),
                  node: given(request.node), logs: request.logs, follow: request.follow)
    }
}

extension MoveTarget {
    init?(_ target: Heddle_V1_QueueMoveRequest.OneOf_Target?) {
        switch target {
        case .top: self = .top
        case .bottom: self = .bottom
        case .beforeJob(let other): self = .before(Int64(clamping: other))
        case .afterJob(let other): self = .after(Int64(clamping: other))
        case .position(let n): self = .position(Int(n))
        case .none: return nil
        }
    }
}

// MARK: to the peer

extension RunRecord {
    var proto: Heddle_V1_RunSummary {
        var summary = Heddle_V1_RunSummary()
        summary.id = UInt64(id)
        summary.project = project
        summary.pipeline = pipeline
        summary.branch = branch
        summary.status = status.proto
        summary.attempt = UInt32(attempt)
        summary.createdAtMs = createdAt
        summary.startedAtMs = startedAt ?? 0
        summary.finishedAtMs = finishedAt ?? 0
        summary.trigger = trigger
        summary.pipelineVersion = UInt64(pipelineVersionID)
        summary.triggeredBy = triggeredBy
        summary.commit = commit
        summary.inputs = inputs
        return summary
    }
}

extension AttemptRecord {
    var proto: Heddle_V1_AttemptSummary {
        var summary = Heddle_V1_AttemptSummary()
        summary.number = UInt32(number)
        summary.status = status.proto
        summary.trigger = trigger
        summary.triggeredBy = triggeredBy
        summary.createdAtMs = createdAt
        summary.startedAtMs = startedAt ?? 0
        summary.finishedAtMs = finishedAt ?? 0
        return summary
    }
}

extension ArtifactRecord {
    var proto: Heddle_V1_ArtifactInfo {
        var info = Heddle_V1_ArtifactInfo()
        info.id = UInt64(id)
        info.runID = UInt64(runID)
        info.jobID = UInt64(jobID)
        info.job = job
        info.name = name
        info.size = UInt64(size)
        info.sha256 = Data(hexString: sha256) ?? Data()
        info.attempt = UInt32(attempt)
        info.project = project
        info.pipeline = pipeline
        info.branch = branch
        info.createdAtMs = createdAt
        return info
    }
}

extension PipelineVersionRecord {
    var proto: Heddle_V1_PipelineInfo {
        var info = Heddle_V1_PipelineInfo()
        info.project = project
        info.pipeline = pipeline
        info.version = UInt32(version)
        info.updatedAtMs = createdAt
        info.jobs = jobs
        info.inputs = inputs.map { input in
            var proto = Heddle_V1_PipelineInput()
            proto.name = input.name
            proto.required = input.defaultValue == nil
            proto.defaultValue = input.defaultValue ?? ""
            proto.options = input.options
            proto.description_p = input.description
            return proto
        }
        return info
    }
}

extension ProjectRecord {
    var proto: Heddle_V1_ProjectInfo {
        var info = Heddle_V1_ProjectInfo()
        info.name = name
        info.repository = repository
        info.createdAtMs = createdAt
        info.webhookEnabled = hasWebhook
        return info
    }
}

extension CacheEntryRecord {
    var proto: Heddle_V1_CacheInfo {
        var out = Heddle_V1_CacheInfo()
        out.id = UInt64(id)
        out.project = project
        out.branch = branch
        out.key = key
        out.size = UInt64(size)
        out.sha256 = sha256
        out.createdAtMs = createdAt
        out.lastUsedAtMs = lastUsedAt
        out.hits = UInt64(hits)
        return out
    }
}

extension DeliveryRecord {
    var proto: Heddle_V1_Delivery {
        var out = Heddle_V1_Delivery()
        out.forge = forge
        out.deliveryID = deliveryID
        out.event = event
        out.receivedAtMs = receivedAt
        out.outcome = outcome.rawValue
        out.detail = detail
        out.runIds = runIDs.map { UInt64($0) }
        return out
    }
}

extension ScheduleInfo {
    var proto: Heddle_V1_ScheduleInfo {
        var out = Heddle_V1_ScheduleInfo()
        out.project = project
        out.pipeline = pipeline
        out.cron = cron
        out.timezone = timeZone
        out.branch = branch
        out.nextDueMs = nextDue ?? 0
        out.lastDueMs = lastDue ?? 0
        out.lastRunID = UInt64(lastRunID ?? 0)
        return out
    }
}

extension QueueEntry {
    var proto: Heddle_V1_QueueEntry {
        var entry = Heddle_V1_QueueEntry()
        entry.jobID = UInt64(jobID)
        entry.runID = UInt64(runID)
        entry.attempt = UInt32(attempt)
        entry.project = project
        entry.pipeline = pipeline
        entry.job = job
        entry.branch = branch
        entry.labels = labels
        entry.status = status.proto
        entry.runner = runner ?? ""
        entry.queuedAtMs = queuedAt
        entry.position = UInt32(position ?? 0)
        entry.waitingReason = waitingReason ?? ""
        return entry
    }
}

extension CancelResult {
    var proto: Heddle_V1_CancelResult {
        var result = Heddle_V1_CancelResult()
        result.jobs = jobs.map(\.proto)
        result.count = UInt32(count)
        return result
    }
}

extension QueueList {
    var proto: Heddle_V1_QueueList {
        var list = Heddle_V1_QueueList()
        list.jobs = jobs.map(\.proto)
        list.total = UInt32(total)
        return list
    }
}

extension RunDetail {
    var proto: Heddle_V1_RunDetail {
        var detail = Heddle_V1_RunDetail()
        detail.run = run.proto
        detail.jobs = jobs.map(\.proto)
        detail.attempts = attempts.map(\.proto)
        return detail
    }
}

extension JobDetail {
    /// As a job event with everything set, plus what only a detail carries.
    var proto: Heddle_V1_JobDetail {
        var out = JobEvent(id: job.id, name: job.name, status: job.status, runner: job.runner, startedAt: job.startedAt,
                           finishedAt: job.finishedAt, reason: job.reason, labels: job.labels, attempt: job.attempt,
                           nodes: nodes.map {
                               NodeEvent(name: $0.name, status: $0.status, startedAt: $0.startedAt,
                                         finishedAt: $0.finishedAt, exitCode: $0.exitCode)
                           }).proto
        out.commit = job.commit
        out.queuedAtMs = job.queuedAt
        out.carriedFromAttempt = UInt32(carriedFromAttempt ?? 0)
        for (index, node) in nodes.enumerated() { out.nodes[index].needs = node.needs }
        return out
    }
}

extension RunnerInfo {
    var proto: Heddle_V1_RunnerInfo {
        var info = Heddle_V1_RunnerInfo()
        info.name = name
        info.labels = labels
        info.capacity = UInt32(capacity)
        info.running = UInt32(running)
        info.connectedAtMs = connectedAt
        info.lastHeartbeatMs = lastHeartbeat
        info.sessionID = String(sessionID)
        info.drained = drained
        info.stalled = stalled ?? ""
        info.softwareVersion = software
        info.protocolVersion = protocolVersion
        return info
    }
}

extension JobEvent {
    var proto: Heddle_V1_JobDetail {
        var detail = Heddle_V1_JobDetail()
        detail.id = UInt64(id)
        detail.name = name
        detail.status = status.proto
        detail.runner = runner ?? ""
        detail.startedAtMs = startedAt ?? 0
        detail.finishedAtMs = finishedAt ?? 0
        detail.reason = reason
        detail.labels = labels
        detail.attempt = UInt32(attempt)
        detail.nodes = nodes.map { node in
            var n = Heddle_V1_NodeDetail()
            n.name = node.name
            n.status = node.status.proto
            n.startedAtMs = node.startedAt ?? 0
            n.finishedAtMs = node.finishedAt ?? 0
            if let exitCode = node.exitCode {
                n.exitCode = Int32(clamping: exitCode)
                n.exited = true
            }
            return n
        }
        return detail
    }
}

extension WatchEvent {
    var proto: Heddle_V1_WatchEvent {
        var event = Heddle_V1_WatchEvent()
        switch self {
        case .log(let chunk):
            event.log.jobID = UInt64(chunk.jobID)
            event.log.job = chunk.job
            event.log.node = chunk.node
            event.log.offset = chunk.offset
            event.log.data = chunk.data
            event.log.dropped = chunk.dropped
            event.log.times = chunk.times.map {
                var mark = Heddle_V1_LogTime()
                mark.offset = UInt64(max(0, $0.offset))
                mark.atMs = $0.at
                return mark
            }
        case .job(let job):
            event.job = job.proto
        case .end(let run):
            event.end = run.proto
        }
        return event
    }
}

extension SecretList {
    var proto: Heddle_V1_SecretList {
        var list = Heddle_V1_SecretList()
        list.project = project
        list.forksAllowed = forksAllowed
        list.secrets = secrets.map {
            var info = Heddle_V1_SecretInfo()
            info.name = $0.name
            info.createdAtMs = $0.createdAt
            info.updatedAtMs = $0.updatedAt
            return info
        }
        return list
    }
}

extension QueueEvent {
    var proto: Heddle_V1_QueueEvent {
        var event = Heddle_V1_QueueEvent()
        event.kind = switch kind {
        case .queued: .queued
        case .moved: .moved
        case .claimed: .claimed
        case .finished: .finished
        case .cancelled: .cancelled
        }
        event.job = entry.proto
        return event
    }
}

extension JobAssignment {
    var proto: Heddle_V1_Assignment {
        var message = Heddle_V1_Assignment()
        message.job.jobID = UInt64(lease.jobID)
        message.job.attempt = UInt32(attempt)
        message.job.epoch = UInt64(lease.epoch)
        message.repository = repository
        message.commit = commit
        message.runID = UInt64(runID)
        message.project = project
        message.pipeline = pipeline
        message.jobName = jobName
        message.branch = branch
        message.env = env
        if let cache {
            message.cache.key = cache.key
            message.cache.paths = cache.paths
            message.cache.restoreKeys = cache.restoreKeys
        }
        message.nodes = nodes.map { node in
            var spec = Heddle_V1_NodeSpec()
            spec.name = node.name
            spec.run = node.run
            spec.needs = node.needs
            spec.env = node.env
            spec.timeoutSeconds = UInt32(clamping: node.timeout ?? 0)
            spec.killGraceSeconds = UInt32(clamping: node.grace ?? 0)
            spec.artifacts = node.artifacts
            spec.noNetwork = !node.network
            spec.memoryLimitBytes = UInt64(clamping: node.limits.memory ?? 0)
            spec.cpuLimitMillis = UInt32(clamping: node.limits.cpuMillis ?? 0)
            spec.pidsLimit = UInt32(clamping: node.limits.pids ?? 0)
            spec.secrets = secrets[node.name] ?? [:]
            spec.image = node.image
            return spec
        }
        return message
    }
}

extension Envelope {
    /// The frame that carries an event the core pushes to a session.
    init(_ event: SessionEvent) {
        switch event {
        case .assignment(let assignment):
            self.init(.assignment(assignment.proto))
        case .stopJob(let jobID, let epoch, let reason, let abandon):
            self = .stopJob(UInt64(jobID), epoch: UInt64(epoch), reason: reason, abandon: abandon)
        case .logAck(let jobID, let epoch, let node, let durable, let resend):
            var ack = Heddle_V1_LogAck()
            ack.jobID = UInt64(jobID)
            ack.epoch = UInt64(epoch)
            ack.resend = resend
            ack.node = node
            ack.durableOffset = durable
            self.init(.logAck(ack))
        case .subscribed(let requestID):
            self = .ok(id: requestID)
        case .watch(let requestID, let event):
            self.init(id: requestID, .watchEvent(event.proto))
        case .queue(let requestID, let event):
            self.init(id: requestID, .queueEvent(event.proto))
        case .failure(let error):
            self = .error(WireError(error))
        }
    }
}

extension TokenRecord {
    var proto: Heddle_V1_Token {
        var out = Heddle_V1_Token()
        out.name = name
        out.role = role.rawValue
        out.createdAtMs = createdAt
        out.expiresAtMs = expiresAt ?? 0
        out.revokedAtMs = revokedAt ?? 0
        return out
    }
}
