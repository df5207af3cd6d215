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

    func makeCore(_ data: TemporaryDirectory) throws -> CoordinatorCore {
        CoordinatorCore(store: try SQLiteStore.inMemory(), blobs: try BlobStore(directory: data.path),
                        logger: Logger(label: "test"))
    }

    /// Pushes the pipeline (a new version each time) and triggers a run of it.
    func pushAndTrigger(_ core: CoordinatorCore) async throws -> Int64 {
        var push = Heddle_V1_PipelinePush()
        push.project = "shop"
        push.source = Self.pipeline
        _ = try await core.pushPipeline(push)
        var trigger = Heddle_V1_TriggerRequest()
        trigger.project = "shop"
        trigger.pipeline = "ci"
        return try await core.trigger(trigger, trigger: "api")
    }

    func identity(_ name: String, _ role: Role) -> PeerIdentity {
        PeerIdentity(name: name, role: role, fingerprint: String(repeating: "0", count: 64))
    }

    func nextAssignment(_ recording: RecordingOutbox) async throws -> Heddle_V1_Assignment {
        try await recording.assignment()
    }

    func append(_ ref: Heddle_V1_JobRef, _ node: String, _ offset: UInt64, _ text: String) -> Heddle_V1_LogAppend {
        var append = Heddle_V1_LogAppend()
        append.job = ref
        append.node = node
        append.offset = offset
        append.data = Data(text.utf8)
        return append
    }

    @Test func logsAreStoredOnceWithoutGapsAndWatchersSeeHistoryThenLive() async throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let core = try makeCore(data)
        let runID = try await pushAndTrigger(core)

        let runner = RecordingOutbox()
        var hello = Heddle_V1_Hello()
        hello.labels = ["linux", "x86"]
        await core.runnerConnected(session: 1, identity: identity("r1", .runner), hello: hello, outbox: runner.outbox)
        let assignment = try await nextAssignment(runner)
        #expect(assignment.nodes.map(\.name) == ["build", "report"])
        #expect(assignment.env["HEDDLE_RUN_ID"] == String(runID))
        let ref = assignment.job

        #expect(try await core.appendLog(session: 1, append(ref, "build", 0, "hello ")) == 6)
        // A replayed, overlapping chunk stores only its new bytes.
        #expect(try await core.appendLog(session: 1, append(ref, "build", 3, "lo world")) == 11)
        // A gap is refused, and so is a node the job does not have.
        await #expect(throws: WireError.self) { _ = try await core.appendLog(session: 1, append(ref, "build", 20, "x")) }
        await #expect(throws: WireError.self) { _ = try await core.appendLog(session: 1, append(ref, "nope", 0, "x")) }
        var stray = Heddle_V1_NodeUpdate()
        stray.job = ref
        stray.node = "nope"
        stray.status = .running
        await #expect(throws: WireError.self) { try await core.nodeUpdate(session: 1, stray) }
        // A stale epoch is refused, and so is another session.
        var stale = ref
        stale.epoch -= 1
        do {
            _ = try await core.appendLog(session: 1, append(stale, "build", 11, "!"))
            Issue.record("a stale epoch was accepted")
        } catch let error as WireError {
            #expect(error.code == .staleEpoch)
        }
        await #expect(throws: WireError.self) { _ = try await core.appendLog(session: 2, append(ref, "build", 11, "!")) }

        let watcher = RecordingOutbox()
        var watch = Heddle_V1_WatchRequest()
        watch.runID = UInt64(runID)
        watch.logs = true
        watch.follow = true
        let watching = try await core.startWatch(session: 9, requestID: 77, watch, watcher)
        #expect(try await core.appendLog(session: 1, append(ref, "build", 11, "\u{1B}[31m!")) == 17)
        #expect(try await core.appendLog(session: 1, append(ref, "report", 0, "no newline")) == 10)

        for node in ["build", "report"] {
            for status in [Heddle_V1_Status.running, .succeeded] {
                var update = Heddle_V1_NodeUpdate()
                update.job = ref
                update.node = node
                update.status = status
                update.exited = status == .succeeded
                try await core.nodeUpdate(session: 1, update)
            }
        }
        var finish = Heddle_V1_JobFinish()
        finish.job = ref
        finish.status = .succeeded
        try await core.jobFinished(session: 1, finish)

        let (bytes, end) = try await watcher.watchedLogs()
        try await watching.value
        #expect(watcher.all.allSatisfy { $0.id == 77 })
        #expect(String(decoding: bytes["build"] ?? Data(), as: UTF8.self) == "hello world\u{1B}[31m!")
        #expect(String(decoding: bytes["report"] ?? Data(), as: UTF8.self) == "no newline")
        #expect(end.status == .succeeded)

        let detail = try await core.runDetail(runID: runID, attempt: nil)
        #expect(detail.run.status == .succeeded)
        #expect(detail.jobs.first?.runner == "r1")
        // Writes after the job finished are refused: its lease is gone.
        await #expect(throws: WireError.self) { _ = try await core.appendLog(session: 1, append(ref, "build", 17, "late")) }
    }

    @Test func aFailedJobFailsTheRunAndALostRunnerFailsItsJob() async throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let core = try makeCore(data)
        let first = try await pushAndTrigger(core)
        let second = try await pushAndTrigger(core)

        let runner = RecordingOutbox()
        var hello = Heddle_V1_Hello()
        hello.labels = ["linux"]
        await core.runnerConnected(session: 1, identity: identity("r1", .runner), hello: hello, outbox: runner.outbox)
        let assignment = try await nextAssignment(runner)
        #expect(assignment.runID == UInt64(first))
        var finish = Heddle_V1_JobFinish()
        finish.job = assignment.job
        finish.status = .failed
        finish.reason = "node 'build' failed with exit code 2"
        try await core.jobFinished(session: 1, finish)
        let failed = try await core.runDetail(runID: first, attempt: nil)
        #expect(failed.run.status == .failed)
        #expect(failed.jobs[0].reason == "node 'build' failed with exit code 2")
        #expect(failed.jobs[0].nodes.map(\.status) == [.skipped, .skipped])

        let next = try await nextAssignment(runner)
        #expect(next.runID == UInt64(second))
        // The connection drops: the job keeps its lease for a while, for the runner to return.
        await core.sessionClosed(session: 1)
        await core.expireLeases(now: .now)
        #expect(try await core.runDetail(runID: second, attempt: nil).run.status == .running)
        await core.expireLeases(now: .now.advanced(by: core.limits.lease + .seconds(1)))
        let lost = try await core.runDetail(runID: second, attempt: nil)
        #expect(lost.run.status == .failed)
        #expect(lost.jobs[0].reason == "runner lost: r1 was silent for longer than its lease")
    }

    @Test(arguments: ["../etc/passwd", "/abs", "a/../b", "nul\0name", "", "a//b", "./a"])
    func unsafeArtifactNamesAreRefused(name: String) {
        #expect(throws: WireError.self) { try CoordinatorCore.validateArtifactName(name) }
    }

    @Test func plainArtifactNamesAreAccepted() throws {
        try CoordinatorCore.validateArtifactName("out/report.txt")
        try CoordinatorCore.validateArtifactName("app.bin")
    }
}

