import Foundation
import Synchronization
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// A runner's `JobFinish` frames run beside one another on its session; every other frame
/// waits for those read before it (`Finishes`).
@Suite struct SessionFinishesTests {
    /// A runner with two jobs: the end of the first is held in the store; the end of the
    /// second is stored and answered meanwhile, then the first once it is let go.
    @Test func aRunnersJobEndsAreStoredBesideEachOther() async throws {
        let made = Mutex<InterposedStore?>(nil)
        try await TestCoordinator.with(store: { base in
            let interposed = InterposedStore(base)
            made.withLock { $0 = interposed }
            return interposed
        }) { coordinator in
            let hooks = try #require(made.withLock { $0 }).hooks
            let admin = try await coordinator.client("admin")
            _ = try await admin.pushPipeline(project: "p", fileName: "two.act", source: """
                name: two
                jobs:
                  a:
                    labels: [beside]
                    nodes:
                      n: { run: 'true' }
                  b:
                    labels: [beside]
                    nodes:
                      n: { run: 'true' }
                """)
            var hello = Heddle_V1_Hello()
            hello.labels = ["beside"]
            hello.capacity = 2
            let runner = try await HeddleConnection.connect(to: coordinator.endpoint, tls: coordinator.pki.tls("runner"), hello: hello)
            let runID = try await admin.trigger(project: "p", pipeline: "two", branch: "main")
            let pushes = runner.pushes
            let assigned = try await withDeadline(.seconds(30)) {
                var jobs: [Heddle_V1_JobRef] = []
                for await envelope in pushes {
                    if case .assignment(let assignment) = envelope.body { jobs.append(assignment.job) }
                    if jobs.count == 2 { break }
                }
                return jobs
            }.get()
            try #require(assigned.count == 2)
            @Sendable func finish(_ job: Heddle_V1_JobRef) -> Envelope.OneOf_Body {
                var finish = Heddle_V1_JobFinish()
                finish.job = job
                finish.status = .failed
                finish.reason = "test"
                return .jobFinish(finish)
            }

            hooks.pause("finishJob")
            // Should the test fail while the end is held, the coordinator can still stop.
            defer { hooks.resume() }
            let held = Task { try await runner.request(finish(assigned[0])) }
            try await waitUntil("the first end to reach the store") { hooks.reachedPause }
            // Under one frame at a time, this would wait behind the held end: the deadline fails.
            let other = try await withDeadline(.seconds(30)) { try await runner.request(finish(assigned[1])) }.get()
            #expect(other.body == .ok(Heddle_V1_Ok()))
            hooks.resume()
            #expect(try await held.value.body == .ok(Heddle_V1_Ok()))
            // Both ends stored, as the runner sent them.
            let jobs = try await admin.run(runID).jobs
            #expect(jobs.count == 2 && jobs.allSatisfy { $0.status == .failed && $0.reason == "test" })
            await runner.close()
            await admin.connection.close()
        }
    }

    /// Only a `JobFinish` with an id and a short reason runs beside others: one with id 0 is
    /// refused on the one-at-a-time path, one with a long reason is handled alone there (what
    /// a session holds stays bounded), and other frames never run beside.
    @Test func onlyShortJobFinishesWithAnIdRunBeside() {
        var finish = Heddle_V1_JobFinish()
        finish.job.jobID = 7
        finish.reason = String(repeating: "r", count: Finishes.maximumReason)
        #expect(Finishes.job(of: Envelope(id: 3, .jobFinish(finish))) == 7)
        #expect(Finishes.job(of: Envelope(id: 0, .jobFinish(finish))) == nil)
        finish.reason += "r"
        #expect(Finishes.job(of: Envelope(id: 3, .jobFinish(finish))) == nil)
        var update = Heddle_V1_NodeUpdate()
        update.job.jobID = 7
        #expect(Finishes.job(of: Envelope(id: 3, .nodeUpdate(update))) == nil)
    }

    /// `drain` waits until every end started before it is answered; ends of other jobs start at
    /// once, and a second end of a running job waits for the first.
    @Test func drainWaitsForEveryEndStartedBeforeIt() async {
        let finishes = Finishes()
        await finishes.start(1)
        await finishes.start(2)  // another job: at once
        let drained = Mutex(false)
        let drain = Task {
            await finishes.drain()
            drained.withLock { $0 = true }
        }
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while !finishes.isWaiting && ContinuousClock.now < deadline { await Task.yield() }
        #expect(finishes.isWaiting)
        finishes.end(1)
        #expect(!drained.withLock { $0 }, "drained with job 2's end still running")
        finishes.end(2)
        await drain.value
        #expect(drained.withLock { $0 })

        // A second end of job 3 waits for the first.
        await finishes.start(3)
        let second = Task { await finishes.start(3) }
        while !finishes.isWaiting && ContinuousClock.now < deadline { await Task.yield() }
        #expect(finishes.isWaiting)
        finishes.end(3)
        await second.value
        finishes.end(3)
        await finishes.drain()
    }
}
