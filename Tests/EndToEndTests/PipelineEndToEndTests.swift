import Foundation
import TestSupport
import Testing
import Wire

/// The real heddle-coordinator, heddle-runner and heddle binaries over mutual TLS.
@Suite(.serialized) struct PipelineEndToEndTests {
    static let graph = #"""
        name: ci
        jobs:
          test:
            labels: [linux]
            nodes:
              fetch:
                run: "mkdir -p src && echo fetched > src/file && echo fetch-done"
              colours:
                run: |
                  printf '\033[1;32mgreen\033[0m\n'; echo to-stderr >&2; printf 'no newline at the end'
                needs: [fetch]
              big:
                run: "mkdir -p out && head -c 3145728 /dev/urandom > out/blob.bin && sha256sum out/blob.bin"
                needs: [fetch]
                artifacts: ["out/*.bin"]
              report:
                run: "cat src/file; echo report for $HEDDLE_RUN_ID > out/report.txt"
                needs: [colours, big]
                artifacts: ["out/report.txt"]
        """#

    @Test func aGraphRunsWithExactLogsAndVerifiedArtifacts() async throws {
        let fabric = try await Fabric()
        do {
            try await fabric.push("ci.act", Self.graph)
            let triggered = try await fabric.heddle(["trigger", "shop/ci", "--wait", "--json"])
            #expect(triggered.status == 0, "\(triggered.output)\(triggered.error)")
            let run = try #require(try JSONSerialization.jsonObject(with: triggered.data) as? [String: Any])
            #expect(run["status"] as? String == "succeeded")
            let runID = try #require(run["id"] as? Int)

            let detail = try #require(try await fabric.json(["runs", "show", String(runID)]) as? [String: Any])
            #expect(detail["status"] as? String == "succeeded")
            #expect(detail["attempt"] as? Int == 1)
            let jobs = try #require(detail["jobs"] as? [[String: Any]])
            #expect(jobs.count == 1)
            #expect(jobs[0]["runner"] as? String == "runner-1")
            let nodes = try #require(jobs[0]["nodes"] as? [[String: Any]])
            #expect(nodes.map { $0["name"] as? String } == ["fetch", "colours", "big", "report"])
            #expect(nodes.allSatisfy { $0["status"] as? String == "succeeded" && $0["exit_code"] as? Int == 0 })
            // colours and big both need only fetch: they overlapped or at least both started after it.
            let starts = nodes.compactMap { $0["started_at"] as? String }
            #expect(starts.count == 4)

            let colours = try await fabric.heddle(["logs", String(runID), "--job", "test", "--node", "colours"])
            #expect(colours.status == 0)
            #expect(colours.data == Data("\u{1B}[1;32mgreen\u{1B}[0m\nto-stderr\nno newline at the end".utf8))

            let all = try await fabric.heddle(["logs", String(runID)])
            #expect(all.output.contains("── test/fetch ──\nfetch-done\n"))
            #expect(all.output.contains("── test/report ──\nfetched\n"))

            let artifacts = try #require(try await fabric.json(["artifacts", "--run", String(runID)]) as? [[String: Any]])
            #expect(artifacts.map { $0["name"] as? String } == ["out/blob.bin", "out/report.txt"])
            let blob = try #require(artifacts.first)
            #expect(blob["size"] as? Int == 3_145_728)
            let bigLog = try await fabric.heddle(["logs", String(runID), "--job", "test", "--node", "big"])
            let loggedHash = String(bigLog.output.prefix(64))
            #expect(blob["sha256"] as? String == loggedHash, "the runner's sha256sum and the stored SHA-256 differ")

            let id = try #require(blob["id"] as? Int)
            let get = try await fabric.heddle(["artifacts", "get", String(id), "-o", "downloaded.bin"])
            #expect(get.status == 0, "\(get.error)")
            let downloaded = try Data(contentsOf: URL(fileURLWithPath: fabric.root.file("downloaded.bin")))
            #expect(downloaded.count == 3_145_728)
            #expect(sha256Hex(downloaded) == loggedHash)
            try await Self.downloadsIntoDirectoriesDeleteNothing(fabric, id: id, sha256: loggedHash)

            let queue = try #require(try await fabric.json(["queue"]) as? [Any])
            #expect(queue.isEmpty)

            let graph = try await fabric.heddle(["graph", String(runID)])
            #expect(graph.status == 0)
            #expect(graph.output.contains("job test · succeeded · runner-1"), "\(graph.output)")
            #expect(graph.output.contains("┬─ ✓ colours"), "\(graph.output)")
            #expect(graph.output.contains("✓ report   succeeded  ← colours, big"), "\(graph.output)")

            let follow = try await fabric.heddle(["trigger", "shop/ci", "--follow"])
            #expect(follow.status == 0, "\(follow.error)")
            #expect(follow.output.contains("── test/colours ──\n\u{1B}[1;32mgreen\u{1B}[0m\nto-stderr\nno newline at the end\n"),
                    "\(follow.output)")
            #expect(follow.output.contains("✓ test/report succeeded (exit 0)"))
            #expect(follow.output.contains("succeeded in"))
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// `-o DIR` writes the artifact's base name inside DIR (as `cp` would) and deletes
    /// nothing; errors are one sentence and leave no partial file.
    static func downloadsIntoDirectoriesDeleteNothing(_ fabric: Fabric, id: Int, sha256: String) async throws {
        let files = FileManager.default
        let directory = fabric.root.file("into")
        try files.createDirectory(atPath: "\(directory)/sub", withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: "\(directory)/a"))
        for output in [directory, directory + "/", "into", "."] {
            let get = try await fabric.heddle(["artifacts", "get", String(id), "-o", output])
            #expect(get.status == 0, "-o \(output): \(get.error)")
            let written = output == "." ? fabric.root.file("blob.bin")
                : output.hasPrefix("/") ? "\(directory)/blob.bin" : fabric.root.file("into/blob.bin")
            #expect(get.output.hasPrefix("wrote \(output == "." ? "./" : output.hasSuffix("/") ? output : output + "/")blob.bin"),
                    "-o \(output): \(get.output)")
            let data = try Data(contentsOf: URL(fileURLWithPath: written))
            #expect(sha256Hex(data) == sha256, "-o \(output)")
        }
        #expect(try String(contentsOfFile: "\(directory)/a", encoding: .utf8) == "keep")
        #expect(files.fileExists(atPath: "\(directory)/sub"))
        #expect(try files.contentsOfDirectory(atPath: directory).sorted() == ["a", "blob.bin", "sub"])

        // A file is replaced; a directory named as the target is not.
        try Data("old".utf8).write(to: URL(fileURLWithPath: "\(directory)/a"))
        let replace = try await fabric.heddle(["artifacts", "get", String(id), "-o", "\(directory)/a"])
        #expect(replace.status == 0, "\(replace.error)")
        #expect(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/a"))) == sha256)

        for (output, message) in [
            (fabric.root.file("missing/dir/x"), "cannot write \(fabric.root.file("missing/dir/x")): the directory \(fabric.root.file("missing/dir")) does not exist"),
            (fabric.root.file("missing/"), "the directory \(fabric.root.file("missing/")) does not exist; nothing was written"),
        ] {
            let get = try await fabric.heddle(["artifacts", "get", String(id), "-o", output])
            #expect(get.status == 1, "-o \(output)")
            #expect(get.error.contains(message), "-o \(output): \(get.error)")
            #expect(get.error.split(separator: "\n").count == 1, "one sentence: \(get.error)")
        }
        let leftovers = try files.contentsOfDirectory(atPath: fabric.root.path) + files.contentsOfDirectory(atPath: directory)
        #expect(!leftovers.contains { $0.contains("heddle-partial") }, "\(leftovers)")
    }

    @Test func aFailingNodeFailsTheRunAndSkipsItsDependents() async throws {
        let fabric = try await Fabric()
        do {
            try await fabric.push("fail.act", """
                name: fail
                jobs:
                  test:
                    labels: [linux]
                    nodes:
                      ok: { run: "echo fine" }
                      broken: { run: "echo about to fail; exit 7", needs: [ok] }
                      after: { run: "echo never", needs: [broken] }
                      independent:
                        run: "echo still runs; mkdir -p out; echo mine > out/own.txt; ln -s /etc linkdir; ln -s /etc/passwd out/host"
                        needs: [ok]
                        artifacts: ["linkdir/passwd", "out/*"]
                """)
            let triggered = try await fabric.heddle(["trigger", "shop/fail", "--wait"])
            #expect(triggered.status == 1, "trigger --wait must exit 1 for a failed run")
            #expect(triggered.output.contains("failed"))
            let runs = try #require(try await fabric.json(["runs"]) as? [[String: Any]])
            let runID = try #require(runs.first?["id"] as? Int)
            let detail = try #require(try await fabric.json(["runs", "show", String(runID)]) as? [String: Any])
            #expect(detail["status"] as? String == "failed")
            let job = try #require((detail["jobs"] as? [[String: Any]])?.first)
            #expect(job["status"] as? String == "failed")
            #expect((job["reason"] as? String)?.contains("'broken' failed with exit code 7") == true)
            let nodes = Dictionary(uniqueKeysWithValues: (job["nodes"] as? [[String: Any]] ?? []).map {
                ($0["name"] as! String, ($0["status"] as! String, $0["exit_code"] as? Int))
            })
            #expect(nodes["ok"]?.0 == "succeeded")
            #expect(nodes["broken"]?.0 == "failed" && nodes["broken"]?.1 == 7)
            #expect(nodes["after"]?.0 == "skipped")
            #expect(nodes["independent"]?.0 == "succeeded")
            let never = try await fabric.heddle(["logs", String(runID), "--job", "test", "--node", "after"])
            #expect(never.data.isEmpty)

            // Symbolic links out of the workspace, to a directory or to a file, upload
            // nothing, and the node's log says so.
            let artifacts = try #require(try await fabric.json(["artifacts", "--run", String(runID)]) as? [[String: Any]])
            #expect(artifacts.map { $0["name"] as? String } == ["out/own.txt"])
            let log = try await fabric.heddle(["logs", String(runID), "--job", "test", "--node", "independent"])
            #expect(log.output == """
                still runs
                heddle: artifact linkdir/passwd skipped: it leads to /etc/passwd, outside the workspace
                heddle: artifact out/host skipped: it leads to /etc/passwd, outside the workspace

