import Foundation
import Synchronization
import TestSupport
import Testing
@testable import Runner

@Suite struct NodeProcessTests {
    func run(_ command: String, in directory: String, environment: [String: String] = [:]) async throws -> (Data, Int32) {
        let process = try NodeProcess(command: command, environment: environment, directory: directory)
        let output = try await process.read()
        return (output, await process.exitCode())
    }

    @Test func stdoutAndStderrAreOneStreamKeptByteForByte() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let (output, code) = try await run(
            #"printf '\033[31mred\033[0m\n'; echo err >&2; printf 'tab\there'; printf '\n\000\377'; printf 'last line'"#,
            in: dir.path)
        #expect(code == 0)
        var expected = Data("\u{1B}[31mred\u{1B}[0m\nerr\ntab\there\n".utf8)
        expected.append(contentsOf: [0x00, 0xff])
        expected.append(Data("last line".utf8))
        #expect(output == expected)
    }

    @Test func exitCodesAndSignalsAreReported() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        #expect(try await run("exit 3", in: dir.path).1 == 3)
        #expect(try await run("kill -KILL $$", in: dir.path).1 == 128 + 9)
    }

    @Test func itRunsInItsDirectoryWithItsEnvironment() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let (output, _) = try await run("pwd; echo \"$GREETING\"; test -t 0 || cat", in: dir.path,
                                        environment: ["GREETING": "hi there", "PATH": "/usr/bin:/bin"])
        let resolved = URL(fileURLWithPath: dir.path).resolvingSymlinksInPath().path
        #expect(String(decoding: output, as: UTF8.self) == "\(resolved)\nhi there\n")
    }

    /// A node lives as long as it runs, whichever thread started it. The kernel's
    /// parent-death signal (bwrap's `--die-with-parent`) follows the thread that started a
    /// process, and a Swift concurrency thread ends after 5 s idle: quiet nodes were killed
    /// (exit code 137). Here the node sets that signal, the thread that started it then ends,
    /// and the node must still print and exit 0.
    @Test func aNodeOutlivesTheThreadThatStartedIt() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let command = "exec /usr/bin/setpriv --pdeathsig KILL /bin/sh -c 'touch armed; sleep 2; echo alive'"
        let started = Mutex<Result<NodeProcess, any Error>?>(nil)
        let ended = Mutex(false)
        let starter = Thread {
            let process = Result { try NodeProcess(command: command, environment: [:], directory: dir.path) }
            started.withLock { $0 = process }
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while !FileManager.default.fileExists(atPath: "\(dir.path)/armed") && ContinuousClock.now < deadline {
                usleep(10_000)
            }
            ended.withLock { $0 = true }
        }
        starter.start()
        try await waitUntil("the starting thread to end") { ended.withLock { $0 } }
        let process = try #require(try started.withLock { $0 }?.get())
        #expect(FileManager.default.fileExists(atPath: "\(dir.path)/armed"))
        let output = try await process.read()
        #expect(await process.exitCode() == 0)
        #expect(String(decoding: output, as: UTF8.self) == "alive\n")
    }

    @Test func backgroundProcessesDoNotOutliveTheirNode() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // The background sleep holds the pipe open; the node still ends when its shell does.
        let (output, code) = try await run("sleep 300 & echo $! > bg.pid; echo done", in: dir.path)
        #expect(code == 0)
        #expect(String(decoding: output, as: UTF8.self) == "done\n")
        let pid = Int32(try String(contentsOfFile: "\(dir.path)/bg.pid", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        try await waitUntil("the background sleep to be gone") { !ProcessTree.isAlive(pid) }
    }

    /// The grandchild starts its own session (out of the node's process group) and ignores
    /// SIGTERM; stopping the node must still end it.
    @Test func stoppingANodeEndsEvenADetachedGrandchildThatIgnoresSIGTERM() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let process = try NodeProcess(command: """
            setsid sh -c 'trap "" TERM; echo $$ > grandchild.pid; exec sleep 1000' &
            trap "" TERM
            echo ready
            sleep 1000
            """, environment: ["PATH": "/usr/bin:/bin"], directory: dir.path)
        let pidFile = "\(dir.path)/grandchild.pid"
        let ready = try await process.read { String(decoding: $0, as: UTF8.self).contains("ready") }
        #expect(String(decoding: ready, as: UTF8.self) == "ready\n")
        try await waitUntil("the grandchild to write its pid") {
            ((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "").hasSuffix("\n")
        }
        let grandchild = pid_t(try String(contentsOfFile: pidFile, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        #expect(getpgid(grandchild) != process.pid, "the grandchild must have left the node's process group")
        process.terminate(grace: .milliseconds(300))
        // The grandchild holds the pipe: the output ends only once it is killed.
        _ = try await process.read()
        let code = await process.exitCode()
        #expect(code == 128 + SIGKILL, "the shell ignores SIGTERM, so SIGKILL ends it")
        // A killed process closes its descriptors before it becomes a zombie, so the pipe can
        // reach its end while the grandchild is still exiting (CI saw it alive at that moment).
        try await waitUntil("pid \(grandchild) to be gone", timeout: .seconds(10)) { !ProcessTree.isAlive(grandchild) }
        #expect(!ProcessTree.isAlive(process.pid))
    }

    @Test func aLargeOutputIsDeliveredWhole() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let (output, code) = try await run("head -c 5000000 /dev/zero", in: dir.path)
        #expect(code == 0)
        #expect(output.count == 5_000_000)
    }
}

@Suite struct ArtifactMatchTests {
    @Test func globsMatchRegularFilesRelativeToTheWorkspace() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: "\(dir.path)/out/sub", withIntermediateDirectories: true)
        for file in ["out/a.txt", "out/b.txt", "out/c.bin", "out/sub/d.txt", "top.txt"] {
            _ = FileManager.default.createFile(atPath: "\(dir.path)/\(file)", contents: Data("x".utf8))
        }
        #expect(ArtifactUploader.match(["out/*.txt"], in: dir.path).names == ["out/a.txt", "out/b.txt"])
        #expect(ArtifactUploader.match(["out/*", "top.txt", "out/*.txt"], in: dir.path).names
                == ["out/a.txt", "out/b.txt", "out/c.bin", "top.txt"])
        #expect(ArtifactUploader.match(["missing/*"], in: dir.path) == .init())
    }

    /// Whatever the glob, a match whose real location is outside the workspace (through a
    /// linked directory or a linked file) is skipped and reported; links inside are followed.
    @Test func matchesLeadingOutsideTheWorkspaceAreSkipped() throws {
        let outside = try TemporaryDirectory()
        let dir = try TemporaryDirectory()
        defer { dir.remove(); outside.remove() }
        let files = FileManager.default
        _ = files.createFile(atPath: "\(outside.path)/secret", contents: Data("s".utf8))
        try files.createDirectory(atPath: "\(dir.path)/out", withIntermediateDirectories: true)
        _ = files.createFile(atPath: "\(dir.path)/out/a.txt", contents: Data("x".utf8))
        try files.createSymbolicLink(atPath: "\(dir.path)/linkdir", withDestinationPath: outside.path)
        try files.createSymbolicLink(atPath: "\(dir.path)/out/file-link", withDestinationPath: "\(outside.path)/secret")
        try files.createSymbolicLink(atPath: "\(dir.path)/inner", withDestinationPath: "out/a.txt")
        let realOutside = try #require(ArtifactUploader.resolved(outside.path))
        let matches = ArtifactUploader.match(["linkdir/secret", "out/*", "inner", "linkdir/*"], in: dir.path)
        #expect(matches.names == ["out/a.txt", "inner"])
        #expect(matches.outside.map(\.name) == ["linkdir/secret", "out/file-link"])
        #expect(matches.outside.map(\.resolved) == ["\(realOutside)/secret", "\(realOutside)/secret"])
    }
}

