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
        #expect(scheduler.assign() == [.init(jobID: 1, runner: 11)])
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
        #expect(scheduler.assign() == [.init(jobID: 3, runner: 7)])
    }

    @Test func aLaterJobMayPassOneNoRunnerCanTake() {
        var scheduler = Scheduler()
        scheduler.enqueue(.init(id: 1, labels: ["arm"], position: 1))
        scheduler.enqueue(.init(id: 2, labels: ["linux"], position: 2))
        scheduler.addRunner(1, labels: ["linux"], capacity: 1)
        #expect(scheduler.assign() == [.init(jobID: 2, runner: 1)])
        #expect(scheduler.queue.map(\.id) == [1])
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
}
