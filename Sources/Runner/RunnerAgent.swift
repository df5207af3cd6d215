import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Wire

public struct RunnerConfiguration: Sendable {
    /// One coordinator, or several sharing one database: the runner connects to one at a time
    /// and moves to the next in the list when it cannot reach its own.
    public var coordinators: [Endpoint]
    public var tls: TLSFiles
    public var labels: [String]
    public var capacity: Int
    public var workDirectory: String
    /// SIGTERM to SIGKILL when a node is cancelled or times out.
    public var killGrace: Duration = .seconds(10)
    public var maximumBackoff: Duration = .seconds(30)
    /// How each node is isolated (`Sandbox`); `.none` is the explicit way out.
    public var isolation: Isolation = .bwrap
    /// Resource limits of nodes that set none (`--limits`).
    public var limits = ResourceLimits()

    public init(coordinators: [Endpoint], tls: TLSFiles, labels: [String], capacity: Int, workDirectory: String) {
        precondition(!coordinators.isEmpty, "a runner needs a coordinator")
        self.coordinators = coordinators
        self.tls = tls
        self.labels = labels
        self.capacity = capacity
        self.workDirectory = workDirectory
    }
}

/// The long-lived runner: connects to the coordinator (reconnecting with exponential backoff
/// and jitter), advertises its labels, capacity and the jobs it still runs (to reattach them),
/// and runs each pushed assignment. Jobs go on through a lost connection.
///
/// Shutdown: the first `shutdown()` (the binary calls it on SIGTERM) drains (no new jobs; the
/// running ones finish, then `run()` returns); a second one cancels the running jobs.
public final class RunnerAgent: Service, Sendable {
    let configuration: RunnerConfiguration
    let logger: Logger
    let link = CoordinatorLink()
    private let state = Mutex(State())

    private struct State {
        /// Every assignment received and not yet finished or abandoned.
        var jobs: [JobKey: (JobControl, Heddle_V1_JobRef)] = [:]
        /// The greatest epoch of any assignment received.
        var assignedThrough: UInt64 = 0
        var draining = false
        var idleWaiters: [CheckedContinuation<Void, Never>] = []
    }

    /// Yields, after a second shutdown, how many jobs were given up on without their results
    /// reaching a coordinator (`giveUpReportingLater`): the process should exit, with status 1.
    /// Their tasks may still wait for a coordinator: `run()` does not return by itself then.
    public let gaveUp: AsyncStream<Int>
    private let gaveUpContinuation: AsyncStream<Int>.Continuation

    public init(configuration: RunnerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        (gaveUp, gaveUpContinuation) = AsyncStream.makeStream(of: Int.self)
    }

    /// First call: drain. Second call: cancel the running jobs too.
    public func shutdown() {
        let (alreadyDraining, controls) = state.withLock { state in
            defer { state.draining = true }
            return (state.draining, state.jobs.values.map(\.0))
        }
        if alreadyDraining {
            logger.warning("second shutdown signal: cancelling the running jobs", metadata: ["jobs": "\(controls.count)"])
            for control in controls { control.cancel(reason: "the runner is shutting down") }
            giveUpReportingLater()
        } else {
            logger.info("draining: running jobs finish, no new ones start", metadata: ["jobs": "\(controls.count)"])
            // The agent's: one request, ended when it is answered or the connection goes.
            Task { [link] in
                if let connection = await link.live { _ = try? await connection.request(.drainSelf(.init())) }
            }
        }
        resumeIdleWaitersIfDone()
    }

    /// After a second shutdown signal, the cancelled jobs' results wait for the coordinator for
    /// the kill grace and `shutdownReportPatience` more; a coordinator still unreachable then
    /// does not hold the runner: what is left of their nodes' processes (a node's own grace may
    /// be longer) is killed, and `gaveUp` says how many jobs were left unreported (the binary
    /// then exits with status 1; the coordinator counts the jobs lost when their leases end).
    private func giveUpReportingLater() {
        let patience = configuration.killGrace + Self.shutdownReportPatience
        // The agent's, once per process: it must fire even while `run()`'s jobs wait (and
        // were cancelled), so it is no child of theirs.
        Task { [self] in
            try? await Task.sleep(for: patience)
            let controls = state.withLock { $0.jobs.values.map(\.0) }
            let left = controls.count
            guard left > 0 else { return }
            for control in controls { control.killAll() }
            logger.error("exiting with jobs unreported: the coordinator did not take their results within \(patience.components.seconds) s of the second shutdown signal (it counts them lost when their leases end)",
                         metadata: ["jobs": "\(left)"])
            gaveUpContinuation.yield(left)
        }
    }

    static let shutdownReportPatience: Duration = .seconds(10)

