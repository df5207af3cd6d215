import Synchronization

/// Who watches what, behind one lock, so the core publishes without waiting and watches run
/// outside the core actor (`Watches`). Every `Watcher`'s state is read and changed only under
/// this lock: by publishing, and by its watch through `with(_:_:)`. Sinks never block (a sink
/// that overflows closes its session from elsewhere), so sending under the lock is safe.
final class LiveEvents: Sendable {
    private let state = Mutex(Subscriptions())

    func add(_ watcher: Watcher) { state.withLock { $0.add(watcher) } }
    func remove(_ watcher: Watcher) { state.withLock { $0.remove(watcher) } }
    func endWatches(session: UInt64) { state.withLock { $0.endWatches(session: session) } }
    func readAgain(runIDs: Set<Int64>?) { state.withLock { $0.readAgain(runIDs: runIDs) } }
    var hasWatchers: Bool { state.withLock { $0.hasWatchers } }
    var watchesQueue: Bool { state.withLock { !$0.queueWatchers.isEmpty } }

    func publish(runID: Int64, attempt: Int, _ event: WatchEvent) {
        state.withLock { $0.publish(runID: runID, attempt: attempt, event) }
    }

    func addQueueWatcher(session: UInt64, requestID: UInt64, sink: any EventSink) {
        state.withLock { $0.addQueueWatcher(session: session, requestID: requestID, sink: sink) }
    }

    func removeQueueWatchers(session: UInt64) { state.withLock { $0.removeQueueWatchers(session: session) } }
    func publishQueue(_ event: QueueEvent) { state.withLock { $0.publishQueue(event) } }

    /// Reads or changes a watcher's state under the lock.
    func with<T>(_ watcher: Watcher, _ body: (Watcher) -> T) -> T {
        state.withLock { _ in body(watcher) }
    }
}

/// Who watches what: run-attempt watchers by run, and queue watchers. Publishing never waits:
/// a watcher that cannot keep up reads from storage instead (`Watcher`), and a sink that
/// overflows closes its session.
struct Subscriptions {
    struct QueueWatcher {
        var session: UInt64
        var requestID: UInt64
        var sink: any EventSink
    }

    private(set) var watchers: [Int64: [Watcher]] = [:]
    private(set) var queueWatchers: [QueueWatcher] = []

    var hasWatchers: Bool { !watchers.isEmpty }

    mutating func add(_ watcher: Watcher) {
        watchers[watcher.runID, default: []].append(watcher)
    }

    mutating func remove(_ watcher: Watcher) {
        watcher.end()
        watchers[watcher.runID]?.removeAll { $0 === watcher }
        if watchers[watcher.runID]?.isEmpty == true { watchers[watcher.runID] = nil }
    }

    /// Ends the session's watches (each then removes itself when its call returns).
    func endWatches(session: UInt64) {
        for list in watchers.values {
            for watcher in list where watcher.session == session { watcher.end() }
        }
    }

    /// Another coordinator changed these runs (nil: any): their watchers read the store again.
    func readAgain(runIDs: Set<Int64>?) {
        for (runID, list) in watchers where runIDs?.contains(runID) ?? true {
            for watcher in list { watcher.readAgain() }
        }
    }

    /// Offers an event of a run attempt to the watchers it concerns.
    func publish(runID: Int64, attempt: Int, _ event: WatchEvent) {
        guard let list = watchers[runID], !list.isEmpty else { return }
        for watcher in list where watcher.attempt == attempt {
            switch event {
            case .log(let chunk):
                guard watcher.logs, watcher.matches(job: chunk.job, node: chunk.node) else { continue }
            case .job(let job):
                guard watcher.matches(job: job.name, node: nil) else { continue }
            case .end:
                break
            }
            watcher.offer(event)
        }
    }

    mutating func addQueueWatcher(session: UInt64, requestID: UInt64, sink: any EventSink) {
        queueWatchers.append(QueueWatcher(session: session, requestID: requestID, sink: sink))
    }

    mutating func removeQueueWatchers(session: UInt64) {
        queueWatchers.removeAll { $0.session == session }
    }

    func publishQueue(_ event: QueueEvent) {
        for watcher in queueWatchers {
            watcher.sink.send(.queue(requestID: watcher.requestID, event))
        }
    }
}
