import Foundation
import ServiceLifecycle

/// Keeps a coordinator of a cluster (a core on a `ClusterStore`) in step with the others: it
/// sends this coordinator's signals (one loop, in order, coalesced: `SignalOutbox`), applies
/// theirs as they come, beats and sweeps for orphaned jobs twice per heartbeat
/// interval (claiming for free slots, should a wake-up have been missed), reads the shared
/// state again every `resyncPeriod` in case a signal was missed, and checks every
/// `resyncPeriod` that `--data` is still the cluster's data directory: when it is not (an
/// unmounted share), it throws, and the coordinator stops rather than write bytes where the
/// others cannot read them. On SQLite it has nothing to do and returns at once: add it to a group
/// with `successTerminationBehavior: .ignore` (as `serviceConfiguration` does).
public struct ClusterMonitor: Service {
    let core: CoordinatorCore
    /// `--data`, checked against the database's marker (`ClusterStore.checkDataDirectory`).
    let dataDirectory: String?

    public init(core: CoordinatorCore, dataDirectory: String? = nil) {
        self.core = core
        self.dataDirectory = dataDirectory
    }

    /// How a coordinator's group runs it: its return (on SQLite) does not end the group.
    public var serviceConfiguration: ServiceGroupConfiguration.ServiceConfiguration {
        .init(service: self, successTerminationBehavior: .ignore)
    }

    public func run() async throws {
        guard let cluster = core.cluster else { return }
        let period = core.limits.heartbeatInterval / 2
        try await cancelWhenGracefulShutdown {
            try await withThrowingTaskGroup(of: Void.self) { group in
                // Signals as they come, applied in order by one loop; while it is busy, the
                // newest 4,096 wait (a `.resync` follows any gap the listener knows of).
                let (signals, received) = AsyncStream.makeStream(of: ClusterSignal.self, bufferingPolicy: .bufferingNewest(4096))
                group.addTask {
                    await cluster.listen { received.yield($0) }
                    received.finish()
                }
                group.addTask {
                    for await signal in signals { await core.apply(signal) }
                }
                group.addTask {
                    // Ends when the outbox closes: the task is cancelled at the shutdown.
                    while case let batch = await core.signals.next(), !batch.isEmpty {
                        for signal in batch {
                            do { try await cluster.signal(signal) } catch {
                                core.logger.warning("cannot signal the other coordinators", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                }
                group.addTask {
                    // Beats on their own, never behind the core's other work: a busy coordinator
                    // is not taken for a dead one.
                    while !Task.isCancelled {
                        do { try await cluster.beat() } catch {
                            core.logger.warning("cannot beat", metadata: ["error": "\(error)"])
                        }
                        try? await Task.sleep(for: period)
                    }
                }
                group.addTask {
                    var sinceResync = Duration.zero
                    while !Task.isCancelled {
                        try? await Task.sleep(for: period)
                        await core.clusterTick()
                        sinceResync += period
                        if sinceResync >= CoordinatorCore.resyncPeriod {
                            sinceResync = .zero
                            await core.apply(.resync)
                        }
                    }
                }
                if let directory = dataDirectory {
                    group.addTask {
                        while !Task.isCancelled {
                            try await Task.sleep(for: CoordinatorCore.resyncPeriod)
                            do {
                                try await cluster.checkDataDirectory(directory)
                            } catch let error as StoreError where error.code == .inconsistent {
                                core.logger.critical("the data directory is not the cluster's: stopping", metadata: ["error": "\(error)"])
                                throw error
                            } catch {
                                core.logger.warning("cannot check the data directory now", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}
