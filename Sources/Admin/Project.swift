import ArgumentParser
import Foundation
import Wire

struct Project: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Projects: named groups of pipelines, each with an optional git repository to check out.",
        subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a project (or change its repository).",
            discussion: "Runners clone the run's branch of --repo (shallow) into each job's workspace before the first node.")

        @Argument(help: "The project name.")
        var name: String

        @Option(help: "A git URL or path runners can clone.")
        var repo: String = ""

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let project = try await withClient(connection) { try await $0.createProject(name: name, repository: repo) }
            print(project.repository.isEmpty ? "project \(project.name) (no repository)" : "project \(project.name) checks out \(project.repository)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List projects.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let projects = try await withClient(connection) { try await $0.projects() }
            if json {
                print(Output.json(projects.map { ["name": $0.name, "repository": $0.repository, "created_at": Output.iso($0.createdAtMs)] }))
                return
            }
            guard !projects.isEmpty else {
                print("no projects; `heddle project create NAME --repo URL` or push a pipeline")
                return
            }
            print(Output.table(["PROJECT", "REPOSITORY", "CREATED"], projects.map {
                [$0.name, $0.repository.isEmpty ? "-" : $0.repository, Output.time($0.createdAtMs)]
            }))
        }
    }
}
