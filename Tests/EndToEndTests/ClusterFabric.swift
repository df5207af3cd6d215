import Foundation
import Synchronization
import TestSupport
import Wire

/// Several real coordinators on one PostgreSQL database (a new one on the server
/// `HEDDLE_TEST_POSTGRES` names, dropped at `stop()`), sharing one data directory for log and
/// artifact bytes; runners given every coordinator's address; the CLI through any of them.
/// Every process is stopped by its pid in `stop()`.
final class ClusterFabric: Sendable {
    let root: TemporaryDirectory
    /// The server's address (`HEDDLE_TEST_POSTGRES`, or a server of the test's own).
    let server: String
    let database: String
    let store: String
    let heartbeat: Double
    /// Each coordinator's `HOST:PORT`, by index.
    let endpoints: [String]
    /// Each coordinator's HTTP front (`https://127.0.0.1:PORT`), by index, when started with `http`.
    let httpURLs: [String]
    private let processes = Mutex<(coordinators: [ManagedProcess?], runners: [ManagedProcess?])>(([], []))

    var certs: String { root.file("certs") }
    var coordinators: [ManagedProcess?] { processes.withLock { $0.coordinators } }
    var runners: [ManagedProcess?] { processes.withLock { $0.runners } }
    var data: String { root.file("shared-data") }

    static func serverAddress() throws -> String {
        guard let address = ProcessInfo.processInfo.environment["HEDDLE_TEST_POSTGRES"] else {
            throw TestFailure("cluster tests need HEDDLE_TEST_POSTGRES=postgres://USER@HOST:PORT/DATABASE; scripts/test starts a throwaway server and sets it")
        }
        return address
    }

    /// `runnerOrders[i]` lists the coordinators runner i is given, in its order of preference.
    init(coordinators count: Int = 3, runnerOrders: [[Int]], labels: String = "linux", capacity: Int = 2,
         heartbeat: Double = 1, server: String? = nil, http: Bool = false) async throws {
        root = try TemporaryDirectory("heddle-cluster")
        self.heartbeat = heartbeat
        let address = try server ?? Self.serverAddress()
        self.server = address
        database = "heddle_e2e_\(UInt32.random(in: 0...UInt32.max))"
        try await Self.psql(address, "CREATE DATABASE \(database)", root)
        guard var url = URLComponents(string: address) else { throw TestFailure("bad HEDDLE_TEST_POSTGRES") }
        url.path = "/\(database)"
        store = url.string!
        let heddle = Binaries.path("heddle")
        try await Fabric.run(heddle, ["certs", "init", "--dir", root.file("certs")], root)
        var endpoints: [String] = []
        var httpURLs: [String] = []
        for _ in 0..<count {
            let coordinator = try Self.startCoordinator(root: root, store: store, heartbeat: heartbeat, listen: "127.0.0.1:0",
                                                        http: http)
            processes.withLock { $0.coordinators.append(coordinator) }
            let line = try await coordinator.waitForLine(startingWith: "listening on ")
            endpoints.append(String(line.dropFirst("listening on ".count)))
            if http {
                let line = try await coordinator.waitForLine(startingWith: "http listening on ")
                httpURLs.append(String(line.dropFirst("http listening on ".count)))
            }
        }
        self.endpoints = endpoints
        self.httpURLs = httpURLs
        for order in runnerOrders {
            try await addRunner(addresses: order.map { endpoints[$0] }, labels: labels, capacity: capacity)
        }
    }

    /// Starts runner N+1 (`runner-N+1`) given `addresses`, in its order of preference.
    func addRunner(addresses: [String], labels: String = "linux", capacity: Int = 2) async throws {
        let index = runners.count
        let name = "runner-\(index + 1)"
        try await Fabric.run(Binaries.path("heddle"), ["certs", "issue", "--dir", certs, "--role", "runner", "--name", name], root)
        let runner = try ManagedProcess(Binaries.path("heddle-runner"), [
            "--coordinator", addresses.joined(separator: ","), "--ca", "\(certs)/ca.pem",
            "--cert", "\(certs)/\(name).pem", "--key", "\(certs)/\(name).key", "--labels", labels,
            "--capacity", String(capacity), "--work-dir", root.file("work-\(index + 1)"), "--kill-grace", "2",
        ], logs: root)
        processes.withLock { $0.runners.append(runner) }
    }

    static func psql(_ address: String, _ sql: String, _ root: TemporaryDirectory) async throws {
        let process = try ManagedProcess("/usr/bin/psql", [address, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], logs: root)
        guard try await process.waitForExit() == 0 else { throw TestFailure("psql \(sql): \(process.standardError)") }
    }

    static func startCoordinator(root: TemporaryDirectory, store: String, heartbeat: Double, listen: String,
                                 http: Bool = false, data: String? = nil) throws -> ManagedProcess {
        let certs = root.file("certs")
        return try ManagedProcess(Binaries.path("heddle-coordinator"), [
            "--listen", listen, "--data", data ?? root.file("shared-data"), "--store", store, "--heartbeat-interval", String(heartbeat),
            "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/coordinator.pem", "--key", "\(certs)/coordinator.key",
        ] + (http ? ["--http", "127.0.0.1:0"] : []), logs: root)
    }

    /// An HTTP client of coordinator `index`'s front (no client certificate).
    func http(_ index: Int) throws -> HTTPTestClient {
        try HTTPTestClient(url: httpURLs[index], ca: "\(certs)/ca.pem")
    }

    /// SIGKILL to coordinator `index`.
    func kill9(coordinator index: Int) async throws {
        guard let process = coordinators[index] else { return }
        kill(process.pid, SIGKILL)
        _ = try await process.waitForExit()
        processes.withLock { $0.coordinators[index] = nil }
    }

