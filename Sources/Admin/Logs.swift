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

    @Flag(help: "Start each line with the time its first byte was read from the node (UTC, RFC 3339 with milliseconds).")
    var timestamps = false

    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        if node != nil && job == nil { throw ValidationError("--node needs --job") }
    }

    func run() async throws {
        let exact = job != nil && node != nil
        try await withClient(connection) { client in
            var printer = LogPrinter(headers: !exact, timestamps: timestamps)
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
    /// Each line starts with the time of its first byte (`LogChunk.times`).
    let timestamps: Bool
    private var current = ""
    private var atLineStart = true
    /// The time in force at the end of what was printed.
    private var time: Int64?

    init(headers: Bool, timestamps: Bool = false) {
        self.headers = headers
        self.timestamps = timestamps
    }

    static func stamp(_ milliseconds: Int64) -> String {
        let date = Date(timeIntervalSince1970: Double(milliseconds) / 1000)
        var style = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        style.timeZone = TimeZone(identifier: "UTC")!
        return date.formatted(style)
    }

    /// The bytes, each line started with its time.
    private mutating func printStamped(_ chunk: Heddle_V1_LogChunk) {
        let marks = Dictionary(chunk.times.map { ($0.offset, $0.atMs) }, uniquingKeysWith: { first, _ in first })
        var out = Data()
        for (index, byte) in chunk.data.enumerated() {
            if let at = marks[chunk.offset + UInt64(index)] { time = at }
            if atLineStart {
                out.append(contentsOf: Array((time.map(Self.stamp) ?? String(repeating: " ", count: 24)).utf8))
                out.append(UInt8(ascii: " "))
                atLineStart = false
            }
            out.append(byte)
            if byte == UInt8(ascii: "\n") { atLineStart = true }
        }
        Console.raw(out)
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
        if timestamps {
            if let first = chunk.times.first(where: { $0.offset <= chunk.offset }) { time = first.atMs }
            printStamped(chunk)
            return
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
