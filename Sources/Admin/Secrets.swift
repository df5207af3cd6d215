import APITypes
import ArgumentParser
import Foundation
import Wire

/// `heddle secrets`: a project's secrets (set, delete and forks: admin; list: any role).
struct SecretsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "secrets",
        abstract: "A project's secrets: set, list (names only), delete; and whether forks' pull requests get them.",
        discussion: """
            A node is given the secrets it names (`secrets: [NAME]` in the .act file) as environment variables, \
            and every node log of its job shows them as ***.
            """,
        subcommands: [Set.self, List.self, Delete.self, Forks.self],
        defaultSubcommand: List.self)

    /// The largest value read from standard input: one byte past the limit, so a longer value
    /// is refused by the coordinator, saying so, rather than cut here.
    static let readLimit = Names.secretValueBytes.upperBound + 2

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Set a secret from standard input (never an argument): `heddle secrets set PROJECT NAME < file`.",
            discussion: "One newline at the end of the input is dropped (so `echo VALUE |` works); the rest is the value, 4 to 65,536 bytes of UTF-8.")

        @Argument(help: "The project.")
        var project: String

        @Argument(help: "The secret's name: the environment variable's (A-Z, 0-9, _).")
        var name: String

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            if let problem = Names.secretProblem(name) { throw ValidationError(problem) }
        }

        func run() async throws {
            if isatty(STDIN_FILENO) == 1 {
                FileHandle.standardError.write(Data("reading the value of \(name) from standard input (end with Ctrl-D)\n".utf8))
            }
            var value = Data()
            while value.count < SecretsCommand.readLimit, let chunk = try FileHandle.standardInput.read(upToCount: 65_536), !chunk.isEmpty {
                value.append(chunk)
            }
            if value.last == 0x0A { value.removeLast() }
            if value.last == 0x0D { value.removeLast() }
            if let problem = Names.secretValueProblem([UInt8](value)) { throw ValidationError(problem) }
            let list = try await withClient(connection) { try await $0.setSecret(project: project, name: name, value: value) }
            if json {
                print(Output.json(REST.secrets(list)))
                return
            }
            print("secret \(name) of \(project) set (\(value.count) bytes, sealed)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "A project's secrets: names and dates, never values.")

        @Argument(help: "The project.")
        var project: String

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let list = try await withClient(connection) { try await $0.secrets(project: project) }
            if json {
                print(Output.json(REST.secrets(list)))
                return
            }
            let forks = list.forksAllowed ? "given to pull requests from forks" : "not given to pull requests from forks"
            guard !list.secrets.isEmpty else {
                print("project \(project) has no secrets (\(forks)); set one with `heddle secrets set \(project) NAME < file`")
                return
            }
            print(Output.table(["NAME", "CREATED", "UPDATED"], list.secrets.map {
                [$0.name, Output.time($0.createdAtMs), Output.time($0.updatedAtMs)]
            }))
            print("secrets of \(project) are \(forks)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a secret; nodes that name it fail from now on, saying so.")

        @Argument(help: "The project.")
        var project: String

        @Argument(help: "The secret's name.")
        var name: String

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            _ = try await withClient(connection) { try await $0.deleteSecret(project: project, name: name) }
            print("secret \(name) of \(project) deleted")
        }
    }

    struct Forks: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Whether runs of pull requests from another repository (a fork) get the project's secrets: allow or deny (the default).")

        @Argument(help: "The project.")
        var project: String

        @Argument(help: "allow or deny.")
        var choice: String

        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard ["allow", "deny"].contains(choice) else { throw ValidationError("say allow or deny, not '\(choice)'") }
        }

        func run() async throws {
            let list = try await withClient(connection) { try await $0.setSecretsForForks(project: project, allowed: choice == "allow") }
            print(list.forksAllowed ? "secrets of \(project) are given to pull requests from forks"
                                    : "secrets of \(project) are not given to pull requests from forks")
        }
    }
}
