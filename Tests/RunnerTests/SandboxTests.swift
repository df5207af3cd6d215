import Foundation
import TestSupport
import Testing
@testable import Runner

/// The node sandbox's mounts, one at a time (the conformance suite runs whole jobs in it).
@Suite struct SandboxTests {
    func run(_ command: String, sandbox: Sandbox, in directory: String, network: Bool = true) async throws -> (String, Int32) {
        let process = try NodeProcess(command: command, environment: ["PATH": "/usr/bin:/bin"], directory: directory,
                                      sandbox: sandbox, network: network)
        let output = try await process.read()
        return (String(decoding: output, as: UTF8.self), await process.exitCode())
    }

    func sandbox(_ work: TemporaryDirectory, hiding: [String] = []) throws -> Sandbox {
        var sandbox = try #require(try Sandbox.make(.bwrap, workDirectory: work.path, key: work.file("runner.key")))
        sandbox.hidden += hiding
        return sandbox
    }

    /// A key in a tree the node sees (`/etc/heddle/runner.key` is usual) is an empty file there.
    @Test func aHiddenFileInAReadOnlyTreeIsEmpty() async throws {
        let work = try TemporaryDirectory()
        defer { work.remove() }
        let workspace = work.file("job-1-1")
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        let file = "/etc/passwd"  // exists and is readable on every host
        #expect(try String(contentsOfFile: file, encoding: .utf8).contains("root:"))
        let (seen, code) = try await run("wc -c < \(file); cat /etc/group | grep -c '^root:'", sandbox: try sandbox(work, hiding: [file]),
                                         in: workspace)
        #expect(code == 0)
        #expect(seen == "0\n1\n", "the hidden file is empty, the rest of /etc is there")
    }

    /// `network: false` leaves the node only a loopback interface.
    @Test func withoutNetworkOnlyLoopbackIsThere() async throws {
        let work = try TemporaryDirectory()
        defer { work.remove() }
        let workspace = work.file("job-1-1")
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        let sandbox = try sandbox(work)
        let interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '"
        let (cut, _) = try await run(interfaces, sandbox: sandbox, in: workspace, network: false)
        #expect(cut == "lo ")
        let (host, _) = try await run(interfaces, sandbox: sandbox, in: workspace)
        #expect(host != "lo ", "with its network a node sees the host's interfaces: \(host)")
    }

    /// The workspace is where the node starts, writable; the work directory around it is empty.
    @Test func theWorkspaceIsTheOnlyWritablePlaceFromTheHost() async throws {
        let work = try TemporaryDirectory()
        defer { work.remove() }
        let workspace = work.file("job-1-1")
        try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: work.file("spool-secret"), contents: Data("x".utf8))
        let (seen, code) = try await run("pwd; echo made > out.txt; ls -A ..; touch /etc/x 2>/dev/null || echo etc-read-only",
                                         sandbox: try sandbox(work), in: workspace)
        #expect(code == 0)
        #expect(seen == "\(Sandbox.resolved(workspace))\njob-1-1\netc-read-only\n")
        #expect(try String(contentsOfFile: "\(workspace)/out.txt", encoding: .utf8) == "made\n")
    }

    @Test func noIsolationIsNoSandbox() throws {
        #expect(try Sandbox.make(.none, workDirectory: "/nonexistent/work", key: "/nonexistent/key") == nil)
    }
}
