import Foundation
import Logging
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// The core driven directly, without sockets: a pretend runner session and a pretend watcher.
@Suite struct CoreTests {
    static let pipeline = """
        name: ci
        jobs:
          test:
            labels: [linux]
            nodes:
              build: { run: make }
              report: { run: "make report", needs: [build] }
        """

    func makeCore(_ database: TestDatabase) async throws -> CoordinatorCore {
        try CoordinatorCore(store: try await database.open(), directory: database.directory.path, logger: Logger(label: "test"))
    }

    /// Pushes the pipeline (a new version each time) and triggers a run of it.
    func pushAndTrigger(_ core: CoordinatorCore) async throws -> Int64 {
        try await core.push("shop", Self.pipeline)
        return try await core.trigger("shop", "ci")
    }

    func nextAssignment(_ recording: RecordingOutbox) async throws -> Heddle_V1_Assignment {
        try await recording.assignment()
    }

    func append(_ ref: LeaseRef, _ node: String, _ offset: UInt64, _ text: String) -> LogBytes {
        LogBytes(job: ref, node: node, offset: offset, data: Data(text.utf8))
    }

    @Test(arguments: StoreKind.allCases) func logsAreStoredOnceWithoutGapsAndWatchersSeeHistoryThenLive(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let core = try await makeCore(database)
        let runID = try await pushAndTrigger(core)

        let runner = RecordingOutbox()
        let session = try await core.connectRunner(runner, labels: ["linux", "x86"])
        let other = try await core.open("r2", .runner, RecordingOutbox())
        let assignment = try await nextAssignment(runner)
        #expect(assignment.nodes.map(\.name) == ["build", "report"])
        #expect(assignment.env["HEDDLE_RUN_ID"] == String(runID))
        let ref = LeaseRef(assignment.job)

        #expect(try await core.appendLog(session: session, append(ref, "build", 0, "hello ")) == 6)
        // A replayed, overlapping chunk stores only its new bytes.
        #expect(try await core.appendLog(session: session, append(ref, "build", 3, "lo world")) == 11)
        // A gap is refused, and so is a node the job does not have.
        await #expect(throws: CoordinatorError.self) { _ = try await core.appendLog(session: session, append(ref, "build", 20, "x")) }
        await #expect(throws: CoordinatorError.self) { _ = try await core.appendLog(session: session, append(ref, "nope", 0, "x")) }
        let stray = NodeReport(job: ref, node: "nope", status: .running)
        await #expect(throws: CoordinatorError.self) { try await core.nodeUpdate(session: session, stray) }
        // A stale epoch is refused, and so is another session.
        var stale = ref
        stale.epoch -= 1
        do {
            _ = try await core.appendLog(session: session, append(stale, "build", 11, "!"))
            Issue.record("a stale epoch was accepted")
        } catch let error as CoordinatorError {
            #expect(error.code == .staleLease)
        }
        await #expect(throws: CoordinatorError.self) { _ = try await core.appendLog(session: other, append(ref, "build", 11, "!")) }

        let watcher = RecordingOutbox()
        let watch = WatchRequest(runID: runID, logs: true, follow: true)
        let watching = try await core.startWatch(requestID: 77, watch, watcher)
        #expect(try await core.appendLog(session: session, append(ref, "build", 11, "\u{1B}[31m!")) == 17)
        #expect(try await core.appendLog(session: session, append(ref, "report", 0, "no newline")) == 10)

        for node in ["build", "report"] {
            for status in [Status.running, .succeeded] {
                try await core.nodeUpdate(session: session, NodeReport(job: ref, node: node, status: status,
                                                                       exitCode: status == .succeeded ? 0 : nil))
            }
        }
        try await core.jobFinished(session: session, JobResult(job: ref, status: .succeeded, reason: ""))

        let (bytes, end) = try await watcher.watchedLogs()
        try await watching.value
        #expect(watcher.all.allSatisfy { $0.id == 77 })
        #expect(String(decoding: bytes["build"] ?? Data(), as: UTF8.self) == "hello world\u{1B}[31m!")
        #expect(String(decoding: bytes["report"] ?? Data(), as: UTF8.self) == "no newline")
        #expect(end.status == .succeeded)

        let detail = try await core.catalog.runDetail(runID: runID, as: admin)
        #expect(detail.run.status == .succeeded)
        #expect(detail.jobs.first?.runner == "r1")
        // Writes after the job finished are refused: its lease is gone.
        await #expect(throws: CoordinatorError.self) { _ = try await core.appendLog(session: session, append(ref, "build", 17, "late")) }
      }
    }

    @Test(arguments: StoreKind.allCases) func aFailedJobFailsTheRunAndALostRunnerFailsItsJob(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let core = try await makeCore(database)
        let first = try await pushAndTrigger(core)
        let second = try await pushAndTrigger(core)

        let runner = RecordingOutbox()
        let session = try await core.connectRunner(runner)
        let assignment = try await nextAssignment(runner)
        #expect(assignment.runID == UInt64(first))
        try await core.jobFinished(session: session, JobResult(job: LeaseRef(assignment.job), status: .failed,
                                                               reason: "node 'build' failed with exit code 2"))
        let failed = try await core.catalog.runDetail(runID: first, as: admin)
        #expect(failed.run.status == .failed)
        #expect(failed.jobs[0].reason == "node 'build' failed with exit code 2")
        #expect(failed.jobs[0].nodes.map(\.status) == [.skipped, .skipped])

        let next = try await nextAssignment(runner)
        #expect(next.runID == UInt64(second))
        // The connection drops: the job keeps its lease for a while, for the runner to return.
        await core.sessionClosed(session: session)
        await core.expireLeases(now: .now)
        #expect(try await core.catalog.runDetail(runID: second, as: admin).run.status == .running)
        await core.expireLeases(now: .now.advanced(by: core.limits.lease + .seconds(1)))
        let lost = try await core.catalog.runDetail(runID: second, as: admin)
        #expect(lost.run.status == .failed)
        #expect(lost.jobs[0].reason == "runner lost: r1 was silent for longer than its lease")
      }
    }

    static let retried = """
        name: retried
        jobs:
          test:
            labels: [linux]
            retry: { lost: 1 }
            nodes:
              build: { run: make }
        """

    /// A runner frozen past its lease comes back with the old assignment: it is told to
    /// abandon that epoch only, and the job (requeued) comes back to it with a new epoch. A
    /// runner whose heartbeat no longer lists a job it holds loses the job at once.
    @Test(arguments: StoreKind.allCases) func stopsNameTheirEpochAndAJobTheRunnerNoLongerRunsIsLost(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let core = try await makeCore(database)
        try await core.push("shop", Self.retried)
        let runID = try await core.trigger("shop", "retried")
        let frozen = RecordingOutbox()
        let first = try await core.connectRunner(frozen)
        let old = try await frozen.assignment().job
        await core.sessionClosed(session: first)
        await core.expireLeases(now: .now.advanced(by: core.limits.lease + .seconds(1)))
        #expect(try await core.catalog.runDetail(runID: runID, as: admin).run.status == .queued)

        let back = RecordingOutbox()
        let session = try await core.connectRunner(back, running: [LeaseRef(old)])
        let stop = try await back.first("the stop of the old assignment") { envelope -> Heddle_V1_StopJob? in
            if case .stopJob(let stop) = envelope.body { return stop }
            return nil
        }
        #expect(stop.abandon && stop.jobID == old.jobID && stop.epoch == old.epoch)
        let again = try await back.assignment().job
        #expect(again.jobID == old.jobID && again.epoch > old.epoch)

        // A heartbeat listing the job keeps it; one written before the assignment arrived
        // (a smaller epoch) judges nothing; one that received it and no longer lists it loses it.
        await core.heartbeat(session: session, running: RunningJobs(jobs: [LeaseRef(again)], assignedThrough: Int64(again.epoch)))
        await core.heartbeat(session: session, running: RunningJobs(jobs: [], assignedThrough: Int64(old.epoch)))
        #expect(try await core.catalog.runDetail(runID: runID, as: admin).run.status == .running)
        await core.heartbeat(session: session, running: RunningJobs(jobs: [LeaseRef(old)], assignedThrough: Int64(again.epoch)))
        try await waitUntil("the job to be lost") { try await core.catalog.runDetail(runID: runID, as: admin).run.status == .failed }
        let lost = try await core.catalog.runDetail(runID: runID, as: admin)
        #expect(lost.run.status == .failed)
        #expect(lost.jobs[0].reason == "runner lost: r1 no longer runs the job")
      }
    }

    /// A cancel of a job whose runner is away: when the lease expires the job ends cancelled,
    /// even with retries for lost runners left.
    @Test(arguments: StoreKind.allCases) func aCancelledJobWhoseRunnerIsLostEndsCancelled(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let core = try await makeCore(database)
        try await core.push("shop", Self.retried)
        let runID = try await core.trigger("shop", "retried")
        let runner = RecordingOutbox()
        let session = try await core.connectRunner(runner)
        _ = try await runner.assignment()
        await core.sessionClosed(session: session)
        #expect(try await core.cancel(runIDs: [runID], jobIDs: [], as: admin).count == 1)
        await core.expireLeases(now: .now.advanced(by: core.limits.lease + .seconds(1)))
        let detail = try await core.catalog.runDetail(runID: runID, as: admin)
        #expect(detail.run.status == .cancelled)
        #expect(detail.jobs[0].status == .cancelled)
        #expect(detail.jobs[0].reason == "cancelled by root (runner lost: r1 was silent for longer than its lease before it confirmed)")
        #expect(try await core.queue(as: admin).total == 0)
      }
    }

    /// A YAML alias reused by many nodes: a small file, a huge assignment. The push is refused
    /// when the expanded job could not be sent in one frame; a job stored before that check
    /// fails with that reason when it is assigned, and its runner is not blamed.
    @Test(arguments: StoreKind.allCases) func aJobTooLargeToAssignIsRefusedAtPushAndFailsAtDispatch(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let big = String(repeating: "echo x; ", count: 16 * 1024)  // 128 KiB
        func pipeline(nodes: Int) -> String {
            var text = "name: alias\njobs:\n  j:\n    labels: [linux]\n    nodes:\n      n0: { run: &r \"\(big)\" }\n"
            for index in 1..<nodes { text += "      n\(index): { run: *r }\n" }
            return text
        }
        var small = CoordinatorLimits()
        small.maximumFrameLength = 1 << 20
        do {
            let core = try CoordinatorCore(store: try await database.open(), directory: database.directory.path,
                                           limits: small, logger: Logger(label: "test"))
            await #expect {
                try await core.push("shop", pipeline(nodes: 10))
            } throws: { error in
                let message = (error as? CoordinatorError)?.message ?? ""
                return message.hasPrefix("job 'j' is too large to assign: its nodes take about ")
                    && message.hasSuffix("over the limit of 983040 (the frame limit less 64 KiB)")
            }
            try await core.push("shop", pipeline(nodes: 7))  // about 900 KiB: it fits
        }
        // The same stored pipeline under a smaller frame limit.
        small.maximumFrameLength = 512 << 10
        let core = try CoordinatorCore(store: try await database.open(), directory: database.directory.path,
                                       limits: small, logger: Logger(label: "test"))
        let runID = try await core.trigger("shop", "alias")
        let runner = RecordingOutbox()
        _ = try await core.connectRunner(runner)
        try await waitUntil("the job to fail") { try await core.catalog.runDetail(runID: runID, as: admin).run.status == .failed }
        let detail = try await core.catalog.runDetail(runID: runID, as: admin)
        #expect(detail.jobs[0].reason.hasPrefix("the job is too large to assign: about "))
        #expect(detail.jobs[0].reason.hasSuffix("bytes, over the frame limit of 524288"))
        #expect(!runner.all.contains { if case .assignment = $0.body { true } else { false } })
        #expect(try await core.runners(as: admin).first?.running == 0)
      }
    }

    @Test(arguments: ["../etc/passwd", "/abs", "a/../b", "nul\0name", "", "a//b", "./a"])
    func unsafeArtifactNamesAreRefused(name: String) {
        #expect(throws: CoordinatorError.self) { try ArtifactUploads.validateName(name) }
    }

    @Test func plainArtifactNamesAreAccepted() throws {
        try ArtifactUploads.validateName("out/report.txt")
        try ArtifactUploads.validateName("app.bin")
    }
}

