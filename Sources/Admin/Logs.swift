import ArgumentParser
import Foundation
import Wire

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a run's log bytes exactly as the nodes wrote them.",
        discussion: """
            With --job and --node, prints only that node's bytes with nothing added. Otherwise a
            header line marks where each job/node's output starts.
            """)

    @Argument(help: "The run id.")
    var run: UInt64

    @Option(help: "Only this job.")
    var job: String?

    @Option(help: "Only this node (of --job).")
    var node: String?

    @Option(help: "An earlier attempt (default: the latest).")
    var attempt: UInt32 = 0

    @Flag(help: "Keep printing new output until the run ends.")
    var follow = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if node != nil && job == nil { throw ValidationError("--node needs --job") }
    }

    func run() async throws {
        let exact = job != nil && node != nil
        try await withClient(connection) { client in
            var printer = LogPrinter(headers: !exact)
            let events = try await client.watch(runID: run, attempt: attempt, job: job ?? "", node: node ?? "",
                                                logs: true, follow: follow)
            for try await event in events {
                guard case .log(let chunk) = event.event else { continue }
                printer.print(chunk)
            }
            printer.finish()
        }
    }
}

/// Prints log chunks as they come: the bytes exactly, and (unless asked for one node's bytes
/// alone) a header line wherever the output switches to another job/node.
struct LogPrinter {
    let headers: Bool
    private var current = ""
    private var atLineStart = true

    init(headers: Bool) {
        self.headers = headers
    }

    mutating func print(_ chunk: Heddle_V1_LogChunk) {
        let key = "\(chunk.job)/\(chunk.node)"
        if headers && key != current {
            breakLine()
            Console.out(Output.paint("── \(key) ──", "2"))
            current = key
        }
        if chunk.dropped > 0 {
            breakLine()
            Console.out(Output.paint("[… \(chunk.dropped) bytes dropped: the log passed its size limit …]", "33"))
        }
        Console.raw(chunk.data)
        if let last = chunk.data.last { atLineStart = last == UInt8(ascii: "\n") }
    }

    /// Prints a line of our own between log bytes, starting it on a fresh line.
    mutating func note(_ line: String) {
        breakLine()
        Console.out(line)
        current = ""
    }

    mutating func finish() {
        if headers { breakLine() }
    }

    private mutating func breakLine() {
        if !atLineStart {
            Console.raw(Data("\n".utf8))
            atLineStart = true
        }
    }
}
