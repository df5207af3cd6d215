import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import Wire

public struct RunnerConfiguration: Sendable {
    public var coordinator: Endpoint
    public var tls: TLSFiles
    public var labels: [String]
    public var capacity: Int
    public var workDirectory: String
    /// SIGTERM to SIGKILL when a node is cancelled or times out.
    public var killGrace: Duration = .seconds(10)
    public var maximumBackoff: Duration = .seconds(30)

    public init(coordinator: Endpoint, tls: TLSFiles, labels: [String], capacity: Int, workDirectory: String) {
        self.coordinator = coordinator
        self.tls = tls
        self.labels = labels
        self.capacity = capacity
        self.workDirectory = workDirectory
    }
}

/// The long-lived runner: connects to the coordinator (reconnecting with exponential backoff
/// and jitter), advertises its labels and capacity, and runs each pushed assignment.
public final class RunnerAgent: Service, Sendable {
    let configuration: RunnerConfiguration
    let logger: Logger
    private let controls = Mutex<[UInt64: JobControl]>([:])

    public init(configuration: RunnerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run() async throws {
        try FileManager.default.createDirectory(atPath: configuration.workDirectory, withIntermediateDirectories: true)
        _ = try configuration.tls.clientConfiguration()  // unreadable TLS files fail now, not in a retry loop
        var hello = Heddle_V1_Hello()
        hello.labels = configuration.labels
        hello.capacity = UInt32(configuration.capacity)
        var backoff = 0.25
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                let connection = try await HeddleConnection.connect(to: configuration.coordinator,
                                                                    tls: configuration.tls, hello: hello)
                backoff = 0.25
                logger.info("connected", metadata: ["coordinator": "\(configuration.coordinator)",
                                                    "name": "\(connection.welcome.peerName)",
                                                    "labels": "\(configuration.labels.joined(separator: ","))"])
                await withGracefulShutdownHandler {
                    await serve(connection)
                } onGracefulShutdown: {
                    Task { await connection.close() }
                }
                logger.warning("disconnected from the coordinator")
            } catch {
                logger.error("cannot connect", metadata: ["error": "\(error)"])
            }
            guard !Task.isCancelled && !Task.isShuttingDownGracefully else { break }
            let delay = backoff * Double.random(in: 0.5...1.5)
            backoff = min(backoff * 2, Double(configuration.maximumBackoff.components.seconds))
            try? await Task.sleep(for: .milliseconds(Int(delay * 1000)))
        }
    }

    /// Runs assignments pushed on `connection` until it closes.
    func serve(_ connection: HeddleConnection) async {
        await withTaskGroup(of: Void.self) { group in
            for await envelope in connection.pushes {
                switch envelope.body {
                case .assignment(let assignment):
                    let control = JobControl(grace: configuration.killGrace)
                    controls.withLock { $0[assignment.job.jobID] = control }
                    logger.info("job assigned", metadata: ["job.id": "\(assignment.job.jobID)",
                                                           "run.id": "\(assignment.runID)",
                                                           "job": "\(assignment.jobName)"])
                    let executor = JobExecutor(assignment: assignment, connection: connection,
                                               workRoot: configuration.workDirectory,
                                               baseEnvironment: ProcessInfo.processInfo.environment,
                                               control: control, logger: logger)
                    group.addTask {
                        await executor.run()
                        _ = self.controls.withLock { $0.removeValue(forKey: assignment.job.jobID) }
                    }
                case .stopJob(let stop):
                    let control = controls.withLock { $0[stop.jobID] }
                    logger.info("stop job", metadata: ["job.id": "\(stop.jobID)", "reason": "\(stop.reason)"])
                    control?.cancel(reason: stop.reason)
                case .error(let error):
                    logger.error("coordinator error", metadata: ["code": "\(error.code)", "error": "\(error.message)"])
                default:
                    break
                }
            }
            // The connection is gone: the coordinator has failed these jobs as "runner lost".
            for control in controls.withLock({ Array($0.values) }) {
                control.cancel(reason: "connection to the coordinator lost")
            }
        }
    }
}