@Suite struct RestartTests {
    @Test(arguments: StoreKind.allCases) func theQueueSurvivesARestartInOrderAndRunningJobsAreLostAfterTheirLease(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let source = """
            name: ci
            jobs:
              a: { labels: [linux], nodes: { n: { run: "true" } } }
            """
        var runs: [Int64] = []
        do {
            let core = try CoordinatorCore(store: try await database.open(), directory: database.directory.path,
                                           logger: Logger(label: "test"))
            try await core.push("shop", source)
            for _ in 0..<4 { runs.append(try await core.trigger("shop", "ci")) }
            // One job is running when the coordinator goes away.
            _ = try await core.connectRunner(RecordingOutbox())
        }

        let core = try CoordinatorCore(store: try await database.open(), directory: database.directory.path,
                                       logger: Logger(label: "test"))
        try await core.recover()
        // In a cluster a running job stays its holder's: the coordinator that went away is
        // silent (it never beat), so its jobs are taken over here, as the sweep does.
        if kind == .postgres { await core.clusterTick() }
        // The running job waits one lease for its runner, then is lost.
        #expect(try await core.catalog.runDetail(runID: runs[0], as: admin).run.status == .running)
        await core.expireLeases(now: .now.advanced(by: core.limits.lease + .seconds(1)))
        let lost = try await core.catalog.runDetail(runID: runs[0], as: admin)
        #expect(lost.run.status == .failed)
        #expect(lost.jobs[0].reason.hasPrefix("runner lost"))
        #expect(try await core.queue(as: admin).jobs.map(\.runID) == Array(runs[1...]))

        let runner = RecordingOutbox()
        _ = try await core.connectRunner(runner, capacity: 3)
        var assigned: [UInt64] = []
        for _ in 0..<3 { assigned.append(try await runner.assignment().runID) }
        #expect(assigned == runs[1...].map { UInt64($0) })
      }
    }
}
