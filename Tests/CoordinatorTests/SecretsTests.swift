import Foundation
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Projects' secrets: sealed in the store, given only to the nodes that name them, never to a
/// fork's pull request unless the project allows it, listed by name only.
@Suite struct SecretsTests {
    static let source = """
        name: deploy
        jobs:
          ship:
            labels: [linux]
            nodes:
              use: { run: 'echo "$DEPLOY_TOKEN"', secrets: [DEPLOY_TOKEN, NPM_TOKEN] }
              after: { run: "true", needs: [use] }
        """
    static let key = [UInt8](repeating: 7, count: 32)

    /// What both stores keep and a claim returns: sealed values of the secrets the job's
    /// nodes name, whether forks get them, which node names what, and a run's fork mark
    /// through a re-run.
    @Test(arguments: StoreKind.allCases)
    func theStoreKeepsSealedSecretsAndAClaimCarriesThem(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            let definition = try ActParser(file: "deploy.act").parse(Self.source)
            #expect(definition.jobs[0].nodes.map(\.secrets) == [["DEPLOY_TOKEN", "NPM_TOKEN"], []])
            #expect(try await store.setSecret(project: "shop", name: "DEPLOY_TOKEN", sealed: [1, 2, 3], now: 1) == false,
                    "no project, no secret")
            _ = try await store.saveProject(name: "shop", repository: "", now: 1)
            let version = try await store.savePipeline(project: "shop", definition: definition, source: Self.source, now: 1)
            #expect(try await store.setSecret(project: "shop", name: "DEPLOY_TOKEN", sealed: [1, 2, 3], now: 2))
            #expect(try await store.setSecret(project: "shop", name: "DEPLOY_TOKEN", sealed: [4, 5, 6], now: 3))
            #expect(try await store.setSecret(project: "shop", name: "UNUSED", sealed: [9], now: 4))
            #expect(try await store.secrets(project: "shop") == [SecretRecord(name: "DEPLOY_TOKEN", createdAt: 2, updatedAt: 3),
                                                                 SecretRecord(name: "UNUSED", createdAt: 4, updatedAt: 4)])
            #expect(try await store.anySealedSecret() != nil)

            let (run, jobs) = try await store.createRun(version: version, definition: definition, branch: "pr", commit: "",
                                                        trigger: "webhook", triggeredBy: "github", fork: true, now: 5)
            let stored = try await store.run(id: run.id)
            #expect(run.fork && stored?.fork == true)
            #expect(try await store.nodes(jobIDs: [jobs[0].id]).map(\.secrets) == [["DEPLOY_TOKEN", "NPM_TOKEN"], []])
            let claimed = try await store.claimJobs([JobClaim(jobID: jobs[0].id, runner: "r1", epoch: 1)], now: 6)
            #expect(claimed[0]?.sealedSecrets == ["DEPLOY_TOKEN": [4, 5, 6]], "only what the nodes name and the project has")
            #expect(claimed[0]?.forkSecrets == false && claimed[0]?.run.fork == true)
            _ = try await store.finishJob(id: jobs[0].id, epoch: 1, status: .failed, reason: "x", now: 7)

            #expect(try await store.setForkSecrets(project: "shop", allowed: true))
            #expect(try await store.setForkSecrets(project: "nope", allowed: true) == false)
            #expect(try await store.project(name: "shop")?.forkSecrets == true)
            let (rerun, again) = try await store.createAttempt(runID: run.id, definition: definition, trigger: "manual",
                                                                triggeredBy: "alice", now: 8)
            #expect(rerun.fork, "a re-run of a fork's run is still a fork's")
            let claimedAgain = try await store.claimJobs([JobClaim(jobID: again[0].id, runner: "r1", epoch: 2)], now: 9)
            #expect(claimedAgain[0]?.forkSecrets == true)

            #expect(try await store.deleteSecret(project: "shop", name: "UNUSED"))
            #expect(try await store.deleteSecret(project: "shop", name: "UNUSED") == false)
            #expect(try await store.secrets(project: "shop").map(\.name) == ["DEPLOY_TOKEN"])
        }
    }

    func withCore<T: Sendable>(key: [UInt8]? = key, _ body: (CoordinatorCore, TemporaryDirectory) async throws -> T) async throws -> T {
        let data = try TemporaryDirectory("heddle-data")
        defer { data.remove() }
        let core = try CoordinatorCore(store: try SQLiteStore.open(directory: data.path), directory: data.path,
                                       secretBox: try key.map { try SecretBox(key: $0) })
        try await core.recover()
        return try await body(core, data)
    }

    /// Waits for the next assignment the pretend runner gets, or for the run's end.
    func nextJob(_ core: CoordinatorCore, _ runner: RecordingOutbox, runID: Int64) async throws -> Heddle_V1_Assignment? {
        var assignment: Heddle_V1_Assignment?
        try await waitUntil("the job to be assigned or to end") {
            if let envelope = try? await runner.next(timeout: .milliseconds(50)), case .assignment(let a) = envelope.body {
                assignment = a
                return true
            }
            return try await core.store.run(id: runID)?.status.isFinished == true
        }
        return assignment
    }

    @Test func aNodeIsGivenWhatItNamesAndTheStoreHoldsNoValueInClear() async throws {
        try await withCore { core, data in
            try await core.push("shop", Self.source)
            let value = "s3cr3t-\(UUID().uuidString)"
            let list = try await core.secrets.set(project: "shop", name: "DEPLOY_TOKEN", value: value, as: admin)
            #expect(list.secrets.map(\.name) == ["DEPLOY_TOKEN"] && !list.forksAllowed)
            _ = try await core.secrets.set(project: "shop", name: "NPM_TOKEN", value: "npm-value", as: admin)
            let runner = RecordingOutbox()
            _ = try await core.connectRunner(runner)
            let runID = try await core.trigger("shop", "deploy")
            let assignment = try #require(try await nextJob(core, runner, runID: runID))
            #expect(assignment.nodes.map(\.secrets) == [["DEPLOY_TOKEN": value, "NPM_TOKEN": "npm-value"], [:]])
            // Not in clear in any of the database's files (the WAL too).
            let files = try FileManager.default.contentsOfDirectory(atPath: data.path).filter { $0.contains("sqlite") || $0.hasSuffix(".db") || $0.contains("-wal") }
            #expect(!files.isEmpty)
            for file in files {
                let bytes = try Data(contentsOf: URL(fileURLWithPath: data.file(file)))
                #expect(bytes.range(of: Data(value.utf8)) == nil, "\(file) holds the value in clear")
            }
            let sealed = try #require(try await core.store.anySealedSecret())
            #expect(!sealed.sealed.isEmpty && Data(sealed.sealed).range(of: Data("npm-value".utf8)) == nil)
        }
    }

    @Test func aForksPullRequestGetsNoSecretUnlessTheProjectAllowsIt() async throws {
        try await withCore { core, _ in
            try await core.push("shop", Self.source.replacingOccurrences(of: "name: deploy\n", with: "name: deploy\non: { pull_request: {} }\n"))
            _ = try await core.secrets.set(project: "shop", name: "DEPLOY_TOKEN", value: "deploy-value", as: admin)
            _ = try await core.secrets.set(project: "shop", name: "NPM_TOKEN", value: "npm-value", as: admin)
            let runner = RecordingOutbox()
            _ = try await core.connectRunner(runner, capacity: 3)
            func deliver(_ id: String, fork: Bool) async throws -> Int64 {
                let answer = try await core.webhooks.receive(ForgeDelivery(
                    project: "shop", forge: "github", deliveryID: id, eventName: "pull_request",
                    event: .pullRequest(target: "main", branch: "feature", commit: String(repeating: "a", count: 40), fork: fork)))
                return try #require(answer.runIDs.first)
            }
            let forked = try await deliver("d1", fork: true)
            #expect(try await nextJob(core, runner, runID: forked) == nil, "no assignment carries the secrets")
            let job = try #require(try await core.store.jobs(runID: forked, attempt: 1).first)
            #expect(job.status == .failed && job.reason.contains("pull request from another repository"), "\(job.reason)")
            #expect(job.reason.contains("heddle secrets forks shop allow"))

            // The same repository's pull request gets them.
            let own = try await deliver("d2", fork: false)
            #expect(try await nextJob(core, runner, runID: own)?.nodes.first?.secrets["DEPLOY_TOKEN"] == "deploy-value")
            _ = try await core.store.finishJob(id: try #require(try await core.store.jobs(runID: own, attempt: 1).first).id, epoch: nil,
                                               status: .succeeded, reason: "", now: Date.nowMilliseconds)

            // Allowed: a fork's too, and a re-run of the refused one.
            #expect(try await core.secrets.setForks(project: "shop", allowed: true, as: admin).forksAllowed)
            let rerun = try await core.rerun(runID: forked, as: admin)
            #expect(try await nextJob(core, runner, runID: forked)?.nodes.first?.secrets["NPM_TOKEN"] == "npm-value")
            #expect(rerun.attempt == 2)
        }
    }

    @Test func aMissingSecretOrKeyFailsTheJobSayingWhich() async throws {
        try await withCore { core, _ in
            try await core.push("shop", Self.source)
            _ = try await core.secrets.set(project: "shop", name: "DEPLOY_TOKEN", value: "deploy-value", as: admin)
            let runner = RecordingOutbox()
            _ = try await core.connectRunner(runner)
            let runID = try await core.trigger("shop", "deploy")
            #expect(try await nextJob(core, runner, runID: runID) == nil)
            let job = try #require(try await core.store.jobs(runID: runID, attempt: 1).first)
            #expect(job.reason == "node 'use' is given secret NPM_TOKEN, which project shop does not have (`heddle secrets set shop NPM_TOKEN`)")
        }
        try await withCore(key: nil) { core, _ in
            try await core.push("shop", Self.source)
            await #expect(throws: CoordinatorError(.failedPrecondition, "this coordinator has no --secrets-key-file, so it cannot store secrets")) {
                try await core.secrets.set(project: "shop", name: "DEPLOY_TOKEN", value: "deploy-value", as: admin)
            }
            let runner = RecordingOutbox()
            _ = try await core.connectRunner(runner)
            let runID = try await core.trigger("shop", "deploy")
            #expect(try await nextJob(core, runner, runID: runID) == nil)
            #expect(try await core.store.jobs(runID: runID, attempt: 1).first?.reason.contains("has no --secrets-key-file") == true)
        }
    }

    @Test func rolesNamesValuesAndKeys() async throws {
        try await withCore { core, data in
            try await core.push("shop", Self.source)
            let viewer = Principal(name: "v", role: .viewer)
            _ = try await core.secrets.set(project: "shop", name: "DEPLOY_TOKEN", value: "deploy-value", as: admin)
            #expect(try await core.secrets.list(project: "shop", as: viewer).secrets.map(\.name) == ["DEPLOY_TOKEN"])
            for principal in [viewer, Principal(name: "bot", role: .automation)] {
                await #expect(throws: CoordinatorError.self) {
                    try await core.secrets.set(project: "shop", name: "X_TOKEN", value: "value", as: principal)
                }
                await #expect(throws: CoordinatorError.self) {
                    try await core.secrets.delete(project: "shop", name: "DEPLOY_TOKEN", as: principal)
                }
            }
            for (name, value) in [("lower", "value"), ("1ST", "value"), ("HEDDLE_X", "value"), ("A", "abc"), ("A", "a\0bcd"),
                                  ("A", String(repeating: "x", count: 65_537))] {
                await #expect(throws: CoordinatorError.self, "\(name)") {
                    try await core.secrets.set(project: "shop", name: name, value: value, as: admin)
                }
            }
            await #expect(throws: CoordinatorError.notFound("project nope does not exist")) {
                try await core.secrets.set(project: "nope", name: "A", value: "value", as: admin)
            }
            await #expect(throws: CoordinatorError.notFound("project shop has no secret OTHER")) {
                try await core.secrets.delete(project: "shop", name: "OTHER", as: admin)
            }
            #expect(try await core.secrets.delete(project: "shop", name: "DEPLOY_TOKEN", as: admin).secrets.isEmpty)
            _ = try await core.secrets.set(project: "shop", name: "DEPLOY_TOKEN", value: "deploy-value", as: admin)

            // Another key does not open them: a coordinator started with it refuses to start.
            let other = try CoordinatorCore(store: core.store, directory: data.path,
                                            secretBox: try SecretBox(key: [UInt8](repeating: 8, count: 32)))
            await #expect(throws: SecretKeyError.self) { try await other.secrets.checkKey() }
            try await core.secrets.checkKey()
        }
    }

    @Test func keyFilesSayWhatIsWrong() throws {
        let directory = try TemporaryDirectory("heddle-key")
        defer { directory.remove() }
        let path = directory.file("key")
        try String(repeating: "ab", count: 32).appending("\n").write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o644)
        #expect(throws: SecretKeyError.self) { try SecretBox(keyFile: path) }
        chmod(path, 0o600)
        let box = try SecretBox(keyFile: path)
        let sealed = try box.seal("value", project: "p", name: "N")
        #expect(try box.open(sealed, project: "p", name: "N") == "value")
        #expect(throws: (any Error).self) { try box.open(sealed, project: "p", name: "OTHER") }
        try "short".write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o600)
        #expect(throws: SecretKeyError.self) { try SecretBox(keyFile: path) }
        #expect(throws: SecretKeyError.self) { try SecretBox(keyFile: directory.file("missing")) }
    }
}
