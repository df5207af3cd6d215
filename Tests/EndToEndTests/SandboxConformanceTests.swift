import Foundation
import TestSupport
import Testing

/// The job sandbox, held to both runners (`--isolation bwrap`, the default): what a node of a
/// pipeline can reach on the runner's machine. Two jobs run at once on one runner; each node
/// probes and prints what it found, and the test checks from the host too.
@Suite(.serialized) struct SandboxConformanceTests {
    static let probe = """
        set -u
        while [ ! -f go ]; do sleep 0.05; done
        if cat "$RUNNER_KEY" >/dev/null 2>&1; then echo "key: read"; else echo "key: hidden"; fi
        echo "jobs seen: $(ls "$(dirname "$HEDDLE_WORKSPACE")" | tr '\\n' ' ')"
        if cat ../job-*/secret 2>/dev/null | grep -q b-secret; then echo "other job: read"; else echo "other job: hidden"; fi
        if kill -0 "$RUNNER_PID" 2>/dev/null; then echo "runner: reachable"; else echo "runner: unreachable"; fi
        echo "processes: $(ls /proc | grep -c '^[0-9]')"
        echo leaked > "/tmp/$TMP_MARK" && echo "tmp: writable"
        if touch /usr/heddle-probe 2>/dev/null; then echo "usr: writable"; else echo "usr: read-only"; fi
        if touch "$HOME/x" 2>/dev/null; then echo "home: writable"; fi
        printf 'int main(void) { return 42; }\\n' > t.c && cc t.c -o t
        ./t; echo "cc: $?"
        """

