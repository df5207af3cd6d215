import Foundation
import NIOSSL
import TestSupport
import Testing
import Wire
@testable import Coordinator

@Suite struct SecurityTests {
    /// The coordinator must still serve a legitimate admin after refusing someone.
    func stillServes(_ coordinator: TestCoordinator) async throws {
        let admin = try await coordinator.client("admin")
        #expect(try await admin.runners().isEmpty)
        await admin.connection.close()
    }

    @Test func aClientWithoutACertificateIsRefused() async throws {
        try await TestCoordinator.with { coordinator in
            var config = TLSConfiguration.makeClientConfiguration()
            config.minimumTLSVersion = .tlsv13
            config.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(coordinator.pki.directory.file("ca.pem")))
            await #expect(throws: WireError.self) {
                _ = try await HeddleConnection.connect(to: coordinator.endpoint, configuration: config)
            }
            try await stillServes(coordinator)
        }
    }

    @Test(arguments: ["foreign-admin", "expired-admin"])
    func aCertificateTheFabricDidNotIssueOrThatExpiredIsRefused(name: String) async throws {
        try await TestCoordinator.with { coordinator in
            do {
                // At a moment the certificate was valid: the client's own check passes, and the
                // coordinator, by its clock, refuses it.
                let now = name == "expired-admin" ? Date().addingTimeInterval(-9.5 * 86400) : Date()
                let config = try coordinator.pki.tls(name).clientConfiguration(now: now)
                _ = try await HeddleConnection.connect(to: coordinator.endpoint, configuration: config)
                Issue.record("\(name) was let in")
            } catch let error as WireError {
                #expect(error.message.contains("TLS") || error.message.contains("closed"), "\(error)")
            }
            try await stillServes(coordinator)
        }
    }

    @Test func aClientThatDoesNotTrustTheCoordinatorsCAStopsAtTheHandshake() async throws {
        try await TestCoordinator.with { coordinator in
            let tls = TLSFiles(ca: coordinator.pki.directory.file("foreign-ca.pem"),
                               certificate: coordinator.pki.directory.file("admin.pem"),
                               key: coordinator.pki.directory.file("admin.key"))
            await #expect(throws: WireError.self) {
                _ = try await HeddleClient.connect(to: coordinator.endpoint, tls: tls)
            }
            try await stillServes(coordinator)
        }
    }

    @Test func aRunnerCertificateCannotUseAdminRequests() async throws {
        try await TestCoordinator.with { coordinator in
            let runner = try await coordinator.client("runner")
            #expect(runner.connection.welcome.role == "runner")
            do {
                _ = try await runner.queue()
                Issue.record("a runner read the queue")
            } catch let error as WireError {
                #expect(error.code == .permissionDenied)
                #expect(error.message == "queue needs one of the roles viewer, automation, admin; this certificate (test-runner) has the runner role")
            }
            do {
                _ = try await runner.pushPipeline(project: "p", fileName: "x.act", source: "name: x")
                Issue.record("a runner pushed a pipeline")
            } catch let error as WireError {
                #expect(error.code == .permissionDenied)
                #expect(error.message.contains("needs the admin role"))
            }
            await runner.connection.close()
            try await stillServes(coordinator)
        }
    }

    @Test func automationTriggersButCannotPushPipelines() async throws {
        try await TestCoordinator.with { coordinator in
            let admin = try await coordinator.client("admin")
            _ = try await admin.pushPipeline(project: "shop", fileName: "ci.act",
                                             source: "name: ci\njobs:\n  t:\n    nodes:\n      a: { run: 'true' }\n")
            let automation = try await coordinator.client("automation")
            let run = try await automation.trigger(project: "shop", pipeline: "ci", branch: "main")
            #expect(run == 1)
            await #expect(throws: WireError.self) {
                _ = try await automation.pushPipeline(project: "shop", fileName: "ci.act", source: "name: ci")
            }
            await admin.connection.close()
            await automation.connection.close()
        }
    }

    @Test func aBadPipelineIsRefusedWithItsLine() async throws {
        try await TestCoordinator.with { coordinator in
            let admin = try await coordinator.client("admin")
            do {
                _ = try await admin.pushPipeline(project: "shop", fileName: "ci.act",
                                                 source: "name: ci\njobs:\n  t:\n    nodes:\n      a: { run: x, needs: [zz] }\n")
                Issue.record("a bad pipeline was stored")
            } catch let error as WireError {
                #expect(error.code == .invalidArgument)
                #expect(error.message.hasPrefix("ci.act:5: "))
            }
            #expect(try await admin.pipelines().isEmpty)
            await #expect(throws: WireError.self) {
                _ = try await admin.trigger(project: "shop", pipeline: "nope", branch: "main")
            }
            await #expect(throws: WireError.self) { _ = try await admin.run(999) }
            await admin.connection.close()
        }
    }
}

