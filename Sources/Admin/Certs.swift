import ArgumentParser
import Foundation
import Wire

/// `heddle certs`: the fabric's PKI, made in Swift.
struct Certs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "certs",
        abstract: "Make the fabric's CA and issue certificates (role in the subject OU, name in the CN).",
        subcommands: [Init.self, Issue.self, Revoke.self])

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke certificates at the coordinator (admin): refused from now on, live sessions closed.",
            discussion: """
                By NAME: every certificate of that name issued up to now; one issued later (a renewal)
                is accepted. By FINGERPRINT (64 hex digits, SHA-256 of the DER): exactly that one.
                """)

        @Argument(help: "A certificate name (CN) or fingerprint.")
        var target: String

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let isFingerprint = target.count == 64 && target.allSatisfy(\.isHexDigit)
            let closed = try await withClient(connection) { client in
                isFingerprint ? try await client.revoke(fingerprint: target) : try await client.revoke(name: target)
            }
            print("revoked \(isFingerprint ? "certificate" : "certificates named") \(target); \(closed) session\(closed == 1 ? "" : "s") closed")
        }
    }

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write ca.pem/.key, coordinator.pem/.key and admin.pem/.key into a directory.")

        @Option(help: "Directory to write into (created if missing).")
        var dir: String

        @Option(name: .customLong("host"), help: "Another name or address the coordinator is reached by (repeatable).")
        var hosts: [String] = []

        @Flag(help: "Replace an existing CA.")
        var force = false

        func run() throws {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: "\(dir)/ca.key") && !force {
                throw CLIError("\(dir)/ca.key exists already; pass --force to replace the CA (every certificate it issued stops working)")
            }
            let ca = try PKI.makeCA()
            try PEMFiles.write(ca, directory: dir, name: "ca")
            try PEMFiles.write(try PKI.issueServer(hosts: hosts, ca: ca), directory: dir, name: "coordinator")
            try PEMFiles.write(try PKI.issueClient(role: .admin, name: "admin", ca: ca), directory: dir, name: "admin")
            print("wrote \(dir)/ca.pem, ca.key, coordinator.pem, coordinator.key, admin.pem, admin.key")
            print("the coordinator certificate is valid for localhost, 127.0.0.1, ::1\(hosts.isEmpty ? "" : ", " + hosts.joined(separator: ", "))")
            print("keep ca.key secret and offline in production; see certs/README.md")
        }
    }

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Issue a client certificate NAME.pem/.key signed by the CA in --dir.")

        @Option(help: "Directory holding ca.pem and ca.key.")
        var dir: String

        @Option(help: "runner, viewer, automation or admin.")
        var role: String

        @Option(help: "The certificate's name (its CN), e.g. build-01.")
        var name: String

        @Option(help: "Days the certificate is valid.")
        var days: Int = 365

        func validate() throws {
            guard Role(rawValue: role) != nil else {
                throw ValidationError("--role must be runner, viewer, automation or admin, not '\(role)'")
            }
            if let problem = Names.problem(name, "--name") { throw ValidationError(problem) }
            guard days > 0 else { throw ValidationError("--days must be positive") }
        }

        func run() throws {
            guard let certPEM = try? String(contentsOfFile: "\(dir)/ca.pem", encoding: .utf8),
                  let keyPEM = try? String(contentsOfFile: "\(dir)/ca.key", encoding: .utf8) else {
                throw CLIError("cannot read \(dir)/ca.pem and \(dir)/ca.key; run `heddle certs init --dir \(dir)` first")
            }
            let ca = try IssuedCertificate(certificatePEM: certPEM, keyPEM: keyPEM)
            let issued = try PKI.issueClient(role: Role(rawValue: role)!, name: name, ca: ca,
                                             validFor: TimeInterval(days) * 86400)
            try PEMFiles.write(issued, directory: dir, name: name)
            print("wrote \(dir)/\(name).pem and \(dir)/\(name).key (role \(role), valid \(days) days)")
        }
    }
}
