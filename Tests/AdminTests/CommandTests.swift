import ArgumentParser
import Foundation
import TestSupport
import Testing
import Wire
@testable import Admin

@Suite struct CommandTests {
    @Test func commandsParse() throws {
        let trigger = try #require(try HeddleCommand.parseAsRoot(["trigger", "shop/ci", "--branch", "dev", "--wait", "--json"]) as? Trigger)
        #expect(trigger.target == "shop/ci")
        #expect(trigger.branch == "dev")
        #expect(trigger.wait && trigger.json)
        let logs = try #require(try HeddleCommand.parseAsRoot(["logs", "12", "--job", "test", "--node", "build", "--follow"]) as? Logs)
        #expect(logs.run == 12 && logs.job == "test" && logs.node == "build" && logs.follow)
        #expect(try HeddleCommand.parseAsRoot(["runs"]) is Runs.List)
        #expect(try HeddleCommand.parseAsRoot(["runs", "show", "3", "--json"]) is Runs.Show)
        #expect(try HeddleCommand.parseAsRoot(["artifacts", "--run", "3"]) is Artifacts.List)
        #expect(try HeddleCommand.parseAsRoot(["artifacts", "get", "7", "-o", "x"]) is Artifacts.Get)
    }

    @Test(arguments: [
        ["trigger", "no-slash"],
        ["trigger", "a/b/c"],
        ["logs", "1", "--node", "build"],
        ["certs", "issue", "--dir", "d", "--role", "boss", "--name", "x"],
        ["certs", "issue", "--dir", "d", "--role", "runner", "--name", ".."],
        ["certs", "issue", "--dir", "d", "--role", "runner", "--name", "é"],
        ["runs", "show", "not-a-number"],
        ["queue", "--limit", "0"],
        ["queue", "--limit", "1001"],
    ])
    func badArgumentsAreRefusedBeforeConnecting(arguments: [String]) {
        #expect(throws: (any Error).self) { _ = try HeddleCommand.parseAsRoot(arguments) }
    }

    @Test func missingConnectionSettingsNameTheFlagAndVariable() throws {
        let options = try ConnectionOptions.parse([])
        // Whatever this process's environment holds: the check is made against an empty one.
        let error = try #require(throws: ValidationError.self) { try options.endpoints([:]) }
        #expect(error.message == "missing --coordinator (or the environment variable HEDDLE_COORDINATOR)")
        let tlsError = try #require(throws: ValidationError.self) { try options.tls(["HEDDLE_CA": "ca.pem"]) }
        #expect(tlsError.message == "missing --cert (or the environment variable HEDDLE_CERT)")
        // A variable stands in for its flag, and a flag wins over its variable.
        #expect(try options.endpoints(["HEDDLE_COORDINATOR": "127.0.0.1:7000"]).map(\.port) == [7000])
        let flagged = try ConnectionOptions.parse(["--coordinator", "127.0.0.1:7001"])
        #expect(try flagged.endpoints(["HEDDLE_COORDINATOR": "127.0.0.1:7000"]).map(\.port) == [7001])
        // Several coordinators sharing one database: a list, in order; an empty entry is refused.
        #expect(try options.endpoints(["HEDDLE_COORDINATOR": "a:7000, b:7001,[::1]:7002"]).map(\.description)
                == ["a:7000", "b:7001", "[::1]:7002"])
        #expect(throws: WireError.self) { try options.endpoints(["HEDDLE_COORDINATOR": "a:7000,,b:7001"]) }
    }

    @Test func certsInitWritesPrivateKeysOwnerOnly() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let initCommand = try #require(try HeddleCommand.parseAsRoot(["certs", "init", "--dir", dir.path, "--host", "ci.example.test"]) as? Certs.Init)
        try initCommand.run()
        let issue = try #require(try HeddleCommand.parseAsRoot(["certs", "issue", "--dir", dir.path, "--role", "runner", "--name", "build-01"]) as? Certs.Issue)
        try issue.run()
        for name in ["ca", "coordinator", "admin", "build-01"] {
            var info = stat()
            #expect(stat("\(dir.path)/\(name).key", &info) == 0)
            #expect(info.st_mode & 0o777 == 0o600, "\(name).key is \(String(info.st_mode & 0o777, radix: 8))")
            #expect(FileManager.default.fileExists(atPath: "\(dir.path)/\(name).pem"))
        }
        // A second init would replace the CA and break every certificate: refused without --force.
        #expect(throws: CLIError.self) { try initCommand.run() }
        let pem = try String(contentsOfFile: "\(dir.path)/build-01.pem", encoding: .utf8)
        let key = try String(contentsOfFile: "\(dir.path)/build-01.key", encoding: .utf8)
        let issued = try IssuedCertificate(certificatePEM: pem, keyPEM: key)
        let identity = try PeerIdentity(certificate: issued.certificate, derBytes: [])
        #expect(identity.role == .runner && identity.name == "build-01")
    }

    @Test func tablesAlignIgnoringColourCodes() {
        let table = Output.table(["A", "B"], [["\u{1B}[32mok\u{1B}[0m", "x"], ["long", "y"]])
        #expect(table == "A     B\n\u{1B}[32mok\u{1B}[0m    x\nlong  y")
    }
}
