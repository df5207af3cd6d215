import ArgumentParser
import Foundation
import Logging
import Runner
import ServiceLifecycle
import Wire

@main
struct RunnerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heddle-runner",
        abstract: "Connects to a coordinator over mutual TLS and runs the jobs whose labels it carries.",
        version: HeddleVersion.description)

    @Option(help: "The coordinator, HOST:PORT, or several sharing one database, HOST:PORT,HOST:PORT: the runner moves to the next when it cannot reach its own (env HEDDLE_COORDINATOR).")
    var coordinator: String?

    @Option(help: "The fabric's CA certificate (PEM).")
    var ca: String

    @Option(help: "This runner's certificate (PEM), issued with the runner role.")
    var cert: String

    @Option(help: "This runner's private key (PEM).")
    var key: String

    @Option(help: "Comma-separated labels, e.g. linux,x86.")
    var labels: String = ""

    @Option(help: "Directory for job workspaces.")
    var workDir: String

    @Option(help: "Jobs run at once.")
    var capacity: Int = 1

    @Option(help: "Seconds between SIGTERM and SIGKILL when a node is stopped.")
    var killGrace: Double = 10

    @Option(help: "How each node is isolated: bwrap (a bubblewrap sandbox: its own processes, /tmp and workspace, the host's /usr, /etc and /opt read-only, no runner key, no other jobs) or none (as this runner's user, seeing what it sees; logged as a warning).")
    var isolation: Isolation = .bwrap

    @Option(help: "Resource limits of each node that sets none, e.g. memory=2G,cpus=2,pids=1000 (needs a cgroup the runner can write; README, \"Resource limits\").")
    var limits: String = ""

    @Option(help: "Log level: trace, debug, info, notice, warning, error.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        _ = try coordinators()
        guard capacity >= 1 else { throw ValidationError("--capacity must be at least 1") }
        do { _ = try ResourceLimits.parse(limits) } catch { throw ValidationError("--limits: \(error)") }
        for label in labelList {
            if let problem = Names.problem(label, "label") { throw ValidationError("--labels: \(problem)") }
        }
    }

    /// --coordinator, else HEDDLE_COORDINATOR.
    func coordinators() throws -> [Endpoint] {
        let value = coordinator ?? ProcessInfo.processInfo.environment["HEDDLE_COORDINATOR"] ?? ""
        guard !value.isEmpty else { throw ValidationError("missing --coordinator (or the environment variable HEDDLE_COORDINATOR)") }
        return try Endpoint.list(parsing: value)
    }

    var labelList: [String] {
        labels.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    func run() async throws {
        Console.bootstrapLogging(level: logLevel)
        let logger = Logger(label: "heddle.runner")
        var configuration = RunnerConfiguration(
            coordinators: try coordinators(),
            tls: TLSFiles(ca: ca, certificate: cert, key: key),
            labels: labelList,
            capacity: capacity,
            workDirectory: workDir)
        configuration.killGrace = .milliseconds(Int64(killGrace * 1000))
        configuration.isolation = isolation
        configuration.limits = try ResourceLimits.parse(limits)
        let agent = RunnerAgent(configuration: configuration, logger: logger)
        // SIGTERM: the agent drains; a second SIGTERM cancels the running jobs. SIGINT cancels.
        signal(SIGTERM, SIG_IGN)
        let terms = DispatchSource.makeSignalSource(signal: SIGTERM, queue: .global())
        terms.setEventHandler { agent.shutdown() }
        terms.resume()
        defer { terms.cancel() }
        // Jobs given up on after a second SIGTERM (their coordinator unreachable) may still wait
        // for it: the process ends here, with status 1, whatever they wait for.
        let exitWhenGivenUp = Task {
            for await _ in agent.gaveUp { Foundation.exit(1) }
        }
        defer { exitWhenGivenUp.cancel() }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: agent, successTerminationBehavior: .gracefullyShutdownGroup)],
            cancellationSignals: [.sigint],
            logger: logger))
        try await group.run()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension Isolation: ExpressibleByArgument {}
