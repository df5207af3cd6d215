import Metrics

/// What the coordinator counts, through swift-metrics (the binary bootstraps a Prometheus
/// backend and serves it at `/metrics`; without one, these cost nothing). Gauges of the
/// present state (queue, runners) are read when scraped (`CoordinatorCore.gauges`).
enum CoreMetrics {
    static func jobFinished(_ status: Status, count: Int = 1) {
        Counter(label: "heddle_jobs_finished_total", dimensions: [("status", status.rawValue)]).increment(by: count)
    }

    static let logBytes = Counter(label: "heddle_log_bytes_total")
    static let artifactBytes = Counter(label: "heddle_artifact_bytes_total")
    static let artifactsStored = Counter(label: "heddle_artifacts_total")
    /// One log group commit: bytes written and synced, and their lengths stored.
    static let logCommit = Timer(label: "heddle_log_commit_seconds")
    /// One store batch (a transaction of up to 512 writes).
    static let storeCommit = Timer(label: "heddle_store_commit_seconds")
}

/// The present state, for gauges.
public struct CoordinatorGauges: Sendable {
    public var queued: Int
    public var running: Int
    public var runnersConnected: Int
    public var runnersDrained: Int
    public var sessions: Int
    public var storageFull: Bool
}

extension CoordinatorCore {
    /// The present state. In a cluster the queue is the database's: `queued` is read there
    /// (`running` stays this coordinator's jobs).
    public func gauges() async -> CoordinatorGauges {
        var (queued, running, runners, drained) = await jobs.counts()
        if let cluster, let head = try? await cluster.queueHead(limit: 0) { queued = head.queued }
        return CoordinatorGauges(queued: queued, running: running, runnersConnected: runners, runnersDrained: drained,
                                 sessions: sessions.count, storageFull: storageFullSince != nil)
    }
}
