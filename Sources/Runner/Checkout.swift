import Foundation

/// Clones the run's branch of the project's repository (shallow) into an empty workspace and
/// returns the commit checked out.
enum Checkout {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func clone(repository: String, branch: String, commit: String = "", into workspace: String) async throws -> String {
        guard !commit.isEmpty else {
            try await git(["clone", "--quiet", "--depth", "1", "--single-branch", "--branch", branch, "--", repository, "."],
                          in: workspace)
            return try await git(["rev-parse", "HEAD"], in: workspace).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        // Exactly that commit: fetched by its id (forges allow it), else with the branch's
        // history, which holds it when it was pushed there.
        try await git(["init", "--quiet", "."], in: workspace)
        try await git(["remote", "add", "origin", "--", repository], in: workspace)
        do {
            try await git(["fetch", "--quiet", "--depth", "1", "origin", commit], in: workspace)
        } catch {
            try await git(["fetch", "--quiet", "origin", "+refs/heads/\(branch):refs/remotes/origin/\(branch)"], in: workspace)
        }
        do {
            try await git(["checkout", "--quiet", "--detach", commit], in: workspace)
        } catch {
            throw Failure(description: "commit \(commit) is not in \(repository) (branch \(branch))")
        }
        let head = try await git(["rev-parse", "HEAD"], in: workspace).trimmingCharacters(in: .whitespacesAndNewlines)
        guard head == commit else { throw Failure(description: "checked out \(head), not the commit \(commit) the run is of") }
        return head
    }

    /// Runs git; returns its standard output, or throws its standard error.
    @discardableResult
    static func git(_ arguments: [String], in directory: String) async throws -> String {
        try await tool("git", arguments, in: directory)
    }

    /// Runs `name` (found on the PATH) with `arguments` in `directory`; its standard output,
    /// or `Failure` with its standard error when it exits with another status than 0.
    static func tool(_ name: String, _ arguments: [String], in directory: String) async throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [name] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        var environment = ProcessInfo.processInfo.environment
        environment["GIT_TERMINAL_PROMPT"] = "0"
        process.environment = environment
        let output = Pipe()
        let errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = FileHandle.nullDevice
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(throwing: Failure(description: "cannot run \(name): \(error)"))
            }
        }
        let out = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let err = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        guard status == 0 else {
            let message = err.split(separator: "\n").filter { !$0.hasPrefix("warning:") }.joined(separator: " ")
            throw Failure(description: "\(name) \(arguments.first ?? "") failed (exit \(status)): \(message.isEmpty ? err : message)")
        }
        return out
    }
}