                """, "\(log.output)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func jobsGoOnlyToRunnersWithTheirLabelsAndFollowShowsLiveOutput() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux", "linux,gpu"], capacity: 1)
        do {
            try await fabric.push("gpu.act", """
                name: gpu
                jobs:
                  train:
                    labels: [gpu]
                    nodes:
                      step: { run: "echo tick 1; while [ ! -f \(fabric.root.file("go")) ]; do sleep 0.05; done; echo tick 2; echo tick 3" }
                """)
            let triggered = try await fabric.heddle(["trigger", "shop/gpu", "--json"])
            let id = try #require((try JSONSerialization.jsonObject(with: triggered.data) as? [String: Any])?["id"] as? Int)
            let follow = try fabric.startHeddle(["logs", String(id), "--follow"])
            // The first line is shown while the node still waits for the go file: live, not
            // printed from history after the run ended.
            do {
                try await waitUntil("the follower to show the first line") { follow.standardOutput.contains("tick 1\n") }
                #expect(try await fabric.run(id)["status"] as? String == "running")
                #expect(!follow.standardOutput.contains("tick 2"))
            } catch {
                await follow.stop()
                throw error
            }
            _ = FileManager.default.createFile(atPath: fabric.root.file("go"), contents: Data())
            #expect(try await follow.waitForExit() == 0)
            #expect(follow.standardOutput == "── train/step ──\ntick 1\ntick 2\ntick 3\n")
            let detail = try #require(try await fabric.json(["runs", "show", String(id)]) as? [String: Any])
            let job = try #require((detail["jobs"] as? [[String: Any]])?.first)
            #expect(job["runner"] as? String == "runner-2")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func clearErrorsForBadInput() async throws {
        let fabric = try await Fabric(runnerLabels: [])
        do {
            let path = fabric.root.file("bad.act")
            try "name: bad\njobs:\n  t:\n    nodes:\n      a: { run: x, needs: [a] }\n".write(toFile: path, atomically: true, encoding: .utf8)
            let push = try await fabric.heddle(["pipeline", "push", path, "--project", "shop"])
            #expect(push.status != 0)
            #expect(push.error.contains("bad.act:5:"), "\(push.error)")
            let huge = fabric.root.file("huge.act")
            try Data(repeating: 0x23, count: 5 << 20).write(to: URL(fileURLWithPath: huge))
            let tooLarge = try await fabric.heddle(["pipeline", "push", huge, "--project", "shop"])
            #expect(tooLarge.status == 1)
            #expect(tooLarge.error.contains("huge.act is too large: 5242880 bytes; a pipeline file may have at most 4190208 bytes"),
                    "\(tooLarge.error)")
            let show = try await fabric.heddle(["runs", "show", "4242"])
            #expect(show.status != 0)
            #expect(show.error.contains("run 4242 does not exist"), "\(show.error)")
            let get = try await fabric.heddle(["artifacts", "get", "99"])
            #expect(get.status != 0)
            #expect(get.error.contains("artifact 99 does not exist"))
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }
}
