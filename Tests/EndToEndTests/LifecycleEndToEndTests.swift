import Foundation
import TestSupport
import Testing
import Wire

/// Cancel, timeouts, re-runs, checkouts and roles, with the real binaries.
@Suite(.serialized) struct LifecycleEndToEndTests {
    @Test func aRerunAddsAnAttemptAndKeepsTheFirstReadable() async throws {
        let fabric = try await Fabric()
        do {
            try await fabric.push("flaky.act", """
                name: flaky
                jobs:
                  work:
                    labels: [linux]
                    nodes:
                      try:
                        run: mkdir -p out && echo "attempt $HEDDLE_ATTEMPT" | tee out/attempt.txt
                        artifacts: ["out/attempt.txt"]
                      check:
                        run: test "$HEDDLE_ATTEMPT" -gt 1
                        needs: [try]
                """)
            let first = try await fabric.heddle(["trigger", "shop/flaky", "--wait"])
            #expect(first.status == 1)
            let id = try #require((try await fabric.list(["runs"], "runs"))?.first?["id"] as? Int)
            let rerun = try await fabric.heddle(["rerun", String(id), "--wait"], as: "bot")
            #expect(rerun.status == 0, "\(rerun.output)\(rerun.error)")
            #expect(rerun.output.contains("run \(id) attempt 2"))

            let latest = try await fabric.run(id)
            #expect(summary(latest)["attempt"] as? Int == 2)
            #expect(summary(latest)["status"] as? String == "succeeded")
            let earlier = try await fabric.run(id, attempt: 1)
            #expect(summary(earlier)["attempt"] as? Int == 1)
            #expect(summary(earlier)["status"] as? String == "failed")
            #expect(jobs(earlier).first?["id"] as? Int != jobs(latest).first?["id"] as? Int)
            #expect(try await fabric.heddle(["logs", String(id), "--attempt", "1", "--job", "work", "--node", "try"]).output == "attempt 1\n")
            #expect(try await fabric.heddle(["logs", String(id), "--job", "work", "--node", "try"]).output == "attempt 2\n")
            let artifacts = try #require(try await fabric.list(["artifacts", "--run", String(id)], "artifacts"))
            #expect(artifacts.map { $0["attempt"] as? Int } == [1, 2])
            let filtered = try #require(try await fabric.list(["runs", "--status", "succeeded", "--pipeline", "flaky"], "runs"))
            #expect(filtered.map { $0["id"] as? Int } == [id])
            // A limit out of range is refused with the range, over the binary protocol too
            // (nothing is clamped).
            let tooMany = try await fabric.heddle(["runs", "--limit", "5000"])
            #expect(tooMany.status == 1 && tooMany.error.contains("limit is 1 to 1000, not 5000"), "\(tooMany.error)")
            // A running run cannot be re-run.
            try await fabric.push("slow.act", "name: slow\njobs:\n  w:\n    labels: [linux]\n    nodes:\n      n: { run: 'sleep 100' }\n")
            let slow = try await fabric.trigger("shop/slow")
            let refused = try await fabric.heddle(["rerun", String(slow)])
            #expect(refused.status != 0)
            #expect(refused.error.contains("still"))
            _ = try await fabric.heddle(["cancel", String(slow)])
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func automationMayCancelAndRerunButOnlyAdminMovesBulkCancelsAndDrains() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"])
        do {
            try await fabric.push("gpu.act", "name: gpu\njobs:\n  t:\n    labels: [gpu]\n    nodes:\n      n: { run: 'true' }\n")
            let a = try await fabric.trigger("shop/gpu")
            let b = try await fabric.trigger("shop/gpu")
            let queue = try #require(try await fabric.list(["queue"], "jobs", as: "bot"))
            #expect(queue.map { $0["run"] as? Int } == [a, b])
            #expect(queue.first?["waitingReason"] as? String == "no connected runner has labels [gpu]")
            let job = try #require(queue.last?["job"] as? Int)
            for arguments in [["queue", "move", String(job), "--top"], ["cancel", "--queued", "--label", "gpu"],
                              ["runners", "drain", "runner-1"]] {
                let refused = try await fabric.heddle(arguments, as: "bot")
                #expect(refused.status != 0)
                #expect(refused.error.contains("needs the admin role; this certificate (bot) has the automation role"),
                        "\(arguments): \(refused.error)")
            }
            #expect(try await fabric.heddle(["queue", "move", String(job), "--top"]).status == 0)
            let moved = try #require(try await fabric.list(["queue"], "jobs"))
            #expect(moved.map { $0["run"] as? Int } == [b, a])
            #expect(try await fabric.heddle(["runners", "drain", "runner-1"]).status == 0)
            let runners = try #require(try await fabric.list(["runners"], "runners"))
            #expect(runners.first?["drained"] as? Bool == true)
            let dry = try await fabric.heddle(["cancel", "--queued", "--label", "gpu", "--dry-run"])
            #expect(dry.output.contains("2 jobs would be cancelled"))
            let cancel = try await fabric.heddle(["cancel", String(a)], as: "bot")
            #expect(cancel.status == 0)
            #expect(summary(try await fabric.run(a))["status"] as? String == "cancelled")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }
}

/// A run's jobs, from `heddle runs show --json`.
func jobs(_ run: [String: Any]) -> [[String: Any]] { run["jobs"] as? [[String: Any]] ?? [] }

/// The run of a `RunDetail` (`heddle runs show --json`, as `GET /api/v1/runs/{run}`).
func summary(_ detail: [String: Any]) -> [String: Any] { detail["run"] as? [String: Any] ?? [:] }

/// A job's nodes by name, with their statuses.
func nodes(_ job: [String: Any]) -> [String: String] {
    Dictionary(uniqueKeysWithValues: (job["nodes"] as? [[String: Any]] ?? []).map {
        ($0["name"] as? String ?? "", $0["status"] as? String ?? "")
    })
}
