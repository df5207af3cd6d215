import Testing
@testable import Coordinator

/// The lease state machine on its own: no sockets, no store, no clock but the one passed in.
@Suite struct LeasesTests {
    let start = ContinuousClock.now

    func leased(_ jobs: [Int64], session: UInt64 = 1, runner: String = "r1") -> (Leases, [Int64: Int64]) {
        var leases = Leases(lastEpoch: 100)
        var epochs: [Int64: Int64] = [:]
        for job in jobs { epochs[job] = leases.claim(jobID: job, session: session, runner: runner) }
        return (leases, epochs)
    }

    @Test func everyClaimTakesANewGreaterEpoch() {
        var leases = Leases(lastEpoch: 100)
        let first = leases.claim(jobID: 1, session: 1, runner: "r1")
        let second = leases.claim(jobID: 2, session: 1, runner: "r1")
        _ = leases.end(jobID: 1)
        let again = leases.claim(jobID: 1, session: 2, runner: "r2")
        #expect(first == 101 && second == 102 && again == 103)
        // A job restored after a restart raises the floor.
        leases.restore(job: JobRecord(id: 3, runID: 1, attempt: 1, name: "j", labels: [], status: .running, runner: "r3",
                                      epoch: 500, position: 0, queuedAt: 0, reason: ""), deadline: start)
        #expect(leases.claim(jobID: 4, session: 1, runner: "r1") == 501)
    }

    @Test func onlyTheAttachedSessionWithTheCurrentEpochMayWrite() throws {
        let (leases, epochs) = leased([7])
        let epoch = try #require(epochs[7])
        #expect(try leases.check(LeaseRef(jobID: 7, epoch: epoch), session: 1).runner == "r1")
        func code(_ ref: LeaseRef, _ session: UInt64) -> CoordinatorError.Code? {
            do {
                _ = try leases.check(ref, session: session)
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
        var leases = initial
        leases.disconnect(session: 1, jobs: [1, 2, 3], deadline: start.advanced(by: .seconds(15)))
        #expect(leases[1]?.session == nil)
        let actions = leases.connect(runner: "r1", session: 5, running: [
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
        #expect(leases[1]?.session == 5 && leases[1]?.deadline == nil)
    }

    @Test func aRunnerBackBeforeItsOldSessionWasSeenClosedMovesTheJob() {
        let (initial, epochs) = leased([1])
        var leases = initial
        let actions = leases.connect(runner: "r1", session: 2, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)])
        #expect(actions == [.reattach(jobID: 1, from: 1)])
        // Another runner cannot take it over with the same epoch.
        #expect(leases.connect(runner: "r2", session: 3, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)])
                    == [.abandon(jobID: 1, epoch: epochs[1]!, reason: "the lease of job 1 (epoch \(epochs[1]!)) is no longer this runner's")])
    }

    /// A heartbeat lists what the runner runs: a job leased to that session with an epoch the
    /// runner has received, and not listed, is no longer run; one assigned after the runner's
    /// heartbeat was written (a greater epoch) is not judged yet.
    @Test func aJobTheRunnerNoLongerListsIsNotRunning() {
        let (initial, epochs) = leased([1, 2, 3])
        var leases = initial
        _ = leases.claim(jobID: 4, session: 2, runner: "r2")
        let through = epochs[2]!
        #expect(leases.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)], through: through)
                    .map(\.jobID) == [2])
        #expect(leases.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)], through: through)
                    .first?.why == "runner lost: r1 no longer runs the job")
        // Job 2 listed under an older epoch is not this lease.
        #expect(leases.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!), LeaseRef(jobID: 2, epoch: 1)],
                                  through: epochs[3]!).map(\.jobID) == [2, 3])
        #expect(leases.notRunning(session: 1, running: [LeaseRef(jobID: 1, epoch: epochs[1]!), LeaseRef(jobID: 2, epoch: epochs[2]!),
                                                        LeaseRef(jobID: 3, epoch: epochs[3]!)], through: epochs[3]!).isEmpty)
        leases.disconnect(session: 1, jobs: [1, 2, 3], deadline: start)
        #expect(leases.notRunning(session: 1, running: [], through: epochs[3]!).isEmpty)
    }

    @Test func leasesExpireOnlyForAbsentRunnersPastTheirDeadline() {
        var leases = leased([1, 2]).0
        _ = leases.claim(jobID: 3, session: 2, runner: "r2")
        leases.disconnect(session: 1, jobs: [1, 2], deadline: start.advanced(by: .seconds(15)))
        #expect(leases.expired(at: start.advanced(by: .seconds(14))).isEmpty)
        let expired = leases.expired(at: start.advanced(by: .seconds(15)))
        #expect(expired.map(\.jobID) == [1, 2])
        #expect(expired.first?.why == "runner lost: r1 was silent for longer than its lease")
    }

    @Test func aCancelIsDecidedOnceAndReachesAnAbsentRunnerWhenItReturns() {
        let (initial, epochs) = leased([1])
        var leases = initial
        #expect(leases.cancel(jobID: 1, reason: "cancelled by root") == .stop(session: 1))
        #expect(leases.cancel(jobID: 1, reason: "again") == nil)
        #expect(leases.cancel(jobID: 42, reason: "not leased") == nil)
        leases.disconnect(session: 1, jobs: [1], deadline: start)
        #expect(leases.connect(runner: "r1", session: 2, running: [LeaseRef(jobID: 1, epoch: epochs[1]!)])
                    == [.reattach(jobID: 1, from: nil), .stop(jobID: 1, epoch: epochs[1]!, reason: "cancelled by root")])

        var away = leased([5]).0
        away.disconnect(session: 1, jobs: [5], deadline: start)
        #expect(away.cancel(jobID: 5, reason: "cancelled by root") == .stopOnReattach)
    }
}
