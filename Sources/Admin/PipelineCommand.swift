import APITypes
import ArgumentParser
import Foundation
import Wire

struct PipelineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline",
        abstract: "Push and list pipelines (.act files).",
        subcommands: [Push.self, List.self])

    struct Push: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Store a new version of a pipeline.")

        @Argument(help: "The .act file.")
        var file: String

        @Option(help: "The project it belongs to (created if new).")
        var project: String

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CLIError("cannot read \(file): \(FileManager.default.fileExists(atPath: file) ? "permission denied or not a file" : "no such file")")
            }
            guard let source = String(data: data, encoding: .utf8) else {
                throw CLIError("\(file) is not UTF-8 text")
            }
            let pushed = try await withClient(connection) { client in
                // What fits in one frame with the request around it.
                let limit = Int(client.connection.welcome.maxFrameBytes) - 4096
                guard data.count <= limit else {
                    throw CLIError("\(file) is too large: \(data.count) bytes; a pipeline file may have at most \(limit) bytes (the coordinator's frame limit less 4 KiB)")
                }
                return try await client.pushPipeline(project: project, fileName: (file as NSString).lastPathComponent, source: source)
            }
            print("pushed \(pushed.project)/\(pushed.pipeline) version \(pushed.version)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List pipelines (latest versions).")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let pipelines = try await withClient(connection) { try await $0.pipelines() }
            if json {
                print(Output.json(Operations.ListPipelines.Output.Ok.Body.JsonPayload(pipelines: pipelines.map(REST.pipeline))))
                return
            }
            guard !pipelines.isEmpty else {
                print("no pipelines; push one with `heddle pipeline push FILE --project P`")
                return
            }
            print(Output.table(["PIPELINE", "VERSION", "JOBS", "INPUTS", "UPDATED"], pipelines.map {
                ["\($0.project)/\($0.pipeline)", "\($0.version)", $0.jobs.joined(separator: ","),
                 $0.inputs.isEmpty ? "-" : $0.inputs.map { $0.required ? "\($0.name) (required)" : "\($0.name)=\($0.defaultValue)" }
                     .joined(separator: ","),
                 Output.time($0.updatedAtMs)]
            }))
        }
    }
}
