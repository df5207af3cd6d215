import ArgumentParser
import Foundation
import Wire

struct Trigger: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a run of PROJECT/PIPELINE.",
        discussion: "With --wait, exits 0 when the run succeeded and 1 when it did not.")

    @Argument(help: "PROJECT/PIPELINE")
    var target: String

    @Option(help: "Branch to run.")
    var branch = "main"

    @Flag(help: "Wait for the run to finish, showing job changes.")
    var wait = false

    @Flag(help: "Print JSON: {\"id\": RUN} (with --wait, the finished run).")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        let parts = target.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ValidationError("'\(target)' is not PROJECT/PIPELINE")
        }
    }

    func run() async throws {
        let parts = target.split(separator: "/").map(String.init)
        let succeeded: Bool = try await withClient(connection) { client in
            let id = try await client.trigger(project: parts[0], pipeline: parts[1], branch: branch)
            guard wait else {
                print(json ? Output.json(["id": id]) : "run \(id) queued (\(target) on \(branch))")
                return true
            }
            if !json { print("run \(id) queued (\(target) on \(branch))") }
            var final: Heddle_V1_RunSummary?
            for try await event in try await client.watch(runID: id, logs: false, follow: true) {
                switch event.event {
                case .job(let job) where !json:
                    if job.nodes.isEmpty {
                        let suffix = job.status == .running ? " on \(job.runner)" : job.reason.isEmpty ? "" : ": \(job.reason)"
                        print("job \(job.name): \(Output.status(job.status))\(suffix)")
                    }
                case .end(let run):
                    final = run
                default:
                    break
                }
            }
            guard let final else { throw CLIError("the run's end was not received") }
            if json {
                print(Output.json(JSONShape.run(final)))
            } else {
                print("run \(id) \(Output.status(final.status)) in \(Output.duration(from: final.startedAtMs > 0 ? final.startedAtMs : final.createdAtMs, to: final.finishedAtMs))")
            }
            return final.status == .succeeded
        }
        if !succeeded { throw ExitCode(1) }
    }
}