@Suite struct SessionAnswerTests {
    /// Watches run beside a session's other requests, at most 16 at once: one more is refused
    /// and the session goes on.
    @Test func aSeventeenthWatchOnOneSessionIsRefused() async throws {
        try await TestCoordinator.with { coordinator in
            let admin = try await coordinator.client("admin")
            _ = try await admin.pushPipeline(project: "shop", fileName: "ci.act", source: QueueTests.source)
            let runID = try await admin.trigger(project: "shop", pipeline: "ci", branch: "main")  // no runner: it waits
            var open: [PushStream<Heddle_V1_WatchEvent>] = []
            for _ in 0..<CoordinatorCore.maximumWatchesPerSession {
                open.append(try await admin.watch(runID: runID, logs: true, follow: true))
            }
            do {
                _ = try await admin.watch(runID: runID, logs: true, follow: true)
                Issue.record("a 17th watch was accepted")
            } catch let error as WireError {
                #expect(error.code == .resourceExhausted)
            }
            #expect(try await admin.runs().map(\.id) == [runID])
            // Another session may still watch.
            let other = try await coordinator.client("automation")
            _ = try await other.watch(runID: runID, logs: true, follow: true)
            await other.connection.close()
            await admin.connection.close()
            #expect(open.count == 16)
        }
    }

    /// `Triggered.attempt` is the attempt the trigger made: 1 for a new run, N+1 for a re-run.
    @Test func triggeredCarriesTheAttempt() async throws {
        try await TestCoordinator.with { coordinator in
            let admin = try await coordinator.client("admin")
            _ = try await admin.pushPipeline(project: "shop", fileName: "ci.act", source: QueueTests.source)
            var request = Heddle_V1_TriggerRequest()
            request.project = "shop"
            request.pipeline = "ci"
            guard case .triggered(let triggered) = try await admin.connection.request(.trigger(request)).body else {
                throw TestFailure("no Triggered answer")
            }
            #expect(triggered.runID > 0)
            #expect(triggered.attempt == 1)
            _ = try await coordinator.core.cancel(runIDs: [Int64(triggered.runID)], jobIDs: [], as: CoordinatorTests.admin)
            let (runID, attempt) = try await admin.rerun(triggered.runID)
            #expect(runID == triggered.runID)
            #expect(attempt == 2)
            await admin.connection.close()
        }
    }
}

/// The one authorization table, checked for every role and every operation against the
/// rules written out here independently.
@Suite struct AuthorizationTests {
    static let reads: Set<Action> = [.listPipelines, .listProjects, .listRuns, .showRun, .watchRun, .listQueue,
                                        .watchQueue, .listRunners, .listArtifacts, .readArtifact, .listSecrets, .listCaches]
    static let actions: Set<Action> = [.trigger, .rerun, .cancel]

    static func expected(_ role: Role, _ operation: Action) -> Bool {
        switch role {
        case .runner: operation == .runJobs
        case .viewer: reads.contains(operation)
        case .automation: reads.contains(operation) || actions.contains(operation)
        case .admin: operation != .runJobs
        }
    }

    @Test(arguments: Role.allCases, Action.allCases)
    func everyRoleMayDoExactlyWhatItsRuleSays(role: Role, operation: Action) {
        let principal = Principal(name: "p", role: role)
        #expect(Authorization.allows(principal, operation) == Self.expected(role, operation))
        if Self.expected(role, operation) {
            #expect(throws: Never.self) { try Authorization.check(principal, operation) }
        } else {
            let error = #expect(throws: CoordinatorError.self) { try Authorization.check(principal, operation) }
            #expect(error?.code == .permissionDenied)
            #expect(error?.message.hasPrefix("\(operation) needs ") == true)
        }
    }

    /// Over a real connection: a viewer certificate reads, and is refused what changes things.
    @Test func aViewerReadsButCannotTriggerOrCancel() async throws {
        try await TestCoordinator.with { coordinator in
            let admin = try await coordinator.client("admin")
            _ = try await admin.pushPipeline(project: "shop", fileName: "ci.act", source: QueueTests.source)
            let runID = try await admin.trigger(project: "shop", pipeline: "ci", branch: "main")
            let viewer = try await coordinator.client("viewer")
            #expect(viewer.connection.welcome.role == "viewer")
            #expect(try await viewer.runs().map(\.id) == [runID])
            #expect(try await viewer.queue().total == 1)
            do {
                _ = try await viewer.trigger(project: "shop", pipeline: "ci", branch: "main")
                Issue.record("a viewer triggered a run")
            } catch let error as WireError {
                #expect(error.code == .permissionDenied)
                #expect(error.message == "trigger needs one of the roles automation, admin; this certificate (test-viewer) has the viewer role")
            }
            await #expect(throws: WireError.self) { _ = try await viewer.cancel(runs: [runID]) }
            #expect(try await admin.runs().first?.status == .queued)
            await viewer.connection.close()
            await admin.connection.close()
        }
    }
}
