import Foundation
import TestSupport
import Testing

/// Nodes in container images (`image:`), held to both runners with podman: an image built
/// here from Debian's `busybox-static` (no registry is reachable), run, cancelled, and held
/// to its memory limit.
@Suite(.serialized) struct ContainerConformanceTests {
    /// A local image (`podman import` of a root file system holding busybox and its applets)
    /// and a `containers.conf` for this kind of machine (runc: crun refuses its hybrid
    /// cgroups; ulimits it may set); removed by `remove()`.
    final class LocalImage: Sendable {
        let name: String
        let directory: TemporaryDirectory
        var containersConf: String { directory.file("containers.conf") }

        init() async throws {
            directory = try TemporaryDirectory("heddle-image")
            name = "localhost/heddle-test/busybox:\(UUID().uuidString.prefix(8).lowercased())"
            let root = directory.file("rootfs")
            for sub in ["bin", "tmp", "etc", "proc", "dev", "sys", "root"] {
                try FileManager.default.createDirectory(atPath: "\(root)/\(sub)", withIntermediateDirectories: true)
            }
            try FileManager.default.copyItem(atPath: "/bin/busybox", toPath: "\(root)/bin/busybox")
            try """
                [containers]
                default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
                [engine]
                runtime = "runc"

                """.write(toFile: containersConf, atomically: true, encoding: .utf8)
            try await Self.shell("""
                cd "\(root)/bin" && for applet in $(./busybox --list); do [ "$applet" = busybox ] || ln -s busybox "$applet"; done
                chmod 1777 "\(root)/tmp"
                tar -C "\(root)" -cf "\(directory.file("rootfs.tar"))" .
                podman import "\(directory.file("rootfs.tar"))" "\(name)" >/dev/null
                """, directory)
        }

        func remove() async {
            _ = try? await Self.shell("podman rmi --force \(name) >/dev/null 2>&1", directory)
            directory.remove()
        }

        static func shell(_ script: String, _ logs: TemporaryDirectory) async throws {
            let process = try ManagedProcess("/bin/sh", ["-ec", script], logs: logs)
            guard try await process.waitForExit() == 0 else { throw TestFailure("\(script) failed: \(process.standardError)") }
        }
    }

    /// The names of this runner's containers, stopped ones too.
    static func containers(of runner: pid_t, _ logs: TemporaryDirectory) async throws -> [String] {
        let process = try ManagedProcess("/usr/bin/podman", ["ps", "--all", "--format", "{{.Names}}"], logs: logs)
        _ = try await process.waitForExit()
        return process.standardOutput.split(separator: "\n").map(String.init).filter { $0.hasPrefix("heddle-\(runner)-") }
    }