    private func resumeIdleWaitersIfDone() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard state.draining && state.jobs.isEmpty else { return [] }
            defer { state.idleWaiters = [] }
            return state.idleWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once draining and no job runs.
    private func waitUntilDrained() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.draining && state.jobs.isEmpty { return true }
                state.idleWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    public func run() async throws {
        try FileManager.default.createDirectory(atPath: configuration.workDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: spoolDirectory, withIntermediateDirectories: true)
        _ = try configuration.tls.clientConfiguration()  // unreadable TLS files fail now, not in a retry loop
        removeLeftovers()
        let sandbox = try Sandbox.make(configuration.isolation, workDirectory: configuration.workDirectory,
                                       key: configuration.tls.keyPath)
        if let sandbox {
            logger.info("jobs run isolated: each node in a bubblewrap sandbox", metadata: ["bwrap": "\(sandbox.program)"])
        } else {
            logger.warning("jobs run unisolated (--isolation none): every node can read this runner's key, other jobs' workspaces and whatever this user can")
        }

        let cgroups = Cgroups.detect()
        if let found = cgroups.0 {
            found.removeLeftovers()
            logger.info("resource limits: \(cgroups.1)")
        } else if !configuration.limits.isEmpty {
            throw RunnerError("--limits: resource limits need a cgroup this runner can write, and it has none (\(cgroups.1)); see README, \"Resource limits\"")
        } else {
            logger.warning("resource limits: none available (\(cgroups.1)): a node with limits fails, saying so")
        }

        let podman = Podman.find()
        if let podman {
            podman.removeLeftovers()
            logger.info("container images: \(podman.version()) (a node with `image:` runs in its own container)",
                        metadata: ["podman": "\(podman.program)"])
        } else {
            logger.info("container images: none (podman is not installed): a node with `image:` fails, saying so")
        }

        let (assignments, continuation) = AsyncStream.makeStream(of: Heddle_V1_Assignment.self)
        await withTaskCancellationHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.connectLoop(assignments: continuation) }
                group.addTask {
                    await self.waitUntilDrained()
                    continuation.finish()
                }
                for await assignment in assignments {
                    group.addTask { await self.execute(assignment, sandbox: sandbox, podman: podman, cgroups: cgroups) }
                }
                group.cancelAll()
            }
        } onCancel: {
            shutdown()
            shutdown()
            continuation.finish()
        }
        logger.info("runner stopped")
    }

    var spoolDirectory: String { "\(configuration.workDirectory)/spool" }

    /// Workspaces and spool files a previous process of this runner left (it crashed): no job
    /// of this process uses them.
    private func removeLeftovers() {
        let files = FileManager.default
        for name in (try? files.contentsOfDirectory(atPath: configuration.workDirectory)) ?? [] where name.hasPrefix("job-") {
            try? files.removeItem(atPath: "\(configuration.workDirectory)/\(name)")
        }
        for name in (try? files.contentsOfDirectory(atPath: spoolDirectory)) ?? [] {
            try? files.removeItem(atPath: "\(spoolDirectory)/\(name)")
        }
    }

    private func connectLoop(assignments: AsyncStream<Heddle_V1_Assignment>.Continuation) async {
        var backoff = 0.25
        // Which coordinator of the list to try: the one that served last, until it fails; then
        // the next one. The backoff carries on across them: a fleet whose coordinators are all
        // down does not retry faster for having several.
        var index = 0
        // The coordinator's heartbeat interval, from its last Welcome: a runner that holds
        // jobs comes back within its lease (three intervals), however long its backoff.
        var heartbeat: Double?
        while !Task.isCancelled {
            do {
                var hello = Heddle_V1_Hello()
                hello.labels = configuration.labels
                hello.capacity = UInt32(configuration.capacity)
                hello.runningJobs = state.withLock { $0.jobs.values.map(\.1) }
                let coordinator = configuration.coordinators[index % configuration.coordinators.count]
                let connection = try await HeddleConnection.connect(to: coordinator,
                                                                    tls: configuration.tls, hello: hello,
                                                                    running: { [self] in runningJobs() })
                let connectedAt = ContinuousClock.now
                heartbeat = Double(connection.welcome.heartbeatIntervalMs) / 1000
                logger.info("connected", metadata: ["coordinator": "\(coordinator)",
                                                    "name": "\(connection.welcome.peerName)",
                                                    "labels": "\(configuration.labels.joined(separator: ","))",
                                                    "reattaching": "\(hello.runningJobs.count)"])
                await link.attach(connection)
                if state.withLock({ $0.draining }) { _ = try? await connection.request(.drainSelf(.init())) }
                await serve(connection, assignments: assignments)
                await link.detach(connection)
                await connection.close()
                if !Task.isCancelled { logger.warning("disconnected from the coordinator") }
                // Only a connection that lasted resets the backoff: one the coordinator keeps
                // ending at once (its storage is full, say) is not retried several times a second.
                if ContinuousClock.now - connectedAt >= .seconds(10) { backoff = 0.25 }
            } catch {
                logger.error("cannot connect", metadata: ["error": "\(error)"])
            }
            guard !Task.isCancelled else { break }
            index += 1  // the next coordinator of the list (the same one when there is one)
            let holdsJobs = state.withLock { !$0.jobs.isEmpty }
            var limit = Double(configuration.maximumBackoff.components.seconds)
            if holdsJobs, let heartbeat, heartbeat > 0 { limit = min(limit, heartbeat * 1.5) }
            backoff = min(backoff, limit)
            let delay = backoff * Double.random(in: 0.5...1.5)
            backoff = min(backoff * 2, limit)
            try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
        }
    }

    /// Handles what the coordinator pushes on `connection` until it closes.
    func serve(_ connection: HeddleConnection, assignments: AsyncStream<Heddle_V1_Assignment>.Continuation) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.link.replayAll() }
            group.addTask {
                // Cancellation (shutdown) closes the connection, which ends the loop below.
                await withTaskCancellationHandler {
                    await connection.waitClosed()
                } onCancel: {
                    connection.startClosing()
                }
            }
            for await envelope in connection.pushes {
                switch envelope.body {
                case .assignment(let assignment):
                    let control = JobControl(grace: configuration.killGrace)
                    let key = JobKey(assignment.job)
                    // An older assignment of the same job still here lost its lease: the
                    // coordinator gave the job out again.
                    let older = state.withLock { state -> [(JobKey, JobControl)] in
                        state.jobs[key] = (control, assignment.job)
                        state.assignedThrough = max(state.assignedThrough, assignment.job.epoch)
                        return state.jobs.filter { $0.key.jobID == key.jobID && $0.key.epoch < key.epoch }.map { ($0.key, $0.value.0) }
                    }
                    for (oldKey, oldControl) in older {
                        oldControl.abandon(reason: "job \(key.jobID) was assigned again (epoch \(key.epoch))")
                        await link.abandon(job: oldKey)
                    }
                    logger.info("job assigned", metadata: ["job.id": "\(assignment.job.jobID)", "job.epoch": "\(assignment.job.epoch)",
                                                           "run.id": "\(assignment.runID)",
                                                           "job": "\(assignment.jobName)"])
                    assignments.yield(assignment)
                case .stopJob(let stop):
                    // Only the assignment with the stop's epoch (any, from a coordinator that
                    // sends none).
                    let targets = state.withLock { state in
                        state.jobs.filter { $0.key.jobID == stop.jobID && (stop.epoch == 0 || $0.key.epoch == stop.epoch) }
                            .map { ($0.key, $0.value.0) }
                    }
                    logger.info("stop job", metadata: ["job.id": "\(stop.jobID)", "job.epoch": "\(stop.epoch)",
                                                       "reason": "\(stop.reason)", "found": "\(targets.count)"])
                    for (key, control) in targets {
                        if stop.abandon {
                            control.abandon(reason: stop.reason)
                            await link.abandon(job: key)
                        } else {
                            control.cancel(reason: stop.reason)
                        }
                    }
                case .logAck(let ack):
                    await link.acknowledge(ack)
                case .error(let error):
                    logger.error("coordinator error", metadata: ["code": "\(error.code)", "error": "\(error.message)"])
                default:
                    break
                }
            }
            group.cancelAll()
        }
    }

    /// What each heartbeat says this runner runs.
    private func runningJobs() -> Heddle_V1_RunningJobs {
        state.withLock { state in
            var running = Heddle_V1_RunningJobs()
            running.jobs = state.jobs.values.map(\.1)
            running.assignedThroughEpoch = state.assignedThrough
            return running
        }
    }

    private func execute(_ assignment: Heddle_V1_Assignment, sandbox: Sandbox?, podman: Podman?,
                         cgroups: (Cgroups?, String)) async {
        let key = JobKey(assignment.job)
        guard let control = state.withLock({ $0.jobs[key]?.0 }) else { return }
        let executor = JobExecutor(assignment: assignment, link: link, spoolDirectory: spoolDirectory,
                                   workRoot: configuration.workDirectory,
                                   baseEnvironment: ProcessInfo.processInfo.environment,
                                   sandbox: sandbox, podman: podman, cgroups: cgroups, defaultLimits: configuration.limits,
                                   control: control, logger: logger)
        await executor.run()
        _ = state.withLock { $0.jobs.removeValue(forKey: key) }
        resumeIdleWaitersIfDone()
    }
}
