import Foundation

// What a runner tells the core, and what the core tells a runner, in the core's own types.

/// A job as one lease holds it: a write about the job counts only with the current epoch.
/// What a runner runs, as of one of its heartbeats: its jobs (assignments received and neither
/// finished nor abandoned) and the greatest epoch it was assigned.
public struct RunningJobs: Sendable, Equatable {
    public var jobs: [LeaseRef]
    public var assignedThrough: Int64

    public init(jobs: [LeaseRef], assignedThrough: Int64) {
        self.jobs = jobs
        self.assignedThrough = assignedThrough
    }
}

public struct LeaseRef: Sendable, Hashable, CustomStringConvertible {
    public var jobID: Int64
    public var epoch: Int64

    public init(jobID: Int64, epoch: Int64) {
        self.jobID = jobID
        self.epoch = epoch
    }

    public var description: String { "job \(jobID) (epoch \(epoch))" }
}

/// A runner's session starts: what it offers and what it still runs from before.
public struct RunnerHello: Sendable {
    public var labels: [String]
    public var capacity: Int
    public var running: [LeaseRef]
    /// What the runner says it is ("0.2.0"; empty when it said nothing), and the protocol
    /// version it speaks ("1.1"), shown in runner listings.
    public var software: String
    public var protocolVersion: String

    public init(labels: [String], capacity: Int, running: [LeaseRef] = [], software: String = "",
                protocolVersion: String = "") {
        self.labels = labels
        self.capacity = capacity
        self.running = running
        self.software = software
        self.protocolVersion = protocolVersion
    }
}

/// A job handed to a runner: everything needed to run it.
public struct JobAssignment: Sendable {
    public var lease: LeaseRef
    public var attempt: Int
    public var runID: Int64
    public var project: String
    public var pipeline: String
    public var jobName: String
    public var branch: String
    /// Empty: no checkout.
    public var repository: String
    /// Empty: check out the branch's head; else exactly this commit.
    public var commit: String = ""
    public var env: [String: String]
    /// In the pipeline's order.
    public var nodes: [NodeRecord]
    /// The values of the secrets each node names, by node and name.
    public var secrets: [String: [String: String]] = [:]
    /// The job's `cache:`, or nil.
    public var cache: CacheDefinition?

    /// An upper bound of its encoded size.
    var estimatedBytes: Int {
        nodes.reduce(0) { $0 + AssignmentSize.node(name: $1.name, run: $1.run, needs: $1.needs, env: $1.env, artifacts: $1.artifacts,
                                                       image: $1.image) }
            + 128 + AssignmentSize.strings([project, pipeline, jobName, branch, repository, commit])
            + env.reduce(0) { $0 + 12 + $1.key.utf8.count + $1.value.utf8.count }
            + secrets.values.reduce(0) { $0 + $1.reduce(0) { $0 + 12 + $1.key.utf8.count + $1.value.utf8.count } }
            + (cache.map { AssignmentSize.strings([$0.key] + $0.paths + $0.restoreKeys) } ?? 0)
    }
}

extension JobAssignment {
    /// The assignment of a job just claimed at `epoch`, with the environment every node gets.
    init(_ claimed: ClaimedJob, epoch: Int64, secrets: [String: [String: String]] = [:]) {
        let (job, run) = (claimed.job, claimed.run)
        self.init(lease: LeaseRef(jobID: job.id, epoch: epoch), attempt: job.attempt, runID: run.id,
                  project: run.project, pipeline: run.pipeline, jobName: job.name, branch: run.branch,
                  repository: claimed.repository, commit: run.commit,
                  env: ["HEDDLE_RUN_ID": String(run.id), "HEDDLE_ATTEMPT": String(job.attempt),
                        "HEDDLE_JOB": job.name, "HEDDLE_BRANCH": run.branch,
                        "HEDDLE_PROJECT": run.project, "HEDDLE_PIPELINE": run.pipeline]
                    .merging(run.inputs.map { (InputDefinition(name: $0.key).environmentName, $0.value) }) { first, _ in first },
                  nodes: claimed.nodes, secrets: secrets, cache: job.cache)
    }
}

/// A node started or ended.
public struct NodeReport: Sendable {
    public var job: LeaseRef
    public var node: String
    /// Nil when the runner sent a value that is no status.
    public var status: Status?
    public var exitCode: Int?
    /// When it happened (milliseconds since 1970); nil: now.
    public var at: Int64?

    public init(job: LeaseRef, node: String, status: Status?, exitCode: Int? = nil, at: Int64? = nil) {
        self.job = job
        self.node = node
        self.status = status
        self.exitCode = exitCode
        self.at = at
    }
}

/// Bytes of a node's log at an offset.
public struct LogBytes: Sendable {
    public var job: LeaseRef
    public var node: String
    public var offset: UInt64
    public var data: Data
    /// When the runner read the bytes from each mark's offset on.
    public var times: [LogTime]

    public init(job: LeaseRef, node: String, offset: UInt64, data: Data, times: [LogTime] = []) {
        self.job = job
        self.node = node
        self.offset = offset
        self.data = data
        self.times = times
    }
}

/// A job's workspace is ready at `commit` (empty without a repository).
public struct JobStart: Sendable {
    public var job: LeaseRef
    public var commit: String

    public init(job: LeaseRef, commit: String) {
        self.job = job
        self.commit = commit
    }
}

/// What the runner says a job ended as (the core derives the stored result from its nodes).
public struct JobResult: Sendable {
    public var job: LeaseRef
    /// Nil when the runner sent a value that is no status.
    public var status: Status?
    public var reason: String

    public init(job: LeaseRef, status: Status?, reason: String) {
        self.job = job
        self.status = status
        self.reason = reason
    }
}

/// An artifact a job is about to upload.
public struct ArtifactDeclaration: Sendable {
    public var job: LeaseRef
    public var name: String
    public var size: UInt64
    /// The SHA-256 of its bytes (32 bytes).
    public var sha256: Data

    public init(job: LeaseRef, name: String, size: UInt64, sha256: Data) {
        self.job = job
        self.name = name
        self.size = size
        self.sha256 = sha256
    }
}

/// Where an upload stands: its id and the bytes already taken (0 for a new one).
public struct UploadGrant: Sendable, Equatable {
    public var uploadID: UInt64
    public var committedOffset: UInt64
}

public struct ArtifactBytes: Sendable {
    public var job: LeaseRef
    public var uploadID: UInt64
    public var offset: UInt64
    public var data: Data

    public init(job: LeaseRef, uploadID: UInt64, offset: UInt64, data: Data) {
        self.job = job
        self.uploadID = uploadID
        self.offset = offset
        self.data = data
    }
}
