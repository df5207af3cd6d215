import Foundation
import TestSupport
import Testing
import Wire

/// The runner conformance suite: every end-to-end and fault test that concerns a runner, run
/// against each runner binary (`RunnerUnderTest.all`: the Swift `heddle-runner`, the C
/// `heddle-runner-c`, or the programs named in HEDDLE_CONFORMANCE_RUNNERS) with the real
/// coordinator and CLI. The same pipelines, the same exact log bytes, the same artifacts, the
/// same cancels, reconnects and replays. PROTOCOL.md, "Writing a runner", says how a third
/// party runs it against its own runner.
@Suite(.serialized) struct RunnerConformanceTests {
    @Test(arguments: RunnerUnderTest.all) func aGraphRunsWithExactLogsAndVerifiedArtifacts(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner)
        do {
            try await fabric.push("ci.act", PipelineEndToEndTests.graph)
            let triggered = try await fabric.heddle(["trigger", "shop/ci", "--wait", "--json"])
            #expect(triggered.status == 0, "\(triggered.output)\(triggered.error)")
            let run = try #require(try JSONSerialization.jsonObject(with: triggered.data) as? [String: Any])
            #expect(run["status"] as? String == "succeeded")
            let runID = try #require(run["id"] as? Int)

            let detail = try #require(try await fabric.json(["runs", "show", String(runID)]) as? [String: Any])
            #expect(summary(detail)["status"] as? String == "succeeded")
            #expect(summary(detail)["attempt"] as? Int == 1)
            let jobs = try #require(detail["jobs"] as? [[String: Any]])
            #expect(jobs.count == 1)
            #expect(jobs[0]["runner"] as? String == "runner-1")
            let nodes = try #require(jobs[0]["nodes"] as? [[String: Any]])
            #expect(nodes.map { $0["name"] as? String } == ["fetch", "colours", "big", "report"])
            #expect(nodes.allSatisfy { $0["status"] as? String == "succeeded" && $0["exitCode"] as? Int == 0 })
            // colours and big both need only fetch: they overlapped or at least both started after it.
            let starts = nodes.compactMap { $0["startedAt"] as? String }
            #expect(starts.count == 4)

            let colours = try await fabric.heddle(["logs", String(runID), "--job", "test", "--node", "colours"])
            #expect(colours.status == 0)
            #expect(colours.data == PipelineEndToEndTests.colours)

            let all = try await fabric.heddle(["logs", String(runID)])
            #expect(all.output.contains("── test/fetch ──\nfetch-done\n"))
            #expect(all.output.contains("── test/report ──\nfetched\n"))

            let artifacts = try #require(try await fabric.list(["artifacts", "--run", String(runID)], "artifacts"))
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
            try await PipelineEndToEndTests.downloadsIntoDirectoriesDeleteNothing(fabric, id: id, sha256: loggedHash)

            let queue = try #require(try await fabric.list(["queue"], "jobs"))
            #expect(queue.isEmpty)

            let graph = try await fabric.heddle(["graph", String(runID)])
            #expect(graph.status == 0)
            #expect(graph.output.contains("job test · succeeded · runner-1"), "\(graph.output)")
            #expect(graph.output.contains("┬─ ✓ colours"), "\(graph.output)")
            #expect(graph.output.contains("✓ report   succeeded  ← colours, big"), "\(graph.output)")

            let follow = try await fabric.heddle(["trigger", "shop/ci", "--follow"])
            #expect(follow.status == 0, "\(follow.error)")
            #expect(follow.data.range(of: Data("── test/colours ──\n".utf8) + PipelineEndToEndTests.colours + Data("\n".utf8)) != nil,
                    "\(follow.output)")
            #expect(follow.output.contains("✓ test/report succeeded (exit 0)"))
            #expect(follow.output.contains("succeeded in"))
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aFailingNodeFailsTheRunAndSkipsItsDependents(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner)
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
            let runs = try #require(try await fabric.list(["runs"], "runs"))
            let runID = try #require(runs.first?["id"] as? Int)
            let detail = try #require(try await fabric.json(["runs", "show", String(runID)]) as? [String: Any])
            #expect(summary(detail)["status"] as? String == "failed")
            let job = try #require((detail["jobs"] as? [[String: Any]])?.first)
            #expect(job["status"] as? String == "failed")
            #expect((job["reason"] as? String)?.contains("'broken' failed with exit code 7") == true)
            let nodes = Dictionary(uniqueKeysWithValues: (job["nodes"] as? [[String: Any]] ?? []).map {
                ($0["name"] as! String, ($0["status"] as! String, $0["exitCode"] as? Int))
            })
            #expect(nodes["ok"]?.0 == "succeeded")
            #expect(nodes["broken"]?.0 == "failed" && nodes["broken"]?.1 == 7)
            #expect(nodes["after"]?.0 == "skipped")
            #expect(nodes["independent"]?.0 == "succeeded")
            let never = try await fabric.heddle(["logs", String(runID), "--job", "test", "--node", "after"])
            #expect(never.data.isEmpty)

            // Symbolic links out of the workspace, to a directory or to a file, upload
            // nothing, and the node's log says so.
            let artifacts = try #require(try await fabric.list(["artifacts", "--run", String(runID)], "artifacts"))
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

