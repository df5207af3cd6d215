import Foundation
import ServiceLifecycle

/// Keeps a coordinator of a cluster (a core on a `ClusterStore`) in step with the others: it
/// sends this coordinator's signals (one loop, in order, coalesced: `SignalOutbox`), applies
/// theirs as they come, beats and sweeps for orphaned jobs twice per heartbeat
/// interval (claiming for free slots, should a wake-up have been missed), and reads the
/// shared state again every `resyncPeriod` in case a signal was missed. On SQLite it has nothing to do and returns at once: add it to a group
/// with `successTerminationBehavior: .ignore` (as `serviceConfiguration` does).
public struct ClusterMonitor: Service {
    let core: CoordinatorCore

    public init(core: CoordinatorCore) {
        self.core = core
    }

    /// How a coordinator's group runs it: its return (on SQLite) does not end the group.
    public var serviceConfiguration: ServiceGroupConfiguration.ServiceConfiguration {
        .init(service: self, successTerminationBehavior: .ignore)
    }

    public func run() async throws {
        guard let cluster = core.cluster else { return }
        let period = core.limits.heartbeatInterval / 2
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                // Signals as they come, applied in order by one loop; while it is busy, the
                // newest 4,096 wait (a `.resync` follows any gap the listener knows of).
                let (signals, received) = AsyncStream.makeStream(of: ClusterSignal.self, bufferingPolicy: .bufferingNewest(4096))
                group.addTask {
                    await cluster.listen { received.yield($0) }
                    received.finish()
                }
                group.addTask {
                    for await signal in signals {
                        // The most frequent (every claim and end elsewhere) needs no actor: run
                        // watchers read the store again.
                        if case .run(let runIDs) = signal {
                            core.live.readAgain(runIDs: Set(runIDs))
                        } else {
                            await core.apply(signal)
                        }
                    }
                }
                group.addTask {
                    // Ends when the outbox closes: the task is cancelled at the shutdown.
                    while case let batch = await core.signals.next(), !batch.isEmpty {
                        do { try await cluster.signal(batch) } catch {
                            core.logger.warning("cannot signal the other coordinators", metadata: ["error": "\(error)"])
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
                await group.waitForAll()
            }
        }
    }
}

/// Checks every `CoordinatorCore.resyncPeriod` that `--data` is still the cluster's data
/// directory (`ClusterStore.checkDataDirectory`). When it is not (an unmounted share), it
/// throws, and its configuration shuts the whole coordinator down gracefully, as SIGTERM
/// does, the error then its exit status: better stopped than writing bytes where the other
/// coordinators cannot read them. On SQLite it returns at once.
public struct DataDirectoryMonitor: Service {
    let core: CoordinatorCore
    let directory: String

    public init(core: CoordinatorCore, directory: String) {
        self.core = core
        self.directory = directory
    }

    public var serviceConfiguration: ServiceGroupConfiguration.ServiceConfiguration {
        .init(service: self, successTerminationBehavior: .ignore, failureTerminationBehavior: .gracefullyShutdownGroup)
    }

    public func run() async throws {
        guard let cluster = core.cluster else { return }
        try await cancelWhenGracefulShutdown {
            while true {
                try? await Task.sleep(for: CoordinatorCore.resyncPeriod)
                if Task.isCancelled { return }
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
}
