import Foundation
import Wire

/// Nodes that name a container image (`image:`) run in it with podman: one container per
/// node, removed when the node ends, named after this runner's process, the job, its lease
/// and the node (`heddle-PID-JOB-EPOCH-NODE`). The container sees the job's workspace (at the
/// same path, its working directory) and nothing else of the host; the node's limits are
/// podman's (`--memory`, `--memory-swap`, `--cpus`, `--pids-limit`), its network the host's
/// or none. The node's variables (its secrets too) reach the container by name only
/// (`--env NAME`), so no value is on podman's command line. Every process in it carries the
/// node's marker (`ProcessTree`), so a stop finds them as it finds a sandboxed node's.
/// Which runtime podman uses, its registries and its default limits are the machine's
/// (`containers.conf`, `registries.conf`; `CONTAINERS_CONF` in the runner's environment).
public struct Podman: Sendable, Equatable {
    /// The `podman` program.
    public var program: String

    /// Podman on this machine's `PATH`, or nil.
    public static func find() -> Podman? {
        Sandbox.find("podman").map { Podman(program: $0) }
    }

    /// A node container's name.
    static func name(job: Heddle_V1_JobRef, node: String) -> String {
        "heddle-\(getpid())-\(job.jobID)-\(job.epoch)-\(node)"
    }

    /// `podman run ...` for a node: `/bin/sh -c COMMAND` in `image`.
    func arguments(name: String, image: String, workspace: String, network: Bool, limits: ResourceLimits,
                   variables: [String], command: String) -> [String] {
        var argv = [program, "run", "--rm", "--pull=missing", "--name", name, "--label", "heddle.runner=\(getpid())",
                    "--network", network ? "host" : "none", "--security-opt", "no-new-privileges",
                    "--volume", "\(workspace):\(workspace)", "--workdir", workspace]
        if let memory = limits.memory { argv += ["--memory", "\(memory)", "--memory-swap", "\(memory)"] }
        if let millis = limits.cpuMillis { argv += ["--cpus", String(format: "%.3f", Double(millis) / 1000)] }
        if let pids = limits.pids { argv += ["--pids-limit", "\(pids)"] }
        for variable in variables.sorted() { argv += ["--env", variable] }
        return argv + [image, "/bin/sh", "-c", command]
    }

    /// Removes a node's container if it is still there (its `podman run` was killed before it
    /// could), waiting at most 30 s.
    func remove(_ name: String) {
        run(["rm", "--force", "--ignore", "--time", "0", name])
    }

    /// Removes containers that runners now gone left (`heddle-PID-...` whose PID is no
    /// process; those of runners still running stay theirs).
    public func removeLeftovers() {
        let listed = capture(["ps", "--all", "--filter", "label=heddle.runner", "--format", "{{.Names}}"])
        for name in listed.split(separator: "\n").map(String.init) where name.hasPrefix("heddle-") {
            guard let pid = pid_t(name.dropFirst(7).prefix(while: \.isNumber)), pid > 0,
                  kill(pid, 0) != 0 && errno == ESRCH else { continue }
            remove(name)
        }
    }

    /// `podman --version`'s words, for the runner's start line.
    public func version() -> String {
        capture(["--version"]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @discardableResult
    private func run(_ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return -1 }
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while process.isRunning && ContinuousClock.now < deadline { usleep(10_000) }
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }

    private func capture(_ arguments: [String]) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "" }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }
}
