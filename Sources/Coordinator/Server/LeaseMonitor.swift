import ServiceLifecycle

/// Expires the leases of jobs whose runner stayed away too long, twice per heartbeat interval.
public struct LeaseMonitor: Service {
    let core: CoordinatorCore

    public init(core: CoordinatorCore) {
        self.core = core
    }

    public func run() async throws {
        let period = core.limits.heartbeatInterval / 2
        try? await cancelWhenGracefulShutdown {
            while true {
                try await Task.sleep(for: period)
                await core.expireLeases()
            }
        }
    }
}
