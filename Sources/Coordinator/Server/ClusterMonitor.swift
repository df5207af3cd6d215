import Foundation
import ServiceLifecycle
import Synchronization

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
        // Another coordinator is alive while its beats are seen within two and a half heartbeat
        // intervals (as the sweep judges); alone after three intervals with no sign of one.
        let window = core.limits.heartbeatInterval * 5 / 2
        let peers = Peers(silence: core.limits.heartbeatInterval * 3)
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
                        // Any signal but a resync (the listener's own, when it starts) is from
                        // another coordinator: one alone until now tells what it did not send.
                        if signal != .resync, peers.seen() { core.signals.tell(.resync) }
                        if signal == .hello { continue }
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
                    while case var batch = await core.signals.next(linger: CoordinatorCore.signalLinger,
                                                                        patience: CoordinatorCore.signalPatience), !batch.isEmpty {
                        if peers.alone() { batch.removeAll(where: Peers.onlyForOthers) }
                        guard !batch.isEmpty else { continue }
                        do { try await cluster.signal(batch) } catch {
                            core.logger.warning("cannot signal the other coordinators", metadata: ["error": "\(error)"])
                        }
                    }
                }
                group.addTask {
                    // Beats on their own, never behind the core's other work: a busy coordinator
                    // is not taken for a dead one.
                    while !Task.isCancelled {
                        do {
                            if try await cluster.beat(othersWithin: window) > 0 {
                                if peers.seen() { core.signals.tell(.resync) }
                            } else {
                                peers.noneSeen()
                            }
                        } catch {
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

extension ClusterMonitor {
    /// Whether other coordinators are alive, for the signals only they need: a coordinator
    /// alone sends no `.queue` and no `.run` signals (no one listens; they were two
    /// notification statements per job). Signs of another: its beat seen in the store (at
    /// every beat here), or any signal from one (a coordinator says `.hello` when it starts
    /// listening). Alone once the first beat saw none, and after `silence` with no sign
    /// since; until the first beat, not alone. When another appears, this one tells a
    /// `.resync`: the others read again what it did not signal.
    final class Peers: Sendable {
        private struct State {
            /// Whether a beat has answered yet.
            var known = false
            var lastSign: ContinuousClock.Instant?
        }
        private let state = Mutex(State())
        let silence: Duration

        init(silence: Duration) {
            self.silence = silence
        }

        /// Signals the others alone have no use for.
        static func onlyForOthers(_ signal: ClusterSignal) -> Bool {
            switch signal {
            case .queue, .run: true
            case .moved, .state, .cancel, .resync, .hello: false
            }
        }

        func alone(now: ContinuousClock.Instant = .now) -> Bool {
            state.withLock { Self.alone($0, now: now, silence: silence) }
        }

        /// A sign of another coordinator; true when this one thought itself alone until now.
        func seen(now: ContinuousClock.Instant = .now) -> Bool {
            state.withLock { state in
                let wasAlone = Self.alone(state, now: now, silence: silence)
                state.known = true
                state.lastSign = now
                return wasAlone
            }
        }

        /// A beat saw no other coordinator.
        func noneSeen() {
            state.withLock { $0.known = true }
        }

        private static func alone(_ state: State, now: ContinuousClock.Instant, silence: Duration) -> Bool {
            guard state.known else { return false }
            guard let last = state.lastSign else { return true }
            return last.duration(to: now) > silence
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
