import Foundation
import TestSupport
import Testing
import Wire

/// Three real coordinators on one PostgreSQL database: any of them serves any run, a runner
/// whose coordinator dies carries on through another, nothing acknowledged is lost.
@Suite(.serialized) struct ClusterTests {
    static let lines = 60
    static let artifactSize = 3 * 1024 * 1024
    static let pipeline = """
        name: ci
        jobs:
          work:
            labels: [linux]
            nodes:
              talk: { run: "for i in $(seq 1 \(lines)); do echo line $i; sleep 0.05; done" }
              make:
                run: "mkdir -p out && head -c \(artifactSize) /dev/urandom > out/big.bin && sha256sum out/big.bin | cut -c1-64"
                needs: [talk]
                artifacts: ["out/big.bin"]
        """
    static var expected: String { (1...lines).map { "line \($0)\n" }.joined() }

    /// The runner's coordinator is killed mid log stream: the runner moves to the next in its
    /// list, reattaches its job there and finishes it; a follower on a third coordinator saw
    /// every byte live, and every coordinator serves the same log and artifact.
    @Test func aCoordinatorKilledMidRunLosesNothingAndTheRunFinishesThroughAnother() async throws {
        let cluster = try await ClusterFabric(coordinators: 3, runnerOrders: [[0, 1, 2]])
        do {
            try await waitUntil("the runner to connect") {
                let list = try await cluster.list(["runners"], "runners", via: 0)
                return list?.count == 1
            }
            // Pushed through one coordinator, triggered through another, run on the first's runner.
            try await cluster.push(Self.pipeline, via: 1)
            let id = try await cluster.trigger(via: 2)
            // Followed through the third, which never sees the runner.
            let follower = try cluster.startHeddle(["logs", String(id), "--job", "work", "--node", "talk", "--follow"], via: 2)
            try await waitUntil("some lines to stream", timeout: .seconds(60)) {
                let log = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "talk"], via: 1)
                return log.output.split(separator: "\n").count >= 10
            }
            try await cluster.kill9(coordinator: 0)
            let run = try await cluster.waitForRun(id, ["succeeded", "failed"], via: 1, timeout: .seconds(90))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)\n\(cluster.logs)")
            #expect(try await follower.waitForExit(timeout: .seconds(30)) == 0)
            #expect(follower.standardOutput == Self.expected, "the follower through coordinator 2 missed bytes")
            for via in [1, 2] {
                let log = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "talk"], via: via)
                #expect(log.output == Self.expected)
                let artifacts = try #require(try await cluster.list(["artifacts", "--run", String(id)], "artifacts", via: via))
                #expect(artifacts.first?["size"] as? Int == Self.artifactSize)
                let hash = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "make"], via: via).output
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(artifacts.first?["sha256"] as? String == hash && hash.count == 64)
            }
            let runner = try #require(try await cluster.list(["runners"], "runners", via: 1))
            #expect(runner.count == 1, "the runner is on coordinator 1 now")
        } catch {
            print(cluster.logs)
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }
}

