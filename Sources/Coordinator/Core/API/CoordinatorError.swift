/// An error the core returns to a caller, whatever the front: a code and one sentence that
/// says what went wrong. A front maps the code to its own (the binary front to the protocol's
/// `ErrorCode`, the HTTP front to a status).
public struct CoordinatorError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Code: String, Sendable, Equatable, CaseIterable {
        /// A request that is not valid at this point (a message sent twice, a missing id).
        case badRequest
        /// The caller's credential is not (or no longer) accepted.
        case unauthenticated
        /// The caller's role may not do this.
        case permissionDenied
        case notFound
        case invalidArgument
        /// The thing exists but is not in a state that allows this (a re-run of a running run).
        case failedPrecondition
        /// A write about a job from a runner whose lease on it is gone: that runner stops the job.
        case staleLease
        /// A limit was reached (sizes, counts).
        case resourceExhausted
        /// The coordinator failed (storage, a bug): not the caller's fault.
        case `internal`
        /// Not now: the coordinator's storage is full. The same request later may succeed.
        case unavailable
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }

    static func invalid(_ message: String) -> CoordinatorError { CoordinatorError(.invalidArgument, message) }
    static func notFound(_ message: String) -> CoordinatorError { CoordinatorError(.notFound, message) }
    static func denied(_ message: String) -> CoordinatorError { CoordinatorError(.permissionDenied, message) }

    /// Any error a core call threw, as the caller sees it: the store's refusals keep their
    /// meaning, anything else is internal.
    public init(_ error: any Error) {
        switch error {
        case let error as CoordinatorError:
            self = error
        case let error as StoreError:
            switch error.code {
            case .staleLease: self.init(.staleLease, error.message)
            case .notFound: self.init(.notFound, error.message)
            case .inconsistent: self.init(.internal, "the coordinator's data is inconsistent: \(error.message)")
            case .unavailable: self.init(.unavailable, error.message)
            case .database: self.init(.internal, error.message)
            }
        default:
            if let full = CoordinatorError(storageFull: error) {
                self = full
            } else {
                self.init(.internal, "internal error: \(error)")
            }
        }
    }
}