    @Test(arguments: RunnerUnderTest.all) func aNodeRunsInItsImageIsCancelledAndHeldToItsLimit(runner: RunnerUnderTest) async throws {
        let image = try await LocalImage()
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], capacity: 2,
                                      runnerEnvironment: [["CONTAINERS_CONF": image.containersConf]])
        do {
            let runnerPID = try #require(fabric.runners.first??.pid)
            let key = "\(fabric.root.file("certs"))/runner-1.key"
            try await fabric.push("box.act", """
                name: box
                jobs:
                  work:
                    labels: [linux]
                    image: \(image.name)
                    nodes:
                      look:
                        env: { RUNNER_KEY: "\(key)", GREETING: hello }
                        run: |
                          busybox | head -1
                          echo "pid 1: $(cat /proc/1/cmdline | tr '\\0' ' ')"
                          [ "$(pwd)" = "$HEDDLE_WORKSPACE" ] && echo "in the workspace"
                          echo "greeting: $GREETING, node: $HEDDLE_NODE"
                          if [ -e /usr/bin/swift ] || [ -e /usr/lib/x86_64-linux-gnu ]; then echo "host usr: seen"; else echo "host usr: absent"; fi
                          if cat "$RUNNER_KEY" >/dev/null 2>&1; then echo "key: read"; else echo "key: absent"; fi
                          echo made in a container > out.txt
                      after:
                        needs: [look]
                        run: cat out.txt
                        artifacts: [out.txt]
                """)
            let id = try await fabric.trigger("shop/box")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)\n\(fabric.logs)")
            let log = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "look"]).output
            #expect(log.hasPrefix("BusyBox v"), "the image's busybox: \(log)")
            #expect(log.contains("pid 1: /bin/sh -c "), "the node's shell is the container's first process: \(log)")
            #expect(log.contains("in the workspace\n") && log.contains("greeting: hello, node: look\n"), "\(log)")
            #expect(log.contains("host usr: absent\n") && log.contains("key: absent\n"), "\(log)")
            let after = try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "after"]).output
            #expect(after == "made in a container\n", "the workspace is shared by the job's nodes: \(after)")
            let artifacts = try await fabric.list(["artifacts", "--run", String(id)], "artifacts") ?? []
            #expect(artifacts.map { $0["name"] as? String } == ["out.txt"])
            try await waitUntil("the job's containers to be removed") { try await Self.containers(of: runnerPID, fabric.root).isEmpty }

            // A cancel ends the container, also a process in it that ignores SIGTERM.
            try await fabric.push("long.act", """
                name: long
                jobs:
                  work:
                    labels: [linux]
                    image: \(image.name)
                    nodes:
                      wait:
                        grace: 1s
                        run: |
                          (trap "" TERM; sleep 1000) &
                          echo started
                          sleep 1000
                """)
            let long = try await fabric.trigger("shop/long")
            try await waitUntil("the node to start in its container") {
                try await fabric.heddle(["logs", String(long), "--job", "work", "--node", "wait"]).output.contains("started")
            }
            #expect(try await Self.containers(of: runnerPID, fabric.root).count == 1)
            let cancel = try await fabric.heddle(["cancel", String(long)], as: "bot")
            #expect(cancel.status == 0, "\(cancel.error)")
            let cancelled = try await fabric.waitForRun(long, ["succeeded", "failed", "cancelled"], timeout: .seconds(30))
            #expect(summary(cancelled)["status"] as? String == "cancelled", "\(cancelled)")
            try await waitUntil("the cancelled container to be gone", timeout: .seconds(30)) {
                try await Self.containers(of: runnerPID, fabric.root).isEmpty
            }

            // Over its memory limit: failed, saying so. An image not here and not to be pulled: failed, saying so.
            try await fabric.push("limits.act", """
                name: limits
                jobs:
                  eats:
                    labels: [linux]
                    image: \(image.name)
                    limits: { memory: 64M }
                    nodes:
                      fill: { run: 'x=$(head -c 300000000 /dev/zero | tr "\\0" a); echo survived' }
                  missing:
                    labels: [linux]
                    image: localhost/heddle-test/absent:1
                    nodes:
                      never: { run: "echo ran" }
                """)
            let limited = try await fabric.trigger("shop/limits")
            let ended = try await fabric.waitForRun(limited, ["succeeded", "failed", "cancelled"], timeout: .seconds(60))
            let reasons = Dictionary(uniqueKeysWithValues: jobs(ended).map { ($0["name"] as? String ?? "", $0["reason"] as? String ?? "") })
            #expect(reasons["eats"]?.contains("node 'fill' failed: memory limit 64M exceeded (exit code 137)") == true, "\(ended)")
            #expect(reasons["missing"]?.contains("node 'never' could not start its container: podman failed (exit code 125") == true, "\(ended)")
            let missingLog = try await fabric.heddle(["logs", String(limited), "--job", "missing", "--node", "never"]).output
            #expect(missingLog.contains("absent"), "podman's error is in the log: \(missingLog)")
        } catch {
            await fabric.stop()
            await image.remove()
            throw error
        }
        await fabric.stop()
        await image.remove()
    }
}
