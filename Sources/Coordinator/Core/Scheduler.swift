/// Which queued job goes to which runner. A plain value: no sockets, no clocks, no store.
///
/// Jobs are taken in queue order (ascending position); a job goes to a runner with free
/// capacity whose labels include every label of the job, the least busy one first.
public struct Scheduler: Sendable {
    public typealias RunnerID = UInt64

    public struct QueuedJob: Sendable, Equatable {
        public var id: Int64
        public var labels: Set<String>
        public var position: Double

        public init(id: Int64, labels: Set<String>, position: Double) {
            self.id = id
            self.labels = labels
            self.position = position
        }
    }

    public struct RunnerSlot: Sendable, Equatable {
        public var labels: Set<String>
        public var capacity: Int
        public var running: Set<Int64> = []

        public var free: Int { capacity - running.count }
    }

    public struct Assignment: Sendable, Equatable {
        public var jobID: Int64
        public var runner: RunnerID
    }

    /// Queued jobs in dispatch order.
    public private(set) var queue: [QueuedJob] = []
    public private(set) var runners: [RunnerID: RunnerSlot] = [:]

    public init() {}

    public mutating func enqueue(_ job: QueuedJob) {
        let index = queue.firstIndex { $0.position > job.position } ?? queue.endIndex
        queue.insert(job, at: index)
    }

    /// Removes a queued job; returns false when it was not queued.
    @discardableResult
    public mutating func removeQueued(_ id: Int64) -> Bool {
        guard let index = queue.firstIndex(where: { $0.id == id }) else { return false }
        queue.remove(at: index)
        return true
    }

    public mutating func addRunner(_ id: RunnerID, labels: Set<String>, capacity: Int) {
        runners[id] = RunnerSlot(labels: labels, capacity: max(1, capacity))
    }

    /// Removes a runner; returns the jobs it was running.
    public mutating func removeRunner(_ id: RunnerID) -> Set<Int64> {
        runners.removeValue(forKey: id)?.running ?? []
    }

    /// Frees the runner's slot held by `jobID`.
    public mutating func finish(_ jobID: Int64, on runner: RunnerID) {
        runners[runner]?.running.remove(jobID)
    }

    /// Assigns as many queued jobs as free capacity allows and returns the assignments; the
    /// jobs leave the queue and occupy their runners' slots.
    public mutating func assign() -> [Assignment] {
        var assignments: [Assignment] = []
        var remaining: [QueuedJob] = []
        var freeTotal = runners.values.reduce(0) { $0 + max(0, $1.free) }
        for job in queue {
            guard freeTotal > 0 else {
                remaining.append(job)
                continue
            }
            let candidate = runners
                .filter { $0.value.free > 0 && job.labels.isSubset(of: $0.value.labels) }
                .min { ($0.value.running.count, $0.key) < ($1.value.running.count, $1.key) }
            if let (runnerID, _) = candidate {
                runners[runnerID]!.running.insert(job.id)
                freeTotal -= 1
                assignments.append(Assignment(jobID: job.id, runner: runnerID))
            } else {
                remaining.append(job)
            }
        }
        queue = remaining
        return assignments
    }

    /// Why nobody can take a queued job, or nil when some connected runner has its labels.
    public func unmatchedReason(for labels: Set<String>) -> String? {
        if runners.values.contains(where: { labels.isSubset(of: $0.labels) }) { return nil }
        if labels.isEmpty { return "no runner is connected" }
        return "no connected runner has labels [\(labels.sorted().joined(separator: ", "))]"
    }
}
