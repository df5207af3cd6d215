import Foundation
import Wire

/// Status of a run, job or node, as stored and shown.
public enum Status: String, Sendable, Codable, CaseIterable {
    case queued, pending, running, succeeded, failed, cancelled, skipped

    public var isFinished: Bool {
        switch self {
        case .succeeded, .failed, .cancelled, .skipped: true
        case .queued, .pending, .running: false
        }
    }
}

public struct RunRecord: Sendable, Equatable {
    public var id: Int64
    public var project: String
    public var pipeline: String
    public var pipelineVersionID: Int64
    public var branch: String
    public var status: Status
    public var attempt: Int
    public var trigger: String
    public var createdAt: Int64
    public var startedAt: Int64?
    public var finishedAt: Int64?
    /// Who started the latest attempt: a token's or certificate's name, or a forge's delivery.
    public var triggeredBy: String = ""
    /// The commit the run is of (a webhook's push), checked out exactly; empty: the branch's
    /// head when a job starts.
    public var commit: String = ""
    /// Started by a pull request from another repository (a fork): it gets the project's
    /// secrets only when the project allows it; kept by every re-run.
    public var fork: Bool = false
    /// The values of the pipeline's inputs (`inputs:`), the defaults filled in; kept by every
    /// re-run.
    public var inputs: [String: String] = [:]
}

public struct JobRecord: Sendable, Equatable {
    public var id: Int64
    public var runID: Int64
    public var attempt: Int
    public var name: String
    public var labels: [String]
    public var status: Status
    public var runner: String?
    public var epoch: Int64
    public var position: Double
    public var queuedAt: Int64
    public var startedAt: Int64?
    public var finishedAt: Int64?
    public var reason: String
    public var commit: String = ""
    /// How often the job goes back to the queue when its runner is lost (`retry: {lost: N}`).
    public var retryLost: Int = 0
    /// How often it already did.
    public var lostCount: Int = 0
    /// Carried over from an earlier attempt by a re-run of the failed jobs only: that
    /// attempt's job, whose logs and artifacts this one shows (it did not run again).
    public var carriedFrom: Int64?
    /// Files kept between runs (the pipeline's `cache:` of the job), or nil.
    public var cache: CacheDefinition?

    /// The job whose logs this one's are: its own, or the one it was carried over from.
    public var logJobID: Int64 { carriedFrom ?? id }
}

public struct UploadRecord: Sendable, Equatable {
    public var id: Int64
    public var jobID: Int64
    public var name: String
    public var size: Int64
    public var sha256: String
}

/// A revoked certificate: by name (every certificate of that name issued up to `revokedAt`)
/// or by fingerprint (exactly one).
public struct Revocation: Sendable, Equatable {
    public var name: String?
    public var fingerprint: String?
    public var revokedAt: Int64
}

public struct AttemptRecord: Sendable, Equatable {
    public var runID: Int64
    public var number: Int
    public var status: Status
    public var trigger: String
    public var createdAt: Int64
    public var startedAt: Int64?
    public var finishedAt: Int64?
    /// Who started it: a token's or certificate's name, or a forge's delivery.
    public var triggeredBy: String = ""
}

public struct ProjectRecord: Sendable, Equatable {
    public var name: String
    public var repository: String
    public var createdAt: Int64
    /// It has a webhook secret: forges may start its pipelines.
    public var hasWebhook: Bool = false
    /// Runs of pull requests from forks get its secrets.
    public var forkSecrets: Bool = false
}

/// A project's secret as lists show it: never its value.
public struct SecretRecord: Sendable, Equatable {
    public var name: String
    public var createdAt: Int64
    public var updatedAt: Int64
}

public struct RunFilter: Sendable, Equatable {
    public var project: String?
    public var pipeline: String?
    public var branch: String?
    public var status: Status?
    /// How the run's latest attempt was started ("manual", "api").
    public var trigger: String?
    /// Only runs with a smaller id (the cursor of the page before).
    public var before: Int64?

