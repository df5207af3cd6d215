/// An error a peer or a user can see: a code from the protocol and one clear sentence.
public struct WireError: Error, CustomStringConvertible, Sendable, Equatable {
    public var code: Heddle_V1_ErrorCode
    public var message: String

    public init(_ code: Heddle_V1_ErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    public init(_ error: Heddle_V1_Error) {
        self.code = error.code
        self.message = error.message
    }

    public var description: String { message }

    public var proto: Heddle_V1_Error {
        var error = Heddle_V1_Error()
        error.code = code
        error.message = message
        return error
    }

    public static func badFrame(_ message: String) -> WireError { WireError(.badFrame, message) }
    public static func notFound(_ message: String) -> WireError { WireError(.notFound, message) }
    public static func invalid(_ message: String) -> WireError { WireError(.invalidArgument, message) }
    public static func denied(_ message: String) -> WireError { WireError(.permissionDenied, message) }
}
