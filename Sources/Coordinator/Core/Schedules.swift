import Foundation
import Wire

/// A schedule of a pipeline as `heddle schedules` lists it.
public struct ScheduleInfo: Sendable, Equatable {
    public var project: String
    public var pipeline: String
    /// The expression as written, a shortcut (`@daily`) as such.
    public var cron: String
    public var timeZone: String
    public var branch: String
    /// When it is next due (milliseconds since the epoch); nil when it never is again.
    public var nextDue: Int64?
    /// The latest due time that started a run, and that run; nil before the first.
    public var lastDue: Int64?
    public var lastRunID: Int64?
}

/// Pipelines' schedules (`on.schedule`). Every coordinator looks at them (`ScheduleMonitor`);
/// the store decides which one starts a due time's run (`createScheduledRun`), so each due
/// time starts exactly one run whatever the number of coordinators and restarts. A due time
/// that passed while no coordinator ran starts one run on the next start, together with any
/// other due times the schedule missed: the latest of them is the run's.
public struct Schedules: Sendable {
    let core: CoordinatorCore
    let catalog: Catalog

    /// Starts each schedule whose due time has come since it last started (or, never started,
    /// since its pipeline version was pushed): one run for the latest due time at or before
    /// `now`. Returns the runs this coordinator started, and when the earliest schedule is due
    /// next (nil: none is).
    public func startDue(now: Date = Date()) async throws -> (started: [Triggered], next: Date?) {
        let starts = try await startsByKey()
        var started: [Triggered] = []
        var next: Date?
        for (version, definition) in try await scheduled() {
            for schedule in definition.triggers.schedules {
                let last = starts[Self.key(version.project, version.pipeline, schedule)]?.due ?? version.createdAt
                let zone = schedule.zone
                if let due = schedule.cron.latest(after: Date(milliseconds: last), atOrBefore: now, in: zone) {
                    do {
                        if let triggered = try await core.startScheduled(version, definition: definition, schedule: schedule,
                                                                         due: due.milliseconds) {
                            started.append(triggered)
                        }
                    } catch {
                        // One schedule's failure (its project's store write) does not stop the others'.
                        core.logger.warning("a schedule's run was not started", metadata: [
                            "pipeline": "\(version.project)/\(version.pipeline)", "schedule": "\(schedule.cron.description)",
                            "error": "\(error)"])
                    }
                }
                if let upcoming = schedule.cron.next(after: now, in: zone), next.map({ upcoming < $0 }) ?? true {
                    next = upcoming
                }
            }
        }
        return (started, next)
    }

    /// Every schedule of the latest version of each pipeline (of `project` when given), in
    /// project, pipeline and file order, with its next due time (viewer).
    public func list(project: String? = nil, as principal: Principal, now: Date = Date()) async throws -> [ScheduleInfo] {
        try Authorization.check(principal, .listPipelines)
        if let project { try Catalog.validateProjectName(project) }
        if let project, try await catalog.store.project(name: project) == nil {
            throw CoordinatorError.notFound("project \(project) does not exist")
        }
        let starts = try await startsByKey()
        var list: [ScheduleInfo] = []
        for (version, definition) in try await scheduled() where project == nil || version.project == project {
            for schedule in definition.triggers.schedules {
                let start = starts[Self.key(version.project, version.pipeline, schedule)]
                let after = max(now, Date(milliseconds: start?.due ?? 0))
                list.append(ScheduleInfo(project: version.project, pipeline: version.pipeline, cron: schedule.cron.description,
                                         timeZone: schedule.timeZone, branch: schedule.branch,
                                         nextDue: schedule.cron.next(after: after, in: schedule.zone)?.milliseconds,
                                         lastDue: start?.due, lastRunID: start?.runID))
            }
        }
        return list
    }

    /// The latest version of each pipeline that has schedules, parsed.
    private func scheduled() async throws -> [(PipelineVersionRecord, PipelineDefinition)] {
        try await catalog.store.pipelines().compactMap { version in
            guard let definition = try? catalog.definition(of: version), !definition.triggers.schedules.isEmpty else { return nil }
            return (version, definition)
        }
    }

    private func startsByKey() async throws -> [String: ScheduleStart] {
        Dictionary(try await catalog.store.scheduleStarts().map { (Self.key($0.project, $0.pipeline, $0.schedule), $0) },
                   uniquingKeysWith: { $0.due >= $1.due ? $0 : $1 })
    }

    static func key(_ project: String, _ pipeline: String, _ schedule: Schedule) -> String {
        key(project, pipeline, schedule.key)
    }

    static func key(_ project: String, _ pipeline: String, _ schedule: String) -> String {
        "\(project)\n\(pipeline)\n\(schedule)"
    }
}

extension CoordinatorCore {
    /// Pipelines' schedules: what is due, and when (`Schedules`).
    public var schedules: Schedules {
        Schedules(core: self, catalog: catalog)
    }

    /// Starts the run of a schedule's due time, with the inputs' defaults, unless a run of
    /// that due time (or a later one) was started before; nil then.
    func startScheduled(_ version: PipelineVersionRecord, definition: PipelineDefinition, schedule: Schedule,
                        due: Int64) async throws -> Triggered? {
        let inputs: [String: String]
        do {
            inputs = try definition.resolveInputs([:])
        } catch {
            throw CoordinatorError.invalid(error.message)
        }
        let start = ScheduleStart(project: version.project, pipeline: version.pipeline, schedule: schedule.key, due: due)
        let dueText = Date(milliseconds: due).formatted(.iso8601)
        let who = "schedule '\(schedule.cron.description)'\(schedule.timeZone == "UTC" ? "" : " (\(schedule.timeZone))") due \(dueText)"
        guard let run = try await jobs.queueIfCreated({ [store] in
            try await store.createScheduledRun(start, version: version, definition: definition, branch: schedule.branch,
                                               triggeredBy: who, inputs: inputs, now: Date.nowMilliseconds)
        }) else {
            return nil
        }
        logger.info("run started by a schedule", metadata: ["run.id": "\(run.id)", "pipeline": "\(run.project)/\(run.pipeline)",
                                                            "branch": "\(run.branch)", "due": "\(dueText)"])
        return Triggered(runID: run.id, attempt: 1)
    }
}

extension Date {
    var milliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}
