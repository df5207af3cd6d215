import Foundation
import TestSupport
import Testing
import Wire

/// The real heddle-coordinator, heddle-runner and heddle binaries over mutual TLS.
@Suite(.serialized) struct PipelineEndToEndTests {
    static let graph = #"""
        name: ci
        jobs:
          test:
            labels: [linux]
            nodes:
              fetch:
                run: "mkdir -p src && echo fetched > src/file && echo fetch-done"
              colours:
                run: |
                  printf '\033[1;32mgreen\033[0m\n'; echo to-stderr >&2; printf '\377\376 not utf-8\n'; printf 'no newline at the end'
                needs: [fetch]
              big:
                run: "mkdir -p out && head -c 3145728 /dev/urandom > out/blob.bin && sha256sum out/blob.bin"
                needs: [fetch]
                artifacts: ["out/*.bin"]
              report:
                run: "cat src/file; echo report for $HEDDLE_RUN_ID > out/report.txt"
                needs: [colours, big]
                artifacts: ["out/report.txt"]
        """#

    /// `-o DIR` writes the artifact's base name inside DIR (as `cp` would) and deletes
    /// nothing; errors are one sentence and leave no partial file.
    static func downloadsIntoDirectoriesDeleteNothing(_ fabric: Fabric, id: Int, sha256: String) async throws {
        let files = FileManager.default
        let directory = fabric.root.file("into")
        try files.createDirectory(atPath: "\(directory)/sub", withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: URL(fileURLWithPath: "\(directory)/a"))
        for output in [directory, directory + "/", "into", "."] {
            let get = try await fabric.heddle(["artifacts", "get", String(id), "-o", output])
            #expect(get.status == 0, "-o \(output): \(get.error)")
            let written = output == "." ? fabric.root.file("blob.bin")
                : output.hasPrefix("/") ? "\(directory)/blob.bin" : fabric.root.file("into/blob.bin")
            #expect(get.output.hasPrefix("wrote \(output == "." ? "./" : output.hasSuffix("/") ? output : output + "/")blob.bin"),
                    "-o \(output): \(get.output)")
            let data = try Data(contentsOf: URL(fileURLWithPath: written))
            #expect(sha256Hex(data) == sha256, "-o \(output)")
        }
        #expect(try String(contentsOfFile: "\(directory)/a", encoding: .utf8) == "keep")
        #expect(files.fileExists(atPath: "\(directory)/sub"))
        #expect(try files.contentsOfDirectory(atPath: directory).sorted() == ["a", "blob.bin", "sub"])

        // A file is replaced; a directory named as the target is not.
        try Data("old".utf8).write(to: URL(fileURLWithPath: "\(directory)/a"))
        let replace = try await fabric.heddle(["artifacts", "get", String(id), "-o", "\(directory)/a"])
        #expect(replace.status == 0, "\(replace.error)")
        #expect(sha256Hex(try Data(contentsOf: URL(fileURLWithPath: "\(directory)/a"))) == sha256)

        for (output, message) in [
            (fabric.root.file("missing/dir/x"), "cannot write \(fabric.root.file("missing/dir/x")): the directory \(fabric.root.file("missing/dir")) does not exist"),
            (fabric.root.file("missing/"), "the directory \(fabric.root.file("missing/")) does not exist; nothing was written"),
        ] {
            let get = try await fabric.heddle(["artifacts", "get", String(id), "-o", output])
            #expect(get.status == 1, "-o \(output)")
            #expect(get.error.contains(message), "-o \(output): \(get.error)")
            #expect(get.error.split(separator: "\n").count == 1, "one sentence: \(get.error)")
        }
        let leftovers = try files.contentsOfDirectory(atPath: fabric.root.path) + files.contentsOfDirectory(atPath: directory)
        #expect(!leftovers.contains { $0.contains("heddle-partial") }, "\(leftovers)")
    }

    /// What the `colours` node of `graph` writes: ANSI colours, stderr between stdout writes,
    /// bytes that are not UTF-8 and no newline at the end.
    static let colours = Data("\u{1B}[1;32mgreen\u{1B}[0m\nto-stderr\n".utf8) + Data([0xFF, 0xFE])
        + Data(" not utf-8\nno newline at the end".utf8)

    @Test func clearErrorsForBadInput() async throws {
        let fabric = try await Fabric(runnerLabels: [])
        do {
            let path = fabric.root.file("bad.act")
            try "name: bad\njobs:\n  t:\n    nodes:\n      a: { run: x, needs: [a] }\n".write(toFile: path, atomically: true, encoding: .utf8)
            let push = try await fabric.heddle(["pipeline", "push", path, "--project", "shop"])
            #expect(push.status != 0)
            #expect(push.error.contains("bad.act:5:"), "\(push.error)")
            let huge = fabric.root.file("huge.act")
            try Data(repeating: 0x23, count: 5 << 20).write(to: URL(fileURLWithPath: huge))
            let tooLarge = try await fabric.heddle(["pipeline", "push", huge, "--project", "shop"])
            #expect(tooLarge.status == 1)
            #expect(tooLarge.error.contains("huge.act is too large: 5242880 bytes; a pipeline file may have at most 4190208 bytes"),
                    "\(tooLarge.error)")
            let show = try await fabric.heddle(["runs", "show", "4242"])
            #expect(show.status != 0)
            #expect(show.error.contains("run 4242 does not exist"), "\(show.error)")
            let get = try await fabric.heddle(["artifacts", "get", "99"])
            #expect(get.status != 0)
            #expect(get.error.contains("artifact 99 does not exist"))
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }
}
