import Foundation
import Synchronization
import TestSupport
import Testing
import Wire

/// A runner binary the end-to-end tests start: the Swift `heddle-runner`, the C
/// `heddle-runner-c` (its ASan and UBSan build when made), or any program that takes the same
/// flags. `all` is what the runner conformance suite runs against: HEDDLE_CONFORMANCE_RUNNERS,
/// a comma-separated list of `swift`, `c` or paths, else `swift,c`.
struct RunnerUnderTest: Sendable, CustomTestStringConvertible {
    let name: String
    let path: String

    var testDescription: String { name }

    static let swift = RunnerUnderTest(name: "swift", path: Binaries.path("heddle-runner"))

    static var c: RunnerUnderTest {
        let build = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("runners/c/build").path
        let sanitized = "\(build)/heddle-runner-c-sanitized"
        let path = FileManager.default.isExecutableFile(atPath: sanitized) ? sanitized : "\(build)/heddle-runner-c"
        return RunnerUnderTest(name: "c", path: path)
    }

    static var all: [RunnerUnderTest] {
        let list = ProcessInfo.processInfo.environment["HEDDLE_CONFORMANCE_RUNNERS"] ?? "swift,c"
        return list.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map {
            switch $0 {
            case "swift": return .swift
            case "c": return .c
            default: return RunnerUnderTest(name: URL(fileURLWithPath: $0).lastPathComponent, path: $0)
            }
        }
    }

    /// What a sanitizer printed, if it did: a runner built with ASan or UBSan reports there.
    static func sanitizerReport(in standardError: String) -> String? {
        for marker in ["ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"] {
            if let range = standardError.range(of: marker) {
                return String(standardError[range.lowerBound...].prefix(4000))
            }
        }
        return nil
    }
}

/// The three real binaries: `heddle certs init`, a coordinator on 127.0.0.1 port 0, runners,
/// and the CLI, each process stopped by pid in `stop()`. For fault tests the runners can
/// reach the coordinator through a `TCPProxy`, and the coordinator can be killed and
/// restarted on the same port and data.
final class Fabric: Sendable {
    let root: TemporaryDirectory
    let endpoint: String
    let proxy: TCPProxy?
    let heartbeat: Double
    /// How the runners isolate nodes (`--isolation`): "bwrap" (the default), or "none" for tests
    /// whose nodes talk to the test through files on the host (the sandbox has its own /tmp).
    let isolation: String
    /// The coordinator's data directory.
    let data: String
    /// The HTTP front's URL (`https://127.0.0.1:PORT`), when `coordinatorArguments` has `--http`.
    let httpURL: String?
    /// The runner binary the runners run.
    let runner: RunnerUnderTest
    private let processes = Mutex<(coordinator: ManagedProcess?, runners: [ManagedProcess?])>((nil, []))

    var certs: String { root.file("certs") }
    var coordinator: ManagedProcess? { processes.withLock { $0.coordinator } }
    var runners: [ManagedProcess?] { processes.withLock { $0.runners } }

