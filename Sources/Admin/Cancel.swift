import ArgumentParser
import Foundation
import Wire

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cancel runs or jobs, or every queued job matching filters.",
        discussion: """
            heddle cancel 12 13            cancel runs 12 and 13 (their latest attempt)
            heddle cancel --job 40         cancel one job
            heddle cancel --queued --branch old-feature --dry-run
            Running jobs are stopped on their runner: SIGTERM, a grace period, SIGKILL.
            """)

    @Argument(help: "Run ids.")
    var runs: [UInt64] = []

    @Option(name: .customLong("job"), help: "A job id (repeatable).")
    var jobs: [UInt64] = []

    @Flag(help: "Cancel every queued job matching the filters below (admin).")
    var queued = false

    @Option(help: "With --queued: only this project.")
    var project: String?

    @Option(help: "With --queued: only this pipeline.")
    var pipeline: String?

    @Option(help: "With --queued: only this branch.")
    var branch: String?

    @Option(help: "With --queued: only jobs requiring this label.")
    var label: String?

    @Flag(help: "With --queued: list what would be cancelled, change nothing.")
    var dryRun = false

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if queued {
            guard runs.isEmpty && jobs.isEmpty else { throw ValidationError("--queued takes filters, not ids") }
        } else {
            guard !runs.isEmpty || !jobs.isEmpty else {
                throw ValidationError("give run ids, --job ID, or --queued with filters")
            }
            guard project == nil && pipeline == nil && branch == nil && label == nil && !dryRun else {
                throw ValidationError("--project, --pipeline, --branch, --label and --dry-run go with --queued")
            }
        }
    }

    func run() async throws {
        let result = try await withClient(connection) { client in
            if queued {
                var request = Heddle_V1_BulkCancelRequest()
                request.project = project ?? ""
                request.pipeline = pipeline ?? ""
                request.branch = branch ?? ""
                request.label = label ?? ""
                request.dryRun = dryRun
                return try await client.bulkCancel(request)
            }
            return try await client.cancel(runs: runs, jobs: jobs)
        }
        if json {
            print(Output.json(REST.cancelResult(result)))
            return
        }
        if !result.jobs.isEmpty {
            print(Output.table(["JOB", "RUN", "PIPELINE", "BRANCH", "STATUS"], result.jobs.map {
                ["\($0.jobID) \($0.job)", "\($0.runID)", "\($0.project)/\($0.pipeline)", $0.branch,
                 $0.status == .running ? "stopping on \($0.runner)" : Output.statusName(dryRun ? $0.status : .cancelled)]
            }))
        }
        if result.count > result.jobs.count {
            print("… and \(result.count - UInt32(result.jobs.count)) more not listed")
        }
        let noun = result.count == 1 ? "1 job" : "\(result.count) jobs"
        print(dryRun ? "\(noun) would be cancelled (dry run, nothing changed)" : "\(noun) cancelled")
    }
}

struct Rerun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a finished run again as a new attempt; earlier attempts stay readable.")

    @Argument(help: "The run id.")
    var run: UInt64

    @Flag(help: "Run only the jobs that failed or were cancelled; those that succeeded are carried over.")
    var failed = false

    @Flag(help: "Wait for the new attempt to finish (exit 1 when it did not succeed).")
    var wait = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let succeeded: Bool = try await withClient(connection) { client in
            let (id, attempt) = try await client.rerun(run, failedOnly: failed)
            print("run \(id) attempt \(attempt) queued\(failed ? " (the failed jobs; the others carried over)" : "")")
            guard wait else { return true }
            var final: Heddle_V1_RunSummary?
            for try await event in try await client.watch(runID: id, attempt: attempt, logs: false, follow: true) {
                if case .end(let summary) = event.event { final = summary }
            }
            guard let final else { throw CLIError("the run's end was not received") }
            print("run \(id) attempt \(attempt) \(Output.status(final.status))")
            return final.status == .succeeded
        }
        if !succeeded { throw ExitCode(1) }
    }
}
