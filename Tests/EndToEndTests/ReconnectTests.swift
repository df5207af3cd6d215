import Foundation
import TestSupport
import Testing
import Wire

@Suite struct ReconnectTests {
    @Test func aRunnerReconnectsAfterTheCoordinatorRestartsAndQueuedWorkSurvives() async throws {
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
            let id = try #require((try JSONSerialization.jsonObject(with: output) as? [String: Any])?["id"] as? Int)

            await first.stop()
            #expect(first.process.terminationReason == .exit && first.process.terminationStatus == 0,
                    "SIGTERM stops the coordinator cleanly")
            let second = try coordinator(address)
            processes.append(second)
            _ = try await second.waitForLine(startingWith: "listening on ")
            let runner = try ManagedProcess(Binaries.path("heddle-runner"), [
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
}
