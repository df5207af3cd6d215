import Testing
@testable import Coordinator

@Suite struct SchedulerTests {
    @Test func aJobGoesOnlyToARunnerWithAllItsLabels() {
        var scheduler = Scheduler()
        scheduler.enqueue(.init(id: 1, labels: ["linux", "gpu"], position: 1))
        scheduler.addRunner(10, labels: ["linux"], capacity: 4)
        #expect(scheduler.assign().isEmpty)
        #expect(scheduler.unmatchedReason(for: ["linux", "gpu"]) == "no connected runner has labels [gpu, linux]")
        scheduler.addRunner(11, labels: ["linux", "gpu", "x86"], capacity: 1)
        #expect(scheduler.assign().map { [$0.jobID, Int64($0.runner)] } == [[1, 11]])
        #expect(scheduler.queue.isEmpty)
    }

    @Test func jobsAreTakenInQueueOrderWithinCapacity() {
        var scheduler = Scheduler()
        scheduler.enqueue(.init(id: 3, labels: [], position: 3))
        scheduler.enqueue(.init(id: 1, labels: [], position: 1))
        scheduler.enqueue(.init(id: 2, labels: [], position: 2))
        scheduler.addRunner(7, labels: ["linux"], capacity: 2)
        #expect(scheduler.assign().map(\.jobID) == [1, 2])
        #expect(scheduler.queue.map(\.id) == [3])
        #expect(scheduler.assign().isEmpty)
        scheduler.finish(1, on: 7)
        #expect(scheduler.assign().map { [$0.jobID, Int64($0.runner)] } == [[3, 7]])
    }

    @Test func aLaterJobMayPassOneNoRunnerCanTake() {
        var scheduler = Scheduler()
        scheduler.enqueue(.init(id: 1, labels: ["arm"], position: 1))
        scheduler.enqueue(.init(id: 2, labels: ["linux"], position: 2))
        scheduler.addRunner(1, labels: ["linux"], capacity: 1)
        #expect(scheduler.assign().map { [$0.jobID, Int64($0.runner)] } == [[2, 1]])
        #expect(scheduler.queue.map(\.id) == [1])
    }

    @Test func removingAFewOrManyJobsKeepsTheRestInOrder() {
        var scheduler = Scheduler()
        for id in 1...200 { scheduler.enqueue(.init(id: Int64(id), labels: [], position: Double(id))) }
        scheduler.removeQueued([3, 150, 7])
        let many = Set((100...199).map(Int64.init))
        scheduler.removeQueued(many)
        let expected = (1...200).map(Int64.init).filter { ![3, 150, 7].contains($0) && !many.contains($0) }
        #expect(scheduler.queue.map(\.id) == expected)
        #expect(!scheduler.isQueued(7) && !scheduler.isQueued(120) && scheduler.isQueued(200))
        #expect(scheduler.index(of: 200) == expected.count - 1)
    }

    @Test func workIsSpreadToTheLeastBusyRunner() {
        var scheduler = Scheduler()
        scheduler.addRunner(1, labels: [], capacity: 2)
        scheduler.addRunner(2, labels: [], capacity: 2)
        for id in 1...2 { scheduler.enqueue(.init(id: Int64(id), labels: [], position: Double(id))) }
        #expect(Set(scheduler.assign().map(\.runner)) == [1, 2])
    }

    @Test func aRemovedRunnerReturnsItsJobs() {
        var scheduler = Scheduler()
        scheduler.addRunner(1, labels: [], capacity: 3)
        scheduler.enqueue(.init(id: 5, labels: [], position: 1))
        _ = scheduler.assign()
        #expect(scheduler.removeRunner(1) == [5])
        #expect(scheduler.runners.isEmpty)
    }

    @Test func placementsFindTheGapBetweenNewNeighbours() {
        var scheduler = Scheduler()
        for id in 1...4 { scheduler.enqueue(.init(id: Int64(id), labels: [], position: Double(id))) }
        #expect(scheduler.placement(for: 4, at: .top) == .at(0))
        #expect(scheduler.placement(for: 1, at: .bottom) == .at(5))
        #expect(scheduler.placement(for: 4, at: .before(2)) == .at(1.5))
        #expect(scheduler.placement(for: 1, at: .after(3)) == .at(3.5))
        #expect(scheduler.placement(for: 1, at: .position(2)) == .at(2.5))
        #expect(scheduler.placement(for: 1, at: .before(99)) == .noSuchAnchor)
        #expect(scheduler.placement(for: 1, at: .before(1)) == .noSuchAnchor)
        scheduler.reposition(4, to: 1.5)
        #expect(scheduler.queue.map(\.id) == [1, 4, 2, 3])
        #expect(scheduler.index(of: 2) == 2)
    }

    @Test func neighboursTooCloseAskForARenumber() {
        var scheduler = Scheduler()
        scheduler.enqueue(.init(id: 1, labels: [], position: 1))
        scheduler.enqueue(.init(id: 2, labels: [], position: 1.0.nextUp))
        scheduler.enqueue(.init(id: 3, labels: [], position: 5))
        #expect(scheduler.placement(for: 3, at: .after(1)) == .crowded)
        let positions = scheduler.renumber()
        #expect(positions.map(\.1) == [1, 2, 3])
        #expect(scheduler.placement(for: 3, at: .after(1)) == .at(1.5))
    }

    @Test func aDrainedRunnerGetsNothingAndQueuedJobsSayWhy() {
        var scheduler = Scheduler()
        scheduler.enqueue(.init(id: 1, labels: ["linux"], position: 1))
        scheduler.addRunner(1, labels: ["linux"], capacity: 2, drained: true)
        #expect(scheduler.assign().isEmpty)
        #expect(scheduler.unmatchedReason(for: ["linux"]) == "every runner with labels [linux] is drained")
        scheduler.setDrained(1, false)
        #expect(scheduler.unmatchedReason(for: ["linux"]) == nil)
        #expect(scheduler.assign().map { [$0.jobID, Int64($0.runner)] } == [[1, 1]])
    }
}
