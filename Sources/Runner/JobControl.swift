import Foundation
import Synchronization

/// Cancellation of one job: remembers why, and ends every running node's process tree with
/// SIGTERM, then SIGKILL after that node's grace period.
final class JobControl: Sendable {
    private struct State {
        var reason: String?
        var abandoned = false
        var processes: [pid_t: (NodeProcess, Duration)] = [:]
    }
    private let state = Mutex(State())
    /// The runner's default grace period; a node may set its own.
    let grace: Duration

    init(grace: Duration) {
        self.grace = grace
    }

    var cancelReason: String? { state.withLock { $0.reason } }

    /// The coordinator no longer takes writes for this job: stop it and report nothing.
    var isAbandoned: Bool { state.withLock { $0.abandoned } }

    func abandon(reason: String) {
        state.withLock { $0.abandoned = true }
        cancel(reason: reason)
    }

    func cancel(reason: String) {
        let processes = state.withLock { state -> [(NodeProcess, Duration)] in
            if state.reason == nil { state.reason = reason }
            return Array(state.processes.values)
        }
        for (process, grace) in processes { process.terminate(grace: grace) }
    }

    /// Registers a started node with its grace period; returns false (and ends it) when the
    /// job was cancelled already.
    func track(_ process: NodeProcess, grace: Duration) -> Bool {
        let cancelled = state.withLock { state -> Bool in
            state.processes[process.pid] = (process, grace)
            return state.reason != nil
        }
        if cancelled { process.terminate(grace: grace) }
        return !cancelled
    }

    /// SIGKILL to every node's tree still running, whatever its grace (the runner exits).
    func killAll() {
        for (process, _) in state.withLock({ Array($0.processes.values) }) { process.killNow() }
    }

    func untrack(_ process: NodeProcess) {
        _ = state.withLock { $0.processes.removeValue(forKey: process.pid) }
    }
}
