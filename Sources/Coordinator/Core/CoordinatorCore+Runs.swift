import Foundation
import Wire

/// Re-runs, projects and runner drain.
extension CoordinatorCore {
    /// Adds attempt N+1 to a finished run, with new jobs from the pipeline version it used.
    public func rerun(runID: Int64, trigger: String) async throws -> (Int64, Int) {
        guard let run = try await store.run(id: runID) else { throw WireError.notFound("run \(runID) does not exist") }
        guard run.status.isFinished else {
            throw WireError(.failedPrecondition,
                            "run \(runID) is still \(run.status.rawValue); wait for it or cancel it before a re-run")
        }
        guard let version = try await store.pipelineVersion(id: run.pipelineVersionID) else {
            throw WireError(.internal, "the pipeline version of run \(runID) is missing")
        }
        let definition = try self.definition(of: version)
        let (updated, jobs) = try await store.createAttempt(runID: runID, definition: definition, trigger: trigger,
                                                            now: Date.nowMilliseconds)
        for job in jobs {
            scheduler.enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
            publishQueue(.queued, queueEntry(job, run: updated))
        }
        logger.info("run re-run", metadata: ["run.id": "\(runID)", "attempt": "\(updated.attempt)"])
        await dispatch()
        return (runID, updated.attempt)
    }

    public func createProject(name: String, repository: String) async throws -> ProjectRecord {
        guard !name.isEmpty, name.allSatisfy({ ActParser.nameCharacters.contains($0) }) else {
            throw WireError.invalid("project name '\(name)' may use only letters, digits, '.', '_' and '-'")
        }
        guard !repository.contains("\0"), !repository.hasPrefix("-") else {
            throw WireError.invalid("'\(repository)' is not a repository URL or path")
        }
        return try await store.saveProject(name: name, repository: repository, now: Date.nowMilliseconds)
    }

    public func projects() async throws -> [Heddle_V1_ProjectInfo] {
        try await store.projects().map { project in
            var info = Heddle_V1_ProjectInfo()
            info.name = project.name
            info.repository = project.repository
            info.createdAtMs = project.createdAt
            return info
        }
    }

    /// Drains (or undrains) every session of the named runner; remembered across restarts.
    public func setDrained(runner name: String, _ isDrained: Bool) async throws -> [Heddle_V1_RunnerInfo] {
        let sessions = runners.filter { $0.value.identity.name == name }.map(\.key)
        guard !sessions.isEmpty || (drained.contains(name) && !isDrained) else {
            throw WireError.notFound("no runner named '\(name)' is connected (`heddle runners` lists them)")
        }
        try await store.setDrained(runner: name, drained: isDrained)
        if isDrained { drained.insert(name) } else { drained.remove(name) }
        for session in sessions { scheduler.setDrained(session, isDrained) }
        logger.info(isDrained ? "runner drained" : "runner undrained", metadata: ["runner": "\(name)"])
        if !isDrained { await dispatch() }
        return runnerList().filter { $0.name == name }
    }
}
