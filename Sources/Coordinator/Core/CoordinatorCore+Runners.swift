import Foundation
import Wire

/// Runners: their sessions, what they still run when they come back, drains.
extension CoordinatorCore {
    /// A session's greeting. From a runner it offers labels and capacity and lists the jobs
    /// it still runs: those whose lease it holds are reattached; it is told to abandon the
    /// others; jobs it held and came back without are lost. Then it may get work. From any
    /// other caller it changes nothing.
    /// A front calls `check` before it welcomes the session: a refused greeting gets no welcome.
    public func hello(session: UInt64, _ hello: RunnerHello) async {
        guard let principal = sessions[session]?.principal, Authorization.allows(principal, .runJobs),
              (try? Self.check(hello)) != nil else { return }
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

    /// Whether a greeting is acceptable: its labels follow the naming rule.
    public nonisolated static func check(_ hello: RunnerHello) throws(CoordinatorError) {
        for label in hello.labels {
            if let problem = Names.problem(label, "label") { throw CoordinatorError.invalid("this runner's \(problem)") }
        }
    }

    /// The runner on `session` shuts down: no new jobs for it.
    public func drainSelf(session: UInt64) throws {
        _ = try authorize(session: session, .runJobs)
        scheduler.setDrained(session, true)
    }

    /// Drains (or undrains) every session of the named runner; remembered across restarts.
    public func setDrained(runner name: String, _ isDrained: Bool, as principal: Principal) async throws -> [RunnerInfo] {
        try Authorization.check(principal, .drainRunner)
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

    /// The connected runners, by session.
    public func runners(as principal: Principal) throws(CoordinatorError) -> [RunnerInfo] {
        try Authorization.check(principal, .listRunners)
        return runnerList()
    }

    func runnerList() -> [RunnerInfo] {
        let stalled = storageFullSince.map {
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
