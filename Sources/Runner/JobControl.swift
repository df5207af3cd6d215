import Foundation
import Synchronization

/// Cancellation of one job: remembers why, and ends every node process group it holds with
/// SIGTERM, then SIGKILL after the grace period.
final class JobControl: Sendable {
    private struct State {
        var reason: String?
        var processes: [pid_t: NodeProcess] = [:]
    }
    private let state = Mutex(State())
    let grace: Duration

    init(grace: Duration) {
        self.grace = grace
    }

    var cancelReason: String? { state.withLock { $0.reason } }

    func cancel(reason: String) {
        let processes = state.withLock { state -> [NodeProcess] in
            if state.reason == nil { state.reason = reason }
            return Array(state.processes.values)
        }
        for process in processes { Self.terminate(process, grace: grace) }
    }

    /// Registers a started node; returns false (and ends it) when the job was cancelled already.
    func track(_ process: NodeProcess) -> Bool {
        let cancelled = state.withLock { state -> Bool in
            state.processes[process.pid] = process
            return state.reason != nil
        }
        if cancelled { Self.terminate(process, grace: grace) }
        return !cancelled
    }

    func untrack(_ process: NodeProcess) {
        _ = state.withLock { $0.processes.removeValue(forKey: process.pid) }
    }

    /// SIGTERM to the node's process group now, SIGKILL after `grace` unless the shell exited.
    static func terminate(_ process: NodeProcess, grace: Duration) {
        process.signalGroup(SIGTERM)
        let seconds = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
        let killer = Thread {
            Thread.sleep(forTimeInterval: seconds)
            process.signalGroup(SIGKILL)
        }
        killer.name = "heddle-kill-\(process.pid)"
        killer.start()
    }
}