extension ClusterTests {
    /// Jobs triggered through three coordinators, run by eight runners spread over them: each
    /// job is assigned once, runs once and ends once; none is lost.
    @Test func everyJobRunsExactlyOnceWhicheverCoordinatorTriggeredIt() async throws {
        let jobsPerRun = 50
        let runs = 40
        let cluster = try await ClusterFabric(coordinators: 3, runnerOrders: (0..<8).map { [($0 % 3), ($0 + 1) % 3, ($0 + 2) % 3] },
                                              capacity: 4, heartbeat: 2)
        do {
            try await waitUntil("eight runners to connect") {
                var total = 0
                for via in 0..<3 { total += (try await cluster.list(["runners"], "runners", via: via))?.count ?? 0 }
                return total == 8
            }
            let jobs = (1...jobsPerRun).map { "  j\($0): { labels: [linux], nodes: { n: { run: \"true\" } } }" }.joined(separator: "\n")
            try await cluster.push("name: ci\njobs:\n\(jobs)\n", via: 0)
            // Triggers through the three coordinators at once.
            let ids = try await withThrowingTaskGroup(of: [Int].self) { group in
                for via in 0..<3 {
                    group.addTask {
                        var mine: [Int] = []
                        for _ in stride(from: via, to: runs, by: 3) { mine.append(try await cluster.trigger(via: via)) }
                        return mine
                    }
                }
                return try await group.reduce(into: [Int]()) { $0 += $1 }
            }
            #expect(Set(ids).count == runs)
            var failedJobs: [Int] = []
            for id in ids.sorted() {
                let run = try await cluster.waitForRun(id, ["succeeded", "failed", "cancelled"], via: id % 3, timeout: .seconds(300))
                #expect(summary(run)["status"] as? String == "succeeded", "run \(id): \(run)")
                for job in run["jobs"] as? [[String: Any]] ?? [] where job["status"] as? String != "succeeded" {
                    failedJobs.append(job["id"] as? Int ?? 0)
                }
            }
            if !failedJobs.isEmpty {
                // What the processes said about them, for the diagnosis.
                let marks = failedJobs.map { "job.id=\($0) " }
                print(cluster.logs.split(separator: "\n").filter { line in marks.contains { (line + " ").contains($0) } }
                    .joined(separator: "\n"))
            }
            // Assigned once (by the runners' account) and finished once (by the coordinators').
            func counts(_ logs: [String], _ message: String) -> [Int: Int] {
                var counts: [Int: Int] = [:]
                for log in logs {
                    for line in log.split(separator: "\n") where line.hasSuffix(message) {
                        guard let range = line.range(of: "job.id=") else { continue }
                        let id = Int(line[range.upperBound...].prefix { $0.isNumber }) ?? -1
                        counts[id, default: 0] += 1
                    }
                }
                return counts
            }
            let assigned = counts(cluster.runners.map { $0?.standardError ?? "" }, "job assigned")
            let finished = counts(cluster.coordinators.map { $0?.standardError ?? "" }, "job finished")
            #expect(assigned.count == runs * jobsPerRun && assigned.values.allSatisfy { $0 == 1 },
                    "assigned twice: \(assigned.filter { $0.value > 1 }.keys.sorted())")
            #expect(finished.count == runs * jobsPerRun && finished.values.allSatisfy { $0 == 1 },
                    "finished twice: \(finished.filter { $0.value > 1 }.keys.sorted())")
            #expect(Set(assigned.keys) == Set(finished.keys))
        } catch {
            print(cluster.logs.split(separator: "\n").filter { $0.contains("warning") || $0.contains("error") }.suffix(200)
                .joined(separator: "\n"))
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// A coordinator started on another `--data` than the cluster's refuses to start, naming
    /// `--data`; one whose data directory loses the cluster's marker (an unmounted share)
    /// stops, rather than write bytes the others cannot read.
    @Test func aCoordinatorOnAnotherDataDirectoryRefusesToStartAndOneThatLosesItStops() async throws {
        let cluster = try await ClusterFabric(coordinators: 1, runnerOrders: [])
        do {
            let elsewhere = cluster.root.file("other-data")
            let other = try ClusterFabric.startCoordinator(root: cluster.root, store: cluster.store, heartbeat: 1,
                                                           listen: "127.0.0.1:0", data: elsewhere)
            let refused = try await other.waitForExit(timeout: .seconds(60))
            #expect(refused == 1)
            #expect(other.standardError.contains("--data \(elsewhere) is not the data directory the other coordinators of this database use"),
                    "\(other.standardError)")
            #expect(!other.standardOutput.contains("listening on"))

            try FileManager.default.removeItem(atPath: "\(cluster.data)/heddle-data.id")
            let first = try #require(cluster.coordinators[0])
            let stopped = try await first.waitForExit(timeout: .seconds(60))
            #expect(stopped != 0)
            #expect(first.standardError.contains("the data directory is not the cluster's"), "\(first.standardError)")
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// A wrong `pool_max_conns` in `--store`'s address is refused before anything starts: exit
    /// status 64 and the setting named, no database reached (none is at that address), nothing
    /// listened on.
    @Test func aWrongPoolSizeInTheStoreAddressIsRefusedBeforeStart() async throws {
        let root = try TemporaryDirectory("heddle-store")
        defer { root.remove() }
        for value in ["0", "lots", "101"] {
            let coordinator = try ClusterFabric.startCoordinator(
                root: root, store: "postgres://heddle@127.0.0.1:1/heddle?pool_max_conns=\(value)", heartbeat: 1,
                listen: "127.0.0.1:0")
            #expect(try await coordinator.waitForExit(timeout: .seconds(30)) == 64)
            #expect(coordinator.standardError.contains("--store: pool_max_conns is a whole number from 1 to 100, not \(value)"),
                    "\(coordinator.standardError)")
            #expect(!coordinator.standardOutput.contains("listening on"))
        }
    }

    /// Moves and bulk cancels through two coordinators at once leave one order, the same on
    /// every coordinator and in the store.
    @Test func concurrentMovesAndBulkCancelsLeaveOneConsistentOrder() async throws {
        let cluster = try await ClusterFabric(coordinators: 3, runnerOrders: [])
        do {
            try await cluster.push("name: ci\njobs:\n  j: { labels: [gpu], nodes: { n: { run: \"true\" } } }\n", via: 0)
            var runs: [Int] = []
            for index in 0..<30 {
                let branch = index % 3 == 0 ? "old" : "main"
                guard let id = (try await cluster.json(["trigger", "shop/ci", "--branch", branch], via: index % 3)
                    as? [String: Any])?["run"] as? Int else { throw TestFailure("no run id") }
                runs.append(id)
            }
            func entries(via: Int) async throws -> [[String: Any]] {
                try #require(try await cluster.list(["queue", "--limit", "1000"], "jobs", via: via))
                    .filter { $0["status"] as? String == "queued" }
            }
            func queued(via: Int) async throws -> [Int] { try await entries(via: via).compactMap { $0["job"] as? Int } }
            try await waitUntil("every coordinator to list 30 queued jobs") {
                for via in 0..<3 where try await queued(via: via).count != 30 { return false }
                return true
            }
            let initial = try await entries(via: 0)
            let jobs = initial.compactMap { $0["job"] as? Int }
            let old = Set(initial.filter { $0["branch"] as? String == "old" }.compactMap { $0["job"] as? Int })
            // Coordinator 0 moves jobs to the top while coordinator 1 moves others to the bottom
            // and coordinator 2 cancels the branch "old" in bulk.
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for job in jobs.suffix(10) { _ = try await cluster.heddle(["queue", "move", String(job), "--top"], via: 0) }
                }
                group.addTask {
                    for job in jobs.prefix(10) { _ = try await cluster.heddle(["queue", "move", String(job), "--bottom"], via: 1) }
                }
                group.addTask {
                    let result = try await cluster.heddle(["cancel", "--queued", "--branch", "old"], via: 2)
                    if result.status != 0 { throw TestFailure("bulk cancel: \(result.error)") }
                }
                try await group.waitForAll()
            }
            var orders: [[Int]] = []
            try await waitUntil("the three coordinators to agree on the queue") {
                orders = []
                for via in 0..<3 { orders.append(try await queued(via: via)) }
                return orders[0] == orders[1] && orders[1] == orders[2]
            }
            #expect(orders[0].count == 20, "the ten jobs of branch old are cancelled everywhere")
            // Every move applied: the last moved to the top first, the last moved to the bottom last.
            let expected = (jobs.suffix(10).reversed() + jobs.dropFirst(10).dropLast(10) + jobs.prefix(10)).filter { !old.contains($0) }
            #expect(orders[0] == expected)
            // The same order as the store's positions, read through the API of any coordinator.
            let details = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for run in runs { group.addTask { (run, summary((try await cluster.run(run, via: 1)))["status"] as? String ?? "") } }
                return try await group.reduce(into: [Int: String]()) { $0[$1.0] = $1.1 }
            }
            #expect(details.values.filter { $0 == "cancelled" }.count == 10 && details.values.filter { $0 == "queued" }.count == 20)
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }
}

