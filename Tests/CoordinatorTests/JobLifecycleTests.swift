import Foundation
import Logging
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// A job's phases through the core, on both stores, with the store paused or failing at the
/// call that opens each window (`InterposedStore`): a command that arrives while a job is
/// between phases is applied when the phase settles, and no end is forgotten.
@Suite struct JobLifecycleTests {
    static func source(retryLost: Int) -> String {
        """
        name: ci
        jobs:
          build:
            retry: { lost: \(retryLost) }
            nodes: { n: { run: "true" } }
        """
    }

    /// A core on a new database of `kind`, behind an `InterposedStore`, with one run queued.
    struct Setup {
        let database: TestDatabase
        let core: CoordinatorCore
        let hooks: StoreHooks
        let runID: Int64

        static func make(_ kind: StoreKind, retryLost: Int = 0) async throws -> Setup {
            let database = try await TestDatabase.make(kind)
            do {
                let interposed = InterposedStore(try await database.open())
                let core = try CoordinatorCore(store: interposed, directory: database.directory.path,
                                               logger: Logger(label: "test"))
                try await core.recover()
                try await core.push("shop", JobLifecycleTests.source(retryLost: retryLost))
                let runID = try await core.trigger("shop", "ci")
                return Setup(database: database, core: core, hooks: interposed.hooks, runID: runID)
            } catch {
                await database.remove()
                throw error
            }
        }

        /// Runs `body` with a new setup, removed afterwards.
        static func with(_ kind: StoreKind, retryLost: Int = 0, _ body: (Setup) async throws -> Void) async throws {
            let setup = try await make(kind, retryLost: retryLost)
            do {
                try await body(setup)
            } catch {
                setup.hooks.fail([])
                setup.hooks.disarm()
                setup.hooks.resume()
                await setup.database.remove()
                throw error
            }
            await setup.database.remove()
        }

        /// A runner connects and receives the run's job.
        func runnerWithTheJob(_ name: String = "r1") async throws -> (outbox: RecordingOutbox, session: UInt64, job: LeaseRef) {
            let outbox = RecordingOutbox()
            let session = try await core.connectRunner(outbox, name: name, labels: [])
            let job = LeaseRef(try await outbox.assignment().job)
            return (outbox, session, job)
        }

        /// The run's job as stored.
        func stored() async throws -> JobRecord {
            try #require(try await core.catalog.runDetail(runID: runID, as: admin).jobs.first).job
        }

        func runStatus() async throws -> Status {
            try await core.catalog.runDetail(runID: runID, as: admin).run.status
        }

        /// Far past any lease.
        var later: ContinuousClock.Instant { .now.advanced(by: .seconds(3600)) }
    }