    public init(project: String? = nil, pipeline: String? = nil, branch: String? = nil, status: Status? = nil,
                trigger: String? = nil, before: Int64? = nil) {
        self.project = project
        self.pipeline = pipeline
        self.branch = branch
        self.status = status
        self.trigger = trigger
        self.before = before
    }
}

/// An API token as stored: the SHA-256 of its secret, never the secret.
public struct TokenRecord: Sendable, Equatable {
    public var name: String
    public var role: Role
    public var secretSHA256: String
    public var createdAt: Int64
    public var expiresAt: Int64?
    public var revokedAt: Int64?
}

/// A browser's signed-in session, as stored: the SHA-256 of its secret (the cookie's value)
/// and the token it was opened with, whose role and validity it has.
public struct WebSessionRecord: Sendable, Equatable {
    public var secretSHA256: String
    public var tokenName: String
    public var createdAt: Int64
    public var expiresAt: Int64

    public init(secretSHA256: String, tokenName: String, createdAt: Int64, expiresAt: Int64) {
        self.secretSHA256 = secretSHA256
        self.tokenName = tokenName
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }
}

public struct NodeRecord: Sendable, Equatable {
    public var jobID: Int64
    public var name: String
    public var ordinal: Int
    public var run: String
    public var needs: [String]
    public var env: [String: String]
    public var timeout: Int?
    public var grace: Int?
    public var artifacts: [String]
    /// False: no network but loopback (`network: none`).
    public var network: Bool = true
    /// Resource limits (`limits:`); unset: the runner's.
    public var limits = ResourceLimits()
    /// The project's secrets it is given (`secrets:`), by name.
    public var secrets: [String] = []
    /// The container image it runs in (`image:`); empty: none.
    public var image: String = ""
    public var status: Status
    public var exitCode: Int?
    public var startedAt: Int64?
    public var finishedAt: Int64?
}

public struct ArtifactRecord: Sendable, Equatable {
    public var id: Int64
    public var runID: Int64
    public var jobID: Int64
    public var attempt: Int
    public var job: String
    public var name: String
    public var size: Int64
    public var sha256: String
    public var createdAt: Int64 = 0
    public var project: String = ""
    public var pipeline: String = ""
    public var branch: String = ""
}

/// A search across every run's artifacts: every filter given must match.
public struct ArtifactQuery: Sendable, Equatable {
    public enum Sort: String, Sendable, CaseIterable {
        case newest, oldest, largest, smallest, name
    }

    /// A substring of the name (any case), or a glob (`*`, `?`, `[...]`, case-sensitive) of the
    /// whole name.
    public var name: String?
    public var project: String?
    public var pipeline: String?
    public var branch: String?
    public var runID: Int64?
    /// Lower-case hex digits the SHA-256 starts with.
    public var sha256Prefix: String?
    public var minimumSize: Int64?
    public var maximumSize: Int64?
    /// Milliseconds since 1970: made at or after.
    public var createdAfter: Int64?
    /// Milliseconds since 1970: made before.
    public var createdBefore: Int64?
    public var sort: Sort
    /// Nil: `ListLimit.artifacts`' default.
    public var limit: Int?
    public var offset: Int

    /// Rows a store returns for it.
    var rows: Int { limit ?? ListLimit.artifacts.byDefault }

    /// Whether a filter other than the name is given.
    public var hasFiltersBesideName: Bool {
        let texts: [String?] = [project, pipeline, branch, sha256Prefix]
        let numbers: [Int64?] = [runID, minimumSize, maximumSize, createdAfter, createdBefore]
        return texts.contains { $0 != nil } || numbers.contains { $0 != nil }
    }

    public init(name: String? = nil, project: String? = nil, pipeline: String? = nil, branch: String? = nil,
                runID: Int64? = nil, sha256Prefix: String? = nil, minimumSize: Int64? = nil, maximumSize: Int64? = nil,
                createdAfter: Int64? = nil, createdBefore: Int64? = nil, sort: Sort = .newest, limit: Int? = nil, offset: Int = 0) {
        self.name = name
        self.project = project
        self.pipeline = pipeline
        self.branch = branch
        self.runID = runID
        self.sha256Prefix = sha256Prefix
        self.minimumSize = minimumSize
        self.maximumSize = maximumSize
        self.createdAfter = createdAfter
        self.createdBefore = createdBefore
        self.sort = sort
        self.limit = limit
        self.offset = offset
    }
}