extension ClusterTests {
    /// The database restarts mid run (every connection cut): the coordinators reconnect, the
    /// runner keeps its connection and only pauses, and the log and artifact are whole.
    @Test func aDatabaseRestartMidRunIsOnlyAPause() async throws {
        let postgres = try await ThrowawayPostgres.start()
        let cluster: ClusterFabric
        do {
            cluster = try await ClusterFabric(coordinators: 2, runnerOrders: [[0, 1]], server: postgres.url)
        } catch {
            await postgres.stop()
            throw error
        }
        do {
            try await waitUntil("the runner to connect") {
                (try await cluster.list(["runners"], "runners", via: 0))?.count == 1
            }
            try await cluster.push(Self.pipeline, via: 0)
            let id = try await cluster.trigger(via: 1)
            let follower = try cluster.startHeddle(["logs", String(id), "--job", "work", "--node", "talk", "--follow"], via: 1)
            try await waitUntil("some lines to stream", timeout: .seconds(60)) {
                let log = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "talk"], via: 0)
                return log.output.split(separator: "\n").count >= 10
            }
            try await postgres.restart()
            let run = try await cluster.waitForRun(id, ["succeeded", "failed"], via: 1, timeout: .seconds(90))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)\n\(cluster.logs)")
            #expect(try await follower.waitForExit(timeout: .seconds(30)) == 0, "\(follower.standardError)")
            #expect(follower.standardOutput == Self.expected, "the follower missed bytes")
            for via in [0, 1] {
                let log = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "talk"], via: via)
                #expect(log.output == Self.expected)
                let artifacts = try #require(try await cluster.list(["artifacts", "--run", String(id)], "artifacts", via: via))
                let hash = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "make"], via: via).output
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(artifacts.first?["sha256"] as? String == hash && hash.count == 64)
            }
            // Only a pause: the runner never lost its coordinator, and no job was given again.
            let runnerLog = cluster.runners[0]?.standardError ?? ""
            #expect(!runnerLog.contains("disconnected from the coordinator"), "\(cluster.logs)")
            #expect(runnerLog.components(separatedBy: "job assigned").count == 2, "\(runnerLog)")
        } catch {
            print(cluster.logs)
            await cluster.stop()
            await postgres.stop()
            throw error
        }
        await cluster.stop()
        await postgres.stop()
    }
}

