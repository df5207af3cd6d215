import Foundation
import GRDB
import NIOCore

extension CoordinatorError {
    /// An error that says the disk (or the quota) is full, from SQLite, NIO or Foundation, as
    /// `unavailable`; nil for any other error.
    init?(storageFull error: any Error) {
        guard Self.isStorageFull(error) else { return nil }
        self.init(.unavailable, "the coordinator's storage is full (\(error)); send it again later")
    }

    static func isStorageFull(_ error: any Error) -> Bool {
        switch error {
        case let error as CoordinatorError:
            return error.code == .unavailable
        case let error as DatabaseError:
            return error.resultCode == .SQLITE_FULL
        case let error as IOError:
            return error.errnoCode == ENOSPC || error.errnoCode == EDQUOT
        default:
            let error = error as NSError
            if error.domain == NSPOSIXErrorDomain && (error.code == Int(ENOSPC) || error.code == Int(EDQUOT)) { return true }
            if error.domain == NSCocoaErrorDomain && error.code == NSFileWriteOutOfSpaceError { return true }
            if let underlying = error.userInfo[NSUnderlyingErrorKey] as? any Error { return isStorageFull(underlying) }
            return false
        }
    }
}
