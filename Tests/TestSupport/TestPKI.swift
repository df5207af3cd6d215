import Foundation
import Wire

/// A throwaway directory, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String

    public init(_ prefix: String = "heddle-test") throws {
        let template = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-XXXXXX").path
        var bytes = Array(template.utf8CString)
        guard let made = mkdtemp(&bytes) else { throw POSIXError(.EIO) }
        path = String(cString: made)
    }

    public func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }

    public func file(_ name: String) -> String { "\(path)/\(name)" }
}

/// A fabric PKI written to a directory: ca, coordinator, admin, automation, runner and
/// a certificate from a foreign CA, made in code with the same PKI the product uses.
public struct TestPKI: Sendable {
    public let directory: TemporaryDirectory

    public init() throws {
        directory = try TemporaryDirectory("heddle-pki")
        let ca = try PKI.makeCA()
        try PEMFiles.write(ca, directory: directory.path, name: "ca")
        try PEMFiles.write(try PKI.issueServer(ca: ca), directory: directory.path, name: "coordinator")
        for role in Role.allCases {
            try PEMFiles.write(try PKI.issueClient(role: role, name: "test-\(role.rawValue)", ca: ca),
                               directory: directory.path, name: role.rawValue)
        }
        let foreign = try PKI.makeCA(name: "Somebody else's CA")
        try PEMFiles.write(foreign, directory: directory.path, name: "foreign-ca")
        try PEMFiles.write(try PKI.issueClient(role: .admin, name: "intruder", ca: foreign),
                           directory: directory.path, name: "foreign-admin")
        let expiredStart = Date().addingTimeInterval(-10 * 86400)
        try PEMFiles.write(try PKI.issueClient(role: .admin, name: "expired", ca: ca, notBefore: expiredStart, validFor: 86400),
                           directory: directory.path, name: "expired-admin")
    }

    public var coordinatorTLS: TLSFiles { tls("coordinator") }

    /// Client files for `name` (runner, automation, admin, foreign-admin, expired-admin), trusting the fabric CA.
    public func tls(_ name: String) -> TLSFiles {
        TLSFiles(ca: directory.file("ca.pem"), certificate: directory.file("\(name).pem"), key: directory.file("\(name).key"))
    }

    public func remove() { directory.remove() }
}

/// Waits for `condition` to hold, checking often, failing after a generous deadline.
public func waitUntil(_ what: String, timeout: Duration = .seconds(30),
                      _ condition: () async throws -> Bool) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while clock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw TestFailure("timed out after \(timeout) waiting for \(what)")
}

public struct TestFailure: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
