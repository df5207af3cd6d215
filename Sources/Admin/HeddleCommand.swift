import ArgumentParser
import Wire

/// `heddle`: the admin CLI.
public struct HeddleCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "heddle",
        abstract: "Drive a Heddle CI fabric: pipelines, runs, logs, the queue, runners, artifacts, certificates.",
        discussion: """
            Connection flags may come from the environment: HEDDLE_COORDINATOR, HEDDLE_CA, HEDDLE_CERT, HEDDLE_KEY.
            """,
        version: HeddleVersion.description,
        subcommands: [
            Certs.self, Project.self, PipelineCommand.self, Trigger.self, Runs.self, Logs.self, Graph.self,
            Queue.self, Cancel.self, Rerun.self, Schedules.self, Runners.self, Artifacts.self, Caches.self, Tokens.self, SecretsCommand.self,
            Version.self,
        ])

    public init() {}
}

/// `heddle version`: this CLI's software and protocol versions, and with a coordinator's
/// address (flags or environment), the coordinator's.
struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the software and protocol versions (and the coordinator's, when one is configured).")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        print("heddle \(HeddleVersion.description)")
        guard (try? connection.endpoints()) != nil else { return }
        let welcome = try await withClient(connection) { $0.connection.welcome }
        // A coordinator before 0.2.0 says nothing of its versions: it speaks protocol 1.0.
        let software = welcome.softwareVersion.isEmpty ? "before 0.2.0" : welcome.softwareVersion
        print("coordinator \(software) (protocol \(max(welcome.protocolVersion, 1)).\(welcome.protocolMinor))")
    }
}
