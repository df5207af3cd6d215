import Foundation
import Wire

/// Runners: their sessions, what they still run when they come back, drains.
extension JobLifecycle {
    /// A session's greeting. From a runner it offers labels and capacity and lists the jobs
    /// it still runs: those whose lease it holds are reattached; it is told to abandon the
    /// others; jobs it held and came back without are lost. Then it may get work. From any
    /// other caller it changes nothing.
    func hello(session: UInt64, _ hello: RunnerHello) async {
        // Read here, not by the facade: a session closed before this runs is gone already.
        guard let principal = sessions[session]?.principal, Authorization.allows(principal, .runJobs),
              (try? CoordinatorCore.check(hello)) != nil else { return }
        let capacity = max(1, hello.capacity)
        let now = Date.nowMilliseconds
        runners[session] = RunnerSession(name: principal.name, labels: hello.labels, capacity: capacity,
                                         connectedAt: now, lastHeartbeat: now, software: hello.software,
                                         protocolVersion: hello.protocolVersion)
        scheduler.addRunner(session, labels: Set(hello.labels), capacity: capacity,
                            drained: drained.contains(principal.name))
        logger.info("runner connected", metadata: ["runner": "\(principal.name)", "labels": "\(hello.labels)",
                                                   "capacity": "\(capacity)", "running": "\(hello.running.count)"])
        // In a cluster, jobs it lists that another coordinator held come here first.
        await adoptListed(hello.running, runner: principal.name)
        guard runners[session] != nil else { return }  // the session closed meanwhile
        let sink = sink(of: session)
        var lost: [(Int64, String)] = []
        for action in table.connect(runner: principal.name, session: session, running: hello.running) {
            switch action {
            case .reattach(let jobID, let from):
                // The same runner, back before the coordinator noticed its old connection die.
                if let from { scheduler.finish(jobID, on: from) }
                scheduler.attach(jobID, to: session)
                logger.info("job reattached", metadata: ["job.id": "\(jobID)", "runner": "\(principal.name)"])
            case .stop(let jobID, let epoch, let reason):
                sink?.send(.stopJob(jobID: jobID, epoch: epoch, reason: reason, abandon: false))
            case .abandon(let jobID, let epoch, let reason):
                sink?.send(.stopJob(jobID: jobID, epoch: epoch, reason: reason, abandon: true))
            case .lost(let jobID, let why):
                lost.append((jobID, why))
            }
        }
        for (jobID, why) in lost { await self.lost(jobID: jobID, why: why) }
        await dispatch()
    }

    /// The runner on `session` shuts down: no new jobs for it.
    func drainSelf(session: UInt64) {
        scheduler.setDrained(session, true)
    }

    /// Drains (or undrains) every session of the named runner; remembered across restarts.
    func setDrained(runner name: String, _ isDrained: Bool) async throws -> [RunnerInfo] {
        let sessions = runners.filter { $0.value.name == name }.map(\.key)
        // In a cluster the runner may be connected to another coordinator.
        guard !sessions.isEmpty || (drained.contains(name) && !isDrained) || cluster != nil else {
            throw CoordinatorError.notFound("no runner named '\(name)' is connected (`heddle runners` lists them)")
        }
        try await store.setDrained(runner: name, drained: isDrained)
        tell(.state)
        if isDrained { drained.insert(name) } else { drained.remove(name) }
        for session in sessions { scheduler.setDrained(session, isDrained) }
        logger.info(isDrained ? "runner drained" : "runner undrained", metadata: ["runner": "\(name)"])
        if !isDrained { await dispatch() }
        return runnerList().filter { $0.name == name }
    }

    /// Drains read again from the store (another coordinator may have changed them).
    func setDrained(_ drainedNow: Set<String>) async {
        drained = drainedNow
        for (session, runner) in runners {
            scheduler.setDrained(session, drained.contains(runner.name))
        }
        await dispatch()
    }

    /// The connected runners, by session.
    func runnerList() -> [RunnerInfo] {
        let stalled = logPipeline.fullSince.withLock({ $0 }).map {
            "the coordinator's storage is full since \(Date(timeIntervalSince1970: Double($0) / 1000).formatted(.iso8601)): log bytes and results wait"
        }
        return runners.sorted { $0.key < $1.key }.map { id, runner in
            let running = scheduler.runners[id]?.running.count ?? 0
            return RunnerInfo(name: runner.name, labels: runner.labels, capacity: runner.capacity,
                              running: running, connectedAt: runner.connectedAt,
                              lastHeartbeat: runner.lastHeartbeat, sessionID: id,
                              drained: scheduler.runners[id]?.drained ?? drained.contains(runner.name),
                              stalled: running > 0 ? stalled : nil, software: runner.software,
                              protocolVersion: runner.protocolVersion)
        }
    }
}
