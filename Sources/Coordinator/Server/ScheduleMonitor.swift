import Foundation
import ServiceLifecycle

/// Starts pipelines' scheduled runs when they are due (`Schedules.startDue`): it wakes at the
/// earliest due time it knows, and at least every `ScheduleMonitor.period`, to see schedules
/// pushed since (on any coordinator of a cluster).
public struct ScheduleMonitor: Service {
    let core: CoordinatorCore

    /// The longest the monitor sleeps: a schedule pushed to another coordinator is seen within it.
    public static let period: Duration = .seconds(10)

    public init(core: CoordinatorCore) {
        self.core = core
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while true {
                var wait = Self.period
                do {
                    let now = Date()
                    if let next = try await core.schedules.startDue(now: now).next {
                        // A little past the due minute, so that it has come when the monitor looks.
                        wait = min(wait, .milliseconds(Int64(max(0, next.timeIntervalSince(now)) * 1000) + 20))
                    }
                } catch {
                    core.logger.warning("schedules were not read", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: wait)
            }
        }
    }
}
