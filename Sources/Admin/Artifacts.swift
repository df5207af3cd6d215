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

        @Option(name: .shortAndLong,
                help: "The file to write, or a directory to write it into under its base name (default: its base name, here). An existing file is replaced; a directory never is.")
        var output: String?

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let showProgress = isatty(2) == 1
            let (info, path) = try await withClient(connection) { client in
                // Its name, from a one-byte read (listing every artifact to find one would grow
                // with the coordinator's history).
                let info = try await client.readArtifact(id, offset: 0, length: 1).artifact
                let path = try Self.destination(output: output, artifactName: info.name, id: id)
                let downloaded = try await client.downloadArtifact(id, to: path) { done, total in
                    if showProgress {
                        let percent = total == 0 ? 100 : Int(done * 100 / total)
                        FileHandle.standardError.write(Data("\r\(info.name): \(Output.bytes(done)) / \(Output.bytes(total)) \(percent)%".utf8))
                    }
                }
                return (downloaded, path)
            }
            if showProgress { FileHandle.standardError.write(Data("\n".utf8)) }
            print("wrote \(path) (\(Output.bytes(info.size)), sha256 \(hex(info.sha256)))")
        }

        /// The file an artifact is written to, as `cp` and `curl -O` would choose it: `output`
        /// itself, or the artifact's base name inside `output` when that is a directory (or
        /// ends in `/`), or the base name here when there is no `output`.
        static func destination(output: String?, artifactName: String, id: UInt64) throws -> String {
            var base = (artifactName as NSString).lastPathComponent
            if base.isEmpty || base == "." || base == ".." || base == "/" { base = "artifact-\(id)" }
            guard let output, !output.isEmpty else { return base }
            var isDirectory: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: output, isDirectory: &isDirectory)
            if exists && isDirectory.boolValue {
                return output.hasSuffix("/") ? output + base : "\(output)/\(base)"
            }
            if output.hasSuffix("/") {
                throw CLIError("the directory \(output) does not exist; nothing was written")
            }
            return output
        }
    }
}
