import Foundation

/// How a runner isolates the nodes of its jobs.
public enum Isolation: String, Sendable, CaseIterable {
    /// Each node in a bubblewrap sandbox (`Sandbox`): the default.
    case bwrap
    /// Each node as the runner's user in the runner's view of the machine: the explicit way out.
    case none
}

/// A node's sandbox, built with Debian's `bubblewrap` (`bwrap`), the same in both runners:
///
/// - a new PID namespace (the node sees only its own processes; it cannot signal the runner
///   or anything else on the host), and new IPC and UTS namespaces;
/// - the host's `/usr`, `/etc` and `/opt` read-only, with `/bin`, `/sbin` and `/lib*` as on the
///   host (symbolic links into `/usr` on a merged-`/usr` system), so the host's toolchains
///   work as before; a fresh `/dev` (null, zero, random, tty, shm) and `/proc`;
/// - a private, empty `/tmp` (also `HOME`) and `/var/tmp`, gone with the node;
/// - the job's workspace as the only writable place from the host; the rest of `--work-dir`
///   (other jobs, the spool) and the runner's key are not there;
/// - no capabilities, and no new privileges (set-uid programs do not gain any);
/// - the host's network unless the node has none (`--unshare-net`);
/// - the sandbox dies with its runner (`--die-with-parent`), and the runner's stop reaches
///   every process in it (they carry the node's marker, `ProcessTree`; killing the
///   namespace's first process ends the rest).
///
/// What is not there: the home directory, `/var`, `/srv`, `/mnt`, `/media`, `/root`, other
/// users' files outside `/usr`, `/etc` and `/opt`.
public struct Sandbox: Sendable, Equatable {
    /// The `bwrap` program.
    public var program: String
    /// `--work-dir`, resolved: hidden but for the job's own workspace.
    public var workDirectory: String
    /// Files the node must not read though they lie in a tree it sees (the runner's key).
    public var hidden: [String]
    /// The host's system trees as a node sees them (`--ro-bind` and `--symlink` arguments),
    /// read once when the runner starts.
    var system: [String] = Sandbox.systemMounts()

    /// Trees bound read-only from the host, when they exist.
    static let readOnlyTrees = ["/usr", "/etc", "/opt"]
    /// Top-level names that are symbolic links into `/usr` on a merged-`/usr` system, or
    /// directories bound read-only elsewhere.
    static let systemLinks = ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"]

    /// A sandbox for a runner with this work directory and key; nil with `--isolation none`.
    /// Throws when `bwrap` is missing or cannot build a sandbox here: a runner that cannot
    /// isolate its jobs refuses to start rather than run them unisolated.
    public static func make(_ isolation: Isolation, workDirectory: String, key: String) throws -> Sandbox? {
        guard isolation == .bwrap else { return nil }
        guard let program = Self.find("bwrap") else {
            throw RunnerError("--isolation bwrap (the default): bubblewrap's `bwrap` is not installed (Debian: apt-get install bubblewrap); or run jobs unisolated with --isolation none")
        }
        try FileManager.default.createDirectory(atPath: workDirectory, withIntermediateDirectories: true)
        let sandbox = Sandbox(program: program, workDirectory: Self.resolved(workDirectory), hidden: [Self.resolved(key)])
        try? FileManager.default.removeItem(atPath: sandbox.emptyFile)  // read-only: made anew
        guard FileManager.default.createFile(atPath: sandbox.emptyFile, contents: Data(),
                                             attributes: [.posixPermissions: 0o444]) else {
            throw RunnerError("cannot create \(sandbox.emptyFile) for the job sandbox")
        }
        try sandbox.probe()
        return sandbox
    }

    /// `readOnlyTrees` that exist, bound read-only; `systemLinks` as they are on the host;
    /// systemd-resolved's stub when there is one.
    static func systemMounts() -> [String] {
        let files = FileManager.default
        var arguments: [String] = []
        for tree in readOnlyTrees where files.fileExists(atPath: tree) {
            arguments += ["--ro-bind", tree, tree]
        }
        for link in systemLinks {
            if let target = try? files.destinationOfSymbolicLink(atPath: link) {
                arguments += ["--symlink", target, link]
            } else if files.fileExists(atPath: link) {
                arguments += ["--ro-bind", link, link]
            }
        }
        // systemd-resolved's stub (where /etc/resolv.conf points on such hosts).
        return arguments + ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
    }

    /// An empty file, bound over each hidden one.
    var emptyFile: String { "\(workDirectory)/.sandbox-empty" }

    /// The arguments before the node's command: `bwrap ARGS -- /bin/sh -c COMMAND`.
    public func arguments(workspace: String, network: Bool = true) -> [String] {
        var arguments = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--new-session"]
        if geteuid() == 0 { arguments += ["--cap-drop", "ALL"] }
        if !network { arguments.append("--unshare-net") }
        arguments += system
        arguments += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
        // What lies in a tree the node sees and is not its own: the work directory (other
        // jobs, the spool) emptied, the key replaced by an empty file.
        arguments += ["--tmpfs", workDirectory]
        for file in hidden where Self.readOnlyTrees.contains(where: { file.hasPrefix($0 + "/") }) && FileManager.default.fileExists(atPath: file) {
            arguments += ["--ro-bind", emptyFile, file]
        }
        let workspace = Self.resolved(workspace)
        arguments += ["--bind", workspace, workspace, "--chdir", workspace, "--setenv", "HOME", "/tmp"]
        return arguments
    }

    /// Builds one sandbox and runs `/bin/true` in it.
    func probe() throws {
        let scratch = "\(workDirectory)/.sandbox-probe-\(getpid())"
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments(workspace: scratch) + ["--", "/bin/true"]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let said = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: said, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw RunnerError("--isolation bwrap (the default): cannot build a sandbox here (\(text.isEmpty ? "bwrap exited with \(process.terminationStatus)" : text)); jobs would run unisolated: allow user namespaces or run as root, or run with --isolation none")
        }
    }

    /// `name` on PATH (or the usual places), or nil.
    static func find(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for directory in path.split(separator: ":").map(String.init) + ["/usr/bin", "/bin", "/usr/local/bin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// An absolute path with its symbolic links resolved (as the sandbox's mounts need).
    static func resolved(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        return URL(fileURLWithPath: absolute).resolvingSymlinksInPath().path
    }
}
