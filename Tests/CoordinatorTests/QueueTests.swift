import Foundation
import GRDB
import Logging
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Queue control through the core: moves, cancels, bulk cancels, drain, and events.
@Suite struct QueueTests {
    static let source = """
        name: ci
        jobs:
          build: { labels: [linux], nodes: { n: { run: "true" } } }
        """

    struct Setup {
        let database: TestDatabase
        var data: TemporaryDirectory { database.directory }
        let core: CoordinatorCore
        let store: any CoordinatorStore
        /// Pauses or fails the core's store calls on demand.
        let hooks: StoreHooks
        let admin = CoordinatorTests.admin

        init(_ database: TestDatabase) async throws {
            self.database = database
            store = try await database.open()
            let interposed = InterposedStore(store)
            hooks = interposed.hooks
            core = try CoordinatorCore(store: interposed, directory: database.directory.path, logger: Logger(label: "test"))
            try await core.push("shop", QueueTests.source)
            try await core.push("other", QueueTests.source)
        }

        func trigger(_ project: String = "shop", branch: String = "main") async throws -> Int64 {
            try await core.trigger(project, "ci", branch: branch)
        }

        func jobOf(_ run: Int64) async throws -> Int64 {
            try await core.catalog.runDetail(runID: run, as: admin).jobs.map(\.id).first!
        }

        func connectRunner(capacity: Int = 1) async throws -> RecordingOutbox {
            let outbox = RecordingOutbox()
            _ = try await core.connectRunner(outbox, capacity: capacity)
            return outbox
        }

        func assignments(_ outbox: RecordingOutbox, count: Int) async throws -> [UInt64] {
            var runs: [UInt64] = []
            for _ in 0..<count { runs.append(try await outbox.assignment().runID) }
            return runs
        }
    }

