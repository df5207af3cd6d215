import APITypes
import ArgumentParser
import Foundation
import Wire

struct Project: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Projects: named groups of pipelines, each with an optional git repository to check out.",
        subcommands: [Create.self, List.self, Webhook.self, Deliveries.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a project (or change its repository).",
            discussion: "Runners clone the run's branch of --repo (shallow) into each job's workspace before the first node.")

        @Argument(help: "The project name.")
        var name: String

        @Option(help: "A git URL or path runners can clone.")
        var repo: String = ""

        @Flag(help: "Also make a webhook secret, printed once, for a forge to start its pipelines (see `on:`).")
        var webhookSecret = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let project = try await withClient(connection) {
                try await $0.createProject(name: name, repository: repo, webhookSecret: webhookSecret)
            }
            print(project.repository.isEmpty ? "project \(project.name) (no repository)" : "project \(project.name) checks out \(project.repository)")
            if !project.webhookSecret.isEmpty { Webhook.show(project) }
        }
    }

    struct Webhook: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a project's webhook URL; with --rotate, make a new secret (the old one stops working).",
            discussion: "Paste the URL and the secret into the forge: GitHub and Gitea/Forgejo sign with it (content type application/json), GitLab sends it as its secret token.")

        @Argument(help: "The project name.")
        var name: String

        @Flag(help: "Make a new secret and print it, once.")
        var rotate = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let project = try await withClient(connection) { try await $0.projectWebhook(name: name, rotate: rotate) }
            guard project.webhookEnabled else {
                print("project \(name) has no webhook secret; make one with `heddle project webhook \(name) --rotate`")
                return
            }
            Self.show(project)
        }

        static func show(_ project: Heddle_V1_ProjectInfo) {
            print("webhook URL: \(project.webhookURL.isEmpty ? "(the coordinator serves no HTTP: start it with --http)" : project.webhookURL)")
            if !project.webhookSecret.isEmpty {
                print("secret:      \(project.webhookSecret)")
                print("The secret is shown once; keep it in the forge's webhook settings.")
            }
        }
    }

    struct Deliveries: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A project's latest webhook deliveries and what came of each.")

        @Argument(help: "The project name.")
        var name: String

        @Option(help: "How many, newest first (at most 1000).")
        var limit: UInt32 = 50

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let deliveries = try await withClient(connection) { try await $0.deliveries(project: name, limit: limit) }
            if json {
                print(Output.json(Operations.ListDeliveries.Output.Ok.Body.JsonPayload(deliveries: deliveries.map(REST.delivery))))
                return
            }
            guard !deliveries.isEmpty else {
                print("no deliveries for \(name) yet")
                return
            }
            print(Output.table(["RECEIVED", "FORGE", "EVENT", "DELIVERY", "OUTCOME", "RUNS", "DETAIL"], deliveries.map {
                [Output.time($0.receivedAtMs), $0.forge, $0.event, String($0.deliveryID.prefix(36)), $0.outcome,
                 $0.runIds.map(String.init).joined(separator: ","), $0.detail]
            }))
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
                print(Output.json(Operations.ListProjects.Output.Ok.Body.JsonPayload(projects: projects.map(REST.project))))
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
