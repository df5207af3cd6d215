import Testing
@testable import Coordinator

/// The job state machine on its own: no sockets, no store, no clock but the one passed in.
@Suite struct JobTableTests {
    let start = ContinuousClock.now

    /// What the store answers for a claim of `jobID` (retries: `retryLost`).
    static func claimed(_ jobID: Int64, retryLost: Int = 0) -> ClaimedJob {
        let job = JobRecord(id: jobID, runID: 1, attempt: 1, name: "j\(jobID)", labels: [], status: .running, runner: "r1",
                            epoch: 0, position: 0, queuedAt: 0, reason: "", retryLost: retryLost)
        let run = RunRecord(id: 1, project: "p", pipeline: "ci", pipelineVersionID: 1, branch: "main", status: .running,
                            attempt: 1, trigger: "manual", createdAt: 0)
        return ClaimedJob(job: job, run: run, nodes: [], repository: "")
    }

    static func queued(_ jobID: Int64) -> Scheduler.QueuedJob {
        Scheduler.QueuedJob(id: jobID, labels: [], position: Double(jobID))
    }

    /// Jobs claimed on `session` and their claims stored: leased.
    func leased(_ ids: [Int64], session: UInt64 = 1, runner: String = "r1", retryLost: Int = 0) -> (JobTable, [Int64: Int64]) {
        var table = JobTable(lastEpoch: 100)
        var epochs: [Int64: Int64] = [:]
        for id in ids {
            let epoch = table.claim(Self.queued(id), session: session, runner: runner)
            epochs[id] = epoch
            _ = table.claimSettled(id, epoch: epoch, record: Self.claimed(id, retryLost: retryLost))
        }
        return (table, epochs)
    }

    @Test func everyClaimTakesANewGreaterEpoch() {
        var table = JobTable(lastEpoch: 100)
        let first = table.claim(Self.queued(1), session: 1, runner: "r1")
        let second = table.claim(Self.queued(2), session: 1, runner: "r1")
        _ = table.settled(1)
        let again = table.claim(Self.queued(1), session: 2, runner: "r2")
        #expect(first == 101 && second == 102 && again == 103)
        // A job restored after a restart raises the floor.
        table.restore(job: JobRecord(id: 3, runID: 1, attempt: 1, name: "j", labels: [], status: .running, runner: "r3",
                                      epoch: 500, position: 0, queuedAt: 0, reason: ""), deadline: start)
        let result1 = table.claim(Self.queued(4), session: 1, runner: "r1")
        #expect(result1 == 501)
    }

    @Test func onlyTheAttachedSessionWithTheCurrentEpochMayWrite() throws {
        let (table, epochs) = leased([7])
        let epoch = try #require(epochs[7])
        #expect(try table.check(LeaseRef(jobID: 7, epoch: epoch), session: 1).runner == "r1")
        func code(_ ref: LeaseRef, _ session: UInt64) -> CoordinatorError.Code? {
            do {
                _ = try table.check(ref, session: session)
                return nil
            } catch {
                return error.code
            }
        }
        #expect(code(LeaseRef(jobID: 7, epoch: epoch - 1), 1) == .staleLease)
        #expect(code(LeaseRef(jobID: 7, epoch: epoch), 2) == .permissionDenied)
        #expect(code(LeaseRef(jobID: 8, epoch: epoch), 1) == .failedPrecondition)
    }