public struct PipelineVersionRecord: Sendable {
    public var id: Int64
    public var project: String
    public var pipeline: String
    public var version: Int
    public var source: String
    public var createdAt: Int64
    public var jobs: [String]
    /// Its inputs, as the catalog's parse of `source` has them (stores leave them empty:
    /// `Catalog.pipelines` and `pushPipeline` fill them in).
    public var inputs: [InputDefinition] = []
}

/// A saved cache (`cache:` of a job): its files as one tar archive, a blob by SHA-256.
public struct CacheEntryRecord: Sendable, Equatable {
    public var id: Int64
    public var project: String
    /// The branch of the run that saved it.
    public var branch: String
    public var key: String
    /// Lower-case hex of the archive's SHA-256 (the blob's name).
    public var sha256: String
    public var size: Int64
    public var createdAt: Int64
    public var lastUsedAt: Int64
    /// How often a job restored it.
    public var hits: Int64
}

/// The latest due time of a pipeline's schedule that started a run (`schedule_start`).
public struct ScheduleStart: Sendable, Equatable {
    public var project: String
    public var pipeline: String
    /// `Schedule.key`.
    public var schedule: String
    /// Milliseconds since the epoch.
    public var due: Int64
    /// The run that due time started.
    public var runID: Int64?

    public init(project: String, pipeline: String, schedule: String, due: Int64, runID: Int64? = nil) {
        self.project = project
        self.pipeline = pipeline
        self.schedule = schedule
        self.due = due
        self.runID = runID
    }
}

/// What a cancel of queued jobs changed in the store.
public struct CancelledJobs: Sendable {
    /// The jobs that were still queued and are now cancelled.
    public var jobIDs: Set<Int64>
    /// Their runs, as they are afterwards.
    public var runs: [RunRecord]
}

public struct JobClaim: Sendable {
    public var jobID: Int64
    public var runner: String
    public var epoch: Int64
}

/// A job just claimed, with what its assignment carries.
public struct ClaimedJob: Sendable {
    public var job: JobRecord
    public var run: RunRecord
    public var nodes: [NodeRecord]
    public var repository: String
    /// The secrets its nodes name that the project has, sealed (`SecretBox`), by name.
    public var sealedSecrets: [String: [UInt8]] = [:]
    /// The project gives its secrets to runs of forks' pull requests.
    public var forkSecrets: Bool = false
}

public struct LogEnd: Sendable, Equatable {
    public var jobID: Int64
    public var node: String
    public var length: Int64
    /// For a write: the epoch of the lease the bytes came under (nil: not fenced).
    public var epoch: Int64? = nil
}

public struct LogChunkRecord: Sendable, Equatable {
    public var jobID: Int64
    public var node: String
    public var offset: Int64
    public var data: Data
}

extension Data {
    /// The bytes of an even number of hex digits, or nil.
    public init?(hexString: String) {
        guard hexString.count % 2 == 0 else { return nil }
        var bytes = [UInt8]()
        bytes.reserveCapacity(hexString.count / 2)
        var index = hexString.startIndex
        while index < hexString.endIndex {
            let next = hexString.index(index, offsetBy: 2)
            guard let byte = UInt8(hexString[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        self.init(bytes)
    }
}

/// A webhook delivery and what came of it.
public struct DeliveryRecord: Sendable, Equatable {
    public enum Outcome: String, Sendable {
        /// Runs were created.
        case triggered
        /// Understood, and nothing to start (no pipeline matches, a deleted branch, a ping).
        case ignored
        /// Signed correctly but not usable (a malformed payload).
        case refused
    }

    public var project: String
    public var forge: String
    public var deliveryID: String
    public var event: String
    public var receivedAt: Int64
    public var outcome: Outcome
    public var detail: String
    public var runIDs: [Int64]
}
