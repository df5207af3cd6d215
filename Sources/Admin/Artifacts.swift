import APITypes
import ArgumentParser
import Foundation
import Wire

struct Artifacts: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List, search and download artifacts.",
        subcommands: [List.self, Search.self, Get.self],
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
                print(Output.json(Operations.RunArtifacts.Output.Ok.Body.JsonPayload(artifacts: artifacts.map(REST.artifact))))
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

    struct Search: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Search the artifacts of every run and project; every filter given must match.",
            discussion: "Examples: heddle artifacts search app.bin --project shop; heddle artifacts search '*.tar.gz' --min-size 1M --since 7d")

        @Argument(help: "A part of the name (any case), or a glob of the whole name with * ? [...] (case-sensitive).")
        var name: String?

        @Option var project: String?
        @Option var pipeline: String?
        @Option var branch: String?
        @Option(help: "Only this run's artifacts.") var run: UInt64?
        @Option(help: "Hex digits the SHA-256 starts with.") var sha256: String?
        @Option(help: "At least this size: bytes, or with K, M or G (1024-based).") var minSize: String?
        @Option(help: "At most this size.") var maxSize: String?
        @Option(help: "Made within this long (30m, 12h, 7d) or since this time (ISO 8601).") var since: String?
        @Option(help: "Made before this long ago, or this time.") var until: String?
        @Option(help: "newest, oldest, largest, smallest or name.") var sort = "newest"
        @Option(help: "Artifacts per page, 1 to 500.") var limit: UInt32 = 50
        @Option(help: "Skip this many (the next page starts at limit × pages).") var offset: UInt32 = 0

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        static func size(_ text: String, _ option: String) throws -> UInt64 {
            let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
            var digits = text.uppercased()
            var unit: UInt64 = 1
            if let last = digits.last, let factor = units[last] {
                unit = factor
                digits.removeLast()
            }
            guard let value = UInt64(digits), value <= UInt64.max / unit else {
                throw ValidationError("\(option) is a size like 1500, 64K, 10M or 2G, not '\(text)'")
            }
            return value * unit
        }

        /// Milliseconds since 1970 of "7d" ago or of an ISO 8601 time.
        static func time(_ text: String, _ option: String, now: Date = Date()) throws -> Int64 {
            let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
            if let last = text.last, let unit = units[last], let value = Double(text.dropLast()), value >= 0 {
                return Int64((now.timeIntervalSince1970 - value * unit) * 1000)
            }
            if let date = ISO8601DateFormatter().date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
            let day = DateFormatter()
            day.dateFormat = "yyyy-MM-dd"
            day.timeZone = TimeZone(identifier: "UTC")
            if let date = day.date(from: text) { return Int64(date.timeIntervalSince1970 * 1000) }
            throw ValidationError("\(option) is a duration like 30m, 12h or 7d, or a time like 2026-12-01 or 2026-12-01T10:00:00Z, not '\(text)'")
        }

        func validate() throws {
            if let minSize { _ = try Self.size(minSize, "--min-size") }
            if let maxSize { _ = try Self.size(maxSize, "--max-size") }
            if let since { _ = try Self.time(since, "--since") }
            if let until { _ = try Self.time(until, "--until") }
        }

        func run() async throws {
            var request = Heddle_V1_ArtifactSearchRequest()
            request.name = name ?? ""
            request.project = project ?? ""
            request.pipeline = pipeline ?? ""
            request.branch = branch ?? ""
            request.runID = run ?? 0
            request.sha256Prefix = sha256 ?? ""
            if minSize != nil || maxSize != nil {
                request.size.min = try minSize.map { try Self.size($0, "--min-size") } ?? 0
                request.size.max = try maxSize.map { try Self.size($0, "--max-size") } ?? UInt64(Int64.max)
            }
            request.createdAfterMs = try since.map { try Self.time($0, "--since") } ?? 0
            request.createdBeforeMs = try until.map { try Self.time($0, "--until") } ?? 0
            request.sort = sort
            request.limit = limit
            request.offset = offset
            let page = try await withClient(connection) { try await $0.searchArtifacts(request) }
            if json {
                // The next page's `--offset`, as the REST API's cursor.
                let next = page.more ? String(offset + UInt32(page.artifacts.count)) : nil
                print(Output.json(Operations.SearchArtifacts.Output.Ok.Body.JsonPayload(artifacts: page.artifacts.map(REST.artifact),
                                                                                      next: next)))
                return
            }
            guard !page.artifacts.isEmpty else {
                print("no artifact matches")
                return
            }
            print(Output.table(["ID", "PROJECT/PIPELINE", "BRANCH", "RUN", "JOB", "NAME", "SIZE", "MADE", "SHA-256"], page.artifacts.map {
                ["\($0.id)", "\($0.project)/\($0.pipeline)", $0.branch, "\($0.runID)", $0.job, $0.name, Output.bytes($0.size),
                 Output.time($0.createdAtMs), String(hex($0.sha256).prefix(16))]
            }))
            if page.more {
                print("more match: --offset \(offset + UInt32(page.artifacts.count)) shows the next page")
            }
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
