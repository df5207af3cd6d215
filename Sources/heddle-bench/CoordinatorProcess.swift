import Foundation
import Wire

/// The release `heddle-coordinator` binary as its own process, so its memory can be read
/// from `/proc` apart from the simulated runners'. Stopped with SIGTERM by its pid.
final class CoordinatorProcess: @unchecked Sendable {
    let process: Process
    let endpoint: Endpoint
    /// With `--http`: its URL.
    let httpURL: String?

    private init(process: Process, endpoint: Endpoint, httpURL: String?) {
        self.process = process
        self.endpoint = endpoint
        self.httpURL = httpURL
    }

    /// With `descriptorLimit`, it runs under `ulimit -n` of that.
    static func start(pki: BenchPKI, data: String, heartbeatInterval: Double = 5,
                      extraArguments: [String] = [], descriptorLimit: Int? = nil) throws -> CoordinatorProcess {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("heddle-coordinator")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw WireError(.internal, "\(binary.path) is missing: build it in release next to heddle-bench (scripts/bench does)")
        }
        let process = Process()
        let arguments = ["--listen", "127.0.0.1:0", "--data", data, "--ca", "\(pki.directory)/ca.pem",
                         "--cert", "\(pki.directory)/coordinator.pem", "--key", "\(pki.directory)/coordinator.key",
                         "--heartbeat-interval", String(heartbeatInterval), "--log-level", "error"] + extraArguments
        if let descriptorLimit {
            // exec keeps the pid: the limit applies to the coordinator itself.
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -n \(descriptorLimit) && exec \"$0\" \"$@\"", binary.path] + arguments
        } else {
            process.executableURL = binary
            process.arguments = arguments
        }
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        // It prints "listening on 127.0.0.1:PORT" once bound, and "http listening on URL".
        let lines = extraArguments.contains("--http") ? 2 : 1
        var text = ""
        while text.filter({ $0 == "\n" }).count < lines {
            let data = output.fileHandleForReading.availableData
            if data.isEmpty { break }
            text += String(decoding: data, as: UTF8.self)
        }
        // The two lines come in either order (the listeners start together).
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
              let endpoint = try? Endpoint(parsing: String(line.dropFirst("listening on ".count))) else {
            process.terminate()
            process.waitUntilExit()
            throw WireError(.internal, "the coordinator did not start: \(text)")
        }
        let http = text.split(separator: "\n").first { $0.hasPrefix("http listening on ") }
            .map { String($0.dropFirst("http listening on ".count)) }
        return CoordinatorProcess(process: process, endpoint: endpoint, httpURL: http)
    }

    /// Resident memory now, and its peak so far, in MB (from /proc/PID/status).
    func memory() -> (rss: Double, peak: Double) {
        let status = (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8)) ?? ""
        func field(_ name: String) -> Double {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name + ":") }),
                  let kb = Double(line.split(separator: " ").dropFirst().first { !$0.isEmpty }.map(String.init) ?? "")
            else { return 0 }
            return kb / 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    /// CPU time used so far (user and system), in seconds (from /proc/PID/stat).
    func cpuSeconds() -> Double { Self.cpuSeconds(of: "\(process.processIdentifier)").seconds }

    /// A process's command name and CPU time so far (user and system) in seconds, from
    /// /proc/`pid`/stat (`self` for this one).
    static func cpuSeconds(of pid: String) -> (command: String, seconds: Double) {
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
        guard let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { return ("", 0) }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return ("", 0) }
        return (String(stat[stat.index(after: open)..<close]), (user + system) / Double(sysconf(Int32(_SC_CLK_TCK))))
    }

    /// The CPU seconds of every process named `command` now (PostgreSQL's server and its
    /// backends: `postgres`); those that exit between two readings drop out of the second.
    static func cpuSeconds(ofEvery command: String) -> Double {
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.filter { $0.allSatisfy(\.isNumber) } ?? []
        return pids.map { cpuSeconds(of: $0) }.filter { $0.command == command }.reduce(0) { $0 + $1.seconds }
    }

    /// Starts counting the peak RSS again from now (Linux: `clear_refs` 5).
    func resetPeak() {
        try? "5".write(toFile: "/proc/\(process.processIdentifier)/clear_refs", atomically: false, encoding: .utf8)
    }

    /// SIGTERM, and SIGKILL when it has not exited 10 s later.
    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGTERM)
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(50_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}
