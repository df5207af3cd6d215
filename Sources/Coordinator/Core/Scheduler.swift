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
        /// A drained runner finishes what it runs and takes nothing new.
        public var drained = false

        public var free: Int { drained ? 0 : capacity - running.count }
    }

    public struct Assignment: Sendable, Equatable {
        /// The job as it was queued (to put it back should its claim fail).
        public var job: QueuedJob
        public var runner: RunnerID
        public var jobID: Int64 { job.id }
    }

    /// Queued jobs in dispatch order (ascending position).
    public private(set) var queue: [QueuedJob] = []
    /// Position of each queued job, to find it in `queue` by binary search.
    private var positions: [Int64: Double] = [:]
    public private(set) var runners: [RunnerID: RunnerSlot] = [:]

    public init() {}

    public func isQueued(_ id: Int64) -> Bool { positions[id] != nil }

    /// Jobs queued now.
    public var queuedCount: Int { positions.count }

    /// A queued job's position (nil when it is not queued).
    public func position(of id: Int64) -> Double? { positions[id] }

    /// The first index whose position is not below `position`.
    private func lowerBound(_ position: Double) -> Int {
        var low = 0
        var high = queue.count
        while low < high {
            let mid = (low + high) / 2
            if queue[mid].position < position { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The index of a queued job, found by its position.
    public func index(of id: Int64) -> Int? {
        guard let position = positions[id] else { return nil }
        var index = lowerBound(position)
        while index < queue.count && queue[index].position == position {
            if queue[index].id == id { return index }
            index += 1
        }
        return nil
    }

    public mutating func enqueue(_ job: QueuedJob) {
        var index = lowerBound(job.position)
        while index < queue.count && queue[index].position == job.position { index += 1 }
        queue.insert(job, at: index)
        positions[job.id] = job.position
    }

    /// Removes a queued job; returns false when it was not queued.
    @discardableResult
    public mutating func removeQueued(_ id: Int64) -> Bool {
        guard let index = index(of: id) else { return false }
        queue.remove(at: index)
        positions[id] = nil
        return true
    }

    /// Removes many queued jobs: a few found by position, many in one pass over the queue.
    public mutating func removeQueued(_ ids: Set<Int64>) {
        if ids.count <= 32 {
            for id in ids { removeQueued(id) }
            return
        }
        queue.removeAll { ids.contains($0.id) }
        for id in ids { positions[id] = nil }
    }

    /// Gives a queued job a new position.
    public mutating func reposition(_ id: Int64, to position: Double) {
        guard let index = index(of: id) else { return }
        var job = queue.remove(at: index)
        job.position = position
        enqueue(job)
    }

    public enum Placement: Sendable, Equatable {
        /// The position between the new neighbours.
        case at(Double)
        /// The neighbours are too close for a number between them: renumber, then ask again.
        case crowded
        /// The job to move before or after is not queued.
        case noSuchAnchor
    }

    /// Where a job must go to be at `target` in the queue without it.
    public func placement(for id: Int64, at target: MoveTarget) -> Placement {
        // Work on the queue as it would be without the job, without copying it.
        let moving = index(of: id)
        let count = queue.count - (moving == nil ? 0 : 1)
        func other(_ i: Int) -> QueuedJob { queue[moving.map { i < $0 ? i : i + 1 } ?? i] }
        func otherIndex(_ anchor: Int64) -> Int? {
            guard anchor != id, let found = index(of: anchor) else { return nil }
            return moving.map { found < $0 ? found : found - 1 } ?? found
        }
        let slot: Int
        switch target {
        case .top: slot = 0
        case .bottom: slot = count
        case .position(let n): slot = min(max(n - 1, 0), count)
        case .before(let anchor):
            guard let found = otherIndex(anchor) else { return .noSuchAnchor }
            slot = found
        case .after(let anchor):
            guard let found = otherIndex(anchor) else { return .noSuchAnchor }
            slot = found + 1
        }
        return Self.between(slot > 0 ? other(slot - 1).position : nil, slot < count ? other(slot).position : nil)
    }

    /// The position between two neighbours' (nil: no neighbour on that side).
    public static func between(_ before: Double?, _ after: Double?) -> Placement {
        switch (before, after) {
        case (nil, nil): return .at(1)
        case (nil, let after?): return .at(after - 1)
        case (let before?, nil): return .at(before + 1)
        case (let before?, let after?):
            let middle = before + (after - before) / 2
            return middle > before && middle < after ? .at(middle) : .crowded
        }
    }

    /// Spaces every queued job's position evenly (1, 2, 3, ...) keeping the order.
    public mutating func renumber() -> [(Int64, Double)] {
        for index in queue.indices {
            queue[index].position = Double(index + 1)
            positions[queue[index].id] = Double(index + 1)
        }
        return queue.map { ($0.id, $0.position) }
    }

    public mutating func addRunner(_ id: RunnerID, labels: Set<String>, capacity: Int, drained: Bool = false) {
        runners[id] = RunnerSlot(labels: labels, capacity: max(1, capacity), drained: drained)
    }

    public mutating func setDrained(_ id: RunnerID, _ drained: Bool) {
        runners[id]?.drained = drained
    }

    /// Removes a runner; returns the jobs it was running.
    public mutating func removeRunner(_ id: RunnerID) -> Set<Int64> {
        runners.removeValue(forKey: id)?.running ?? []
    }

    /// Counts a running job (reattached after a reconnect) against a runner's capacity.
    public mutating func attach(_ jobID: Int64, to runner: RunnerID) {
        runners[runner]?.running.insert(jobID)
    }

    /// Frees the runner's slot held by `jobID`.
    public mutating func finish(_ jobID: Int64, on runner: RunnerID) {
        runners[runner]?.running.remove(jobID)
    }

    /// Assigns as many queued jobs as free capacity allows and returns the assignments; the
    /// jobs leave the queue and occupy their runners' slots.
    public mutating func assign() -> [Assignment] {
        var freeTotal = runners.values.reduce(0) { $0 + max(0, $1.free) }
        // Nothing free (the usual state of a long queue): nothing to look at.
        guard freeTotal > 0, !queue.isEmpty else { return [] }
        var assignments: [Assignment] = []
        var taken: [Int] = []
        for (index, job) in queue.enumerated() {
            guard freeTotal > 0 else { break }
            // The least busy runner with a free slot and the job's labels (ties: lowest id).
            var best: (id: RunnerID, running: Int)?
            for (id, slot) in runners where slot.free > 0 && job.labels.isSubset(of: slot.labels) {
                if best == nil || (slot.running.count, id) < (best!.running, best!.id) { best = (id, slot.running.count) }
            }
            guard let best else { continue }
            runners[best.id]!.running.insert(job.id)
            freeTotal -= 1
            assignments.append(Assignment(job: job, runner: best.id))
            taken.append(index)
        }
        if taken.isEmpty {
            return []
        } else if taken.last == taken.count - 1 {
            queue.removeFirst(taken.count)  // the usual case: jobs taken from the front
        } else {
            var kept: [QueuedJob] = []
            kept.reserveCapacity(queue.count - taken.count)
            var next = 0
            for (index, job) in queue.enumerated() {
                if next < taken.count && taken[next] == index { next += 1 } else { kept.append(job) }
            }
            queue = kept
        }
        for assignment in assignments { positions[assignment.jobID] = nil }
        return assignments
    }

    /// Why nobody can take a queued job, or nil when some connected runner has its labels.
    public func unmatchedReason(for labels: Set<String>) -> String? {
        let matching = runners.values.filter { labels.isSubset(of: $0.labels) }
        let list = "[\(labels.sorted().joined(separator: ", "))]"
        if matching.isEmpty {
            if runners.isEmpty { return "no runner is connected" }
            return "no connected runner has labels \(list)"
        }
        if matching.allSatisfy(\.drained) {
            return labels.isEmpty ? "every connected runner is drained" : "every runner with labels \(list) is drained"
        }
        return nil
    }
}
