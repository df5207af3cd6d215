import Foundation

/// Finds every process carrying a node's marker: the environment variable
/// `HEDDLE_NODE_TOKEN=<token>`, which every descendant inherits, including those that left
/// the node's process group with `setsid`. Read from /proc; a process that cleared its
/// environment escapes this (a cgroup would not let it).
enum ProcessTree {
    static let variable = "HEDDLE_NODE_TOKEN"

    static func pids(withToken token: String) -> [pid_t] {
        let needle = Array("\(variable)=\(token)\0".utf8)
        let me = getpid()
        var found: [pid_t] = []
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        for entry in entries {
            guard let pid = pid_t(entry), pid != me else { continue }
            guard let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ"), !environ.isEmpty else { continue }
            if contains(Array(environ), needle) && !isZombie(pid) { found.append(pid) }
        }
        return found
    }

    /// Whether `pid` is a live process (a zombie is dead, only not yet reaped).
    static func isAlive(_ pid: pid_t) -> Bool {
        kill(pid, 0) == 0 && !isZombie(pid)
    }

    static func isZombie(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        let state = stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first
        return state == "Z" || state == "X"
    }

    /// Sends `signal` to the process group `group` and to every process with the token.
    /// Returns how many processes with the token were found.
    @discardableResult
    static func signal(group: pid_t, token: String, _ signal: Int32) -> Int {
        kill(-group, signal)
        let marked = pids(withToken: token)
        for pid in marked { kill(pid, signal) }
        return marked.count
    }

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        var start = 0
        // Each entry starts at the beginning or after a NUL.
        while start <= haystack.count - needle.count {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
            guard let next = haystack[start...].firstIndex(of: 0) else { return false }
            start = next + 1
        }
        return false
    }
}
