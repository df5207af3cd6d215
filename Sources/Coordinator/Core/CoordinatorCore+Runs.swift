import Foundation
import Wire

/// Runs started: a trigger, a re-run, a forge's delivery (`Webhooks`) queue their jobs.
extension CoordinatorCore {
    /// How a run was triggered, from who triggered it: "manual" (an admin) or "api".
    static func triggerSource(_ principal: Principal) -> String {
        principal.role == .admin ? "manual" : "api"
    }

    /// Makes a run of the pipeline's latest version on a branch ("main" when not given), its
    /// jobs queued.
    public func trigger(_ request: TriggerRequest, as principal: Principal) async throws -> Triggered {
        try Authorization.check(principal, .trigger)
        func latest() async throws -> PipelineVersionRecord {
            guard let version = try await store.latestPipeline(project: request.project, pipeline: request.pipeline) else {
                throw CoordinatorError.notFound("no pipeline \(request.project)/\(request.pipeline); push it with `heddle pipeline push FILE --project \(request.project)`")
            }
            return version
        }
        var version = try await latest()
        let branch = request.branch.flatMap { $0.isEmpty ? nil : $0 } ?? "main"
        if let problem = Names.branchProblem(branch) { throw CoordinatorError.invalid(problem) }
        let commit = request.commit.flatMap { $0.isEmpty ? nil : $0.lowercased() } ?? ""
        if !commit.isEmpty, let problem = Self.commitProblem(commit) { throw CoordinatorError.invalid(problem) }
        // The store may answer a version it read before; one another coordinator's push passed
        // is refused at the run's insert, and the latest read again (twice at most: pushes
        // of one pipeline faster than that are not waited for).
        for attempt in 1...3 {
            if let triggered = try await startRun(version, branch: branch, commit: commit, trigger: Self.triggerSource(principal),
                                                  by: principal.name, fork: false, inputs: request.inputs, latestOnly: true) {
                return triggered
            }
            if attempt < 3 { version = try await latest() }
        }
        throw CoordinatorError(.unavailable, "pipeline \(request.project)/\(request.pipeline) got new versions while it was triggered; trigger it again")
    }

    /// Why `commit` is no commit id (40 or 64 hex digits), or nil.
    static func commitProblem(_ commit: String) -> String? {
        guard [40, 64].contains(commit.count), commit.allSatisfy({ $0.isHexDigit && $0.isASCII }) else {
            return "a commit is its full id, 40 (or 64) hex digits, not '\(commit.prefix(70))'"
        }
        return nil
    }

    /// Makes a run of a pipeline version and queues its jobs. The inputs are checked against
    /// the pipeline's (unknown ones, values not among the options, required ones missing are
    /// refused, nothing queued) and the defaults filled in.
    func startRun(_ version: PipelineVersionRecord, branch: String, commit: String, trigger: String,
                  by who: String, fork: Bool = false, inputs given: [String: String] = [:]) async throws -> Triggered {
        guard let triggered = try await startRun(version, branch: branch, commit: commit, trigger: trigger, by: who, fork: fork,
                                                 inputs: given, latestOnly: false) else {
            throw CoordinatorError(.internal, "a run of \(version.project)/\(version.pipeline) was not stored")
        }
        return triggered
    }

    /// `startRun`; with `latestOnly`, nil and nothing queued when `version` is no longer the
    /// pipeline's latest (`CoordinatorStore.createLatestRun`).
    private func startRun(_ version: PipelineVersionRecord, branch: String, commit: String, trigger: String,
                          by who: String, fork: Bool, inputs given: [String: String], latestOnly: Bool) async throws -> Triggered? {
        let definition = try catalog.definition(of: version)
        let inputs: [String: String]
        do {
            inputs = try definition.resolveInputs(given)
        } catch {
            throw CoordinatorError.invalid(error.message)
        }
        guard let run = try await jobs.queueRun(NewRun(version: version, definition: definition, branch: branch, commit: commit,
                                                       trigger: trigger, triggeredBy: who, fork: fork, inputs: inputs,
                                                       latestOnly: latestOnly)) else { return nil }
        logger.info("run triggered", metadata: ["run.id": "\(run.id)", "pipeline": "\(run.project)/\(run.pipeline)",
                                                "branch": "\(branch)", "commit": "\(commit.isEmpty ? "head" : commit)",
                                                "by": "\(who)"])
        // A trigger makes a new run, whose first attempt this is.
        return Triggered(runID: run.id, attempt: 1)
    }

    /// Adds attempt N+1 to a finished run, with new jobs from the pipeline version it used.
    /// `failedOnly`: the jobs that succeeded in attempt N are carried over (finished, their
    /// logs and artifacts those of attempt N) and only the others run again.
    public func rerun(runID: Int64, failedOnly: Bool = false, as principal: Principal) async throws -> Triggered {
        try Authorization.check(principal, .rerun)
        guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        guard run.status.isFinished else {
            throw CoordinatorError(.failedPrecondition,
                                   "run \(runID) is still \(run.status.rawValue); wait for it or cancel it before a re-run")
        }
        guard let version = try await store.pipelineVersion(id: run.pipelineVersionID) else {
            throw CoordinatorError(.internal, "the pipeline version of run \(runID) is missing")
        }
        let definition = try catalog.definition(of: version)
        var carried: Set<String> = []
        if failedOnly {
            let previous = try await store.jobs(runID: runID, attempt: run.attempt)
            carried = Set(previous.filter { $0.status == .succeeded }.map(\.name))
            guard previous.contains(where: { $0.status != .succeeded }) else {
                throw CoordinatorError(.failedPrecondition,
                                       "run \(runID) has no failed or cancelled job in attempt \(run.attempt); re-run it whole without --failed")
            }
        }
        let updated = try await jobs.queue { [store, carried] in
            try await store.createAttempt(runID: runID, definition: definition, carried: carried,
                                          trigger: Self.triggerSource(principal), triggeredBy: principal.name,
                                          now: Date.nowMilliseconds)
        }
        logger.info("run re-run", metadata: ["run.id": "\(runID)", "attempt": "\(updated.attempt)", "by": "\(principal)",
                                             "carried": "\(carried.count)"])
        return Triggered(runID: runID, attempt: updated.attempt)
    }
}
