import Foundation
import Wire

/// Runners: greetings, drains and the list (`JobLifecycle+Runners.swift` keeps them).
extension CoordinatorCore {
    /// A session's greeting. From a runner it offers labels and capacity and lists the jobs
    /// it still runs: those whose lease it holds are reattached; it is told to abandon the
    /// others; jobs it held and came back without are lost. Then it may get work. From any
    /// other caller it changes nothing.
    /// A front calls `check` before it welcomes the session: a refused greeting gets no welcome.
    public func hello(session: UInt64, _ hello: RunnerHello) async {
        await jobs.hello(session: session, hello)
    }

    /// Whether a greeting is acceptable: its labels follow the naming rule.
    public static func check(_ hello: RunnerHello) throws(CoordinatorError) {
        for label in hello.labels {
            if let problem = Names.problem(label, "label") { throw CoordinatorError.invalid("this runner's \(problem)") }
        }
    }

    /// The runner on `session` shuts down: no new jobs for it.
    public func drainSelf(session: UInt64) async throws {
        _ = try authorize(session: session, .runJobs)
        await jobs.drainSelf(session: session)
    }

    /// Drains (or undrains) every session of the named runner; remembered across restarts.
    public func setDrained(runner name: String, _ isDrained: Bool, as principal: Principal) async throws -> [RunnerInfo] {
        try Authorization.check(principal, .drainRunner)
        return try await jobs.setDrained(runner: name, isDrained)
    }

    /// The connected runners, by session.
    public func runners(as principal: Principal) async throws(CoordinatorError) -> [RunnerInfo] {
        try Authorization.check(principal, .listRunners)
        return await jobs.runnerList()
    }

    /// A node started or ended (`JobLifecycle.nodeUpdate`).
    public func nodeUpdate(session: UInt64, _ report: NodeReport) async throws {
        try await jobs.nodeUpdate(session: session, report)
    }

    /// The job's workspace is ready, at a commit (hex, or empty without a repository).
    public func jobStarted(session: UInt64, _ start: JobStart) async throws {
        try await jobs.jobStarted(session: session, start)
    }

    /// The runner's result for a job, answered only once stored (`JobLifecycle.jobFinished`).
    public func jobFinished(session: UInt64, _ result: JobResult) async throws {
        try await jobs.jobFinished(session: session, result)
    }
}