    @Test(arguments: RunnerUnderTest.all) func aNodeReachesOnlyItsWorkspace(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], capacity: 2)
        let mark = "heddle-sandbox-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: "/tmp/\(mark)") }
        do {
            let runnerPID = try #require(fabric.runners.first??.pid)
            let key = "\(fabric.root.file("certs"))/runner-1.key"
            #expect(FileManager.default.isReadableFile(atPath: key))
            try await fabric.push("probe.act", """
                name: probe
                jobs:
                  a:
                    labels: [linux]
                    nodes:
                      look:
                        env: { RUNNER_KEY: "\(key)", RUNNER_PID: "\(runnerPID)", TMP_MARK: "\(mark)" }
                        run: |
                \(Self.probe.split(separator: "\n").map { "          \($0)" }.joined(separator: "\n"))
                  b:
                    labels: [linux]
                    nodes:
                      hold: { run: "echo b-secret > secret; while [ ! -f done ]; do sleep 0.05; done; echo b-done" }
                """)
            let id = try await fabric.trigger("shop/probe")
            // Both jobs' workspaces exist on the host at once (one runner, capacity 2).
            let work = fabric.root.file("work-1")
            var workspaces: [String: String] = [:]
            try await waitUntil("both jobs to run on the runner") {
                let detail = try await fabric.run(id)
                let ids = Dictionary(jobs(detail).compactMap { job in (job["name"] as? String).flatMap { name in (job["id"] as? Int).map { (name, $0) } } },
                                     uniquingKeysWith: { first, _ in first })
                let present = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
                for (name, jobID) in ids {
                    if let dir = present.first(where: { $0.hasPrefix("job-\(jobID)-") }) { workspaces[name] = "\(work)/\(dir)" }
                }
                guard let b = workspaces["b"] else { return false }
                return workspaces["a"] != nil && FileManager.default.fileExists(atPath: "\(b)/secret")
            }
            FileManager.default.createFile(atPath: "\(workspaces["a"]!)/go", contents: Data())
            try await waitUntil("job a to end") {
                let detail = try await fabric.run(id)
                return jobs(detail).first { $0["name"] as? String == "a" }?["status"] as? String == "succeeded"
            }
            FileManager.default.createFile(atPath: "\(workspaces["b"]!)/done", contents: Data())
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")

            let log = try await fabric.heddle(["logs", String(id), "--job", "a", "--node", "look"]).output
            #expect(log.contains("key: hidden\n"), "\(log)")
            let own = URL(fileURLWithPath: workspaces["a"]!).lastPathComponent
            #expect(log.contains("jobs seen: \(own) \n"), "only its own workspace in --work-dir: \(log)")
            #expect(log.contains("other job: hidden\n"), "\(log)")
            #expect(log.contains("runner: unreachable\n"), "\(log)")
            let processes = log.split(separator: "\n").first { $0.hasPrefix("processes: ") }.flatMap { Int($0.dropFirst(11)) }
            #expect((processes ?? 99) <= 8, "a node sees only its own processes: \(log)")
            #expect(log.contains("tmp: writable\n"), "\(log)")
            #expect(!FileManager.default.fileExists(atPath: "/tmp/\(mark)"), "a write to the sandbox's /tmp reached the host")
            #expect(log.contains("usr: read-only\n"), "\(log)")
            #expect(log.contains("cc: 42\n"), "a C build with the host's cc: \(log)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// A cancel takes the whole sandbox down: a process that left the node's session and
    /// ignores SIGTERM is gone too.
    @Test(arguments: RunnerUnderTest.all) func aCancelEndsEverythingInTheSandbox(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"])
        let mark = "HEDDLE_TEST_MARK=\(UUID().uuidString)"
        do {
            try await fabric.push("escape.act", """
                name: escape
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      long:
                        run: |
                          echo started
                          setsid sh -c 'trap "" TERM; exec env \(mark) sleep 1000' &
                          trap "" TERM
                          sleep 1000
                        grace: 1s
                """)
            let id = try await fabric.trigger("shop/escape")
            try await waitUntil("the escaped process to start") { !Self.processes(with: mark).isEmpty }
            let cancel = try await fabric.heddle(["cancel", String(id)], as: "bot")
            #expect(cancel.status == 0, "\(cancel.error)")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "cancelled")
            try await waitUntil("the escaped process to be gone", timeout: .seconds(10)) { Self.processes(with: mark).isEmpty }
        } catch {
            for pid in Self.processes(with: mark) { kill(pid, SIGKILL) }
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// `network: none` (a job's, or a node's) leaves a node only loopback; `network: host` on a
    /// node of such a job gives it the runner's network again.
    @Test(arguments: RunnerUnderTest.all) func aNodeWithoutNetworkHasOnlyLoopback(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"])
        let interfaces = #"tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo"#
        do {
            try await fabric.push("net.act", """
                name: net
                jobs:
                  offline:
                    labels: [linux]
                    network: none
                    nodes:
                      cut: { run: "\(interfaces)" }
                      back: { run: "\(interfaces)", network: host, needs: [cut] }
                """)
            let id = try await fabric.trigger("shop/net")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            let cut = try await fabric.heddle(["logs", String(id), "--job", "offline", "--node", "cut"]).output
            #expect(cut == "lo \n")
            let back = try await fabric.heddle(["logs", String(id), "--job", "offline", "--node", "back"]).output
            #expect(back != cut && back.hasSuffix(" \n"), "the host's interfaces: \(back)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// Without a sandbox a node cannot be cut off: `network: none` fails it, saying why.
    @Test(arguments: RunnerUnderTest.all) func noNetworkWithoutTheSandboxFailsTheNode(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], isolation: "none")
        do {
            try await fabric.push("net.act", """
                name: net
                jobs:
                  offline:
                    labels: [linux]
                    nodes:
                      cut: { run: "echo ran", network: none }
                """)
            let id = try await fabric.trigger("shop/net")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "failed", "\(run)")
            let reason = jobs(run).first?["reason"] as? String ?? ""
            #expect(reason.contains("`network: none`, which needs the sandbox: this runner runs with --isolation none"), "\(run)")
            let log = try await fabric.heddle(["logs", String(id), "--job", "offline", "--node", "cut"]).output
            #expect(!log.contains("ran"))
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// `limits:` on a node: one over its memory limit fails saying so; one within its limits
    /// succeeds; a fork bomb stops at its pids limit.
    @Test(.enabled(if: Self.cgroupsWritable, "needs a cgroup hierarchy with the memory controller that the runner can write"),
          arguments: RunnerUnderTest.all)
    func aNodeOverItsMemoryLimitFailsSayingSo(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"])
        do {
            try await fabric.push("limits.act", """
                name: limits
                jobs:
                  hungry:
                    labels: [linux]
                    limits: { memory: 64M, pids: 50 }
                    nodes:
                      fits: { run: "x=$(head -c 8000000 /dev/zero | tr '\\\\0' x); echo ${#x}" }
                      forks: { run: "(for i in $(seq 100); do sleep 30 & done) 2>/dev/null; echo forks $?", needs: [fits] }
                      eats: { run: "x=$(head -c 300000000 /dev/zero | tr '\\\\0' x); echo ${#x}", needs: [forks] }
                """)
            let id = try await fabric.trigger("shop/limits")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "failed", "\(run)")
            let job = try #require(jobs(run).first)
            #expect(nodes(job) == ["fits": "succeeded", "forks": "succeeded", "eats": "failed"], "\(job)")
            let reason = job["reason"] as? String ?? ""
            #expect(reason.contains("node 'eats' failed: memory limit 64M exceeded"), "\(reason)")
            let fits = try await fabric.heddle(["logs", String(id), "--job", "hungry", "--node", "fits"]).output
            #expect(fits == "8000000\n")
            let forks = try await fabric.heddle(["logs", String(id), "--job", "hungry", "--node", "forks"]).output
            #expect(forks == "forks 2\n", "the shell could not fork past 50 processes")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// A bad `--isolation` or `--limits` is refused at start, naming what is wrong, before the
    /// runner reads a certificate or connects.
    @Test(arguments: RunnerUnderTest.all) func badIsolationOrLimitsAreRefusedAtStart(runner: RunnerUnderTest) async throws {
        let root = try TemporaryDirectory("heddle-flags")
        defer { root.remove() }
        let cases: [([String], String)] = [
            (["--isolation", "chroot"], "'chroot'"),
            (["--limits", "memory=1K"], "memory limit '1K' is not a size of at least 4M"),
            (["--limits", "cpus=0"], "cpus limit '0' is not a number of CPUs from 0.01 to 1024"),
            (["--limits", "disk=1G"], "unknown limit 'disk'; the limits are memory, cpus and pids"),
            (["--limits", "memory"], "'memory' is not NAME=VALUE"),
        ]
        for (flags, message) in cases {
            let process = try ManagedProcess(runner.path, ["--coordinator", "127.0.0.1:1", "--ca", "none.pem", "--cert", "none.pem",
                                                           "--key", "none.key", "--work-dir", root.file("work")] + flags, logs: root)
            let status = try await process.waitForExit(timeout: .seconds(30))
            #expect(status != 0, "\(flags)")
            #expect(process.standardError.contains(message), "\(flags): \(process.standardError)")
            #expect(!FileManager.default.fileExists(atPath: root.file("work")), "\(flags): nothing is made before the flags are checked")
        }
    }

    /// Whether a runner here can make cgroups with a memory limit: v1's memory hierarchy
    /// writable, or a v2 cgroup offering the memory controller.
    static var cgroupsWritable: Bool {
        if access("/sys/fs/cgroup/memory", W_OK) == 0 { return true }
        let offered = (try? String(contentsOfFile: "/sys/fs/cgroup/cgroup.controllers", encoding: .utf8)) ?? ""
        return offered.contains("memory") && access("/sys/fs/cgroup", W_OK) == 0
    }

    /// Live processes on the host whose environment holds `entry` (NAME=VALUE).
    static func processes(with entry: String) -> [pid_t] {
        let needle = Data((entry + "\0").utf8)
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { name -> pid_t? in
            guard let pid = pid_t(name), let environ = FileManager.default.contents(atPath: "/proc/\(name)/environ"),
                  environ.range(of: needle) != nil, isAlive(pid) else { return nil }
            return pid
        }
    }
}
