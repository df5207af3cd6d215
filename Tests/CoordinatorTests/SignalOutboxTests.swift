import Synchronization
import Testing
@testable import Coordinator

/// The signals a coordinator owes the others: in order, coalesced, bounded, handed to one
/// sending loop.
@Suite struct SignalOutboxTests {
    @Test func signalsComeInOrderCoalesced() async {
        let outbox = SignalOutbox()
        outbox.add(.queue)
        outbox.add(.run(runIDs: [1, 2]))
        outbox.add(.moved(jobID: 7, position: 1.5))
        outbox.add(.queue)  // waiting already
        outbox.add(.run(runIDs: [2, 3]))  // merged
        outbox.add(.moved(jobID: 7, position: 0.5))  // the later place wins
        outbox.add(.cancel(jobID: 9, reason: "cancelled by root"))
        outbox.add(.run(runIDs: [4]))
        #expect(await outbox.next() == [.queue, .run(runIDs: [1, 2, 3, 4]), .moved(jobID: 7, position: 0.5),
                                        .cancel(jobID: 9, reason: "cancelled by root")])
        // Taken: the next batch starts empty.
        outbox.add(.state)
        #expect(await outbox.next() == [.state])
    }

    @Test func tooManyCollapseIntoOneResyncKeepingTheCancels() async {
        let outbox = SignalOutbox()
        outbox.add(.cancel(jobID: 1, reason: "r"))
        for job in 0..<Int64(SignalOutbox.maximumPending) { outbox.add(.moved(jobID: job + 10, position: Double(job))) }
        let batch = await outbox.next()
        #expect(batch == [.cancel(jobID: 1, reason: "r"), .resync])
    }

    @Test func mergedIDsStayWithinOneNotification() async {
        let outbox = SignalOutbox()
        outbox.add(.run(runIDs: Array(0..<200)))
        outbox.add(.run(runIDs: Array(200..<300)))
        #expect(await outbox.next() == [.run(runIDs: Array(0..<200)), .run(runIDs: Array(200..<300))])
    }

    /// Signals told while the first one lingers share its batch, coalesced with it; those told
    /// after it was taken wait for the next.
    @Test func signalsToldWhileTheFirstLingersShareItsBatch() async {
        let outbox = SignalOutbox()
        // Two seconds of linger: the tells below come well within it, even on a loaded machine.
        let taken = Task { await outbox.next(linger: .seconds(2)) }
        // The loop waits: the first signal is handed to it at once, alone.
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while !outbox.hasWaiter && ContinuousClock.now < deadline { await Task.yield() }
        #expect(outbox.hasWaiter)
        outbox.add(.run(runIDs: [1]))
        outbox.add(.run(runIDs: [2]))
        outbox.add(.queue)
        outbox.add(.run(runIDs: [1, 3]))
        #expect(await taken.value == [.run(runIDs: [1, 2, 3]), .queue])
        outbox.add(.state)
        #expect(await outbox.next(linger: .zero) == [.state])
    }

    /// Changed runs wait up to the patience for more, until a signal that cannot wait comes;
    /// new jobs go at once, and wait only when others were woken for new jobs just before.
    @Test func signalsThatCanWaitDoUntilOneThatCannotComes() async {
        let outbox = SignalOutbox()
        final class Taken: Sendable {
            let value = Mutex(false)
        }
        // One batch taken by a loop with a linger of 1 ms and a patience of a minute; `taken`
        // holds true once `next` has returned it.
        func take() async -> (Task<[ClusterSignal], Never>, Taken) {
            let taken = Taken()
            let task = Task {
                let batch = await outbox.next(linger: .milliseconds(1), patience: .seconds(60))
                taken.value.withLock { $0 = true }
                return batch
            }
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while !outbox.hasWaiter && ContinuousClock.now < deadline { await Task.yield() }
            #expect(outbox.hasWaiter)
            return (task, taken)
        }
        // The loop waiting for a signal that cannot wait: within 20 s, or the test fails.
        func patient() async {
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while !outbox.isPatient && ContinuousClock.now < deadline { await Task.yield() }
            #expect(outbox.isPatient, "the batch did not wait for a signal that cannot wait")
        }
        // The batch, once taken: within 20 s, or the test fails (the task cancelled, not awaited).
        func batch(_ task: Task<[ClusterSignal], Never>, _ taken: Taken) async -> [ClusterSignal]? {
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while !taken.value.withLock({ $0 }) && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(1)) }
            guard taken.value.withLock({ $0 }) else {
                Issue.record("the batch was not taken within 20 s")
                task.cancel()
                return nil
            }
            return await task.value
        }

        // Runs alone wait: the loop waits for a signal that cannot (its patience is a minute),
        // with the batch still open.
        var (task, taken) = await take()
        outbox.add(.run(runIDs: [1]))
        await patient()
        #expect(!taken.value.withLock { $0 })
        outbox.add(.run(runIDs: [2]))
        outbox.add(.cancel(jobID: 9, reason: "r"))
        #expect(await batch(task, taken) == [.run(runIDs: [1, 2]), .cancel(jobID: 9, reason: "r")])

        // New jobs, the first in a while: at once (well before the minute).
        (task, taken) = await take()
        outbox.add(.queue)
        #expect(await batch(task, taken) == [.queue])
        // New jobs again, the others woken just before: they wait, until a move.
        (task, taken) = await take()
        outbox.add(.queue)
        await patient()
        #expect(!taken.value.withLock { $0 })
        outbox.add(.moved(jobID: 3, position: 1))
        #expect(await batch(task, taken) == [.queue, .moved(jobID: 3, position: 1)])
    }

    /// The sending loop waits for the first signal, and ends when the outbox closes.
    @Test func aWaitingLoopGetsTheNextSignalAndEndsAtClose() async {
        let outbox = SignalOutbox()
        let waiting = Task { await outbox.next() }
        outbox.add(.queue)
        #expect(await waiting.value == [.queue])
        let last = Task { await outbox.next() }
        outbox.close()
        #expect(await last.value.isEmpty)
        outbox.add(.queue)  // closed: dropped
        #expect(await outbox.next().isEmpty)
    }
}

