import Foundation
import TestSupport
import Testing
import Wire

/// Fault injection with the real binaries: crashes, cut and stalled connections, fencing,
/// revocation, shutdown. Nothing acknowledged is lost, nothing is stored twice.
@Suite(.serialized) struct FaultTests {
    static let lines = 60
    static let streaming = """
        name: stream
        jobs:
          work:
            labels: [linux]
            nodes:
              talk: { run: "for i in $(seq 1 \(lines)); do echo line $i; sleep 0.05; done" }
        """
    static var expected: String { (1...lines).map { "line \($0)\n" }.joined() }

    func logLines(_ fabric: Fabric, _ id: Int, job: String, node: String) async throws -> Int {
        let log = try await fabric.heddle(["logs", String(id), "--job", job, "--node", node])
        return log.output.split(separator: "\n").count
    }

    @Test func aCoordinatorKilledMidStreamLosesNoLogByte() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], heartbeat: 1)
        do {
            try await fabric.push("stream.act", Self.streaming)
            let id = try await fabric.trigger("shop/stream")
            try await waitUntil("some lines to be stored") { try await logLines(fabric, id, job: "work", node: "talk") >= 10 }
            try await fabric.crashAndRestartCoordinator()
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"])
            #expect(run["status"] as? String == "succeeded", "\(run)")
            let log = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "talk"])
            #expect(log.output == Self.expected)
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func cutConnectionsLoseNoLogByteAndUploadsResume() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], heartbeat: 1, proxied: true)
        do {
            let size = 200 * 1024 * 1024
            try await fabric.push("both.act", """
                name: both
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      talk: { run: "for i in $(seq 1 \(Self.lines)); do echo line $i; sleep 0.05; done" }
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
            #expect(run["status"] as? String == "succeeded", "\(run)")
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "talk"]).output == Self.expected)
            let hash = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "make"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let artifacts = try #require(try await fabric.json(["artifacts", "--run", String(id)]) as? [[String: Any]])
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

    @Test func aCoordinatorKilledMidUploadResumesItAfterTheRestart() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], heartbeat: 1)
        do {
            let size = 200 * 1024 * 1024
            try await fabric.push("upload.act", uploadPipeline(name: "upload", size: size))
            let id = try await fabric.trigger("shop/upload")
            try await waitForAnUpload(in: fabric.root.file("data/uploads"))
            try await fabric.crashAndRestartCoordinator()
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"], timeout: .seconds(180))
            #expect(run["status"] as? String == "succeeded", "\(run)")
            let hash = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "make"]).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let artifacts = try #require(try await fabric.json(["artifacts", "--run", String(id)]) as? [[String: Any]])
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

    @Test func aKilledRunnersJobIsLostAfterItsLease() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], heartbeat: 0.5)
        do {
            try await fabric.push("stream.act", Self.streaming)
            let id = try await fabric.trigger("shop/stream")
            try await waitUntil("the job to run") { try await logLines(fabric, id, job: "work", node: "talk") >= 2 }
            try await fabric.killRunner(0)
            let run = try await fabric.waitForRun(id, ["failed", "succeeded"], timeout: .seconds(30))
            let job = try #require((run["jobs"] as? [[String: Any]])?.first)
            #expect(run["status"] as? String == "failed")
            #expect((job["reason"] as? String)?.hasPrefix("runner lost: runner-1") == true, "\(job)")

            // The killed runner left its workspace behind; started again, it clears it.
            let work = fabric.root.file("work-1")
            let left = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
            #expect(left.contains { $0.hasPrefix("job-") }, "\(left)")
            try fabric.restartRunner(0, labels: "linux")
            try await waitUntil("the restarted runner to connect") {
                (try await fabric.json(["runners"]) as? [Any])?.count == 1
            }
            let after = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
            #expect(!after.contains { $0.hasPrefix("job-") }, "\(after)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    static let frozen = """
        name: frozen
        jobs:
          work:
            labels: [linux]
            retry: { lost: 1 }
            nodes:
              n: { run: "echo start; sleep 2; echo end" }
        """

    /// The runner's running-job count, as `heddle runners` shows it (nil while not connected).
    func running(_ fabric: Fabric, _ name: String) async throws -> Int? {
        let runners = try await fabric.json(["runners"]) as? [[String: Any]] ?? []
        return runners.first { $0["name"] as? String == name }?["running"] as? Int
    }

    /// Runs `body` with a one-runner fabric whose runner was frozen (SIGSTOP) while running a
    /// `frozen` job, given the run id and the runner's pid; the runner is resumed and the
    /// fabric stopped afterwards, whatever happens.
    func withFrozenRunner(_ body: (Fabric, Int, pid_t) async throws -> Void) async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], capacity: 1, heartbeat: 0.5)
        let pid = try #require(fabric.runners[0]).pid
        do {
            try await fabric.push("frozen.act", Self.frozen)
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
    @Test func aRunnerFrozenPastItsLeaseRunsTheJobAgainWhenResumed() async throws {
        try await withFrozenRunner { fabric, id, pid in
            let requeued = try await fabric.waitForRun(id, ["queued"], timeout: .seconds(30))
            let job = try #require((requeued["jobs"] as? [[String: Any]])?.first)
            #expect((job["reason"] as? String)?.contains("runner lost: runner-1") == true, "\(job)")
            kill(pid, SIGCONT)
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"], timeout: .seconds(60))
            #expect(run["status"] as? String == "succeeded", "\(run)")
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "n"]).output == "start\nend\n")
            try await waitUntil("the runner to be idle") { try await running(fabric, "runner-1") == 0 }
        }
    }

    /// A cancel while the job's runner is frozen: when the lease expires the job ends
    /// cancelled (it was requeued, and ran again once the runner resumed); the resumed
    /// runner stops its copy.
    @Test func aCancelWhileTheRunnerIsFrozenEndsTheJobCancelled() async throws {
        try await withFrozenRunner { fabric, id, pid in
            let cancel = try await fabric.heddle(["cancel", String(id)])
            #expect(cancel.status == 0 && cancel.output.contains("1 job cancelled"), "\(cancel.output)\(cancel.error)")
            let run = try await fabric.waitForRun(id, ["cancelled", "queued", "failed"], timeout: .seconds(30))
            #expect(run["status"] as? String == "cancelled", "\(run)")
            kill(pid, SIGCONT)
            try await waitUntil("the resumed runner to be back and idle") { try await running(fabric, "runner-1") == 0 }
            #expect(try await fabric.run(id)["status"] as? String == "cancelled")
            let queue = try await fabric.json(["queue"]) as? [Any]
            #expect(queue?.isEmpty == true)
        }
    }

    /// A client that sends requests and never reads the answers: the coordinator stops
    /// reading it once 16 frames wait to be written, so its memory stays bounded however long
    /// the client goes on, and the session, silent to the coordinator, is closed.
    @Test func aClientThatNeverReadsItsAnswersCostsBoundedMemory() async throws {
        let fabric = try await Fabric(runnerLabels: [], heartbeat: 2)
        do {
            try await fabric.push("idle.act", "name: idle\njobs:\n  j:\n    labels: [nowhere]\n    nodes:\n      n: { run: \"true\" }\n")
            let tls = TLSFiles(ca: "\(fabric.certs)/ca.pem", certificate: "\(fabric.certs)/admin.pem", key: "\(fabric.certs)/admin.key")
            let endpoint = try Endpoint(parsing: fabric.endpoint)
            let admin = try await HeddleClient.connect(to: endpoint, tls: tls)
            for _ in 0..<400 { _ = try await admin.trigger(project: "shop", pipeline: "idle", branch: "main") }
            // Each answer below is about 400 run summaries.
            let answer = try await admin.runs(limit: 1000)
            #expect(answer.count == 400)
            await admin.connection.close()
            let pid = try #require(fabric.coordinator).pid
            let before = try memory(pid)

            var hello = Heddle_V1_Hello()
            hello.protocolVersion = HeddleVersion.protocolVersion
            var flood = Self.frame(Envelope(id: 1, .hello(hello)))
            var list = Heddle_V1_RunListRequest()
            list.limit = 1000
            let request = Self.frame(Envelope(id: 2, .runList(list)))
            for _ in 0..<100_000 { flood += request }
            let (_, wroteAll) = try await RawClient.exchangeReportingWrite(flood, with: endpoint, tls: tls, reading: false)
            #expect(!wroteAll, "the coordinator read the whole flood")
            let after = try memory(pid)
            // 16 answers may wait (PROTOCOL.md); thousands used to.
            #expect(after.peak - before.resident < 64 << 20, "peak \(after.peak >> 20) MiB, before \(before.resident >> 20) MiB")
            let runs = try #require(try await fabric.json(["runs", "--limit", "5"]) as? [Any])
            #expect(runs.count == 5)
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// Out of file descriptors: the coordinator warns at start that its limit is below what
    /// `--max-connections` needs, logs (rate limited) that accepting fails, backs off instead
    /// of spinning, and serves again once descriptors are free.
    @Test func outOfDescriptorsTheCoordinatorSaysSoBacksOffAndRecovers() async throws {
        let fabric = try await Fabric(runnerLabels: [], heartbeat: 1, coordinatorArguments: ["--max-connections", "1000"],
                                      descriptorLimit: 64)
        var sockets: [Int32] = []
        do {
            let coordinator = try #require(fabric.coordinator)
            #expect(coordinator.standardError.contains(
                "the open-file limit is 64 (ulimit -n) but --max-connections 1000 needs about 1256"), "\(coordinator.standardError)")
            let port = UInt16(fabric.endpoint.split(separator: ":").last ?? "") ?? 0
            for _ in 0..<100 { sockets.append(try openTCP(Endpoint(host: "127.0.0.1", port: Int(port)))) }
            try await waitUntil("the coordinator to say it cannot accept") {
                coordinator.standardError.contains("cannot accept a connection (accepting again in 1 s)")
            }
            let before = try cpuSeconds(coordinator.pid)
            let start = ContinuousClock.now
            try await waitUntil("two seconds to pass") { ContinuousClock.now - start >= .seconds(2) }
            let used = try cpuSeconds(coordinator.pid) - before
            #expect(used < 1.0, "the coordinator used \(used) s of CPU in 2 s while out of descriptors")
            let warnings = coordinator.standardError.components(separatedBy: "cannot accept a connection").count - 1
            #expect(warnings <= 2, "\(warnings) warnings in about 3 s: not rate limited")
            for socket in sockets { close(socket) }
            sockets = []
            try await waitUntil("the coordinator to serve again") {
                try await fabric.heddle(["runs"], timeout: .seconds(30)).status == 0
            }
        } catch {
            for socket in sockets { close(socket) }
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// User and system CPU time of a process, in seconds.
    func cpuSeconds(_ pid: pid_t) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        // After the command: state is field 3; utime and stime are fields 14 and 15.
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// Whether this process may mount a tmpfs (root with the capability: the test machines).
    static let canMountTmpfs: Bool = {
        guard let point = try? TemporaryDirectory("heddle-mount-probe") else { return false }
        defer { point.remove() }
        guard shell(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", point.path]) == 0 else { return false }
        _ = shell(["umount", point.path])
        return true
    }()

    @discardableResult
    static func shell(_ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// The coordinator's data disk fills up while a node writes its log and an artifact: the
    /// runner keeps the bytes and backs off (a handful of reconnects, not several a second),
    /// `heddle runners` says why the job is stalled, and once space is back the job finishes
    /// with its true outcome, every log byte stored once and the artifact intact.
    @Test(.enabled(if: canMountTmpfs, "mounting a tmpfs needs root"))
    func aFullDataDiskStallsTheJobUntilSpaceReturns() async throws {
        let disk = try TemporaryDirectory("heddle-disk")
        defer { disk.remove() }
        #expect(Self.shell(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", disk.path]) == 0)
        defer { Self.shell(["umount", "-l", disk.path]) }
        let fabric = try await Fabric(runnerLabels: ["linux"], heartbeat: 2, data: "\(disk.path)/data")
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
                let runners = try await fabric.json(["runners"]) as? [[String: Any]] ?? []
                return (runners.first?["stalled"] as? String)?.contains("storage is full") == true
            }
            let start = ContinuousClock.now
            try await waitUntil("six seconds of a full disk") { ContinuousClock.now - start >= .seconds(6) }
            let reconnects = runner.standardError.components(separatedBy: " connected").count - connectsBefore
            #expect(reconnects == 0, "\(reconnects) reconnects in about 6 s")
            #expect(try await fabric.run(id)["status"] as? String == "running")

            try FileManager.default.removeItem(atPath: filler)
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"], timeout: .seconds(60))
            #expect(run["status"] as? String == "succeeded", "\(run)")
            let node = try #require(((run["jobs"] as? [[String: Any]])?.first?["nodes"] as? [[String: Any]])?.first)
            #expect(node["status"] as? String == "succeeded" && node["exit_code"] as? Int == 0, "\(node)")
            let log = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "n"]).output
            let expected = "first\n" + (1...20000).map { "\($0)\n" }.joined()
            #expect(log.hasPrefix(expected), "the log is not exact")
            let hash = String(log.dropFirst(expected.count).prefix(64))
            let artifacts = try #require(try await fabric.json(["artifacts", "--run", String(id)]) as? [[String: Any]])
            #expect(artifacts.first?["sha256"] as? String == hash)
            let runners = try await fabric.json(["runners"]) as? [[String: Any]] ?? []
            #expect(runners.first?["stalled"] is NSNull)
        } catch {
            try? FileManager.default.removeItem(atPath: filler)
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    static func frame(_ envelope: Envelope) -> [UInt8] {
        let payload: [UInt8] = (try? envelope.serializedBytes()) ?? []
        return [0] + withUnsafeBytes(of: UInt32(payload.count).bigEndian, Array.init) + payload
    }

    /// A process's resident and peak resident memory in bytes, from /proc.
    func memory(_ pid: pid_t) throws -> (resident: Int, peak: Int) {
        let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        func field(_ name: String) -> Int {
            let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
            return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0) * 1024
        }
        return (field("VmRSS"), field("VmHWM"))
    }

    @Test func aRunnerCutOffPastItsLeaseIsFencedOffWhenItReturns() async throws {
        let pids = try TemporaryDirectory("heddle-pids")
        defer { pids.remove() }
        let fabric = try await Fabric(runnerLabels: ["linux", "linux"], heartbeat: 0.5, proxied: true, direct: [1],
                                      runnerEnvironment: [["WHO": "a"], ["WHO": "b"]])
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
            #expect(run["status"] as? String == "succeeded", "\(run)")
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
                let runners = try await fabric.json(["runners"]) as? [[String: Any]] ?? []
                return runners.contains { $0["name"] as? String == "runner-1" }
            }
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "n"]).output == "start b\nend b\n")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func aRevokedRunnerIsCutOffAndARenewedCertificateIsAccepted() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], heartbeat: 0.5)
        do {
            let revoke = try await fabric.heddle(["certs", "revoke", "runner-1"])
            let revokedSecond = Int(Date().timeIntervalSince1970)
            #expect(revoke.status == 0, "\(revoke.error)")
            #expect(revoke.output.contains("1 session closed"), "\(revoke.output)")
            try await waitUntil("the runner to be gone") {
                (try await fabric.json(["runners"]) as? [Any])?.isEmpty == true
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
                (try await fabric.json(["runners"]) as? [Any])?.count == 1
            }
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func sigtermDrainsARunnerAndASecondCancelsItsJobs() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux", "linux"], heartbeat: 1)
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
            #expect(try await fabric.run(first)["status"] as? String == "succeeded")

            let other = try #require(fabric.runners[1 - index])
            let second = try await fabric.trigger("shop/sleepy")
            try await waitUntil("the second job to start") { try await logLines(fabric, second, job: "work", node: "n") >= 1 }
            kill(other.pid, SIGTERM)
            try await waitUntil("the runner to log its drain") { other.standardError.contains("draining") }
            kill(other.pid, SIGTERM)
            _ = try await other.waitForExit(timeout: .seconds(30))
            let run = try await fabric.waitForRun(second, ["cancelled", "failed", "succeeded"])
            #expect(run["status"] as? String == "cancelled", "\(run)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }
}

/// A pipeline whose one node makes a random file of `size` bytes, prints its SHA-256 and
/// uploads it as an artifact.
func uploadPipeline(name: String, size: Int) -> String {
    """
    name: \(name)
    jobs:
      work:
        labels: [linux]
        nodes:
          make:
            run: "mkdir -p out && head -c \(size) /dev/urandom > out/big.bin && sha256sum out/big.bin | cut -c1-64"
            artifacts: ["out/big.bin"]
    """
}

/// Waits until a coordinator's uploads directory holds a partial upload with bytes in it.
func waitForAnUpload(in uploads: String) async throws {
    try await waitUntil("the upload to start", timeout: .seconds(120)) {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? []
        return files.contains { name in
            (((try? FileManager.default.attributesOfItem(atPath: "\(uploads)/\(name)"))?[.size] as? Int) ?? 0) > 0
        }
    }
}