extension ClusterTests {
    /// The runners' coordinator is killed mid upload: the runner declares the artifact again to
    /// the next coordinator, which resumes it from the bytes the first one stored in the shared
    /// data directory; the artifact's SHA-256 is right.
    @Test func aCoordinatorKilledMidUploadResumesItThroughAnother() async throws {
        let cluster = try await ClusterFabric(coordinators: 2, runnerOrders: [[0, 1]])
        do {
            let size = 100 * 1024 * 1024
            try await cluster.push(uploadPipeline(name: "ci", size: size), via: 1)
            let id = try await cluster.trigger(via: 1)
            try await waitForAnUpload(in: "\(cluster.data)/uploads")
            try await cluster.kill9(coordinator: 0)
            let run = try await cluster.waitForRun(id, ["succeeded", "failed"], via: 1, timeout: .seconds(180))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)\n\(cluster.logs)")
            let hash = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "make"], via: 1).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let artifacts = try #require(try await cluster.list(["artifacts", "--run", String(id)], "artifacts", via: 1))
            #expect(artifacts.count == 1 && artifacts.first?["size"] as? Int == size)
            #expect(artifacts.first?["sha256"] as? String == hash && hash.count == 64)
            #expect(cluster.coordinators[1]?.standardError.contains("upload resumed") == true,
                    "coordinator 1 must resume the upload from what coordinator 0 stored")
        } catch {
            print(cluster.logs)
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// The runner's coordinator is cut off from it (a proxy that stalls, the connection never
    /// closed): the runner moves to the other coordinator, reattaches its job there and
    /// finishes it; the cut-off coordinator never takes the job back.
    @Test func aRunnerCutOffFromItsCoordinatorCarriesOnThroughAnother() async throws {
        let cluster = try await ClusterFabric(coordinators: 2, runnerOrders: [])
        let proxy: TCPProxy
        do {
            let target = cluster.endpoints[0].split(separator: ":")
            proxy = try await TCPProxy(to: "127.0.0.1", port: Int(target.last ?? "") ?? 0)
        } catch {
            await cluster.stop()
            throw error
        }
        do {
            try await cluster.addRunner(addresses: ["127.0.0.1:\(proxy.port)", cluster.endpoints[1]])
            try await waitUntil("the runner to connect through the proxy") {
                (try await cluster.list(["runners"], "runners", via: 0))?.count == 1
            }
            try await cluster.push(Self.pipeline, via: 1)
            let id = try await cluster.trigger(via: 1)
            try await waitUntil("some lines to stream", timeout: .seconds(60)) {
                let log = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "talk"], via: 1)
                return log.output.split(separator: "\n").count >= 10
            }
            await proxy.stall()
            let run = try await cluster.waitForRun(id, ["succeeded", "failed"], via: 1, timeout: .seconds(90))
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)\n\(cluster.logs)")
            for via in [0, 1] {
                let log = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "talk"], via: via)
                #expect(log.output == Self.expected)
            }
            let hash = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "make"], via: 0).output
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let artifacts = try #require(try await cluster.list(["artifacts", "--run", String(id)], "artifacts", via: 0))
            #expect(artifacts.first?["sha256"] as? String == hash && hash.count == 64)
            let runner = try #require(try await cluster.list(["runners"], "runners", via: 1))
            #expect(runner.count == 1, "the runner is on coordinator 1 now")
            #expect(cluster.coordinators[0]?.standardError.contains("job taken back") == false, "\(cluster.logs)")
        } catch {
            print(cluster.logs)
            await proxy.stop()
            await cluster.stop()
            throw error
        }
        await proxy.stop()
        await cluster.stop()
    }
}

