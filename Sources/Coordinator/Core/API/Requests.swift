import Foundation

// What callers other than runners ask of the core. Optional fields are the caller's "not
// given"; the core applies the defaults, so every front gets the same ones.

public struct PipelinePush: Sendable {
    public var project: String
    /// Shown in parse errors; nil: "pipeline.act".
    public var fileName: String?
    public var source: String

    public init(project: String, fileName: String? = nil, source: String) {
        self.project = project
        self.fileName = fileName
        self.source = source
    }
}

public struct TriggerRequest: Sendable {
    public var project: String
    public var pipeline: String
    /// Nil: "main".
    public var branch: String?
    /// Nil: the branch's head when a job starts; else exactly this commit (its full id).
    public var commit: String?
    /// Values of the pipeline's inputs; those not given take their defaults.
    public var inputs: [String: String]

    public init(project: String, pipeline: String, branch: String? = nil, commit: String? = nil, inputs: [String: String] = [:]) {
        self.project = project
        self.pipeline = pipeline
        self.branch = branch
        self.commit = commit
        self.inputs = inputs
    }
}

/// A run attempt just made (by a trigger or a re-run).
public struct Triggered: Sendable, Equatable {
    public var runID: Int64
    public var attempt: Int
}

public struct RunQuery: Sendable {
    /// Runs a page holds (`ListLimit.runs`; nil: its default).
    public var limit: Int?
    public var filter: RunFilter

    public init(limit: Int? = nil, filter: RunFilter = RunFilter()) {
        self.limit = limit
        self.filter = filter
    }
}

/// Cancels every queued job matching all the given filters.
public struct BulkCancelRequest: Sendable {
    public var project: String?
    public var pipeline: String?
    public var branch: String?
    public var label: String?
    /// Lists what would be cancelled, and cancels nothing.
    public var dryRun: Bool

    public init(project: String? = nil, pipeline: String? = nil, branch: String? = nil, label: String? = nil,
                dryRun: Bool = false) {
        self.project = project
        self.pipeline = pipeline
        self.branch = branch
        self.label = label
        self.dryRun = dryRun
    }
}

/// A subscription to one run attempt's log bytes and changes.
public struct WatchRequest: Sendable {
    public var runID: Int64
    /// Nil: the latest.
    public var attempt: Int?
    /// Only this job's events (nil: every job).
    public var job: String?
    /// Only this node's log bytes (nil: every node).
    public var node: String?
    /// Whether log bytes are wanted (else only job changes and the end).
    public var logs: Bool
    /// Whether to stay for live events until the attempt ends (else the end follows the
    /// stored bytes at once).
    public var follow: Bool
    /// Log bytes before this offset (of every node log watched) are not sent: a reader
    /// resuming where it stopped.
    public var from: UInt64

    public init(runID: Int64, attempt: Int? = nil, job: String? = nil, node: String? = nil, logs: Bool = true,
                follow: Bool = false, from: UInt64 = 0) {
        self.runID = runID
        self.attempt = attempt
        self.job = job
        self.node = node
        self.logs = logs
        self.follow = follow
        self.from = from
    }
}

/// Where a queued job moves.
public enum MoveTarget: Sendable, Equatable {
    case top, bottom
    case before(Int64), after(Int64)
    /// A 1-based place in the queue.
    case position(Int)
}

/// A piece of an artifact's bytes to read.
public struct ArtifactRead: Sendable {
    public var artifactID: Int64
    public var offset: Int64
    /// Nil: the most one piece may have.
    public var length: Int?

    public init(artifactID: Int64, offset: Int64 = 0, length: Int? = nil) {
        self.artifactID = artifactID
        self.offset = offset
        self.length = length
    }
}

/// A piece of one node log to read.
public struct LogRead: Sendable {
    public var runID: Int64
    /// Nil: the latest.
    public var attempt: Int?
    public var job: String
    public var node: String
    public var offset: Int64

    public init(runID: Int64, attempt: Int? = nil, job: String, node: String, offset: Int64 = 0) {
        self.runID = runID
        self.attempt = attempt
        self.job = job
        self.node = node
        self.offset = offset
    }
}
