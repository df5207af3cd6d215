import APITypes
import ArgumentParser
import Foundation
import Wire

struct Runners: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Connected runners; drain and undrain them.",
        subcommands: [List.self, Drain.self, Undrain.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Connected runners.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let runners = try await withClient(connection) { try await $0.runners() }
            if json {
                print(Output.json(Operations.ListRunners.Output.Ok.Body.JsonPayload(runners: runners.map(REST.runner))))
                return
            }
            guard !runners.isEmpty else {
                print("no runner is connected")
                return
            }
            print(Self.table(runners))
        }

        /// "0.2.0 (protocol 1.1)"; "?" for a runner that sent no software version; "-" from a
        /// coordinator whose listing has no versions (one from before they were added).
        static func version(_ runner: Heddle_V1_RunnerInfo) -> String {
            guard !runner.protocolVersion.isEmpty else { return "-" }
            return "\(runner.softwareVersion.isEmpty ? "?" : runner.softwareVersion) (protocol \(runner.protocolVersion))"
        }

        static func table(_ runners: [Heddle_V1_RunnerInfo]) -> String {
            let table = Output.table(["NAME", "LABELS", "RUNNING", "VERSION", "CONNECTED SINCE", "LAST HEARTBEAT", "STATE"], runners.map {
                [$0.name, $0.labels.joined(separator: ","), "\($0.running)/\($0.capacity)", version($0),
                 Output.time($0.connectedAtMs), Output.time($0.lastHeartbeatMs),
                 !$0.stalled.isEmpty ? Output.paint("stalled", "31") : $0.drained ? Output.paint("drained", "33") : "active"]
            })
            // Why a stalled runner's jobs make no progress, below the table.
            let notes = runners.filter { !$0.stalled.isEmpty }.map { "\($0.name) is stalled: \($0.stalled)" }
            return ([table] + notes).joined(separator: "\n")
        }
    }

    struct Drain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give a runner no new jobs; the ones it runs finish. Remembered across reconnects.")

        @Argument(help: "The runner's name.")
        var name: String

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let runners = try await withClient(connection) { try await $0.drain(runner: name, true) }
            let running = runners.reduce(0) { $0 + Int($1.running) }
            print("runner \(name) drained; \(running) running jobs will finish, no new ones start")
        }
    }

    struct Undrain: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a drained runner take jobs again.")

        @Argument(help: "The runner's name.")
        var name: String

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            _ = try await withClient(connection) { try await $0.drain(runner: name, false) }
            print("runner \(name) takes jobs again")
        }
    }
}