extension ClusterTests {
    /// A drain, a certificate revocation, and an API token's creation and revocation made
    /// through one coordinator hold on the other at once (a notification, not the periodic
    /// read 10 s later).
    @Test func drainsRevocationsAndTokensThroughOneCoordinatorHoldOnTheOthers() async throws {
        let cluster = try await ClusterFabric(coordinators: 2, runnerOrders: [[0]], http: true)
        do {
            // A token made through coordinator 1 is good on coordinator 0's HTTP front, and
            // refused there once revoked through coordinator 1.
            let created = try await cluster.json(["tokens", "create", "--name", "ci-bot", "--role", "viewer"], via: 1)
            let secret = try #require((created as? [String: Any])?["secret"] as? String)
            let front = try cluster.http(0)
            // Asked at most four times a second: each refusal counts toward the address's
            // limit of failed sign-ins (20 a minute).
            func answers(_ status: Int) async throws -> Bool {
                if try await front.request("GET", "/api/v1/runs", headers: [("Authorization", "Bearer \(secret)")]).status == status {
                    return true
                }
                try await Task.sleep(for: .milliseconds(250))
                return false
            }
            try await waitUntil("coordinator 0 to take the new token", timeout: .seconds(3)) { try await answers(200) }
            let revoked = try await cluster.heddle(["tokens", "revoke", "ci-bot"], via: 1)
            #expect(revoked.status == 0, "\(revoked.error)")
            try await waitUntil("coordinator 0 to refuse the revoked token", timeout: .seconds(3)) { try await answers(401) }

            // A trigger through coordinator 1 runs the pipeline's latest version, also one pushed
            // through coordinator 0 after coordinator 1 last looked it up.
            func version(_ command: String) async throws -> Int {
                try await cluster.push("name: ci\njobs:\n  j: { labels: [elsewhere], nodes: { n: { run: '\(command)' } } }\n", via: 0)
                let id = try await cluster.trigger(via: 1)
                return try #require(summary(try await cluster.run(id, via: 1))["pipelineVersion"] as? Int)
            }
            let one = try await version("echo one")
            let two = try await version("echo two")
            #expect(two > one, "the second trigger ran the version with id \(two), the first \(one)")

            try await waitUntil("the runner to connect") {
                (try await cluster.list(["runners"], "runners", via: 0))?.count == 1
            }
            let drain = try await cluster.heddle(["runners", "drain", "runner-1"], via: 1)
            #expect(drain.status == 0, "\(drain.error)")
            try await waitUntil("coordinator 0 to see the drain", timeout: .seconds(3)) {
                let runners = try await cluster.list(["runners"], "runners", via: 0)
                return runners?.first?["drained"] as? Bool == true
            }
            let revoke = try await cluster.heddle(["certs", "revoke", "runner-1"], via: 1)
            #expect(revoke.status == 0, "\(revoke.error)")
            try await waitUntil("coordinator 0 to close the revoked runner's session", timeout: .seconds(3)) {
                (try await cluster.list(["runners"], "runners", via: 0))?.isEmpty == true
            }
        } catch {
            print(cluster.logs)
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }
}
