import Foundation

/// A child process a test started, its output going to files, stopped by pid when the test
/// ends.
public final class ManagedProcess: Sendable {
    public let process: Process
    let outputPath: String
    let errorPath: String

    public var pid: Int32 { process.processIdentifier }

    /// `input`: a file its standard input reads (default none).
    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                directory: String? = nil, input: String? = nil, logs: TemporaryDirectory) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        env["NO_COLOR"] = "1"
        process.environment = env
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let name = "\((executable as NSString).lastPathComponent)-\(UUID().uuidString.prefix(8))"
        outputPath = logs.file("\(name).out")
        errorPath = logs.file("\(name).err")
        _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: outputPath)
        process.standardError = FileHandle(forWritingAtPath: errorPath)
        process.standardInput = input.flatMap { FileHandle(forReadingAtPath: $0) } ?? FileHandle.nullDevice
        try process.run()
    }

    public var standardOutputData: Data { FileManager.default.contents(atPath: outputPath) ?? Data() }
    public var standardOutput: String { String(decoding: standardOutputData, as: UTF8.self) }
    public var standardError: String { String(decoding: FileManager.default.contents(atPath: errorPath) ?? Data(), as: UTF8.self) }

    /// Waits for a line of standard output starting with `prefix`; returns the line.
    public func waitForLine(startingWith prefix: String, timeout: Duration = .seconds(60)) async throws -> String {
        var found: String?
        try await waitUntil("'\(prefix)' from \(process.executableURL?.lastPathComponent ?? "process")", timeout: timeout) {
            found = standardOutput.split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init)
            if found == nil && !process.isRunning {
                throw TestFailure("process exited (\(process.terminationStatus)) before printing '\(prefix)': \(standardError)")
            }
            return found != nil
        }
        return found!
    }

    /// Waits for the process to exit by itself; returns its exit status.
    public func waitForExit(timeout: Duration = .seconds(120)) async throws -> Int32 {
        try await waitUntil("\(process.executableURL?.lastPathComponent ?? "process") to exit", timeout: timeout) {
            !process.isRunning
        }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// SIGTERM, then SIGKILL if it has not exited within the grace period.
    public func stop(grace: Duration = .seconds(10)) async {
        guard process.isRunning else { return }
        kill(pid, SIGTERM)
        do {
            try await waitUntil("pid \(pid) to exit", timeout: grace) { !process.isRunning }
        } catch {
            kill(pid, SIGKILL)
            // Foundation sees the end only once every copy of its watch descriptor is closed;
            // a leftover grandchild holding one must not hang the test.
            try? await waitUntil("pid \(pid) to exit after SIGKILL", timeout: .seconds(10)) { !process.isRunning }
        }
        if !process.isRunning { process.waitUntilExit() }
    }
}

/// Where the built executables are: next to the test bundle, or HEDDLE_BIN_DIR.
public enum Binaries {
    public static var directory: String {
        if let dir = ProcessInfo.processInfo.environment["HEDDLE_BIN_DIR"] { return dir }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        for _ in 0..<4 {
            url.deleteLastPathComponent()
            if FileManager.default.isExecutableFile(atPath: url.appendingPathComponent("heddle-coordinator").path) {
                return url.path
            }
        }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/debug").path
    }

    public static func path(_ name: String) -> String { "\(directory)/\(name)" }
}

/// Whether a process runs (a zombie or a dead one does not), from `/proc/PID/stat`.
public func isAlive(_ pid: pid_t) -> Bool {
    guard kill(pid, 0) == 0 else { return false }
    let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
    guard let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
    return state != "Z" && state != "X"
}

/// A git repository for tests, in `path` (created), committed to as user "test".
public struct TestRepository: Sendable {
    public let path: String
    let logs: TemporaryDirectory

    public init(_ path: String, logs: TemporaryDirectory) throws {
        self.path = path
        self.logs = logs
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    /// Runs git in the repository; returns its output, trimmed.
    @discardableResult
    public func git(_ arguments: [String]) async throws -> String {
        let process = try ManagedProcess("/usr/bin/env", ["git", "-C", path, "-c", "user.email=t@example.test",
                                                          "-c", "user.name=test"] + arguments, logs: logs)
        guard try await process.waitForExit() == 0 else { throw TestFailure("git \(arguments): \(process.standardError)") }
        return process.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Writes `text` to `file` and commits it; returns the commit.
    @discardableResult
    public func commit(_ file: String, _ text: String, message: String) async throws -> String {
        try text.write(toFile: "\(path)/\(file)", atomically: true, encoding: .utf8)
        try await git(["add", file])
        try await git(["commit", "-q", "-m", message])
        return try await git(["rev-parse", "HEAD"])
    }
}
