import Foundation

// What the core answers and publishes: plain values a front renders its own way.

/// A running or queued job as the queue shows it.
public struct QueueEntry: Sendable, Equatable {
    public var jobID: Int64
    public var runID: Int64
    public var attempt: Int
    public var project: String
    public var pipeline: String
    public var job: String
    public var branch: String
    public var labels: [String]
    public var status: Status
    public var runner: String?
    public var queuedAt: Int64
    /// 1-based place among queued jobs; nil unless queued.
    public var position: Int?
    /// Why no connected runner can take it, for a queued job nobody can take.
    public var waitingReason: String?
}

public struct QueueList: Sendable, Equatable {
    /// Running jobs first, then queued ones in dispatch order.
    public var jobs: [QueueEntry]
    /// Jobs running and queued, listed or not.
    public var total: Int
}

public struct CancelResult: Sendable, Equatable {
    /// Jobs listed in a cancel result; `count` has them all.
    public static let maximumListedJobs = 1000

    /// The first `maximumListedJobs` jobs affected.
    public var jobs: [QueueEntry]
    /// Every job affected.
    public var count: Int

    public init(jobs: [QueueEntry], count: Int) {
        self.jobs = jobs
        self.count = count
    }

    /// The result of cancelling `entries`: the first `maximumListedJobs` listed, all counted.
    init(_ entries: [QueueEntry]) {
        self.init(jobs: Array(entries.prefix(Self.maximumListedJobs)), count: entries.count)
    }
}

/// A run attempt with its jobs and their nodes.
public struct RunDetail: Sendable, Equatable {
    /// The run as of the attempt shown (status, trigger and times are the attempt's).
    public var run: RunRecord
    public var jobs: [JobDetail]
    /// Every attempt of the run, first to last.
    public var attempts: [AttemptRecord] = []
}

/// A job with its nodes; the job's fields read through (`detail.status`).
@dynamicMemberLookup
public struct JobDetail: Sendable, Equatable {
    public var job: JobRecord
    public var nodes: [NodeRecord]
    /// Carried over by a re-run of the failed jobs: the attempt the job ran in.
    public var carriedFromAttempt: Int?

    public subscript<T>(dynamicMember field: KeyPath<JobRecord, T>) -> T { job[keyPath: field] }
}

public struct RunnerInfo: Sendable, Equatable {
    public var name: String
    public var labels: [String]
    public var capacity: Int
    public var running: Int
    public var connectedAt: Int64
    public var lastHeartbeat: Int64
    public var sessionID: UInt64
    public var drained: Bool
    /// Why its jobs make no progress now (the coordinator's storage is full), or nil.
    public var stalled: String? = nil
    /// The runner's software version and protocol version, as its Hello said.
    public var software: String = ""
    public var protocolVersion: String = ""
}

public struct ArtifactSlice: Sendable, Equatable {
    public var artifact: ArtifactRecord
    public var offset: Int64
    public var data: Data
}

/// One event of a watched run attempt.
public enum WatchEvent: Sendable, Equatable {
    case log(LogChunk)
    case job(JobEvent)
    /// Nothing follows: the attempt as it is now.
    case end(RunRecord)
}

public struct LogChunk: Sendable, Equatable {
    public var jobID: Int64
    public var job: String
    public var node: String
    public var offset: UInt64
    public var data: Data
    /// Bytes before `offset` that are not kept (the log passed its size limit).
    public var dropped: UInt64 = 0
    /// When its bytes were read: the marks in it, and the last one before it.
    public var times: [LogTime] = []
}

/// The bytes of a node log from `offset` on were read at `at` (the runner's clock, Unix
/// milliseconds), until the next mark.
public struct LogTime: Sendable, Equatable {
    public var offset: Int64
    public var at: Int64

    public init(offset: Int64, at: Int64) {
        self.offset = offset
        self.at = at
    }
}

extension [LogTime] {
    /// The marks from `offset` on, the one in force at `offset` moved there.
    func from(_ offset: Int64) -> [LogTime] {
        let before = last { $0.offset <= offset }
        var kept = filter { $0.offset > offset }
        if let before { kept.insert(LogTime(offset: offset, at: before.at), at: 0) }
        return kept
    }
}

/// A job changed: what changed is set (a node event carries only that node).
public struct JobEvent: Sendable, Equatable {
    public var id: Int64
    public var name: String
    public var status: Status
    public var runner: String?
    public var startedAt: Int64?
    public var finishedAt: Int64?
    public var reason: String = ""
    public var labels: [String] = []
    public var attempt: Int
    public var nodes: [NodeEvent] = []
}

public struct NodeEvent: Sendable, Equatable {
    public var name: String
    public var status: Status
    public var startedAt: Int64?
    public var finishedAt: Int64?
    public var exitCode: Int?
}

public struct QueueEvent: Sendable, Equatable {
    public enum Kind: String, Sendable, Equatable {
        case queued, moved, claimed, finished, cancelled
    }

    public var kind: Kind
    public var entry: QueueEntry
}

/// A piece of a node log (`CoordinatorCore.readLog`).
public struct LogPiece: Sendable, Equatable {
    /// Where `data` starts: past the offset asked for when bytes there were dropped (the log
    /// passed its size limit).
    public var offset: Int64
    /// At most 1 MiB; empty at the end of what is stored.
    public var data: Data
    /// The log's durable length now.
    public var length: Int64
    /// Whether the job is finished (the log grows no more).
    public var finished: Bool
}
