import APITypes
import ArgumentParser
import Foundation
import Wire

/// `heddle caches`: jobs' saved caches; `heddle caches delete ID`.
struct Caches: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List and delete jobs' saved caches (`cache:`).",
        subcommands: [List.self, Delete.self],
        defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List saved caches, most recently used first.")

        @Option(help: "Only this project's caches.")
        var project: String?

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let caches = try await withClient(connection) { try await $0.caches(project: project ?? "") }
            if json {
                print(Output.json(Operations.ListCaches.Output.Ok.Body.JsonPayload(caches: caches.map(REST.cache))))
                return
            }
            guard !caches.isEmpty else {
                print("no caches; a job saves one with `cache: { key: ..., paths: [...] }`")
                return
            }
            print(Output.table(["ID", "PROJECT", "BRANCH", "KEY", "SIZE", "HITS", "LAST USED", "CREATED"], caches.map {
                ["\($0.id)", $0.project, $0.branch, $0.key, Output.bytes($0.size), "\($0.hits)", Output.time($0.lastUsedAtMs),
                 Output.time($0.createdAtMs)]
            }))
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a cache (its id from `heddle caches`).")

        @Argument(help: "The cache's id.")
        var id: UInt64

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            guard let cache = try await withClient(connection, { try await $0.deleteCache(id: id) }) else {
                throw ValidationError("the coordinator did not say which cache it deleted")
            }
            if json {
                print(Output.json(REST.cache(cache)))
                return
            }
            print("deleted cache \(cache.id) (\(cache.project), \(cache.branch), \(cache.key), \(Output.bytes(cache.size)))")
        }
    }
}
