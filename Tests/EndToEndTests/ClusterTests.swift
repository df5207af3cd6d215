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
                let list = try await cluster.json(["runners"], via: 0) as? [Any]
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
            #expect(run["status"] as? String == "succeeded", "\(run)\n\(cluster.logs)")
            #expect(try await follower.waitForExit(timeout: .seconds(30)) == 0)
            #expect(follower.standardOutput == Self.expected, "the follower through coordinator 2 missed bytes")
            for via in [1, 2] {
                let log = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "talk"], via: via)
                #expect(log.output == Self.expected)
                let artifacts = try #require(try await cluster.json(["artifacts", "--run", String(id)], via: via) as? [[String: Any]])
                #expect(artifacts.first?["size"] as? Int == Self.artifactSize)
                let hash = try await cluster.heddle(["logs", String(id), "--job", "work", "--node", "make"], via: via).output
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(artifacts.first?["sha256"] as? String == hash && hash.count == 64)
            }
            let runner = try #require(try await cluster.json(["runners"], via: 1) as? [[String: Any]])
            #expect(runner.count == 1, "the runner is on coordinator 1 now")
        } catch {
            print(cluster.logs)
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }
}