    /// The CLI through coordinator `via` (or the list of every coordinator, nil).
    func startHeddle(_ arguments: [String], via: Int? = nil) throws -> ManagedProcess {
        let coordinator = via.map { endpoints[$0] } ?? endpoints.joined(separator: ",")
        return try ManagedProcess(Binaries.path("heddle"), arguments, environment: [
            "HEDDLE_COORDINATOR": coordinator, "HEDDLE_CA": "\(certs)/ca.pem",
            "HEDDLE_CERT": "\(certs)/admin.pem", "HEDDLE_KEY": "\(certs)/admin.key",
        ], directory: root.path, logs: root)
    }

    func heddle(_ arguments: [String], via: Int? = nil, timeout: Duration = .seconds(60)) async throws -> Fabric.Result {
        let process = try startHeddle(arguments, via: via)
        let status = try await process.waitForExit(timeout: timeout)
        return Fabric.Result(status: status, output: process.standardOutput, data: process.standardOutputData,
                             error: process.standardError)
    }

    /// A listing's `--json` (the REST API's list body): the array under `key`.
    func list(_ arguments: [String], _ key: String, via: Int? = nil) async throws -> [[String: Any]]? {
        (try await json(arguments, via: via) as? [String: Any])?[key] as? [[String: Any]]
    }

    func json(_ arguments: [String], via: Int? = nil) async throws -> Any {
        let result = try await heddle(arguments + ["--json"], via: via)
        guard result.status == 0 else { throw TestFailure("heddle \(arguments) via \(via.map(String.init) ?? "any") failed: \(result.error)") }
        return try JSONSerialization.jsonObject(with: result.data)
    }

    func push(_ source: String, via: Int) async throws {
        let path = root.file("ci.act")
        try source.write(toFile: path, atomically: true, encoding: .utf8)
        let result = try await heddle(["pipeline", "push", path, "--project", "shop"], via: via)
        guard result.status == 0 else { throw TestFailure("push failed: \(result.error)") }
    }

    func trigger(via: Int) async throws -> Int {
        guard let id = (try await json(["trigger", "shop/ci"], via: via) as? [String: Any])?["run"] as? Int else {
            throw TestFailure("trigger gave no id")
        }
        return id
    }

    func run(_ id: Int, via: Int? = nil) async throws -> [String: Any] {
        guard let run = try await json(["runs", "show", String(id)], via: via) as? [String: Any] else {
            throw TestFailure("runs show gave no object")
        }
        return run
    }

    @discardableResult
    func waitForRun(_ id: Int, _ statuses: Set<String>, via: Int? = nil, timeout: Duration = .seconds(60)) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        try await waitUntil("run \(id) to be \(statuses.sorted().joined(separator: " or "))", timeout: timeout) {
            last = try await self.run(id, via: via)
            return statuses.contains(summary(last)["status"] as? String ?? "")
        }
        return last
    }

    var logs: String {
        var text = ""
        for (index, coordinator) in coordinators.enumerated() {
            text += "coordinator-\(index):\n" + (coordinator?.standardError ?? "(killed)") + "\n"
        }
        for (index, runner) in runners.enumerated() {
            text += "runner-\(index + 1):\n" + (runner?.standardError ?? "") + "\n"
        }
        return text
    }

    func stop() async {
        if ProcessInfo.processInfo.environment["HEDDLE_TEST_LOGS"] != nil { print(logs) }
        for runner in runners { await runner?.stop() }
        for coordinator in coordinators { await coordinator?.stop() }
        try? await Self.psql(server, "DROP DATABASE IF EXISTS \(database) WITH (FORCE)", root)
        root.remove()
    }
}

/// A PostgreSQL server of a test's own (`start_postgres` of scripts/lib.sh in a temporary
/// directory), for a test that restarts it. `stop()` stops it by its pid and removes it.
struct ThrowawayPostgres {
    let directory: TemporaryDirectory
    let url: String

    static var library: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/lib.sh").path
    }

    static func start() async throws -> ThrowawayPostgres {
        let directory = try TemporaryDirectory("heddle-pg")
        // The server's output goes to files: it must not hold this shell's pipes open.
        let url = try await shell(directory, """
            chmod 755 "$1" && start_postgres "$1/pg" fsync=off >"$1/start.log" 2>&1 </dev/null && echo "$HEDDLE_PG_URL"
            """)
        return ThrowawayPostgres(directory: directory, url: url.trimmingCharacters(in: .whitespacesAndNewlines))
    }

    /// A fast restart (`pg_ctl restart -m fast`): every connection is cut; the server is back
    /// when this returns.
    func restart() async throws {
        _ = try await Self.shell(directory, """
            as=(); [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
            "${as[@]}" "$(pg_bin)/pg_ctl" -D "$1/pg/data" -m fast -w -t 60 restart >"$1/restart.log" 2>&1 </dev/null
            """)
    }

    func stop() async {
        _ = try? await Self.shell(directory, "stop_postgres \"$1/pg\"")
        directory.remove()
    }

    static func shell(_ directory: TemporaryDirectory, _ script: String) async throws -> String {
        // Descriptors past 2 are closed first: a server left running must not inherit the one
        // by which Foundation learns that this shell exited.
        let closing = #"for fd in /proc/$$/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null; "#
        let process = try ManagedProcess("/bin/bash", ["-c", closing + "source \"\(library)\"; " + script, "bash", directory.path],
                                         logs: directory)
        guard try await process.waitForExit(timeout: .seconds(120)) == 0 else {
            throw TestFailure("\(script): \(process.standardError)")
        }
        return process.standardOutput
    }
}