    @Test(arguments: StoreKind.allCases) func aJobMovedToTheTopIsDispatchedFirstAndCancelledOnesNeverRun(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup(database)
        var runs: [Int64] = []
        for _ in 0..<5 { runs.append(try await setup.trigger()) }
        let last = try await setup.jobOf(runs[4])
        let entry = try await setup.core.move(jobID: last, to: .top, as: admin)
        #expect(entry.position == 1)
        let second = try await setup.jobOf(runs[1])
        let result = try await setup.core.cancel(runIDs: [], jobIDs: [second], as: setup.admin)
        #expect(result.count == 1)
        _ = try await setup.core.move(jobID: try await setup.jobOf(runs[0]), to: .after(try await setup.jobOf(runs[3])), as: admin)
        #expect(try await setup.core.queue(as: admin).jobs.map(\.runID) == [runs[4], runs[2], runs[3], runs[0]])

        let runner = try await setup.connectRunner(capacity: 10)
        #expect(try await setup.assignments(runner, count: 4) == [runs[4], runs[2], runs[3], runs[0]].map { UInt64($0) })
        let cancelled = try await setup.core.catalog.runDetail(runID: runs[1], as: admin)
        #expect(cancelled.run.status == .cancelled)
        #expect(cancelled.jobs[0].reason == "cancelled by root")
        #expect(cancelled.jobs[0].nodes.map(\.status) == [.cancelled])
      }
    }

    /// Whichever store call a cancel is waiting for, a dispatch meanwhile (a runner connects)
    /// never leaves a job reported cancelled while it runs: afterwards the job is either
    /// cancelled and never assigned, or assigned, still running, and told to stop.
    @Test(arguments: StoreKind.allCases, [("run", 0), ("jobs", 0), ("run", 1), ("cancelJobs", 0)])
    func aDispatchDuringACancelNeverRunsAJobReportedCancelled(kind: StoreKind, pause: (String, Int)) async throws {
        let (method, skip) = pause
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup(database)
        let run = try await setup.trigger()
        let job = try await setup.jobOf(run)
        setup.hooks.pause(method, skip: skip)
        let ended = Flag()
        let cancelling = Task {
            defer { ended.set() }
            return try await setup.core.cancel(runIDs: [run], jobIDs: [], as: setup.admin)
        }
        try await waitUntil("the cancel to reach its pause or end") { setup.hooks.reachedPause || ended.isSet }
        let runner = try await setup.connectRunner()  // dispatches whatever is still queued
        setup.hooks.resume()
        let result = try await cancelling.value
        setup.hooks.disarm()  // a pause the cancel did not reach must not catch the checks below
        let reported = try #require(result.jobs.first { $0.jobID == job })
        let stored = try await setup.core.catalog.runDetail(runID: run, as: admin).jobs[0]
        if await setup.core.jobs.table[job] != nil {
            #expect(reported.status == .running, "a job that was claimed is reported \(reported.status)")
            #expect(stored.status == .running)
            let stop = try await runner.first("a StopJob for the claimed job") { envelope -> Heddle_V1_StopJob? in
                if case .stopJob(let stop) = envelope.body, stop.jobID == UInt64(job) { return stop }
                return nil
            }
            #expect(!stop.abandon)
        } else {
            #expect(reported.status == .cancelled)
            #expect(stored.status == .cancelled)
            #expect(!runner.all.contains { if case .assignment = $0.body { true } else { false } })
        }
      }
    }

    @Test(arguments: StoreKind.allCases) func everyKindOfMoveLandsWhereAsked(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup(database)
        var jobs: [Int64] = []
        for _ in 0..<4 { jobs.append(try await setup.jobOf(try await setup.trigger())) }
        func order() async throws -> [Int64] { try await setup.core.queue(as: admin).jobs.map { Int64($0.jobID) } }
        _ = try await setup.core.move(jobID: jobs[0], to: .bottom, as: admin)
        #expect(try await order() == [jobs[1], jobs[2], jobs[3], jobs[0]])
        _ = try await setup.core.move(jobID: jobs[0], to: .before(jobs[2]), as: admin)
        #expect(try await order() == [jobs[1], jobs[0], jobs[2], jobs[3]])
        _ = try await setup.core.move(jobID: jobs[3], to: .position(2), as: admin)
        #expect(try await order() == [jobs[1], jobs[3], jobs[0], jobs[2]])
        _ = try await setup.core.move(jobID: jobs[1], to: .position(99), as: admin)
        #expect(try await order() == [jobs[3], jobs[0], jobs[2], jobs[1]])
        // Many moves into the same gap use up the precision; the queue renumbers and goes on.
        for _ in 0..<80 {
            _ = try await setup.core.move(jobID: jobs[1], to: .after(jobs[3]), as: admin)
            _ = try await setup.core.move(jobID: jobs[1], to: .before(jobs[0]), as: admin)
            _ = try await setup.core.move(jobID: jobs[2], to: .after(jobs[3]), as: admin)
        }
        #expect(try await order() == [jobs[3], jobs[2], jobs[1], jobs[0]])
        await #expect(throws: CoordinatorError.self) { _ = try await setup.core.move(jobID: 999, to: .top, as: admin) }
        await #expect(throws: CoordinatorError.self) { _ = try await setup.core.move(jobID: jobs[0], to: .before(999), as: admin) }

        // The order is durable: a new core on the same data sees it.
        let restarted = try CoordinatorCore(store: try await database.open(), directory: setup.data.path,
                                            logger: Logger(label: "test"))
        try await restarted.recover()
        #expect(try await restarted.queue(as: admin).jobs.map { Int64($0.jobID) } == [jobs[3], jobs[2], jobs[1], jobs[0]])
      }
    }

    /// A move the store refuses changes nothing: the queue's order in memory (what runners
    /// get) stays the stored one.
    @Test(arguments: StoreKind.allCases) func aMoveTheStoreRefusesLeavesTheOrderAsItWas(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup(database)
        var jobs: [Int64] = []
        for _ in 0..<3 { jobs.append(try await setup.jobOf(try await setup.trigger())) }
        setup.hooks.fail(["setPosition"])
        await #expect(throws: (any Error).self) { _ = try await setup.core.move(jobID: jobs[2], to: .top, as: admin) }
        setup.hooks.fail([])
        #expect(try await setup.core.queue(as: admin).jobs.map(\.jobID) == jobs)
        #expect(try await setup.store.activeJobs().map(\.id) == jobs)
      }
    }

    @Test(arguments: StoreKind.allCases) func bulkCancelFiltersAndDryRunChangesNothing(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup(database)
        let keep1 = try await setup.trigger("shop", branch: "main")
        let drop1 = try await setup.trigger("shop", branch: "old")
        let keep2 = try await setup.trigger("other", branch: "old")
        let drop2 = try await setup.trigger("shop", branch: "old")
        var request = BulkCancelRequest(project: "shop", branch: "old", label: "linux", dryRun: true)
        let dry = try await setup.core.bulkCancel(request, as: setup.admin)
        #expect(dry.count == 2)
        #expect(dry.jobs.map(\.runID) == [drop1, drop2])
        #expect(try await setup.core.queue(as: admin).jobs.count == 4)
        request.dryRun = false
        let done = try await setup.core.bulkCancel(request, as: setup.admin)
        #expect(done.count == 2)
        #expect(try await setup.core.queue(as: admin).jobs.map(\.runID) == [keep1, keep2])
        for run in [drop1, drop2] {
            #expect(try await setup.core.catalog.runDetail(runID: run, as: admin).run.status == .cancelled)
        }
        request.label = "gpu"
        #expect(try await setup.core.bulkCancel(request, as: setup.admin).count == 0)
      }
    }

    @Test(arguments: StoreKind.allCases) func queueEventsArePushedForEveryChange(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup(database)
        let watcher = RecordingOutbox()
        try await setup.core.watchQueue(session: try await setup.core.open("viewer", .viewer, watcher), requestID: 9)
        let a = try await setup.trigger()
        let b = try await setup.trigger()
        _ = try await setup.core.move(jobID: try await setup.jobOf(b), to: .top, as: admin)
        _ = try await setup.core.cancel(runIDs: [a], jobIDs: [], as: setup.admin)
        _ = try await setup.connectRunner()
        var kinds: [Heddle_V1_QueueEvent.Kind] = []  // as the binary front encodes them
        while kinds.count < 5 {
            let envelope = try await watcher.next()
            #expect(envelope.id == 9)
            if case .queueEvent(let event) = envelope.body { kinds.append(event.kind) }
        }
        #expect(kinds == [.queued, .queued, .moved, .cancelled, .claimed])
      }
    }

    @Test(arguments: StoreKind.allCases) func aDrainedRunnerTakesNothingNewUntilUndrained(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup(database)
        let runner = try await setup.connectRunner()
        _ = try await setup.core.setDrained(runner: "r1", true, as: admin)
        let run = try await setup.trigger()
        let entry = try #require(try await setup.core.queue(as: admin).jobs.first)
        #expect(entry.waitingReason == "every runner with labels [linux] is drained")
        #expect(try await setup.core.runners(as: admin).first?.drained == true)
        _ = try await setup.core.setDrained(runner: "r1", false, as: admin)
        #expect(try await setup.assignments(runner, count: 1) == [UInt64(run)])
        await #expect(throws: CoordinatorError.self) { _ = try await setup.core.setDrained(runner: "nobody", true, as: admin) }
      }
    }

    @Test func aMoveInAHundredThousandJobQueueChangesOneRow() async throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let store = try SQLiteStore.inMemory()
        let count = 100_000
        try await store.writer.write { db in
            try db.execute(sql: "INSERT INTO project (name, created_at) VALUES ('big', 0)")
            try db.execute(sql: """
                INSERT INTO pipeline_version (project_id, pipeline, version, source, jobs, created_at)
                VALUES (1, 'ci', 1, '', '["j"]', 0)
                """)
            try db.execute(sql: """
                INSERT INTO run (project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at)
                VALUES ('big', 'ci', 1, 'main', 'queued', 1, 'api', 0)
                """)
            let insert = try db.makeStatement(sql: """
                INSERT INTO job (run_id, attempt, name, labels, status, position, queued_at)
                VALUES (1, 1, 'j', '["linux"]', 'queued', ?, 0)
                """)
            for index in 1...count { try insert.execute(arguments: [Double(index)]) }
        }
        let core = try CoordinatorCore(store: store, directory: data.path, logger: Logger(label: "test"))
        try await core.recover()
        let before = try await store.writer.read { $0.totalChangesCount }
        let entry = try await core.move(jobID: Int64(count), to: .top, as: admin)
        _ = try await core.move(jobID: 50_000, to: .after(7), as: admin)
        let after = try await store.writer.read { $0.totalChangesCount }
        #expect(entry.position == 1)
        #expect(after - before == 2, "two moves must change two rows, not renumber the queue")
        let head = try await store.activeJobs().prefix(9).map(\.id)
        #expect(Array(head) == [Int64(count), 1, 2, 3, 4, 5, 6, 7, 50_000])

        // Listing and cancelling all of them still answer in one frame, with the full count.
        let page = try await core.queue(limit: CancelResult.maximumListedJobs, as: admin)
        #expect(page.jobs.count == CancelResult.maximumListedJobs && page.total == count)
        #expect(page.jobs.first?.jobID == Int64(count))
        let cancelled = try await core.bulkCancel(BulkCancelRequest(project: "big"), as: admin)
        #expect(cancelled.count == count && cancelled.jobs.count == CancelResult.maximumListedJobs)
        #expect(try Envelope(id: 1, .cancelled(cancelled.proto)).serializedData().count < Frame.defaultMaximumLength)
        #expect(try await core.queue(as: admin).total == 0)
    }
}
