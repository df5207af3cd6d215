/// What a store refuses or cannot do. Stores throw this, never the wire's error type; a front
/// maps it to what its callers see (the binary front: `STALE_EPOCH`, `NOT_FOUND`, `INTERNAL`).
public struct StoreError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: Sendable, Equatable {
        /// A write from a runner whose lease on the job is gone: the job has another epoch now,
        /// or is no longer running. Nothing was written.
        case staleLease
        case notFound
        /// The stored data contradicts itself (a row another row needs is missing).
        case inconsistent
        /// The database cannot be reached now (PostgreSQL restarting, the network): worth
        /// trying again.
        case unavailable
        /// The database refused a statement for a reason of its own.
        case database
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    static func staleLease(jobID: Int64, epoch: Int64) -> StoreError {
        StoreError(.staleLease, "job \(jobID) is no longer leased at epoch \(epoch): stop it")
    }

    /// A fenced write to a job running at the writer's epoch, but held by another coordinator.
    static func heldElsewhere(jobID: Int64) -> StoreError {
        StoreError(.staleLease, "job \(jobID) is held by another coordinator now (its runner reattached there)")
    }
}
