/// The rules that turn what happened into statuses. They live here, in the core, so every
/// store applies the same ones (a store calls `attemptStatus` inside the transaction that
/// changes a job).
public enum Outcome {
    /// A run attempt (and so its run) is queued while all its jobs are, running until all
    /// finished, then failed if any failed, cancelled if any was cancelled, else succeeded.
    public static func attemptStatus(jobs: [Status]) -> Status {
        if jobs.allSatisfy({ $0 == .queued }) { return .queued }
        if !jobs.allSatisfy(\.isFinished) { return .running }
        if jobs.contains(.failed) { return .failed }
        if jobs.contains(.cancelled) { return .cancelled }
        return .succeeded
    }

    /// A job's result from what its runner reported and what its nodes are: the runner's word
    /// alone cannot make a job succeed. A failed node fails the job; a node still running when
    /// the job finishes fails it (and is stored failed); a succeeded job needs every node
    /// succeeded. A cancel stands as reported.
    public static func jobResult(reported: Status, reason: String, nodes: [(name: String, status: Status)])
        -> (status: Status, reason: String) {
        guard reported != .cancelled else { return (reported, reason) }
        if let failed = nodes.first(where: { $0.status == .failed }) {
            return (.failed, reported == .failed && !reason.isEmpty ? reason : "node '\(failed.name)' failed")
        }
        if let running = nodes.first(where: { $0.status == .running }) {
            return (.failed, "node '\(running.name)' was still running when the runner finished the job"
                        + (reason.isEmpty ? "" : " (\(reason))"))
        }
        if reported == .succeeded, let other = nodes.first(where: { $0.status != .succeeded }) {
            return (.failed, "the runner reported success but node '\(other.name)' is \(other.status.rawValue)")
        }
        return (reported, reason)
    }
}
