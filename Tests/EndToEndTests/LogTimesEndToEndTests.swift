import Foundation
import TestSupport
import Testing

/// Each runner stamps the log bytes it sends with when it read them; the coordinator keeps the
/// marks beside the log, and `heddle logs --timestamps` starts each line with its time.
@Suite(.serialized) struct LogTimesEndToEndTests {
    static func stamp(_ line: Substring) -> Date? {
        let text = String(line.prefix(24))
        var style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        style.timeZone = TimeZone(identifier: "UTC")!
        return try? Date(text, strategy: style)
    }

    @Test(arguments: RunnerUnderTest.all) func eachLineHasTheTimeItWasWritten(runner: RunnerUnderTest) async throws {
        let fabric = try await Fabric(runner: runner, runnerLabels: ["linux"], capacity: 1)
        do {
            try await fabric.push("times.act", """
                name: times
                jobs:
                  j:
                    labels: [linux]
                    nodes:
                      n: { run: "echo first; sleep 1.2; echo second; echo third" }
                """)
            let started = Date()
            let id = try await fabric.trigger("shop/times")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed", "cancelled"])
            #expect(summary(run)["status"] as? String == "succeeded")
            let plain = try await fabric.heddle(["logs", String(id), "--job", "j", "--node", "n"]).output
            #expect(plain == "first\nsecond\nthird\n", "without --timestamps, the bytes alone")
            let stamped = try await fabric.heddle(["logs", String(id), "--job", "j", "--node", "n", "--timestamps"]).output
            let lines = stamped.split(separator: "\n")
            #expect(lines.count == 3 && lines[0].hasSuffix(" first") && lines[1].hasSuffix(" second"), "\(stamped)")
            let times = lines.compactMap(Self.stamp)
            #expect(times.count == 3, "\(stamped)")
            if times.count == 3 {
                #expect(times[0] >= started.addingTimeInterval(-5) && times[0] <= Date(), "\(times[0]) against \(started)")
                let gap = times[1].timeIntervalSince(times[0])
                #expect(gap >= 1.0 && gap < 10, "the sleep shows: \(gap) s")
            }
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }
}
