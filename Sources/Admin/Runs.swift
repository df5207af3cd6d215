import APITypes
import ArgumentParser
import Foundation
import Wire

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List runs, or show one.",
        subcommands: [List.self, Show.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List recent runs, newest first.")

        @Option(help: "How many.")
        var limit: UInt32 = 50

        @Option(help: "Only this project.")
        var project: String?

        @Option(help: "Only this pipeline.")
        var pipeline: String?

        @Option(help: "Only this status: queued, running, succeeded, failed, cancelled.")
        var status: String?

        @Option(help: "Only this branch.")
        var branch: String?

        @Option(help: "Only runs started this way: manual, api, webhook, schedule.")
        var trigger: String?

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        static let statuses: [String: Heddle_V1_Status] = [
            "queued": .queued, "running": .running, "succeeded": .succeeded, "failed": .failed, "cancelled": .cancelled,
        ]

        func validate() throws {
            if let status, Self.statuses[status] == nil {
                throw ValidationError("--status must be one of queued, running, succeeded, failed, cancelled")
            }
            if let trigger, !["manual", "api", "webhook", "schedule"].contains(trigger) {
                throw ValidationError("--trigger must be one of manual, api, webhook, schedule")
            }
        }

        func run() async throws {
            let runs = try await withClient(connection) {
                try await $0.runs(limit: limit, project: project ?? "", pipeline: pipeline ?? "", branch: branch ?? "",
                                  status: status.flatMap { Self.statuses[$0] } ?? .unspecified, trigger: trigger ?? "")
            }
            if json {
                print(Output.json(Operations.ListRuns.Output.Ok.Body.JsonPayload(runs: runs.map(REST.run))))
                return
            }
            guard !runs.isEmpty else {
                let filtered = project != nil || pipeline != nil || status != nil || branch != nil || trigger != nil
                print(filtered ? "no runs match" : "no runs yet; start one with `heddle trigger PROJECT/PIPELINE`")
                return
            }
            print(Output.table(["RUN", "PIPELINE", "BRANCH", "STATUS", "ATTEMPT", "TRIGGER", "CREATED", "DURATION"], runs.map {
                ["\($0.id)", "\($0.project)/\($0.pipeline)", $0.branch, Output.status($0.status), "\($0.attempt)",
                 $0.trigger, Output.time($0.createdAtMs), Output.duration(from: $0.startedAtMs, to: $0.finishedAtMs)]
            }))
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a run's jobs and nodes.")

        @Argument(help: "The run id.")
        var run: UInt64

        @Option(help: "An earlier attempt (default: the latest).")
        var attempt: UInt32 = 0

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let detail = try await withClient(connection) { try await $0.run(run, attempt: attempt) }
            if json {
                print(Output.json(REST.runDetail(detail)))
                return
            }
            let r = detail.run
            print("run \(r.id)  \(r.project)/\(r.pipeline)  branch \(r.branch)  \(Output.status(r.status))  attempt \(r.attempt)  trigger \(r.trigger)")
            print("created \(Output.time(r.createdAtMs))  duration \(Output.duration(from: r.startedAtMs, to: r.finishedAtMs))"
                  + (r.triggeredBy.isEmpty ? "" : "  by \(r.triggeredBy)"))
            if !r.inputs.isEmpty {
                print("inputs " + r.inputs.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: "  "))
            }
            for job in detail.jobs {
                print("")
                var line = "job \(job.name) (\(job.id))  \(Output.status(job.status))"
                if !job.runner.isEmpty { line += "  on \(job.runner)" }
                if !job.commit.isEmpty { line += "  commit \(job.commit.prefix(12))" }
                line += "  \(Output.duration(from: job.startedAtMs, to: job.finishedAtMs))"
                print(line)
                if !job.reason.isEmpty { print("  reason: \(job.reason)") }
                print(Output.table(["  NODE", "STATUS", "EXIT", "DURATION", "NEEDS"], job.nodes.map {
                    ["  \($0.name)", Output.status($0.status), $0.exited ? "\($0.exitCode)" : "-",
                     Output.duration(from: $0.startedAtMs, to: $0.finishedAtMs), $0.needs.joined(separator: ",")]
                }))
            }
        }
    }
}
