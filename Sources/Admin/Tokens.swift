import APITypes
import ArgumentParser
import Foundation
import Wire

/// `heddle tokens`: API tokens for the coordinator's HTTP front (admin).
struct Tokens: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "API tokens for the HTTP API: create, list and revoke them (admin).",
        subcommands: [Create.self, List.self, Revoke.self],
        defaultSubcommand: List.self)

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a token and print its secret, once: the coordinator keeps only its hash.",
            discussion: "Send it as `Authorization: Bearer SECRET`.")

        @Option(help: "The token's name (letters, digits, '.', '_', '-').")
        var name: String

        @Option(help: "viewer (reads only), automation (also triggers, re-runs, cancels) or admin.")
        var role: String

        @Option(help: "How long it is valid, in days (\"90d\" or \"90\"); no expiry when absent.")
        var expires: String?

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func validate() throws {
            guard ["viewer", "automation", "admin"].contains(role) else {
                throw ValidationError("--role is viewer, automation or admin, not '\(role)'")
            }
            if let expires { _ = try Self.days(expires) }
        }

        static func days(_ text: String) throws -> UInt32 {
            let digits = text.hasSuffix("d") ? String(text.dropLast()) : text
            guard let days = UInt32(digits), (1...3650).contains(days) else {
                throw ValidationError("--expires is a number of days from 1 to 3650 (\"90d\"), not '\(text)'")
            }
            return days
        }

        func run() async throws {
            let days = try expires.map(Self.days) ?? 0
            let created = try await withClient(connection) {
                try await $0.createToken(name: name, role: role, expiresInDays: days)
            }
            if json {
                print(Output.json(Components.Schemas.TokenCreated(token: REST.token(created.token), secret: created.secret)))
                return
            }
            let expiry = created.token.expiresAtMs == 0 ? "never expires" : "expires \(Output.time(created.token.expiresAtMs))"
            print("token \(created.token.name) (\(created.token.role), \(expiry)):")
            print(created.secret)
            print("This secret is shown once; the coordinator keeps only its hash.")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every token, without secrets.")

        @Flag(help: "Print JSON.")
        var json = false

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let tokens = try await withClient(connection) { try await $0.tokens() }
            if json {
                print(Output.json(Operations.ListTokens.Output.Ok.Body.JsonPayload(tokens: tokens.map(REST.token))))
                return
            }
            guard !tokens.isEmpty else {
                print("no token exists; make one with `heddle tokens create --name NAME --role viewer`")
                return
            }
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            print(Output.table(["NAME", "ROLE", "CREATED", "EXPIRES", "STATE"], tokens.map {
                [$0.name, $0.role, Output.time($0.createdAtMs), $0.expiresAtMs == 0 ? "never" : Output.time($0.expiresAtMs),
                 $0.revokedAtMs != 0 ? Output.paint("revoked", "31")
                     : $0.expiresAtMs != 0 && $0.expiresAtMs <= now ? Output.paint("expired", "33") : "valid"]
            }))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token: requests carrying it are refused from now on.")

        @Argument(help: "The token's name.")
        var name: String

        @OptionGroup var connection: ConnectionOptions

        func run() async throws {
            let token = try await withClient(connection) { try await $0.revokeToken(name: name) }
            print("revoked token \(token.name) (\(token.role))")
        }
    }
}