@Suite struct SpoolBufferTests {
    @Test func unacknowledgedBytesSpillToDiskAndComeBackExactly() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = "\(dir.path)/n.spool"
        var spool = SpoolBuffer(path: path, memoryLimit: 10, diskLimit: 40)
        spool.append(Data("0123456789".utf8))
        #expect(!FileManager.default.fileExists(atPath: path))
        spool.append(Data("abcdefghij".utf8))
        #expect(FileManager.default.fileExists(atPath: path), "past the memory limit, bytes go to the spool file")
        #expect(spool.read(from: 5, count: 10) == Data("56789abcde".utf8))
        spool.drop(12)
        #expect(spool.count == 8)
        #expect(spool.read(from: 0, count: 100) == Data("cdefghij".utf8))
        spool.append(Data(repeating: 65, count: 32))
        #expect(spool.isFull, "past the disk limit the writer must wait for acknowledgements")
        spool.drop(40)
        #expect(spool.count == 0)
        #expect(!FileManager.default.fileExists(atPath: path), "an empty spool file is removed")
    }
}

extension NodeProcess {
    /// The node's output until it ends, or until `enough` holds for what was read; fails
    /// after `limit` rather than waiting for a node that never closes its output.
    func read(limit: Duration = .seconds(60), until enough: @escaping @Sendable (Data) -> Bool = { _ in false }) async throws -> Data {
        try await withDeadline(limit) { [self] in
            var read = Data()
            for await chunk in self.output {
                read.append(chunk)
                consumed()
                if enough(read) { break }
            }
            return read
        }.get()
    }
}
