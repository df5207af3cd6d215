import Foundation
import TestSupport

/// User and system CPU time of a process, in seconds (from /proc).
func cpuSeconds(_ pid: pid_t) throws -> Double {
    let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
    let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
    return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// The CPU seconds a process uses over the next `period` (waited for, not slept through).
func cpuUsed(by pid: pid_t, over period: Duration) async throws -> Double {
    let before = try cpuSeconds(pid)
    let start = ContinuousClock.now
    try await waitUntil("\(period) to pass") { ContinuousClock.now - start >= period }
    return try cpuSeconds(pid) - before
}

/// A process's resident and peak resident memory in bytes, from /proc.
func memory(_ pid: pid_t) throws -> (resident: Int, peak: Int) {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    func field(_ name: String) -> Int {
        let line = status.split(separator: "\n").first { $0.hasPrefix(name + ":") } ?? ""
        return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0) * 1024
    }
    return (field("VmRSS"), field("VmHWM"))
}