    /// Runs `body` with a core as one coordinator of a cluster, on a new PostgreSQL database
    /// behind an `InterposedClusterStore`, with the pipeline pushed; the database is removed
    /// afterwards.
    static func withClusterCore(_ body: (InterposedClusterStore, CoordinatorCore, TestDatabase) async throws -> Void) async throws {
        let database = try await TestDatabase.make(.postgres)
        do {
            let interposed = InterposedClusterStore(try #require(try await database.open() as? any ClusterStore))
            let core = try CoordinatorCore(store: interposed, directory: database.directory.path, logger: Logger(label: "test"))
            try await core.recover()
            try await core.push("shop", Self.source(retryLost: 0))
            try await body(interposed, core, database)
        } catch {
            await database.remove()
            throw error
        }
        await database.remove()
    }

    static func assignments(_ outbox: RecordingOutbox) -> Int {
        outbox.all.filter { if case .assignment = $0.body { true } else { false } }.count
    }

    /// A lost job with a retry left goes back to the queue. A cancel while that is stored
    /// (before the store has it queued, or after it has and before this coordinator queued
    /// it) ends it cancelled: it is never assigned again.
    @Test(arguments: StoreKind.allCases, ["requeueLostJob", "job"])
    func aCancelWhileALostJobIsRequeuedEndsItCancelled(kind: StoreKind, pause: String) async throws {
        try await Setup.with(kind, retryLost: 1) { setup in
            let runner = try await setup.runnerWithTheJob()
            await setup.core.sessionClosed(session: runner.session)
            setup.hooks.pause(pause)
            let expiring = Task { await setup.core.expireLeases(now: setup.later) }
            try await waitUntil("the requeue to reach the paused store call") { setup.hooks.reachedPause }
            let result = try await setup.core.cancel(runIDs: [setup.runID], jobIDs: [], as: admin)
            #expect(result.count == 1)
            setup.hooks.resume()
            await expiring.value

            let other = RecordingOutbox()
            _ = try await setup.core.connectRunner(other, name: "r2", labels: [])
            let job = try await setup.stored()
            #expect(job.status == .cancelled, "the job is \(job.status.rawValue): \(job.reason)")
            #expect(job.reason.hasPrefix("cancelled by root"))
            #expect(try await setup.runStatus() == .cancelled)
            #expect(Self.assignments(other) == 0)
            #expect(await setup.core.jobs.table.isEmpty)
            #expect(await setup.core.jobs.scheduler.queue.isEmpty)
        }
    }

    /// A cancel while the job's claim is stored: the runner is never told of the job (no
    /// assignment, no stop), and the job ends cancelled once the claim is stored.
    @Test(arguments: StoreKind.allCases)
    func aCancelWhileAJobIsClaimedEndsItBeforeItStarts(kind: StoreKind) async throws {
        try await Setup.with(kind) { setup in
            setup.hooks.pause("claimJobs")
            let runner = RecordingOutbox()
            let connecting = Task { try await setup.core.connectRunner(runner, labels: []) }
            try await waitUntil("the claim to reach the store") { setup.hooks.reachedPause }
            let result = try await setup.core.cancel(runIDs: [setup.runID], jobIDs: [], as: admin)
            #expect(result.count == 1)
            setup.hooks.resume()
            _ = try await connecting.value

            let job = try await setup.stored()
            #expect(job.status == .cancelled, "the job is \(job.status.rawValue): \(job.reason)")
            #expect(job.reason == "cancelled by root (before it started)")
            #expect(try await setup.runStatus() == .cancelled)
            #expect(runner.all.allSatisfy { envelope in
                switch envelope.body {
                case .assignment, .stopJob: false
                default: true
                }
            })
            #expect(await setup.core.jobs.table.isEmpty)
            // Its slot is free: the next run's job goes to the same runner.
            let next = try await setup.core.trigger("shop", "ci")
            #expect(try await runner.assignment().runID == UInt64(next))
        }
    }

    /// Several coordinators (the database is the queue): a cancel that comes once the claim
    /// that took the job is stored, before this coordinator has the claim back, through this
    /// coordinator or from another (a `.cancel` signal), ends the job before it starts: its
    /// runner is never told of it.
    @Test(arguments: ["here", "signal"])
    func aCancelWhileADatabaseClaimComesBackEndsTheJobBeforeItStarts(via: String) async throws {
        try await Self.withClusterCore { interposed, core, _ in
            let runID = try await core.trigger("shop", "ci")  // no runner: nothing is claimed
            interposed.hooks.pause("claimQueued.stored")
            let runner = RecordingOutbox()
            let connecting = Task { try await core.connectRunner(runner, labels: []) }
            try await waitUntil("the claim to be stored") { interposed.hooks.reachedPause }
            let stored = try #require(try await core.catalog.runDetail(runID: runID, as: admin).jobs.first).job
            #expect(stored.status == .running, "the claim is stored")
            if via == "here" {
                let result = try await core.cancel(runIDs: [runID], jobIDs: [], as: admin)
                #expect(result.count == 1)
            } else {
                await core.apply(.cancel(jobID: stored.id, reason: "cancelled by root"))
            }
            interposed.hooks.resume()
            _ = try await connecting.value
            try await waitUntil("the job to end") {
                try await core.catalog.runDetail(runID: runID, as: admin).jobs.first?.job.status.isFinished == true
            }
            let job = try #require(try await core.catalog.runDetail(runID: runID, as: admin).jobs.first).job
            #expect(job.status == .cancelled && job.reason == "cancelled by root (before it started)", "\(job.status): \(job.reason)")
            #expect(runner.all.allSatisfy { envelope in
                switch envelope.body {
                case .assignment, .stopJob: false
                default: true
                }
            })
            #expect(await core.jobs.table.isEmpty)
        }
    }

    /// Several coordinators: a run triggered while a runner here has a free slot is stored and
    /// claimed in one call (`createRunAndClaim`; a separate claim would fail here). A cancel
    /// that comes once that call is stored, before this coordinator has it back, through this
    /// coordinator or from another (a `.cancel` signal), ends the job before it starts: its
    /// runner is never told of it, and its slot takes the next run's job.
    @Test(arguments: ["none", "here", "signal"])
    func aTriggersOwnClaimIsOneCallAndACancelWhileItComesBackEndsTheJob(cancel via: String) async throws {
        try await Self.withClusterCore { interposed, core, _ in
            let runner = RecordingOutbox()
            _ = try await core.connectRunner(runner, labels: [])
            interposed.hooks.fail(["claimQueued"])
            if via == "none" {
                let watcher = RecordingOutbox()
                try await core.watchQueue(session: try await core.open("viewer", .viewer, watcher), requestID: 9)
                let runID = try await core.trigger("shop", "ci")
                #expect(try await runner.assignment().runID == UInt64(runID))
                #expect(try #require(try await core.catalog.runDetail(runID: runID, as: admin).jobs.first).job.status == .running)
                // The queue's watchers see it claimed, never queued (it was not, to them).
                let event = try await watcher.first("the queue event") { envelope -> Heddle_V1_QueueEvent? in
                    if case .queueEvent(let event) = envelope.body { event } else { nil }
                }
                #expect(event.kind == .claimed && event.job.runID == UInt64(runID) && event.job.position == 0)
                return
            }
            interposed.hooks.pause("createRunAndClaim.stored")
            let triggering = Task { try await core.trigger("shop", "ci") }
            try await waitUntil("the run and its claim to be stored") { interposed.hooks.reachedPause }
            let run = try #require(try await interposed.runs(limit: 1, filter: RunFilter()).first)
            let stored = try #require(try await core.catalog.runDetail(runID: run.id, as: admin).jobs.first).job
            #expect(stored.status == .running, "the claim is stored")
            if via == "here" {
                let result = try await core.cancel(runIDs: [run.id], jobIDs: [], as: admin)
                #expect(result.count == 1)
            } else {
                await core.apply(.cancel(jobID: stored.id, reason: "cancelled by root"))
            }
            interposed.hooks.resume()
            #expect(try await triggering.value == run.id)
            try await waitUntil("the job to end") {
                try await core.catalog.runDetail(runID: run.id, as: admin).jobs.first?.job.status.isFinished == true
            }
            let job = try #require(try await core.catalog.runDetail(runID: run.id, as: admin).jobs.first).job
            #expect(job.status == .cancelled && job.reason == "cancelled by root (before it started)", "\(job.status): \(job.reason)")
            #expect(Self.assignments(runner) == 0 && !runner.all.contains { if case .stopJob = $0.body { true } else { false } })
            #expect(await core.jobs.table.isEmpty)
            let next = try await core.trigger("shop", "ci")
            #expect(try await runner.assignment().runID == UInt64(next))
        }
    }

    /// Several coordinators: a job's end, with no dispatch on its way, claims for the slot it
    /// frees in the same call (`finishJobAndClaim`; a separate claim would fail here), and the
    /// runner gets the next queued job. A cancel that comes once that call is stored, before
    /// this coordinator has it back, through this coordinator or from another (a `.cancel`
    /// signal), ends the claimed job before it starts: its runner is never told of it, and the
    /// slot takes the next job.
    @Test(arguments: ["none", "here", "signal"])
    func anEndsOwnClaimIsOneCallAndACancelWhileItComesBackEndsTheJob(cancel via: String) async throws {
        try await Self.withClusterCore { interposed, core, _ in
            let runner = RecordingOutbox()
            let session = try await core.connectRunner(runner, labels: [])
            interposed.hooks.fail(["claimQueued"])
            let first = try await core.trigger("shop", "ci")
            let assigned = try await runner.assignment()
            #expect(assigned.runID == UInt64(first))
            // No free slot: queued.
            let second = try await core.trigger("shop", "ci")
            let queued = try #require(try await core.catalog.runDetail(runID: second, as: admin).jobs.first).job
            #expect(queued.status == .queued)
            let result = JobResult(job: LeaseRef(assigned.job), status: .succeeded, reason: "")
            if via == "none" {
                try await core.jobFinished(session: session, result)
                #expect(try await runner.assignment().runID == UInt64(second))
                #expect(try #require(try await core.catalog.runDetail(runID: second, as: admin).jobs.first).job.status == .running)
                return
            }
            interposed.hooks.pause("finishJobAndClaim.stored")
            let finishing = Task { try await core.jobFinished(session: session, result) }
            try await waitUntil("the end and its claim to be stored") { interposed.hooks.reachedPause }
            #expect(try #require(try await core.catalog.runDetail(runID: second, as: admin).jobs.first).job.status == .running,
                    "the claim is stored")
            if via == "here" {
                #expect(try await core.cancel(runIDs: [second], jobIDs: [], as: admin).count == 1)
            } else {
                await core.apply(.cancel(jobID: queued.id, reason: "cancelled by root"))
            }
            interposed.hooks.resume()
            try await finishing.value
            try await waitUntil("the claimed job to end") {
                try await core.catalog.runDetail(runID: second, as: admin).jobs.first?.job.status.isFinished == true
            }
            let job = try #require(try await core.catalog.runDetail(runID: second, as: admin).jobs.first).job
            #expect(job.status == .cancelled && job.reason == "cancelled by root (before it started)", "\(job.status): \(job.reason)")
            #expect(Self.assignments(runner) == 1, "the runner was told of the cancelled job")
            #expect(await core.jobs.table.isEmpty)
            let third = try await core.trigger("shop", "ci")
            #expect(try await runner.assignment().runID == UInt64(third))
        }
    }

    /// Several coordinators: a job claimed here while its trigger reads its place for the
    /// queue's watchers (here by the claim of an end) is told `CLAIMED` alone, never `QUEUED`
    /// after it.
    @Test func aJobClaimedWhileItsPlaceIsReadIsNeverQueuedAfterItIsClaimed() async throws {
        try await Self.withClusterCore { interposed, core, _ in
            let runner = RecordingOutbox()
            let session = try await core.connectRunner(runner, labels: [])
            let first = try await core.trigger("shop", "ci")
            let assigned = try await runner.assignment()
            #expect(assigned.runID == UInt64(first))
            let watcher = RecordingOutbox()
            try await core.watchQueue(session: try await core.open("viewer", .viewer, watcher), requestID: 9)
            interposed.hooks.pause("queuePlaces")
            let triggering = Task { try await core.trigger("shop", "ci") }
            try await waitUntil("the new job's place to be read") { interposed.hooks.reachedPause }
            // The runner's end claims the new job meanwhile (no dispatch is on its way).
            try await core.jobFinished(session: session, JobResult(job: LeaseRef(assigned.job), status: .succeeded, reason: ""))
            let second = try await runner.assignment()
            interposed.hooks.resume()
            #expect(try await triggering.value == Int64(second.runID))
            try await core.jobFinished(session: session, JobResult(job: LeaseRef(second.job), status: .succeeded, reason: ""))
            // Its events until it ends (each awaited with a deadline).
            var kinds: [Heddle_V1_QueueEvent.Kind] = []
            while kinds.last != .finished && kinds.last != .cancelled {
                kinds.append(try await watcher.first("the second run's next queue event") { envelope -> Heddle_V1_QueueEvent.Kind? in
                    if case .queueEvent(let event) = envelope.body, event.job.runID == second.runID { event.kind } else { nil }
                })
            }
            #expect(kinds.first == .claimed && !kinds.contains(.queued), "\(kinds)")
        }
    }


    /// passed stores and claims nothing; the trigger reads the latest version and runs that,
    /// claimed by its own call again (a separate claim would fail here), so the refused call
    /// left no dispatch on its way.
    @Test func aTriggersOwnClaimOfAPassedVersionRunsTheLatest() async throws {
        try await Self.withClusterCore { interposed, core, database in
            let runner = RecordingOutbox()
            _ = try await core.connectRunner(runner, labels: [], capacity: 2)
            interposed.hooks.fail(["claimQueued"])
            // Another coordinator pushes a later version (this one still has the first).
            let other = try await database.open()
            let definition = try ActParser(file: "ci.act").parse(Self.source(retryLost: 1))
            let later = try await other.savePipeline(project: "shop", definition: definition, source: Self.source(retryLost: 1), now: 1)
            let runID = try await core.trigger("shop", "ci")
            #expect(try await runner.assignment().runID == UInt64(runID))
            #expect(try await core.catalog.runDetail(runID: runID, as: admin).run.pipelineVersionID == later.id)
            let next = try await core.trigger("shop", "ci")
            #expect(try await runner.assignment().runID == UInt64(next))
            (other as? PostgresStore)?.close()
        }
    }

    /// A runner's `JobFinish` the store refuses is answered `UNAVAILABLE`; the job stays its
    /// runner's (`finishing`), a heartbeat without it loses nothing, and the same `JobFinish`
    /// sent again is stored.
    @Test(arguments: StoreKind.allCases)
    func aJobEndTheStoreRefusedIsAnsweredUnavailableAndStoredWhenSentAgain(kind: StoreKind) async throws {
        try await Setup.with(kind) { setup in
            let runner = try await setup.runnerWithTheJob()
            let core = setup.core
            try await core.nodeUpdate(session: runner.session, NodeReport(job: runner.job, node: "n", status: .running))
            try await core.nodeUpdate(session: runner.session, NodeReport(job: runner.job, node: "n", status: .succeeded, exitCode: 0))
            let result = JobResult(job: runner.job, status: .succeeded, reason: "")
            setup.hooks.fail(["finishJob"])
            let refused = await #expect(throws: CoordinatorError.self) {
                try await core.jobFinished(session: runner.session, result)
            }
            #expect(refused?.code == .unavailable)
            #expect(await core.jobs.table[runner.job.jobID]?.phase == .finishing)
            #expect(await core.jobs.table.notRunning(session: runner.session, running: [], through: runner.job.epoch).isEmpty)
            #expect(try await setup.stored().status == .running)
            // Not the coordinator's to write again: its runner sends it.
            await core.expireLeases()
            #expect(try await setup.stored().status == .running)

            setup.hooks.fail([])
            try await core.jobFinished(session: runner.session, result)
            #expect(try await setup.stored().status == .succeeded)
            #expect(try await setup.runStatus() == .succeeded)
            #expect(await core.jobs.table.isEmpty)
            // Its answer lost with a connection, the same result again is accepted.
            try await core.jobFinished(session: runner.session, result)
        }
    }

    /// An end the coordinator decided (the runner lost, no retry left) that the store refused
    /// is written again at the lease monitor's next tick, until stored.
    @Test(arguments: StoreKind.allCases)
    func anEndTheCoordinatorDecidedIsWrittenAgainUntilStored(kind: StoreKind) async throws {
        try await Setup.with(kind) { setup in
            let runner = try await setup.runnerWithTheJob()
            await setup.core.sessionClosed(session: runner.session)
            setup.hooks.fail(["finishJob"])
            await setup.core.expireLeases(now: setup.later)
            #expect(await setup.core.jobs.table[runner.job.jobID]?.phase == .finishing)
            #expect(try await setup.stored().status == .running)
            await setup.core.expireLeases(now: setup.later)  // refused again
            #expect(try await setup.stored().status == .running)

            setup.hooks.fail([])
            await setup.core.expireLeases()
            let job = try await setup.stored()
            #expect(job.status == .failed)
            #expect(job.reason == "runner lost: r1 was silent for longer than its lease")
            #expect(try await setup.runStatus() == .failed)
            #expect(await setup.core.jobs.table.isEmpty)
        }
    }

    /// A lost job's return to the queue that the store refused is tried again; then the job
    /// runs again.
    @Test(arguments: StoreKind.allCases)
    func aRequeueTheStoreRefusedIsTriedAgain(kind: StoreKind) async throws {
        try await Setup.with(kind, retryLost: 1) { setup in
            let runner = try await setup.runnerWithTheJob()
            await setup.core.sessionClosed(session: runner.session)
            setup.hooks.fail(["requeueLostJob"])
            await setup.core.expireLeases(now: setup.later)
            #expect(await setup.core.jobs.table[runner.job.jobID]?.phase == .requeueing)
            #expect(try await setup.stored().status == .running)

            setup.hooks.fail([])
            await setup.core.expireLeases()
            #expect(try await setup.stored().status == .queued)
            let again = try await setup.runnerWithTheJob("r2")
            #expect(again.job.jobID == runner.job.jobID && again.job.epoch > runner.job.epoch)
        }
    }

    /// A claim the store refused (a database away) puts the job back in the queue where it
    /// was; the next dispatch gives it to a runner.
    @Test(arguments: StoreKind.allCases)
    func aClaimTheStoreRefusedPutsTheJobBackInTheQueue(kind: StoreKind) async throws {
        try await Setup.with(kind) { setup in
            setup.hooks.fail(["claimJobs"])
            let first = RecordingOutbox()
            _ = try await setup.core.connectRunner(first, labels: [])
            let job = try await setup.stored()
            #expect(job.status == .queued)
            #expect(await setup.core.jobs.scheduler.isQueued(job.id))
            #expect(await setup.core.jobs.table.isEmpty)
            #expect(Self.assignments(first) == 0)

            setup.hooks.fail([])
            // Another runner's greeting dispatches: the job goes to the first runner (its slot is
            // free again; of two idle runners the scheduler takes the first).
            _ = try await setup.core.connectRunner(RecordingOutbox(), name: "r2", labels: [])
            #expect(try await first.assignment().job.jobID == UInt64(job.id))
        }
    }
}
