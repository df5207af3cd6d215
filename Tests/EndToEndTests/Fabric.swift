import Foundation
import TestSupport
import Wire

/// The three real binaries: `heddle certs init`, a coordinator on 127.0.0.1 port 0, runners,
/// and the CLI, each process stopped by pid in `stop()`.
final class Fabric: Sendable {
    let root: TemporaryDirectory
    let coordinator: ManagedProcess
    let endpoint: String
    let runners: [ManagedProcess]

    var certs: String { root.file("certs") }

    init(runnerLabels: [String] = ["linux,x86"], capacity: Int = 2) async throws {
        root = try TemporaryDirectory("heddle-e2e")
        let heddle = Binaries.path("heddle")
        let initCerts = try ManagedProcess(heddle, ["certs", "init", "--dir", root.file("certs")], logs: root)
        guard try await initCerts.waitForExit() == 0 else { throw TestFailure("certs init failed: \(initCerts.standardError)") }
        var started: [ManagedProcess] = []
        let certs = root.file("certs")
        coordinator = try ManagedProcess(Binaries.path("heddle-coordinator"), [
            "--listen", "127.0.0.1:0", "--data", root.file("data"),
            "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/coordinator.pem", "--key", "\(certs)/coordinator.key",
        ], logs: root)
        let bot = try ManagedProcess(heddle, ["certs", "issue", "--dir", certs, "--role", "automation", "--name", "bot"], logs: root)
        guard try await bot.waitForExit() == 0 else { throw TestFailure("certs issue failed: \(bot.standardError)") }
        let line = try await coordinator.waitForLine(startingWith: "listening on ")
        endpoint = String(line.dropFirst("listening on ".count))
        for (index, labels) in runnerLabels.enumerated() {
            let name = "runner-\(index + 1)"
            let issue = try ManagedProcess(heddle, ["certs", "issue", "--dir", certs, "--role", "runner", "--name", name], logs: root)
            guard try await issue.waitForExit() == 0 else { throw TestFailure("certs issue failed: \(issue.standardError)") }
            started.append(try ManagedProcess(Binaries.path("heddle-runner"), [
                "--coordinator", endpoint, "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/\(name).pem",
                "--key", "\(certs)/\(name).key", "--labels", labels, "--capacity", String(capacity),
                "--work-dir", root.file("work-\(index + 1)"), "--kill-grace", "2",
            ], logs: root))
        }
        runners = started
        let expected = runnerLabels.count
        try await waitUntil("\(expected) runners to connect") {
            let result = try await self.heddle(["runners", "--json"])
            let list = try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [Any]
            return list?.count == expected
        }
    }

    struct Result {
        var status: Int32
        var output: String
        var data: Data
        var error: String
    }

    /// Runs the admin CLI with a certificate (admin, or bot for automation) and waits for it.
    func heddle(_ arguments: [String], as identity: String = "admin", timeout: Duration = .seconds(120)) async throws -> Result {
        let process = try ManagedProcess(Binaries.path("heddle"), arguments, environment: [
            "HEDDLE_COORDINATOR": endpoint, "HEDDLE_CA": "\(certs)/ca.pem",
            "HEDDLE_CERT": "\(certs)/\(identity).pem", "HEDDLE_KEY": "\(certs)/\(identity).key",
        ], directory: root.path, logs: root)
        let status = try await process.waitForExit(timeout: timeout)
        return Result(status: status, output: process.standardOutput, data: process.standardOutputData,
                      error: process.standardError)
    }

    func json(_ arguments: [String], as identity: String = "admin") async throws -> Any {
        let result = try await heddle(arguments + ["--json"], as: identity)
        guard result.status == 0 else { throw TestFailure("heddle \(arguments) failed: \(result.error)") }
        return try JSONSerialization.jsonObject(with: result.data)
    }

    func push(_ name: String, _ source: String, project: String = "shop") async throws {
        let path = root.file(name)
        try source.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await heddle(["pipeline", "push", path, "--project", project])
        guard result.status == 0 else { throw TestFailure("push failed: \(result.error)") }
    }

    /// `heddle runs show RUN --json` as a dictionary.
    func run(_ id: Int, attempt: Int? = nil) async throws -> [String: Any] {
        var arguments = ["runs", "show", String(id)]
        if let attempt { arguments += ["--attempt", String(attempt)] }
        guard let run = try await json(arguments) as? [String: Any] else { throw TestFailure("runs show gave no object") }
        return run
    }

    /// Triggers PROJECT/PIPELINE without waiting; returns the run id.
    func trigger(_ target: String, branch: String = "main") async throws -> Int {
        let object = try await json(["trigger", target, "--branch", branch])
        guard let id = (object as? [String: Any])?["id"] as? Int else { throw TestFailure("trigger gave no id") }
        return id
    }

    func stop() async {
        for runner in runners { await runner.stop() }
        await coordinator.stop()
        root.remove()
    }
}
