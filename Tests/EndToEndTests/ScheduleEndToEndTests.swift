import Foundation
import TestSupport
import Testing

/// A schedule through the real binaries: two coordinators on one PostgreSQL database both
/// watch a `* * * * *` schedule, and each minute starts exactly one run, which a runner runs.
@Suite struct ScheduleEndToEndTests {
    static let pipeline = """
        name: ci
        inputs:
          target: { default: nightly }
        on:
          schedule:
            - cron: "* * * * *"
        jobs:
          tick:
            labels: [linux]
            nodes:
              say: { run: 'echo "scheduled $HEDDLE_INPUT_TARGET"' }
        """

    @Test func aScheduleStartsOneRunPerMinuteThroughTwoCoordinators() async throws {
        let cluster = try await ClusterFabric(coordinators: 2, runnerOrders: [[0, 1]])
        do {
            try await cluster.push(Self.pipeline, via: 0)
            let pushedAt = Date()

            // Listed by either coordinator, next due within the minute.
            let listed = try #require(try await cluster.list(["schedules"], "schedules", via: 1))
            #expect(listed.count == 1 && listed.first?["cron"] as? String == "* * * * *"
                    && listed.first?["timezone"] as? String == "UTC" && listed.first?["branch"] as? String == "main", "\(listed)")
            let table = try await cluster.heddle(["schedules"], via: 0)
            #expect(table.output.contains("shop/ci") && table.output.contains("* * * * *") && table.output.contains("(in "),
                    "\(table.output)")

            // Two due minutes pass (at most two minutes from now): two runs, one per minute.
            var scheduled: [[String: Any]] = []
            try await waitUntil("two scheduled runs", timeout: .seconds(150)) {
                try await Task.sleep(for: .seconds(1))
                scheduled = try await cluster.list(["runs", "--trigger", "schedule"], "runs", via: 1) ?? []
                return scheduled.count >= 2
            }
            // The second due minute ended ≥ 60 s after the first: a duplicate of the first would be here.
            #expect(scheduled.count == 2, "\(scheduled)")
            let dues = scheduled.compactMap { $0["triggeredBy"] as? String }
            #expect(scheduled.allSatisfy { $0["trigger"] as? String == "schedule" })
            let refused = try await cluster.heddle(["runs", "--trigger", "cron"], via: 0)
            #expect(refused.status != 0 && refused.error.contains("--trigger must be one of manual, api, webhook, schedule"), "\(refused.error)")
            #expect(Set(dues).count == 2 && dues.allSatisfy { $0.hasPrefix("schedule '* * * * *' due ") }, "\(dues)")
            for run in scheduled {
                let id = try #require(run["id"] as? Int)
                let finished = try await cluster.waitForRun(id, ["succeeded", "failed"])
                #expect(summary(finished)["status"] as? String == "succeeded", "\(finished)")
                let created = try #require(ISO8601DateFormatter().date(from: run["createdAt"] as? String ?? ""))
                #expect(created > pushedAt, "a due time before the push started nothing")
                let log = try await cluster.heddle(["logs", String(id), "--job", "tick", "--node", "say"])
                #expect(log.output.contains("scheduled nightly"), "\(log.output) \(log.error)")
            }
            let shown = try await cluster.heddle(["runs", "show", String(try #require(scheduled.first?["id"] as? Int))])
            #expect(shown.output.contains("trigger schedule") && shown.output.contains("by schedule '* * * * *' due "), "\(shown.output)")

            // The listing now has the latest due time that started a run, and that run.
            let after = try #require(try await cluster.list(["schedules"], "schedules", via: 0)?.first)
            let newest = scheduled.compactMap { $0["id"] as? Int }.max() ?? 0
            #expect((after["lastRun"] as? Int ?? 0) >= newest && after["lastDue"] as? String != nil, "\(after)")
        } catch {
            Issue.record("\(error)\n\(cluster.logs)")
        }
        await cluster.stop()
    }
}
