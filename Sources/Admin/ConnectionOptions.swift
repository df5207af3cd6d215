import ArgumentParser
import Foundation
import Wire

/// Where the coordinator is and which certificate to use; each flag falls back to its
/// environment variable.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "The coordinator, HOST:PORT, or several sharing one database, HOST:PORT,HOST:PORT: the first that answers (env HEDDLE_COORDINATOR).")
    var coordinator: String?

    @Option(help: "The fabric's CA certificate (env HEDDLE_CA).")
    var ca: String?

    @Option(help: "Your certificate (env HEDDLE_CERT).")
    var cert: String?

    @Option(help: "Your private key (env HEDDLE_KEY).")
    var key: String?

    typealias Environment = [String: String]

    func value(_ flag: String?, _ variable: String, _ name: String, _ environment: Environment) throws -> String {
        if let flag, !flag.isEmpty { return flag }
        if let env = environment[variable], !env.isEmpty { return env }
        throw ValidationError("missing --\(name) (or the environment variable \(variable))")
    }

    func endpoints(_ environment: Environment = ProcessInfo.processInfo.environment) throws -> [Endpoint] {
        try Endpoint.list(parsing: try value(coordinator, "HEDDLE_COORDINATOR", "coordinator", environment))
    }

    func tls(_ environment: Environment = ProcessInfo.processInfo.environment) throws -> TLSFiles {
        TLSFiles(ca: try value(ca, "HEDDLE_CA", "ca", environment),
                 certificate: try value(cert, "HEDDLE_CERT", "cert", environment),
                 key: try value(key, "HEDDLE_KEY", "key", environment))
    }

    func connect() async throws -> HeddleClient {
        try await HeddleClient.connect(to: try endpoints(), tls: try tls())
    }
}

/// Runs `body` with a connected client and turns protocol errors into one clear line.
func withClient<T>(_ options: ConnectionOptions, _ body: (HeddleClient) async throws -> T) async throws -> T {
    let client: HeddleClient
    do {
        client = try await options.connect()
    } catch let error as WireError {
        throw CLIError(error.message)
    }
    do {
        let result = try await body(client)
        await client.connection.close()
        return result
    } catch let error as WireError {
        await client.connection.close()
        throw CLIError(error.message)
    } catch {
        await client.connection.close()
        throw error
    }
}

/// An error printed as one line, exit code 1.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
