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

    @Option(name: .customLong("input"), help: ArgumentHelp("Set an input of the pipeline (repeatable).", valueName: "NAME=VALUE"))
    var inputs: [String] = []

    @Flag(help: "Wait for the run to finish, showing job changes.")
    var wait = false

    @Flag(help: "Show the run's graph and log live until it ends (implies --wait).")
    var follow = false

    @Flag(help: "Print JSON: {\"id\": RUN} (with --wait, the finished run).")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        let parts = target.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw ValidationError("'\(target)' is not PROJECT/PIPELINE")
        }
        _ = try inputValues()
    }

    /// `--input NAME=VALUE` options as a dictionary (a name given twice is refused).
    func inputValues() throws -> [String: String] {
        var values: [String: String] = [:]
        for input in inputs {
            guard let equals = input.firstIndex(of: "="), equals != input.startIndex else {
                throw ValidationError("--input '\(input)' is not NAME=VALUE")
            }
            let name = String(input[..<equals])
            guard values.updateValue(String(input[input.index(after: equals)...]), forKey: name) == nil else {
                throw ValidationError("--input \(name) is given twice")
            }
        }
        return values
    }

    func run() async throws {
        let parts = target.split(separator: "/").map(String.init)
        let succeeded: Bool = try await withClient(connection) { client in
            let id = try await client.trigger(project: parts[0], pipeline: parts[1], branch: branch, inputs: try inputValues())
            if follow && !json { return try await Self.follow(client: client, runID: id) }
            guard wait || follow else {
                print(json ? Output.json(REST.triggered(run: id, attempt: 1)) : "run \(id) queued (\(target) on \(branch))")
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
                print(Output.json(REST.run(final)))
            } else {
                print("run \(id) \(Output.status(final.status)) in \(Output.duration(from: final.startedAtMs > 0 ? final.startedAtMs : final.createdAtMs, to: final.finishedAtMs))")
            }
            return final.status == .succeeded
        }
        if !succeeded { throw ExitCode(1) }
    }

    /// Graph first, then the log with a line for each node change, then the final graph.
    static func follow(client: HeddleClient, runID: UInt64) async throws -> Bool {
        var printer = LogPrinter(headers: true)
        Console.out(GraphView.render(try await client.run(runID)))
        Console.out("")
        var final: Heddle_V1_RunSummary?
        for try await event in try await client.watch(runID: runID, logs: true, follow: true) {
            switch event.event {
            case .log(let chunk):
                printer.print(chunk)
            case .job(let job):
                for node in job.nodes where node.status != .running {
                    var text = "\(GraphView.symbol(node.status)) \(job.name)/\(node.name) \(Output.statusName(node.status))"
                    if node.exited { text += " (exit \(node.exitCode))" }
                    printer.note(Output.paint(text, "2"))
                }
                if job.nodes.isEmpty && job.status != .running && job.status != .queued {
                    printer.note("job \(job.name) \(Output.status(job.status))\(job.reason.isEmpty ? "" : ": \(job.reason)")")
                }
            case .end(let run):
                final = run
            case .none:
                break
            }
        }
        printer.finish()
        guard let final else { throw CLIError("the run's end was not received") }
        Console.out("")
        Console.out(GraphView.render(try await client.run(runID)))
        Console.out("")
        Console.out("run \(runID) \(Output.status(final.status)) in \(Output.duration(from: final.startedAtMs > 0 ? final.startedAtMs : final.createdAtMs, to: final.finishedAtMs))")
        return final.status == .succeeded
    }
}