    @Test func aRunnerThatComesBackReattachesItsJobsAbandonsOthersAndLosesForgottenOnes() throws {
        let (initial, epochs) = leased([1, 2, 3])
        var table = initial
        table.disconnect(session: 1, jobs: [1, 2, 3], deadline: start.advanced(by: .seconds(15)))
        #expect(table[1]?.session == nil)
        let actions = table.connect(runner: "r1", session: 5, running: [
            LeaseRef(jobID: 1, epoch: epochs[1]!),
            LeaseRef(jobID: 2, epoch: epochs[2]! - 1),  // an older execution of job 2
            LeaseRef(jobID: 9, epoch: 1),  // never leased here
        ])
        #expect(actions == [
            .reattach(jobID: 1, from: nil),
            .abandon(jobID: 2, epoch: epochs[2]! - 1, reason: "the lease of job 2 (epoch \(epochs[2]! - 1)) is no longer this runner's"),
            .abandon(jobID: 9, epoch: 1, reason: "the lease of job 9 (epoch 1) is no longer this runner's"),
            .lost(jobID: 3, why: "runner lost: r1 came back without the job"),
        ])
        #expect(table[1]?.session == 5 && table[1]?.deadline == nil)
    }

    @Test func aRunnerBackBeforeItsOldSessionWasSeenClosedMovesTheJob() {
        let (initial, epochs) = leased([1])
        var table = initial
        let actions = table.connect(runner: "r1", session: 2, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)])
        #expect(actions == [.reattach(jobID: 1, from: 1)])
        // Another runner cannot take it over with the same epoch.
        #expect(table.connect(runner: "r2", session: 3, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)])
                    == [.abandon(jobID: 1, epoch: epochs[1]!, reason: "the lease of job 1 (epoch \(epochs[1]!)) is no longer this runner's")])
    }

    /// A heartbeat lists what the runner runs: a job leased to that session with an epoch the
    /// runner has received, and not listed, is no longer run; one assigned after the runner's
    /// heartbeat was written (a greater epoch) is not judged yet.
    @Test func aJobTheRunnerNoLongerListsIsNotRunning() {
        let (initial, epochs) = leased([1, 2, 3])
        var table = initial
        _ = table.claim(Self.queued(4), session: 2, runner: "r2")
        let through = epochs[2]!
        #expect(table.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)], through: through)
                    .map(\.jobID) == [2])
        #expect(table.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)], through: through)
                    .first?.why == "runner lost: r1 no longer runs the job")
        // Job 2 listed under an older epoch is not this lease.
        #expect(table.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!), LeaseRef(jobID: 2, epoch: 1)],
                                  through: epochs[3]!).map(\.jobID) == [2, 3])
        #expect(table.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!), LeaseRef(jobID: 2, epoch: epochs[2]!),
                                                        LeaseRef(jobID: 3, epoch: epochs[3]!)], through: epochs[3]!).isEmpty)
        table.disconnect(session: 1, jobs: [1, 2, 3], deadline: start)
        #expect(table.notRunning(session: 1, running: [], through: epochs[3]!).isEmpty)
    }

    @Test func leasesExpireOnlyForAbsentRunnersPastTheirDeadline() {
        var table = leased([1, 2]).0
        _ = table.claim(Self.queued(3), session: 2, runner: "r2")
        table.disconnect(session: 1, jobs: [1, 2], deadline: start.advanced(by: .seconds(15)))
        #expect(table.expired(at: start.advanced(by: .seconds(14))).isEmpty)
        let expired = table.expired(at: start.advanced(by: .seconds(15)))
        #expect(expired.map(\.jobID) == [1, 2])
        #expect(expired.first?.why == "runner lost: r1 was silent for longer than its lease")
    }

    @Test func aCancelIsDecidedOnceAndReachesAnAbsentRunnerWhenItReturns() {
        let (initial, epochs) = leased([1])
        var table = initial
        let result2 = table.cancel(jobID: 1, reason: "cancelled by root")
        #expect(result2 == .stop(session: 1, epoch: epochs[1]!))
        let result3 = table.cancel(jobID: 1, reason: "again")
        #expect(result3 == nil)
        let result4 = table.cancel(jobID: 42, reason: "not leased")
        #expect(result4 == nil)
        table.disconnect(session: 1, jobs: [1], deadline: start)
        #expect(table.connect(runner: "r1", session: 2, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)])
                    == [.reattach(jobID: 1, from: nil), .stop(jobID: 1, epoch: epochs[1]!, reason: "cancelled by root")])

        var away = leased([5]).0
        away.disconnect(session: 1, jobs: [5], deadline: start)
        let result5 = away.cancel(jobID: 5, reason: "cancelled by root")
        #expect(result5 == .stopOnReattach)
    }

    // MARK: phases

    /// A cancel that arrives while a claim is stored is recorded, not sent: once the claim is
    /// stored the job ends cancelled and its runner is never told of it.
    @Test func aCancelDuringTheClaimEndsTheJobOnceTheClaimIsStored() {
        var table = JobTable(lastEpoch: 100)
        let epoch = table.claim(Self.queued(1), session: 1, runner: "r1")
        #expect(table[1]?.phase == .claiming)
        let result6 = table.cancel(jobID: 1, reason: "cancelled by root")
        #expect(result6 == .deferred)
        // The runner cannot write about a job it was never told of.
        #expect(throws: CoordinatorError.self) { try table.check(LeaseRef(jobID: 1, epoch: epoch), session: 1) }
        let result7 = table.claimSettled(1, epoch: epoch, record: Self.claimed(1))
        #expect(result7 == .cancelled(reason: "cancelled by root", session: 1))
        #expect(table[1]?.phase == .finishing)
        #expect(table[1]?.end == JobTable.End(status: .cancelled, reason: "cancelled by root (before it started)"))
    }

    @Test func aClaimTheStoreRefusedPutsTheJobBackOrCancelsIt() {
        var table = JobTable(lastEpoch: 100)
        let first = table.claim(Self.queued(1), session: 1, runner: "r1")
        let second = table.claim(Self.queued(2), session: 1, runner: "r1")
        let result8 = table.claimSettled(1, epoch: first, record: nil)
        #expect(result8 == .notClaimed(session: 1))
        #expect(table[1] == nil)
        _ = table.cancel(jobID: 2, reason: "cancelled by root")
        let failed = table.claimFailed(2, epoch: second)
        #expect(failed?.queued == Self.queued(2) && failed?.cancelReason == "cancelled by root" && failed?.session == 1)
        #expect(table.isEmpty)
    }

    /// A lost job with retries left is `requeueing` until the store has it queued; a cancel
    /// meanwhile is recorded (`deferred`) for the requeue to turn into a cancellation.
    @Test func aCancelWhileALostJobIsRequeuedIsRecorded() throws {
        var (table, _) = leased([1], retryLost: 1)
        let lost = table.lose(1, why: "runner lost: r1 was silent")
        let loss = try #require(lost)
        #expect(loss.outcome == .requeue && loss.freed == 1)
        #expect(table[1]?.phase == .requeueing && table[1]?.session == nil)
        let result9 = table.cancel(jobID: 1, reason: "cancelled by root")
        #expect(result9 == .deferred)
        #expect(table[1]?.cancelReason == "cancelled by root")
        // Lost once: a second loss (a heartbeat) changes nothing.
        let result10 = table.lose(1, why: "again")
        #expect(result10 == nil)
        #expect(table.unsettled == [1])  // nothing written yet
        table.writing(1, true)
        #expect(table.unsettled.isEmpty)  // a write on its way
        table.writing(1, false)
        #expect(table.unsettled == [1])  // the store refused: tried again
        table.writing(1, true)
        table.requeueStored(1)
        #expect(table[1]?.requeued == true && table.unsettled.isEmpty)
        table.writing(1, false)  // queueing it here failed (a read): that step is tried again
        #expect(table.unsettled == [1])
        let result11 = table.settled(1)
        #expect(result11 != nil && table.isEmpty)
    }

    @Test func aLostJobEndsCancelledWhenACancelWasDecidedAndFailedWithoutRetries() throws {
        var (table, _) = leased([1, 2])
        _ = table.cancel(jobID: 1, reason: "cancelled by root")
        let result12 = table.lose(1, why: "runner lost")
        #expect(result12?.outcome == .end)
        #expect(table[1]?.end == JobTable.End(status: .cancelled, reason: "cancelled by root (runner lost before it confirmed)"))
        let result13 = table.lose(2, why: "runner lost")
        #expect(result13?.outcome == .end)
        #expect(table[2]?.end == JobTable.End(status: .failed, reason: "runner lost"))
        // A cancel of a job whose end is being stored changes nothing: that end stands.
        let result14 = table.cancel(jobID: 2, reason: "cancelled by root")
        #expect(result14 == nil)
    }

    /// An end the runner reported stays `finishing` on its session until stored: heartbeats
    /// no longer judge it, a failed write waits for the runner to send it again, and a runner
    /// that never comes back has it stored by the coordinator.
    @Test func anEndTheStoreRefusedStaysUntilTheRunnerSendsItAgain() throws {
        var (table, epochs) = leased([1])
        let ref = LeaseRef(jobID: 1, epoch: epochs[1]!)
        let result15 = table.beginEnd(1, .init(status: .succeeded, reason: "", reported: true))
        #expect(result15)
        #expect(table.notRunning(session: 1, running: [], through: epochs[1]!).isEmpty)
        table.writing(1, true)
        // Sent again while the first is written: not taken.
        let result16 = table.beginEnd(1, .init(status: .succeeded, reason: "", reported: true))
        #expect(!result16)
        table.writing(1, false)
        #expect(table.unsettled.isEmpty)  // the runner sends it again, not the coordinator
        #expect(try table.check(ref, session: 1, finishing: true).phase == .finishing)
        #expect(throws: CoordinatorError.self) { try table.check(ref, session: 1) }  // no more writes but the end
        let result17 = table.beginEnd(1, .init(status: .succeeded, reason: "", reported: true))
        #expect(result17)
        table.writing(1, false)
        // Its runner goes away and does not come back: its end is the coordinator's to store.
        table.disconnect(session: 1, jobs: [1], deadline: start)
        #expect(table.expired(at: start).map(\.jobID) == [1])
        let result18 = table.lose(1, why: "runner lost")
        #expect(result18?.outcome == .end)
        #expect(table[1]?.end == JobTable.End(status: .succeeded, reason: ""))
        #expect(table.unsettled == [1])
    }
}
