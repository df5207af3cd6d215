import ArgumentParser

/// `heddle`: the admin CLI.
public struct HeddleCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "heddle",
        abstract: "Drive a Heddle CI fabric: pipelines, runs, logs, the queue, runners, artifacts, certificates.",
        discussion: """
            Connection flags may come from the environment: HEDDLE_COORDINATOR, HEDDLE_CA, HEDDLE_CERT, HEDDLE_KEY.
            """,
        subcommands: [
            Certs.self, Project.self, PipelineCommand.self, Trigger.self, Runs.self, Logs.self, Graph.self,
            Queue.self, Cancel.self, Rerun.self, Runners.self, Artifacts.self, Tokens.self,
        ])

    public init() {}
}