/// Whether a coordinator of a cluster is alone, for the signals only the others need.
@Suite struct PeersTests {
    @Test func aloneOnlyOnceABeatSawNoOtherAndUntilASignOfOne() {
        let start = ContinuousClock.now
        let peers = ClusterMonitor.Peers(silence: .seconds(15))
        // Before the first beat: not known, so everything is sent.
        #expect(!peers.alone(now: start))
        peers.noneSeen()
        #expect(peers.alone(now: start))
        // A sign of another (its hello, any signal, its beat): no longer alone, and the caller
        // tells a resync for what it did not send.
        #expect(peers.seen(now: start + .seconds(1)))
        #expect(!peers.alone(now: start + .seconds(1)))
        #expect(!peers.seen(now: start + .seconds(2)))
        // A beat that saw none does not make it alone before the silence has passed.
        peers.noneSeen()
        #expect(!peers.alone(now: start + .seconds(17)))
        #expect(peers.alone(now: start + .seconds(18)))
        #expect(peers.seen(now: start + .seconds(19)))
    }

    @Test func onlyQueueAndRunSignalsAreLeftOutWhenAlone() {
        let left: [ClusterSignal] = [.queue, .run(runIDs: [1])]
        let kept: [ClusterSignal] = [.moved(jobID: 1, position: 2), .state, .cancel(jobID: 1, reason: "r"), .resync, .hello]
        #expect(left.allSatisfy(ClusterMonitor.Peers.onlyForOthers))
        #expect(!kept.contains(where: ClusterMonitor.Peers.onlyForOthers))
    }
}
