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