    /// With `proxied`, runners reach the coordinator through `proxy`, except those in `direct`.
    /// `coordinatorArguments` are added to the coordinator's; with `descriptorLimit` it runs
    /// under `ulimit -n` of that.
    init(runner: RunnerUnderTest = .swift, runnerLabels: [String] = ["linux,x86"], capacity: Int = 2, heartbeat: Double = 5, proxied: Bool = false,
         direct: Set<Int> = [], runnerEnvironment: [[String: String]] = [], coordinatorArguments: [String] = [],
         descriptorLimit: Int? = nil, data: String? = nil, isolation: String = "bwrap") async throws {
        guard FileManager.default.isExecutableFile(atPath: runner.path) else {
            throw TestFailure("no runner binary at \(runner.path) (the C runner: make -C runners/c all sanitize)")
        }
        self.runner = runner
        self.isolation = isolation
        root = try TemporaryDirectory("heddle-e2e")
        self.heartbeat = heartbeat
        self.data = data ?? root.file("data")
        let heddle = Binaries.path("heddle")
        try await Self.run(heddle, ["certs", "init", "--dir", root.file("certs")], root)
        try await Self.run(heddle, ["certs", "issue", "--dir", root.file("certs"), "--role", "automation", "--name", "bot"], root)
        let coordinator = try Self.startCoordinator(root: root, data: self.data, listen: "127.0.0.1:0", heartbeat: heartbeat,
                                                    extra: coordinatorArguments, descriptorLimit: descriptorLimit)
        processes.withLock { $0.coordinator = coordinator }
        let line = try await coordinator.waitForLine(startingWith: "listening on ")
        endpoint = String(line.dropFirst("listening on ".count))
        if coordinatorArguments.contains("--http") {
            let http = try await coordinator.waitForLine(startingWith: "http listening on ")
            httpURL = String(http.dropFirst("http listening on ".count))
        } else {
            httpURL = nil
        }
        if proxied {
            let port = Int(endpoint.split(separator: ":").last ?? "0") ?? 0
            proxy = try await TCPProxy(to: "127.0.0.1", port: port)
        } else {
            proxy = nil
        }
        for (index, labels) in runnerLabels.enumerated() {
            let name = "runner-\(index + 1)"
            try await Self.run(heddle, ["certs", "issue", "--dir", root.file("certs"), "--role", "runner", "--name", name], root)
            let environment = index < runnerEnvironment.count ? runnerEnvironment[index] : [:]
            let runner = try startRunner(index, labels: labels, capacity: capacity, environment: environment,
                                         direct: direct.contains(index))
            processes.withLock { $0.runners.append(runner) }
        }
        let expected = runnerLabels.count
        // 90 s: when every suite starts at once on two cores, a runner's first connection
        // (TLS, Hello, the registration) took over 30 s once in a fresh-clone CI run.
        do {
            try await waitUntil("\(expected) runners to connect", timeout: .seconds(90)) {
                let result = try await self.heddle(["runners", "--json"])
                let list = (try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])?["runners"] as? [Any]
                return list?.count == expected
            }
        } catch {
            // The test never gets this fabric to stop: its processes are stopped here.
            await stop()
            throw error
        }
    }

    /// A new secrets key (`--secrets-key-file`) in a directory of its own, for the caller to
    /// remove.
    static func secretsKey() throws -> (directory: TemporaryDirectory, path: String) {
        let directory = try TemporaryDirectory("heddle-key")
        let path = directory.file("secrets.key")
        try (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
            .write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        return (directory, path)
    }

    static func run(_ executable: String, _ arguments: [String], _ root: TemporaryDirectory) async throws {
        let process = try ManagedProcess(executable, arguments, logs: root)
        guard try await process.waitForExit() == 0 else {
            throw TestFailure("\(arguments.joined(separator: " ")) failed: \(process.standardError)")
        }
    }

    static func startCoordinator(root: TemporaryDirectory, data: String, listen: String, heartbeat: Double,
                                 extra: [String] = [], descriptorLimit: Int? = nil) throws -> ManagedProcess {
        let certs = root.file("certs")
        let arguments = [
            "--listen", listen, "--data", data, "--heartbeat-interval", String(heartbeat),
            "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/coordinator.pem", "--key", "\(certs)/coordinator.key",
        ] + extra
        if let descriptorLimit {
            // The shell execs the coordinator: the process (and its pid) is the coordinator's.
            return try ManagedProcess("/bin/sh", ["-c", "ulimit -n \(descriptorLimit) && exec \"$0\" \"$@\"",
                                                  Binaries.path("heddle-coordinator")] + arguments, logs: root)
        }
        return try ManagedProcess(Binaries.path("heddle-coordinator"), arguments, logs: root)
    }

    private func startRunner(_ index: Int, labels: String, capacity: Int, environment: [String: String],
                             direct: Bool) throws -> ManagedProcess {
        let name = "runner-\(index + 1)"
        let address = direct ? endpoint : proxy.map { "127.0.0.1:\($0.port)" } ?? endpoint
        return try ManagedProcess(runner.path, [
            "--coordinator", address, "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/\(name).pem",
            "--key", "\(certs)/\(name).key", "--labels", labels, "--capacity", String(capacity),
            "--work-dir", root.file("work-\(index + 1)"), "--kill-grace", "2", "--isolation", isolation,
        ], environment: environment, logs: root)
    }

    /// SIGKILL to the coordinator, then a new one on the same port and data.
    func crashAndRestartCoordinator() async throws {
        if let old = coordinator {
            kill(old.pid, SIGKILL)
            _ = try await old.waitForExit()
        }
        let restarted = try Self.startCoordinator(root: root, data: data, listen: endpoint, heartbeat: heartbeat)
        processes.withLock { $0.coordinator = restarted }
        _ = try await restarted.waitForLine(startingWith: "listening on ")
    }

    /// Starts runner `index` again (after `killRunner`), with its certificate and work directory.
    func restartRunner(_ index: Int, labels: String) throws {
        let runner = try startRunner(index, labels: labels, capacity: 1, environment: [:], direct: true)
        processes.withLock { $0.runners[index] = runner }
    }

    /// SIGKILL to a runner.
    func killRunner(_ index: Int) async throws {
        guard let runner = runners[index] else { return }
        kill(runner.pid, SIGKILL)
        _ = try await runner.waitForExit()
        processes.withLock { $0.runners[index] = nil }
    }

    struct Result {
        var status: Int32
        var output: String
        var data: Data
        var error: String
    }

    /// Starts the admin CLI with a certificate (admin, or bot for automation); the caller
    /// waits for it or stops it.
    func startHeddle(_ arguments: [String], as identity: String = "admin", input: String? = nil) throws -> ManagedProcess {
        try ManagedProcess(Binaries.path("heddle"), arguments, environment: [
            "HEDDLE_COORDINATOR": endpoint, "HEDDLE_CA": "\(certs)/ca.pem",
            "HEDDLE_CERT": "\(certs)/\(identity).pem", "HEDDLE_KEY": "\(certs)/\(identity).key",
        ], directory: root.path, input: input, logs: root)
    }

    /// Runs the admin CLI with a certificate (admin, or bot for automation) and waits for it.
    func heddle(_ arguments: [String], as identity: String = "admin", input: String? = nil,
                timeout: Duration = .seconds(120)) async throws -> Result {
        let process = try startHeddle(arguments, as: identity, input: input)
        let status = try await process.waitForExit(timeout: timeout)
        return Result(status: status, output: process.standardOutput, data: process.standardOutputData,
                      error: process.standardError)
    }

    /// A listing's `--json` (the REST API's list body): the array under `key`.
    func list(_ arguments: [String], _ key: String, as identity: String = "admin") async throws -> [[String: Any]]? {
        (try await json(arguments, as: identity) as? [String: Any])?[key] as? [[String: Any]]
    }

    func json(_ arguments: [String], as identity: String = "admin") async throws -> Any {
        let result = try await heddle(arguments + ["--json"], as: identity)
        guard result.status == 0 else { throw TestFailure("heddle \(arguments) failed: \(result.error)") }
        return try JSONSerialization.jsonObject(with: result.data)
    }

    /// An HTTP client of the front: with `identity`, offering that certificate.
    func http(as identity: String? = nil) throws -> HTTPTestClient {
        guard let httpURL else { throw TestFailure("this fabric has no --http") }
        return try HTTPTestClient(url: httpURL, ca: "\(certs)/ca.pem", certificate: identity.map { "\(certs)/\($0).pem" },
                                  key: identity.map { "\(certs)/\($0).key" })
    }

    /// `heddle tokens create`; returns the secret.
    func createToken(_ name: String, role: String) async throws -> String {
        let object = try await json(["tokens", "create", "--name", name, "--role", role])
        guard let secret = (object as? [String: Any])?["secret"] as? String else { throw TestFailure("tokens create gave no secret") }
        return secret
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
        guard let id = (object as? [String: Any])?["run"] as? Int else { throw TestFailure("trigger gave no id") }
        return id
    }

    /// Waits until the run's status is one of `statuses`; returns the run.
    @discardableResult
    func waitForRun(_ id: Int, _ statuses: Set<String>, timeout: Duration = .seconds(60)) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        try await waitUntil("run \(id) to be \(statuses.sorted().joined(separator: " or "))", timeout: timeout) {
            last = try await self.run(id)
            return statuses.contains(summary(last)["status"] as? String ?? "")
        }
        return last
    }

    /// The processes' logs, for a failure message.
    var logs: String {
        var text = "coordinator:\n" + (coordinator?.standardError ?? "")
        for (index, runner) in runners.enumerated() {
            text += "\nrunner-\(index + 1):\n" + (runner?.standardError ?? "")
        }
        return text
    }

    func stop() async {
        if ProcessInfo.processInfo.environment["HEDDLE_TEST_LOGS"] != nil { print(logs) }
        for runner in runners { await runner?.stop() }
        for (index, process) in runners.enumerated() {
            if let process, let report = RunnerUnderTest.sanitizerReport(in: process.standardError) {
                Issue.record("runner-\(index + 1) (\(runner.name)) reported: \(report)")
            }
        }
        await coordinator?.stop()
        await proxy?.stop()
        root.remove()
    }
}
