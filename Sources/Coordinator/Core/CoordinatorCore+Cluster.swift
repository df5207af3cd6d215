import Foundation

/// One coordinator of several on one database: signals from the others, applied
/// (`JobLifecycle+Cluster.swift` has how a cluster shares the queue and the running jobs).
extension CoordinatorCore {
    /// How often the shared state is read again without a signal.
    static let resyncPeriod: Duration = .seconds(10)
    /// How long a signal for the other coordinators waits for more to share its notification
    /// statement (`SignalOutbox.next(linger:)`).
    static let signalLinger: Duration = .milliseconds(5)
    /// How long signals that can wait do (`SignalOutbox.next(linger:patience:)`): a run
    /// watched on another coordinator sees a claim or an end here up to this much later, and
    /// an idle coordinator learns of new jobs up to this much later when others were woken for
    /// new jobs just before.
    static let signalPatience: Duration = .milliseconds(50)

    /// Tells the other coordinators what changed here (`SignalOutbox`); nothing on SQLite.
    func tell(_ signal: ClusterSignal) {
        if cluster != nil { signals.tell(signal) }
    }

    /// Applies a signal from another coordinator.
    public func apply(_ signal: ClusterSignal) async {
        switch signal {
        case .queue:
            await jobs.dispatch()
        case .moved(let jobID, _):
            // To this coordinator's queue watchers (its place is counted only for them).
            if live.watchesQueue, let cluster, let place = try? await cluster.queuePlaces(jobIDs: [jobID])[jobID] {
                _ = try? await moved(jobID, place: place)
            }
        case .state:
            await reloadSharedState()
        case .cancel(let jobID, let reason):
            await jobs.stopHeld(jobID: jobID, reason: reason)
        case .run(let runIDs):
            live.readAgain(runIDs: Set(runIDs))
        case .resync:
            live.readAgain(runIDs: nil)
            await reloadSharedState()  // and claims for free slots
        case .hello:
            break  // the cluster monitor's (`ClusterMonitor.Peers`)
        }
    }

    /// Reads drains, revocations and tokens again: what another coordinator changed holds
    /// here too. Sessions of certificates revoked elsewhere are closed. Then claims for free
    /// slots.
    public func reloadSharedState() async {
        guard cluster != nil else { return }
        do {
            let drainedNow = try await store.drainedRunners()
            try await access.load()
            _ = closeRevokedSessions()
            await jobs.setDrained(drainedNow)
        } catch {
            logger.warning("cannot read drains, revocations and tokens", metadata: ["error": "\(error)"])
            await jobs.dispatch()
        }
    }

    /// Takes over the running jobs of coordinators that stopped beating, takes back jobs
    /// whose runners are connected here, and claims for free slots (`JobLifecycle`). Called
    /// every half heartbeat interval; the beats are `ClusterMonitor`'s.
    public func clusterTick(now: ContinuousClock.Instant = .now) async {
        await jobs.clusterTick(now: now)
    }
}
