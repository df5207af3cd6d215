import ArgumentParser
import Foundation
import Wire

struct Artifacts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List artifacts, or download one.",
        subcommands: [List.self, Get.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List artifacts: of one run with --run, the latest 1,000 otherwise.")

        @Option(help: "Only this run's artifacts.")
        var run: UInt64?

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let artifacts = try await withClient(connection) { try await $0.artifacts(runID: run ?? 0) }
            if json {
                print(Output.json(artifacts.map(JSONShape.artifact)))
                return
            }
            guard !artifacts.isEmpty else {
                print(run.map { "run \($0) has no artifacts" } ?? "no artifacts")
                return
            }
            print(Output.table(["ID", "RUN", "JOB", "NAME", "SIZE", "SHA-256"], artifacts.map {
                ["\($0.id)", "\($0.runID)", $0.job, $0.name, Output.bytes($0.size), String(hex($0.sha256).prefix(16))]
            }))
        }
    }

    struct Get: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Download an artifact; its SHA-256 is checked before the file appears.")

        @Argument(help: "The artifact id.")
        var id: UInt64

        @Option(name: .shortAndLong, help: "Where to write it (default: its file name, here).")
        var output: String?

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let showProgress = isatty(2) == 1
            let info = try await withClient(connection) { client in
                // Its name, from a one-byte read (listing every artifact to find one would grow
                // with the coordinator's history).
                let info = try await client.readArtifact(id, offset: 0, length: 1).artifact
                let path = output ?? (info.name as NSString).lastPathComponent
                return try await client.downloadArtifact(id, to: path) { done, total in
                    if showProgress {
                        let percent = total == 0 ? 100 : Int(done * 100 / total)
                        FileHandle.standardError.write(Data("\r\(info.name): \(Output.bytes(done)) / \(Output.bytes(total)) \(percent)%".utf8))
                    }
                }
            }
            if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
            print("wrote \(output ?? (info.name as NSString).lastPathComponent) (\(Output.bytes(info.size)), sha256 \(hex(info.sha256)))")
        }
    }
}