@Suite struct RestartTests {
    @Test func theQueueSurvivesARestartInOrderAndRunningJobsAreLostAfterTheirLease() async throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let source = """
            name: ci
            jobs:
              a: { labels: [linux], nodes: { n: { run: "true" } } }
            """
        var push = Heddle_V1_PipelinePush()
        push.project = "shop"
        push.source = source
        var trigger = Heddle_V1_TriggerRequest()
        trigger.project = "shop"
        trigger.pipeline = "ci"
        let identity = PeerIdentity(name: "r1", role: .runner, fingerprint: "")
        var hello = Heddle_V1_Hello()
        hello.labels = ["linux"]

        var runs: [Int64] = []
        do {
            let core = CoordinatorCore(store: try SQLiteStore.open(directory: data.path),
                                       blobs: try BlobStore(directory: data.path), logger: Logger(label: "test"))
            _ = try await core.pushPipeline(push)
            for _ in 0..<4 { runs.append(try await core.trigger(trigger, trigger: "api")) }
            // One job is running when the coordinator goes away.
            let runner = RecordingOutbox()
            await core.runnerConnected(session: 1, identity: identity, hello: hello, outbox: runner.outbox)
        }

        let core = CoordinatorCore(store: try SQLiteStore.open(directory: data.path),
                                   blobs: try BlobStore(directory: data.path), logger: Logger(label: "test"))
        try await core.recover()
        // The running job waits one lease for its runner, then is lost.
        #expect(try await core.runDetail(runID: runs[0], attempt: nil).run.status == .running)
        await core.expireLeases(now: .now.advanced(by: core.limits.lease + .seconds(1)))
        let lost = try await core.runDetail(runID: runs[0], attempt: nil)
        #expect(lost.run.status == .failed)
        #expect(lost.jobs[0].reason.hasPrefix("runner lost"))
        #expect(try await core.queue().jobs.map(\.runID) == runs[1...].map { UInt64($0) })

        let runner = RecordingOutbox()
        hello.capacity = 3
        await core.runnerConnected(session: 1, identity: identity, hello: hello, outbox: runner.outbox)
        var assigned: [UInt64] = []
        for _ in 0..<3 { assigned.append(try await runner.assignment().runID) }
        #expect(assigned == runs[1...].map { UInt64($0) })
    }
}