    @Test(arguments: RunnerUnderTest.all) func jobsGoOnlyToRunnersWithTheirLabelsAndFollowShowsLiveOutput(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux", "linux,gpu"], capacity: 1, isolation: "none")
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
            let id = try #require((try JSONSerialization.jsonObject(with: triggered.data) as? [String: Any])?["run"] as? Int)
            let follow = try fabric.startHeddle(["logs", String(id), "--follow"])
            // The first line is shown while the node still waits for the go file: live, not
            // printed from history after the run ended.
            do {
                try await waitUntil("the follower to show the first line") { follow.standardOutput.contains("tick 1\n") }
                #expect(summary(try await fabric.run(id))["status"] as? String == "running")
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
            // Each runner is listed with the versions its Hello said.
            let runners = try #require(try await fabric.list(["runners"], "runners"))
            let expected = ["swift": HeddleVersion.software, "c": "\(HeddleVersion.software)-c"][runner.name]
            for listed in runners {
                #expect(listed["protocol"] as? String == "\(HeddleVersion.protocolVersion).\(HeddleVersion.protocolMinor)")
                #expect((listed["version"] as? String).map { expected == nil || $0 == expected } == true, "\(listed)")
            }
            let table = try await fabric.heddle(["runners"]).output
            #expect(table.contains("VERSION") && table.contains("(protocol \(HeddleVersion.protocolVersion).\(HeddleVersion.protocolMinor))"), "\(table)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func cancellingARunningJobEndsItsWholeTreeAndKeepsItsLog(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, isolation: "none")
        do {
            let pidFile = fabric.root.file("grandchild.pid")
            try await fabric.push("slow.act", """
                name: slow
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      long:
                        run: |
                          echo started
                          setsid sh -c 'trap "" TERM; echo $$ > \(pidFile).tmp; mv \(pidFile).tmp \(pidFile); exec sleep 1000' &
                          trap "" TERM
                          sleep 1000
                        grace: 1s
                      after: { run: "echo never", needs: [long] }
                """)
            let id = try await fabric.trigger("shop/slow")
            try await waitUntil("the grandchild to start") { FileManager.default.fileExists(atPath: pidFile) }
            let grandchild = pid_t(try String(contentsOfFile: pidFile, encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines))!
            #expect(isAlive(grandchild))

            let cancel = try await fabric.heddle(["cancel", String(id)], as: "bot")
            #expect(cancel.status == 0, "\(cancel.error)")
            #expect(cancel.output.contains("stopping on runner-1"))
            try await waitUntil("the run to be cancelled") {
                summary(try await fabric.run(id))["status"] as? String == "cancelled"
            }
            #expect(!isAlive(grandchild), "the detached grandchild that ignores SIGTERM survived the cancel")
            let run = try await fabric.run(id)
            let job = try #require(jobs(run).first)
            #expect(job["status"] as? String == "cancelled")
            #expect(job["reason"] as? String == "cancelled by bot")
            #expect(nodes(job) == ["long": "cancelled", "after": "cancelled"])
            let log = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "long"])
            #expect(log.output == "started\n")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aNodeOverItsTimeoutIsStoppedAndFailsWithReasonTimeout(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner)
        do {
            try await fabric.push("timeout.act", """
                name: timeout
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      slow: { run: "echo begin; sleep 100", timeout: 1, grace: 1 }
                      after: { run: "echo never", needs: [slow] }
                """)
            let wait = try await fabric.heddle(["trigger", "shop/timeout", "--wait"])
            #expect(wait.status == 1)
            let runs = try #require(try await fabric.list(["runs"], "runs"))
            let run = try await fabric.run(try #require(runs.first?["id"] as? Int))
            let job = try #require(jobs(run).first)
            #expect((job["reason"] as? String)?.hasPrefix("timeout: node 'slow'") == true, "\(job)")
            #expect(nodes(job) == ["slow": "failed", "after": "skipped"])
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aProjectsRepositoryIsCheckedOutAtTheRunsBranchAndTheCommitRecorded(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            let repository = try TestRepository(fabric.root.file("repo"), logs: fabric.root)
            let repo = repository.path
            try await repository.git(["init", "-q", "-b", "main"])
            let mainCommit = try await repository.commit("README", "on main\n", message: "main")
            try await repository.git(["checkout", "-q", "-b", "feature"])
            let featureCommit = try await repository.commit("README", "on feature\n", message: "feature")
            try await repository.git(["checkout", "-q", "main"])

            let create = try await fabric.heddle(["project", "create", "app", "--repo", repo])
            #expect(create.status == 0, "\(create.error)")
            try await fabric.push("ci.act", """
                name: ci
                jobs:
                  build:
                    labels: [linux]
                    nodes:
                      show: { run: "cat README; echo $HEDDLE_COMMIT $HEDDLE_BRANCH $HEDDLE_PROJECT" }
                """, project: "app")
            let wait = try await fabric.heddle(["trigger", "app/ci", "--branch", "feature", "--wait"])
            #expect(wait.status == 0, "\(wait.output)\(wait.error)")
            let id = try #require((try await fabric.list(["runs"], "runs"))?.first?["id"] as? Int)
            let job = try #require(jobs(try await fabric.run(id)).first)
            #expect(job["commit"] as? String == featureCommit)
            let log = try await fabric.heddle(["logs", String(id), "--job", "build", "--node", "show"])
            #expect(log.output == "on feature\n\(featureCommit) feature app\n")

            let missing = try await fabric.heddle(["trigger", "app/ci", "--branch", "no-such-branch", "--wait"])
            #expect(missing.status == 1)
            let failedID = try #require((try await fabric.list(["runs"], "runs"))?.first?["id"] as? Int)
            let failedJob = try #require(jobs(try await fabric.run(failedID)).first)
            let reason = failedJob["reason"] as? String ?? ""
            #expect(reason.contains("checkout of \(repo) (branch no-such-branch) failed"), "\(reason)")
            #expect(reason.contains("no-such-branch not found"), "\(reason)")
            // Exactly a commit (as a forge's push starts it): an older one of the branch, then
            // one that is not in the repository.
            let token = try await fabric.createToken("ci-bot", role: "automation")
            let client = try fabric.http()
            let bearer = [("Authorization", "Bearer \(token)")]
            let exact = try await client.json("POST", "/api/v1/projects/app/pipelines/ci/runs",
                                              ["branch": "feature", "commit": mainCommit], headers: bearer)
            #expect(exact.status == 201, "\(exact.text)")
            let exactID = try #require(exact.object?["run"] as? Int)
            let exactRun = try await fabric.waitForRun(exactID, ["succeeded", "failed"])
            #expect(jobs(exactRun).first?["commit"] as? String == mainCommit, "\(exactRun)")
            #expect(try await fabric.heddle(["logs", String(exactID), "--job", "build", "--node", "show"]).output
                    == "on main\n\(mainCommit) feature app\n")
            let absent = "0123456789abcdef0123456789abcdef01234567"
            let wrong = try await client.json("POST", "/api/v1/projects/app/pipelines/ci/runs",
                                              ["branch": "feature", "commit": absent], headers: bearer)
            let wrongID = try #require(wrong.object?["run"] as? Int, "\(wrong.text)")
            let wrongRun = try await fabric.waitForRun(wrongID, ["succeeded", "failed"])
            let wrongReason = jobs(wrongRun).first?["reason"] as? String ?? ""
            #expect(wrongReason.contains("commit \(absent) is not in \(repo) (branch feature)"), "\(wrongReason)")
            // Workspaces are removed after each job: once its end is answered, so a moment after
            // the run reads ended.
            try await waitUntil("the runner to remove the workspaces") {
                let work = (try? FileManager.default.contentsOfDirectory(atPath: fabric.root.file("work-1"))) ?? []
                return work.filter { $0.hasPrefix("job-") }.isEmpty
            }
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aCoordinatorKilledMidStreamLosesNoLogByte(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], heartbeat: 1)
        do {
            try await fabric.push("stream.act", FaultTests.streaming)
            let id = try await fabric.trigger("shop/stream")
            try await waitUntil("some lines to be stored") { try await logLines(fabric, id, job: "work", node: "talk") >= 10 }
            try await fabric.crashAndRestartCoordinator()
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            let log = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "talk"])
            #expect(log.output == FaultTests.expected)
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func cutConnectionsLoseNoLogByteAndUploadsResume(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], heartbeat: 1, proxied: true)
        do {
            let size = 200 * 1024 * 1024
            try await fabric.push("both.act", """
                name: both
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      talk: { run: "for i in $(seq 1 \(FaultTests.lines)); do echo line $i; sleep 0.05; done" }
                      make:
                        run: "mkdir -p out && head -c \(size) /dev/urandom > out/big.bin && sha256sum out/big.bin | cut -c1-64"
                        needs: [talk]
                        artifacts: ["out/big.bin"]
                """)
            let id = try await fabric.trigger("shop/both")
            try await waitUntil("some lines to be stored") { try await logLines(fabric, id, job: "work", node: "talk") >= 10 }
            await fabric.proxy?.cut()
            // Then cut again in the middle of the upload: as soon as its first bytes are stored.
            let uploads = fabric.root.file("data/uploads")
            try await waitUntil("the upload to start", timeout: .seconds(120)) {
                let files = (try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? []
                return files.contains { name in
                    let size = ((try? FileManager.default.attributesOfItem(atPath: "\(uploads)/\(name)"))?[.size] as? Int) ?? 0
                    return size > 0
                }
            }
            await fabric.proxy?.stall()
            await fabric.proxy?.cut()
            await fabric.proxy?.resume()
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"], timeout: .seconds(180))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "talk"]).output == FaultTests.expected)
            let hash = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "make"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let artifacts = try #require(try await fabric.list(["artifacts", "--run", String(id)], "artifacts"))
            #expect(artifacts.first?["size"] as? Int == size)
            #expect(artifacts.first?["sha256"] as? String == hash)
            #expect(fabric.coordinator?.standardError.contains("upload resumed") == true,
                    "the upload must resume from the coordinator's offset, not restart")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aCoordinatorKilledMidUploadResumesItAfterTheRestart(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], heartbeat: 1)
        do {
            let size = 200 * 1024 * 1024
            try await fabric.push("upload.act", uploadPipeline(name: "upload", size: size))
            let id = try await fabric.trigger("shop/upload")
            try await waitForAnUpload(in: fabric.root.file("data/uploads"))
            try await fabric.crashAndRestartCoordinator()
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"], timeout: .seconds(180))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            let hash = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "make"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let artifacts = try #require(try await fabric.list(["artifacts", "--run", String(id)], "artifacts"))
            #expect(artifacts.count == 1)
            #expect(artifacts.first?["size"] as? Int == size)
            #expect(artifacts.first?["sha256"] as? String == hash)
            #expect(fabric.coordinator?.standardError.contains("upload resumed") == true,
                    "the restarted coordinator must resume the upload from what it had stored")
            let get = try await fabric.heddle(["artifacts", "get", String(artifacts.first?["id"] as? Int ?? 0), "-o", "big.bin"])
            #expect(get.status == 0, "\(get.error)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aKilledRunnersJobIsLostAfterItsLease(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], heartbeat: 0.5)
        do {
            try await fabric.push("stream.act", FaultTests.streaming)
            let id = try await fabric.trigger("shop/stream")
            try await waitUntil("the job to run") { try await logLines(fabric, id, job: "work", node: "talk") >= 2 }
            try await fabric.killRunner(0)
            let run = try await fabric.waitForRun(id, ["failed", "succeeded"], timeout: .seconds(30))
            let job = try #require((run["jobs"] as? [[String: Any]])?.first)
            #expect(summary(run)["status"] as? String == "failed")
            #expect((job["reason"] as? String)?.hasPrefix("runner lost: runner-1") == true, "\(job)")

            // The killed runner left its workspace behind; started again, it clears it.
            let work = fabric.root.file("work-1")
            let left = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
            #expect(left.contains { $0.hasPrefix("job-") }, "\(left)")
            try fabric.restartRunner(0, labels: "linux")
            try await waitUntil("the restarted runner to connect") {
                (try await fabric.list(["runners"], "runners"))?.count == 1
            }
            let after = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
            #expect(!after.contains { $0.hasPrefix("job-") }, "\(after)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// The runner's running-job count, as `heddle runners` shows it (nil while not connected).
    func running(_ fabric: Fabric, _ name: String) async throws -> Int? {
        let runners = try await fabric.list(["runners"], "runners") ?? []
        return runners.first { $0["name"] as? String == name }?["running"] as? Int
    }

    /// Runs `body` with a one-runner fabric whose runner was frozen (SIGSTOP) while running a
    /// `frozen` job, given the run id and the runner's pid; the runner is resumed and the
    /// fabric stopped afterwards, whatever happens.
    func withFrozenRunner(_ runner: RunnerUnderTest, _ body: (Fabric, Int, pid_t) async throws -> Void) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], capacity: 1, heartbeat: 0.5)
        let pid = try #require(fabric.runners[0]).pid
        do {
            try await fabric.push("frozen.act", FaultTests.frozen)
            let id = try await fabric.trigger("shop/frozen")
            try await waitUntil("the job to start") { try await logLines(fabric, id, job: "work", node: "n") >= 1 }
            kill(pid, SIGSTOP)
            try await body(fabric, id, pid)
        } catch {
            kill(pid, SIGCONT)
            await fabric.stop()
            throw error
        }
        kill(pid, SIGCONT)
        await fabric.stop()
    }

    /// A runner frozen (SIGSTOP) past its lease loses the job, which is requeued; resumed, the
    /// runner abandons its old copy and runs the job again to the end. (The stop of the old
    /// copy once ended the new one, and the job stayed running forever.)
    @Test(arguments: RunnerUnderTest.all) func aRunnerFrozenPastItsLeaseRunsTheJobAgainWhenResumed(runner: RunnerUnderTest) async throws {
        try await withFrozenRunner(runner) { fabric, id, pid in
            let requeued = try await fabric.waitForRun(id, ["queued"], timeout: .seconds(30))
            let job = try #require((requeued["jobs"] as? [[String: Any]])?.first)
            #expect((job["reason"] as? String)?.contains("runner lost: runner-1") == true, "\(job)")
            kill(pid, SIGCONT)
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"], timeout: .seconds(60))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "n"]).output == "start\nend\n")
            try await waitUntil("the runner to be idle") { try await running(fabric, "runner-1") == 0 }
        }
    }

    /// A cancel while the job's runner is frozen: when the lease expires the job ends
    /// cancelled (it was requeued, and ran again once the runner resumed); the resumed
    /// runner stops its copy.
    @Test(arguments: RunnerUnderTest.all) func aCancelWhileTheRunnerIsFrozenEndsTheJobCancelled(runner: RunnerUnderTest) async throws {
        try await withFrozenRunner(runner) { fabric, id, pid in
            let cancel = try await fabric.heddle(["cancel", String(id)])
            #expect(cancel.status == 0 && cancel.output.contains("1 job cancelled"), "\(cancel.output)\(cancel.error)")
            let run = try await fabric.waitForRun(id, ["cancelled", "queued", "failed"], timeout: .seconds(30))
            #expect(summary(run)["status"] as? String == "cancelled", "\(run)")
            kill(pid, SIGCONT)
            try await waitUntil("the resumed runner to be back and idle") { try await running(fabric, "runner-1") == 0 }
            #expect(summary(try await fabric.run(id))["status"] as? String == "cancelled")
            let queue = try await fabric.list(["queue"], "jobs")
            #expect(queue?.isEmpty == true)
        }
    }

    /// The coordinator's data disk fills up while a node writes its log and an artifact: the
    /// runner keeps the bytes and backs off (a handful of reconnects, not several a second),
    /// `heddle runners` says why the job is stalled, and once space is back the job finishes
    /// with its true outcome, every log byte stored once and the artifact intact.
    @Test(.enabled(if: FaultTests.canMountTmpfs, "mounting a tmpfs needs root"), arguments: RunnerUnderTest.all)
    func aFullDataDiskStallsTheJobUntilSpaceReturns(runner: RunnerUnderTest) async throws {
        let disk = try TemporaryDirectory("heddle-disk")
        defer { disk.remove() }
        #expect(FaultTests.shell(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", disk.path]) == 0)
        defer { FaultTests.shell(["umount", "-l", disk.path]) }
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], heartbeat: 2, data: "\(disk.path)/data", isolation: "none")
        let filler = "\(disk.path)/filler"
        do {
            let go = fabric.root.file("go")
            try await fabric.push("full.act", """
                name: full
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      n:
                        run: "echo first; while [ ! -f \(go) ]; do sleep 0.05; done; seq 1 20000; head -c 2097152 /dev/urandom > out.bin; sha256sum out.bin"
                        artifacts: [out.bin]
                """)
            let id = try await fabric.trigger("shop/full")
            try await waitUntil("the node to start") { try await logLines(fabric, id, job: "work", node: "n") >= 1 }
            // Fill the disk, then let the node write.
            let handle = try #require(FileHandle(forWritingAtPath: { _ = FileManager.default.createFile(atPath: filler, contents: nil); return filler }()))
            let block = Data(count: 1 << 20)
            while (try? handle.write(contentsOf: block)) != nil {}
            try? handle.close()
            let runner = try #require(fabric.runners[0])
            let connectsBefore = runner.standardError.components(separatedBy: " connected").count
            _ = FileManager.default.createFile(atPath: go, contents: Data())
            try await waitUntil("heddle runners to say the runner is stalled") {
                let runners = try await fabric.list(["runners"], "runners") ?? []
                return (runners.first?["stalled"] as? String)?.contains("storage is full") == true
            }
            let start = ContinuousClock.now
            try await waitUntil("six seconds of a full disk") { ContinuousClock.now - start >= .seconds(6) }
            let reconnects = runner.standardError.components(separatedBy: " connected").count - connectsBefore
            #expect(reconnects == 0, "\(reconnects) reconnects in about 6 s")
            #expect(summary(try await fabric.run(id))["status"] as? String == "running")

            try FileManager.default.removeItem(atPath: filler)
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"], timeout: .seconds(60))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            let node = try #require(((run["jobs"] as? [[String: Any]])?.first?["nodes"] as? [[String: Any]])?.first)
            #expect(node["status"] as? String == "succeeded" && node["exitCode"] as? Int == 0, "\(node)")
            let log = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "n"]).output
            let expected = "first\n" + (1...20000).map { "\($0)\n" }.joined()
            #expect(log.hasPrefix(expected), "the log is not exact")
            let hash = String(log.dropFirst(expected.count).prefix(64))
            let artifacts = try #require(try await fabric.list(["artifacts", "--run", String(id)], "artifacts"))
            #expect(artifacts.first?["sha256"] as? String == hash)
            let runners = try await fabric.list(["runners"], "runners") ?? []
            #expect(runners.first?["stalled"] == nil)
        } catch {
            try? FileManager.default.removeItem(atPath: filler)
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aRunnerCutOffPastItsLeaseIsFencedOffWhenItReturns(runner: RunnerUnderTest) async throws {
        let pids = try TemporaryDirectory("heddle-pids")
        defer { pids.remove() }
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux", "linux"], heartbeat: 0.5, proxied: true, direct: [1],
                                      runnerEnvironment: [["WHO": "a"], ["WHO": "b"]], isolation: "none")
        do {
            // Runner 2 is drained until runner 1 is cut off, so runner 1 takes the job first.
            #expect(try await fabric.heddle(["runners", "drain", "runner-2"]).status == 0)
            try await fabric.push("fenced.act", """
                name: fenced
                jobs:
                  work:
                    labels: [linux]
                    retry: { lost: 1 }
                    nodes:
                      n: { run: "echo $$ > \(pids.path)/$WHO; echo start $WHO; while [ $WHO = a ]; do sleep 0.05; done; echo end $WHO" }
                """)
            let id = try await fabric.trigger("shop/fenced")
            try await waitUntil("runner 1 to start the job") { FileManager.default.fileExists(atPath: "\(pids.path)/a") }
            await fabric.proxy?.stall()
            #expect(try await fabric.heddle(["runners", "undrain", "runner-2"]).status == 0)
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"], timeout: .seconds(60))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            let job = try #require((run["jobs"] as? [[String: Any]])?.first)
            #expect(job["runner"] as? String == "runner-2")
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "n"]).output == "start b\nend b\n")

            // Runner 1 comes back: its stale writes are refused and it is told to stop the job.
            await fabric.proxy?.resume()
            let pid = pid_t(try String(contentsOfFile: "\(pids.path)/a", encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines))!
            // It never ends by itself: only the coordinator's StopJob{abandon} ends it.
            try await waitUntil("runner 1's copy of the job to be stopped") { !isAlive(pid) }
            try await waitUntil("runner 1 to reconnect") {
                let runners = try await fabric.list(["runners"], "runners") ?? []
                return runners.contains { $0["name"] as? String == "runner-1" }
            }
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "n"]).output == "start b\nend b\n")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aRevokedRunnerIsCutOffAndARenewedCertificateIsAccepted(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], heartbeat: 0.5)
        do {
            let revoke = try await fabric.heddle(["certs", "revoke", "runner-1"])
            let revokedSecond = Int(Date().timeIntervalSince1970)
            #expect(revoke.status == 0, "\(revoke.error)")
            #expect(revoke.output.contains("1 session closed"), "\(revoke.output)")
            try await waitUntil("the runner to be gone") {
                (try await fabric.list(["runners"], "runners"))?.isEmpty == true
            }
            try await waitUntil("the runner to be refused") {
                fabric.runners[0]?.standardError.contains("revoked") == true
            }
            // The same name, issued again (in a later second than the revocation, as
            // certificates carry seconds): accepted, the runner picks up the new files.
            try await waitUntil("the next second") { Int(Date().timeIntervalSince1970) > revokedSecond }
            let reissue = try await fabric.heddle(["certs", "issue", "--dir", fabric.certs, "--role", "runner", "--name", "runner-1"])
            #expect(reissue.status == 0)
            try await waitUntil("the renewed runner to connect", timeout: .seconds(60)) {
                (try await fabric.list(["runners"], "runners"))?.count == 1
            }
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func sigtermDrainsARunnerAndASecondCancelsItsJobs(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux", "linux"], heartbeat: 1, isolation: "none")
        do {
            try await fabric.push("sleepy.act", """
                name: sleepy
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      n: { run: "echo begin; while [ ! -f \(fabric.root.file("go"))-$HEDDLE_RUN_ID ]; do sleep 0.05; done; echo done" }
                """)
            // Each job waits for its go file: the first gets it once its runner drains, the
            // second never (its runner's second SIGTERM cancels it).
            let first = try await fabric.trigger("shop/sleepy")
            try await waitUntil("the job to start") { try await logLines(fabric, first, job: "work", node: "n") >= 1 }
            let firstRunner = ((try await fabric.run(first))["jobs"] as? [[String: Any]])?.first?["runner"] as? String
            let index = firstRunner == "runner-1" ? 0 : 1
            let process = try #require(fabric.runners[index])
            kill(process.pid, SIGTERM)
            try await waitUntil("the runner to log its drain") { process.standardError.contains("draining") }
            _ = FileManager.default.createFile(atPath: fabric.root.file("go") + "-\(first)", contents: Data())
            #expect(try await process.waitForExit(timeout: .seconds(30)) == 0)
            #expect(summary(try await fabric.run(first))["status"] as? String == "succeeded")

            let other = try #require(fabric.runners[1 - index])
            let second = try await fabric.trigger("shop/sleepy")
            try await waitUntil("the second job to start") { try await logLines(fabric, second, job: "work", node: "n") >= 1 }
            kill(other.pid, SIGTERM)
            try await waitUntil("the runner to log its drain") { other.standardError.contains("draining") }
            kill(other.pid, SIGTERM)
            _ = try await other.waitForExit(timeout: .seconds(30))
            let run = try await fabric.waitForRun(second, ["cancelled", "failed", "succeeded"])
            #expect(summary(run)["status"] as? String == "cancelled", "\(run)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// A second SIGTERM while the coordinator is gone for good: the runner stops its jobs'
    /// processes, waits its kill grace and 10 s more for a coordinator to take their results,
    /// then kills what is left (here a node that ignores SIGTERM and has a grace of its own of
    /// 60 s) and exits with status 1 saying so, instead of waiting forever. (A node inherits no
    /// socket or event queue of the runner's, or of the runner's parent: the Swift runner's
    /// nodes held its sockets, and a node outliving it kept its parent from seeing it end.)
    @Test(arguments: RunnerUnderTest.all) func aSecondSigtermExitsEvenWhenTheCoordinatorIsGone(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], heartbeat: 1, isolation: "none")
        do {
            let pidFile = fabric.root.file("node.pid")
            let fdsFile = fabric.root.file("node.fds")
            try await fabric.push("stuck.act", """
                name: stuck
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      n: { run: "trap '' TERM; echo $$ > \(pidFile); ls -l /proc/$$/fd > \(fdsFile); echo begin; while true; do sleep 0.1; done", grace: 60s }
                """)
            let id = try await fabric.trigger("shop/stuck")
            try await waitUntil("the node to start") { try await logLines(fabric, id, job: "work", node: "n") >= 1 }
            let coordinator = try #require(fabric.coordinator)
            kill(coordinator.pid, SIGKILL)
            _ = try await coordinator.waitForExit()
            let process = try #require(fabric.runners[0])
            kill(process.pid, SIGTERM)
            try await waitUntil("the runner to log its drain") { process.standardError.contains("draining") }
            kill(process.pid, SIGTERM)
            // Kill grace 2 s (the fabric's), then 10 s: exit at about 12 s.
            #expect(try await process.waitForExit(timeout: .seconds(40)) == 1)
            #expect(process.standardError.contains("unreported"), "\(process.standardError)")
            let fds = try String(contentsOfFile: fdsFile, encoding: .utf8)
            #expect(!fds.contains("socket:") && !fds.contains("eventpoll"), "the node holds the runner's descriptors:\n\(fds)")
            let node = try #require(Int32(try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
            try await waitUntil("the node's process to be gone", timeout: .seconds(10)) {
                let stat = (try? String(contentsOfFile: "/proc/\(node)/stat", encoding: .utf8)) ?? ""
                return stat.isEmpty || stat.contains(") Z ")
            }
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test(arguments: RunnerUnderTest.all) func aRunnerReconnectsAfterTheCoordinatorRestartsAndQueuedWorkSurvives(runner: RunnerUnderTest) async throws {
        let root = try TemporaryDirectory("heddle-reconnect")
        var processes: [ManagedProcess] = []
        defer { root.remove() }
        func stopAll() async { for process in processes { await process.stop() } }
        do {
            let certs = root.file("certs")
            let heddleBinary = Binaries.path("heddle")
            for arguments in [["certs", "init", "--dir", certs],
                              ["certs", "issue", "--dir", certs, "--role", "runner", "--name", "r1"]] {
                let process = try ManagedProcess(heddleBinary, arguments, logs: root)
                #expect(try await process.waitForExit() == 0)
            }
            func coordinator(_ listen: String) throws -> ManagedProcess {
                try ManagedProcess(Binaries.path("heddle-coordinator"), [
                    "--listen", listen, "--data", root.file("data"), "--heartbeat-interval", "0.5",
                    "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/coordinator.pem", "--key", "\(certs)/coordinator.key",
                ], logs: root)
            }
            let first = try coordinator("127.0.0.1:0")
            processes.append(first)
            let address = String(try await first.waitForLine(startingWith: "listening on ").dropFirst("listening on ".count))
            func heddle(_ arguments: [String]) async throws -> (Int32, Data) {
                let process = try ManagedProcess(heddleBinary, arguments, environment: [
                    "HEDDLE_COORDINATOR": address, "HEDDLE_CA": "\(certs)/ca.pem",
                    "HEDDLE_CERT": "\(certs)/admin.pem", "HEDDLE_KEY": "\(certs)/admin.key",
                ], logs: root)
                return (try await process.waitForExit(), process.standardOutputData)
            }
            let act = root.file("ci.act")
            try "name: ci\njobs:\n  t:\n    labels: [linux]\n    nodes:\n      n: { run: 'echo ran on $HEDDLE_BRANCH' }\n"
                .write(toFile: act, atomically: true, encoding: .utf8)
            #expect(try await heddle(["pipeline", "push", act, "--project", "p"]).0 == 0)
            // No runner yet: the run stays queued across the restart.
            let (status, output) = try await heddle(["trigger", "p/ci", "--branch", "after-restart", "--json"])
            #expect(status == 0)
            let id = try #require((try JSONSerialization.jsonObject(with: output) as? [String: Any])?["run"] as? Int)

            await first.stop()
            #expect(first.process.terminationReason == .exit && first.process.terminationStatus == 0,
                    "SIGTERM stops the coordinator cleanly")
            let second = try coordinator(address)
            processes.append(second)
            _ = try await second.waitForLine(startingWith: "listening on ")
            let runner = try ManagedProcess(runner.path, [
                "--coordinator", address, "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/r1.pem",
                "--key", "\(certs)/r1.key", "--labels", "linux", "--work-dir", root.file("work"),
            ], logs: root)
            processes.append(runner)
            let (logStatus, log) = try await heddle(["logs", String(id), "--job", "t", "--node", "n", "--follow"])
            #expect(logStatus == 0)
            #expect(String(decoding: log, as: UTF8.self) == "ran on after-restart\n")

            // The coordinator goes away under a connected runner and comes back: the runner
            // reconnects by itself and takes new work.
            await second.stop()
            let third = try coordinator(address)
            processes.append(third)
            _ = try await third.waitForLine(startingWith: "listening on ")
            try await waitUntil("the runner to reconnect") {
                let (code, data) = try await heddle(["runners", "--json"])
                return code == 0 && String(decoding: data, as: UTF8.self).contains("\"r1\"")
            }
            let (waitStatus, _) = try await heddle(["trigger", "p/ci", "--wait"])
            #expect(waitStatus == 0)
        } catch {
            await stopAll()
            throw error
        }
        await stopAll()
    }

    /// A coordinator that sends broken frames: each ends that connection, never the runner,
    /// which connects again (and, built with ASan and UBSan, reports nothing).
    @Test(arguments: RunnerUnderTest.all) func brokenFramesFromACoordinatorEndTheConnectionNotTheRunner(runner: RunnerUnderTest) async throws {
        let root = try TemporaryDirectory("heddle-hostile")
        defer { root.remove() }
        let certs = root.file("certs")
        for arguments in [["certs", "init", "--dir", certs], ["certs", "issue", "--dir", certs, "--role", "runner", "--name", "r1"]] {
            let process = try ManagedProcess(Binaries.path("heddle"), arguments, logs: root)
            #expect(try await process.waitForExit() == 0)
        }
        // Field 20 (an Assignment) holding field 3 (its project) that claims 2^31 bytes.
        let lyingLength: [UInt8] = [0xA2, 0x01, 0x06, 0x1A, 0x80, 0x80, 0x80, 0x80, 0x08]
        let script: [[UInt8]] = [
            [1, 0, 0, 0, 0],                                   // flags other than 0
            [0, 0xFF, 0xFF, 0xFF, 0xFF],                       // a 4 GiB frame
            [0, 0, 0, 0, 8] + [UInt8](repeating: 0xFF, count: 8),  // not a protobuf message
            [0, 0, 0, 0, UInt8(lyingLength.count)] + lyingLength,   // a length past the frame's end
            [0, 0, 0, 0, 0],                                   // an envelope with no message
        ]
        let hostile = try await HostileCoordinator(tls: TLSFiles(ca: "\(certs)/ca.pem", certificate: "\(certs)/coordinator.pem",
                                                               key: "\(certs)/coordinator.key"), script: script)
        let process = try ManagedProcess(runner.path, [
            "--coordinator", "127.0.0.1:\(hostile.port)", "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/r1.pem",
            "--key", "\(certs)/r1.key", "--labels", "linux", "--work-dir", root.file("work"),
        ], logs: root)
        do {
            try await waitUntil("the runner to be welcomed \(script.count + 1) times", timeout: .seconds(60)) {
                hostile.hellos >= script.count + 1
            }
            #expect(process.process.isRunning, "\(process.standardError)")
        } catch {
            await process.stop()
            await hostile.stop()
            throw error
        }
        await process.stop()
        await hostile.stop()
        #expect(RunnerUnderTest.sanitizerReport(in: process.standardError) == nil, "\(process.standardError)")
    }
}

extension RunnerConformanceTests {
    /// A node's end is sent after the last byte of its log, on the same connection
    /// (PROTOCOL.md: the coordinator stores the end after the chunks that came before it, so
    /// a follower sees the node end after its last output). Also when the connection was cut
    /// before any byte was acknowledged: at the first byte (the node ends while the runner is
    /// away), or at the node's end (every byte was sent): on the next connection, the whole log
    /// again, then the end.
    @Test(arguments: RunnerUnderTest.all, [ScriptedCoordinator.Cut.never, .atFirstLog, .atNodeEnd])
    func aNodesEndFollowsItsLastLogByteOnTheSameConnection(runner: RunnerUnderTest, cut: ScriptedCoordinator.Cut) async throws {
        let root = try TemporaryDirectory("heddle-order")
        defer { root.remove() }
        let certs = root.file("certs")
        for arguments in [["certs", "init", "--dir", certs], ["certs", "issue", "--dir", certs, "--role", "runner", "--name", "r1"]] {
            let process = try ManagedProcess(Binaries.path("heddle"), arguments, logs: root)
            #expect(try await process.waitForExit() == 0)
        }
        let total = UInt64((1...100_000).map { "\($0)\n" }.joined().utf8.count)
        let coordinator = try await ScriptedCoordinator(
            tls: TLSFiles(ca: "\(certs)/ca.pem", certificate: "\(certs)/coordinator.pem", key: "\(certs)/coordinator.key"),
            node: "n", run: "seq 1 100000", cut: cut)
        let process = try ManagedProcess(runner.path, [
            "--coordinator", "127.0.0.1:\(coordinator.port)", "--ca", "\(certs)/ca.pem", "--cert", "\(certs)/r1.pem",
            "--key", "\(certs)/r1.key", "--labels", "linux", "--work-dir", root.file("work"),
        ], logs: root)
        do {
            try await waitUntil("the runner to finish the job", timeout: .seconds(60)) {
                coordinator.connections.joined().contains { if case .jobFinish = $0 { true } else { false } }
            }
            let connections = coordinator.connections
            #expect(connections.joined().contains(.jobFinish(status: .succeeded)), "\(connections)")
            if cut != .never { #expect(connections.count >= 2, "the first connection was cut: the runner must have come back") }
            var ends = 0
            for (index, sent) in connections.enumerated() {
                for (position, item) in sent.enumerated() {
                    guard case .nodeUpdate("n", let status) = item, status != .running else { continue }
                    ends += 1
                    #expect(status == .succeeded)
                    let logged = sent[..<position].reduce(UInt64(0)) {
                        if case .log("n", let offset, let count) = $1 { max($0, offset + UInt64(count)) } else { $0 }
                    }
                    #expect(logged == total, "connection \(index): the node's end came after \(logged) of its \(total) log bytes")
                }
            }
            #expect(ends == (cut == .atNodeEnd ? 2 : 1), "\(connections)")
        } catch {
            print("connections:", coordinator.connections.map { $0.map { "\($0)" }.joined(separator: " ").prefix(2000) })
            print(process.standardError)
            await process.stop()
            await coordinator.stop()
            throw error
        }
        await process.stop()
        await coordinator.stop()
        #expect(RunnerUnderTest.sanitizerReport(in: process.standardError) == nil, "\(process.standardError)")
    }
}
