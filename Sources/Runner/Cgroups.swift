import Foundation
import Wire

/// Resource limits through cgroups: each node in cgroups of its own, made under this
/// runner's, its limits written there before the node starts, and read afterwards for whether
/// it ran out of memory.
///
/// - cgroup v2 (a systemd unit with `Delegate=yes`): the runner's own cgroup must offer the
///   `memory`, `pids` and `cpu` controllers to its children; the runner moves itself into a
///   leaf (`runner`) so its cgroup may hand them on, and makes each node's cgroup beside it.
/// - cgroup v1 (this machine's kind): a directory in the runner's cgroup of each of the
///   `memory`, `pids` and `cpu` hierarchies.
///
/// The node's first process joins them itself before it runs anything (a shell writes its own
/// pid, then `exec`s the sandbox), so no process of the node starts outside.
public struct Cgroups: Sendable, Equatable {
    public enum Version: Sendable, Equatable { case v1, v2 }
    public var version: Version
    /// Where nodes' cgroups are made: one directory (v2), or one per controller (v1).
    var parents: [String: String]

    /// The hierarchy this runner can make node cgroups in, or nil (with why) when none.
    public static func detect() -> (Cgroups?, String) {
        guard let own = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8),
              let mounts = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else {
            return (nil, "no /proc/self/cgroup")
        }
        // Mount points by type and, for v1, controller.
        var v2Mount: String?
        var v1Mounts: [String: String] = [:]
        for line in mounts.split(separator: "\n") {
            let halves = line.components(separatedBy: " - ")
            guard halves.count == 2 else { continue }
            let fields = halves[0].split(separator: " ")
            let tail = halves[1].split(separator: " ")
            guard fields.count >= 5, tail.count >= 3 else { continue }
            let point = String(fields[4])
            if tail[0] == "cgroup2" { v2Mount = v2Mount ?? point }
            if tail[0] == "cgroup" {
                for option in tail[2].split(separator: ",") where ["memory", "pids", "cpu"].contains(String(option)) {
                    v1Mounts[String(option)] = point
                }
            }
        }
        var v1Paths: [String: String] = [:]
        var v2Path: String?
        for line in own.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            if parts[0] == "0" && parts[1].isEmpty { v2Path = String(parts[2]) }
            for controller in parts[1].split(separator: ",") { v1Paths[String(controller)] = String(parts[2]) }
        }
        // v1 first where it holds the memory controller (a v2 hierarchy beside it has none).
        if let memory = v1Mounts["memory"], let path = v1Paths["memory"] {
            var parents = ["memory": memory + path]
            for controller in ["pids", "cpu"] {
                if let mount = v1Mounts[controller], let path = v1Paths[controller] { parents[controller] = mount + path }
            }
            let cgroups = Cgroups(version: .v1, parents: parents)
            if let problem = cgroups.probe() { return (nil, problem) }
            return (cgroups, "cgroup v1 (\(parents.keys.sorted().joined(separator: ", ")))")
        }
        if let mount = v2Mount, let path = v2Path {
            let own = (mount + path).replacingOccurrences(of: "//", with: "/")
            let offered = (try? String(contentsOfFile: "\(own)/cgroup.controllers", encoding: .utf8)) ?? ""
            guard offered.split(separator: " ").map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }).contains("memory") else {
                return (nil, "cgroup v2 without the memory controller delegated to this runner (\(own): '\(offered.trimmingCharacters(in: .whitespacesAndNewlines))')")
            }
            // Into a leaf of its own, so its cgroup can hand the controllers on.
            let leaf = "\(own)/runner"
            try? FileManager.default.createDirectory(atPath: leaf, withIntermediateDirectories: true)
            guard write("\(getpid())", to: "\(leaf)/cgroup.procs") else {
                return (nil, "cgroup v2: cannot move this runner into \(leaf)")
            }
            for controller in ["memory", "pids", "cpu"] { _ = write("+\(controller)", to: "\(own)/cgroup.subtree_control") }
            let cgroups = Cgroups(version: .v2, parents: ["unified": own])
            if let problem = cgroups.probe() { return (nil, problem) }
            return (cgroups, "cgroup v2 (\(own))")
        }
        return (nil, "no cgroup hierarchy with the memory controller")
    }

    /// Why a node cgroup cannot be made here, or nil.
    func probe() -> String? {
        let probe = "heddle-probe-\(getpid())"
        defer { remove(probe) }
        for (controller, parent) in parents {
            do {
                try FileManager.default.createDirectory(atPath: "\(parent)/\(probe)", withIntermediateDirectories: false)
            } catch {
                return "cannot make a cgroup in \(parent) (\(controller)): \(error.localizedDescription)"
            }
        }
        return nil
    }

    /// The directories a node's cgroup named `name` takes, by controller.
    func directories(_ name: String) -> [String: String] {
        parents.mapValues { "\($0)/\(name)" }
    }

    /// Makes the node's cgroups with its limits; returns the files its first process writes
    /// its pid to (`cgroup.procs` of each).
    public func make(_ name: String, limits: ResourceLimits) throws -> [String] {
        var procs: [String] = []
        for (controller, directory) in directories(name) {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
            procs.append("\(directory)/cgroup.procs")
            switch (version, controller) {
            case (.v1, "memory"):
                if let memory = limits.memory {
                    _ = Self.write("\(memory)", to: "\(directory)/memory.limit_in_bytes")
                    _ = Self.write("\(memory)", to: "\(directory)/memory.memsw.limit_in_bytes")  // swap too, where accounted
                }
            case (.v1, "pids"):
                if let pids = limits.pids { _ = Self.write("\(pids)", to: "\(directory)/pids.max") }
            case (.v1, "cpu"):
                if let millis = limits.cpuMillis {
                    _ = Self.write("100000", to: "\(directory)/cpu.cfs_period_us")
                    _ = Self.write("\(millis * 100)", to: "\(directory)/cpu.cfs_quota_us")
                }
            case (.v2, _):
                if let memory = limits.memory {
                    _ = Self.write("\(memory)", to: "\(directory)/memory.max")
                    _ = Self.write("0", to: "\(directory)/memory.swap.max")
                }
                if let pids = limits.pids { _ = Self.write("\(pids)", to: "\(directory)/pids.max") }
                if let millis = limits.cpuMillis { _ = Self.write("\(millis * 100) 100000", to: "\(directory)/cpu.max") }
            default:
                break
            }
        }
        return procs
    }

    /// Whether the kernel killed a process of the node's cgroups for memory.
    public func ranOutOfMemory(_ name: String) -> Bool {
        let directory = directories(name)[version == .v1 ? "memory" : "unified"] ?? ""
        let file = version == .v1 ? "\(directory)/memory.oom_control" : "\(directory)/memory.events"
        guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { return false }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == "oom_kill", let count = Int(parts[1]), count > 0 { return true }
        }
        // v1 kernels before 4.13 count no kills: the limit was hit.
        if version == .v1, let fails = try? String(contentsOfFile: "\(directory)/memory.failcnt", encoding: .utf8),
           !text.contains("oom_kill "), (Int(fails.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 0 {
            return true
        }
        return false
    }

    /// Removes empty node cgroups that runners now gone left (`heddle-PID-...`; those of
    /// runners still running stay theirs).
    public func removeLeftovers() {
        for parent in parents.values {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where name.hasPrefix("heddle-") {
                guard let pid = pid_t(name.dropFirst(7).prefix(while: \.isNumber)), pid > 0,
                      kill(pid, 0) != 0 && errno == ESRCH else { continue }
                rmdir("\(parent)/\(name)")
            }
        }
    }

    /// Removes the node's cgroups (they must hold no process).
    public func remove(_ name: String) {
        for directory in directories(name).values { rmdir(directory) }
    }

    /// Removes the node's cgroups once the processes killed at its end are gone (a killed
    /// process leaves its cgroup when the kernel has reaped it: within a second), on a thread
    /// of its own, trying for up to 5 s; what is left then goes at the runner's next start.
    func removeWhenEmpty(_ name: String) {
        let directories = Array(directories(name).values)
        let remover = Thread {
            let deadline = ContinuousClock.now.advanced(by: .seconds(5))
            for directory in directories {
                while rmdir(directory) != 0 && errno == EBUSY && ContinuousClock.now < deadline {
                    usleep(20_000)
                }
            }
        }
        remover.name = "heddle-cgroup-\(name)"
        remover.start()
    }

    static func write(_ text: String, to path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return Array(text.utf8).withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) } == text.utf8.count
    }

    /// The command that joins the cgroups (`procs`) and then runs `argv`.
    static func joining(_ procs: [String], _ argv: [String]) -> [String] {
        ["/bin/sh", "-c", "while [ \"$1\" != -- ]; do echo $$ > \"$1\" || exit 125; shift; done; shift; exec \"$@\"",
         "heddle-cgroup"] + procs + ["--"] + argv
    }
}
