import APITypes
import ArgumentParser
import Foundation
import Wire

/// `heddle schedules`: pipelines' schedules and when each is next due.
struct Schedules: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List pipelines' schedules (`on.schedule`) and when each is next due.")

    @Option(help: "Only this project's schedules.")
    var project: String?

    @Flag(help: "Print JSON.")
    var json = false

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        let schedules = try await withClient(connection) { try await $0.schedules(project: project ?? "") }
        if json {
            print(Output.json(Operations.ListSchedules.Output.Ok.Body.JsonPayload(schedules: schedules.map(REST.schedule))))
            return
        }
        guard !schedules.isEmpty else {
            print("no schedules; a pipeline gets one with `on: { schedule: [ { cron: \"0 3 * * *\" } ] }`")
            return
        }
        let now = Date.nowMilliseconds
        print(Output.table(["PIPELINE", "CRON", "TIMEZONE", "BRANCH", "NEXT DUE", "LAST DUE", "LAST RUN"], schedules.map {
            let next = $0.nextDueMs == 0 ? "never" : "\(Output.time($0.nextDueMs)) (in \(Self.span($0.nextDueMs - now)))"
            return ["\($0.project)/\($0.pipeline)", $0.cron, $0.timezone, $0.branch, next, Output.time($0.lastDueMs),
                    $0.lastRunID == 0 ? "-" : String($0.lastRunID)]
        }))
    }

    /// `45s`, `12m`, `3h 5m`, `2d 4h`.
    static func span(_ milliseconds: Int64) -> String {
        let seconds = max(0, milliseconds / 1000)
        switch seconds {
        case ..<60: return "\(seconds)s"
        case ..<3600: return "\(seconds / 60)m"
        case ..<86_400: return "\(seconds / 3600)h \(seconds % 3600 / 60)m"
        default: return "\(seconds / 86_400)d \(seconds % 86_400 / 3600)h"
        }
    }
}
