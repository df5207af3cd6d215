import ArgumentParser
import Foundation
import Wire

/// Draws each job's node graph, level by level (a node's level is one more than the deepest
/// node it needs), with every node's status.
enum GraphView {
    static func symbol(_ status: Heddle_V1_Status) -> String {
        switch status {
        case .succeeded: Output.paint("✓", "32")
        case .failed: Output.paint("✗", "31")
        case .running: Output.paint("●", "36")
        case .cancelled: Output.paint("⊘", "33")
        case .skipped: Output.paint("↷", "33")
        default: "○"
        }
    }

    static func levels(_ nodes: [Heddle_V1_NodeDetail]) -> [[Heddle_V1_NodeDetail]] {
        let byName = Dictionary(uniqueKeysWithValues: nodes.map { ($0.name, $0) })
        var depth: [String: Int] = [:]
        func level(_ name: String, _ seen: Set<String>) -> Int {
            if let known = depth[name] { return known }
            guard let node = byName[name], !seen.contains(name) else { return 0 }
            let value = (node.needs.map { level($0, seen.union([name])) + 1 }.max()) ?? 0
            depth[name] = value
            return value
        }
        for node in nodes { _ = level(node.name, []) }
        let maxLevel = depth.values.max() ?? 0
        return (0...maxLevel).map { l in nodes.filter { depth[$0.name] == l } }.filter { !$0.isEmpty }
    }

    static func render(_ detail: Heddle_V1_RunDetail) -> String {
        let run = detail.run
        var lines = ["run \(run.id) · \(run.project)/\(run.pipeline) · \(run.branch) · attempt \(run.attempt) · \(Output.status(run.status))"]
        for job in detail.jobs {
            var header = "job \(job.name) · \(Output.status(job.status))"
            if !job.runner.isEmpty { header += " · \(job.runner)" }
            if !job.commit.isEmpty { header += " · \(job.commit.prefix(12))" }
            lines.append("")
            lines.append(header)
            let width = job.nodes.map(\.name.count).max() ?? 0
            let levels = levels(job.nodes)
            for (index, level) in levels.enumerated() {
                for (position, node) in level.enumerated() {
                    let branch = level.count == 1 ? "──" : position == 0 ? "┬─" : position == level.count - 1 ? "└─" : "├─"
                    var line = "  \(branch) \(symbol(node.status)) \(node.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(Output.status(node.status))"
                    if node.exited && node.status != .succeeded { line += " (exit \(node.exitCode))" }
                    if !node.needs.isEmpty { line += Output.paint("  ← \(node.needs.joined(separator: ", "))", "2") }
                    lines.append(line)
                }
                if index < levels.count - 1 { lines.append("  │") }
            }
            if !job.reason.isEmpty { lines.append("  reason: \(job.reason)") }
        }
        return lines.joined(separator: "\n")
    }
}

struct Graph: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Draw a run's node graphs with each node's status.")

    @Argument(help: "The run id.")
    var run: UInt64

    @Option(help: "An earlier attempt (default: the latest).")
    var attempt: UInt32 = 0

    @Flag(help: "Redraw as nodes change until the run ends.")
    var watch = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        try await withClient(connection) { client in
            var detail = try await client.run(run, attempt: attempt)
            guard watch else {
                print(GraphView.render(detail))
                return
            }
            let live = Output.colour
            func draw() { print((live ? "\u{1B}[H\u{1B}[2J" : "") + GraphView.render(detail) + (live ? "" : "\n")) }
            draw()
            for try await event in try await client.watch(runID: run, attempt: detail.run.attempt, logs: false, follow: true) {
                switch event.event {
                case .job, .end:
                    detail = try await client.run(run, attempt: detail.run.attempt)
                    draw()
                default:
                    break
                }
            }
        }
    }
}
