import Foundation
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// The store protocol's rules, run against every implementation: what one store does, the
/// other does too.
@Suite struct StoreTests {
    static let source = """
        name: ci
        jobs:
          build:
            labels: [linux]
            network: none
            limits: { memory: 64M }
            nodes: { compile: { run: "make" }, test: { run: "make test", needs: [compile], network: host, limits: { pids: 10 } } }
          lint: { nodes: { n: { run: "true" } } }
        """

    func pipeline(_ store: any CoordinatorStore, project: String = "shop") async throws -> (PipelineVersionRecord, PipelineDefinition) {
        let definition = try ActParser(file: "ci.act").parse(Self.source)
        return (try await store.savePipeline(project: project, definition: definition, source: Self.source, now: 1), definition)
    }

    /// A re-run of the failed jobs only: the job that succeeded is copied into the new attempt,
    /// finished, with its nodes as they ended and a pointer to the job it copies; the failed
    /// one is queued again; the attempt ends as its jobs do.
    @Test(arguments: StoreKind.allCases)
    func anAttemptCarriesOverTheJobsThatSucceeded(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            let (version, definition) = try await pipeline(store)
            let (run, jobs) = try await store.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                        trigger: "api", triggeredBy: "t", now: 10)
            let claimed = try await store.claimJobs(jobs.map { JobClaim(jobID: $0.id, runner: "r", epoch: 1) }, now: 11)
            #expect(claimed.allSatisfy { $0 != nil })
            let build = jobs[0], lint = jobs[1]
            try await store.updateNode(jobID: build.id, epoch: 1, node: "compile", status: .succeeded, exitCode: 0, at: 12)
            try await store.updateNode(jobID: build.id, epoch: 1, node: "test", status: .succeeded, exitCode: 0, at: 13)
            _ = try await store.finishJob(id: build.id, epoch: 1, status: .succeeded, reason: "", now: 14)
            let (failed, _) = try await store.finishJob(id: lint.id, epoch: 1, status: .failed, reason: "node 'n' failed", now: 15)
            #expect(failed.status == .failed)

            let (again, queued) = try await store.createAttempt(runID: run.id, definition: definition, carried: ["build"],
                                                                trigger: "manual", triggeredBy: "admin", now: 20)
            #expect(again.attempt == 2 && again.status == .queued)
            #expect(queued.map(\.name) == ["lint"] && queued.allSatisfy { $0.status == .queued && $0.carriedFrom == nil })
            let second = try await store.jobs(runID: run.id, attempt: 2)
            let carried = try #require(second.first { $0.name == "build" })
            #expect(carried.status == .succeeded && carried.carriedFrom == build.id && carried.logJobID == build.id)
            #expect(carried.reason == "carried over from attempt 1" && carried.runner == "r" && carried.finishedAt == 14)
            let nodes = try await store.nodes(jobIDs: [carried.id]).sorted { $0.ordinal < $1.ordinal }
            #expect(nodes.map(\.name) == ["compile", "test"] && nodes.allSatisfy { $0.status == .succeeded && $0.exitCode == 0 })
            #expect(try await store.jobs(runID: run.id, attempt: 1).map(\.status) == [.succeeded, .failed], "attempt 1 as it was")

            // The queued job ends: the attempt (and the run) with it, the carried job counted.
            _ = try await store.claimJobs([JobClaim(jobID: queued[0].id, runner: "r", epoch: 2)], now: 21)
            let (ended, _) = try await store.finishJob(id: queued[0].id, epoch: 2, status: .succeeded, reason: "", now: 22)
            #expect(ended.status == .succeeded && ended.attempt == 2)
        }
    }

    /// Runs of two versions of one pipeline, made in turns, each get their own version's jobs
    /// and nodes (PostgreSQL keeps the rows of the version last triggered, encoded once).
    @Test(arguments: StoreKind.allCases)
    func eachVersionsRunsGetThatVersionsJobsAndNodes(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            let (v1, first) = try await pipeline(store)
            let source = "name: ci\njobs:\n  deploy:\n    labels: [prod]\n    nodes: { ship: { run: \"ship it\" } }\n"
            let second = try ActParser(file: "ci.act").parse(source)
            let v2 = try await store.savePipeline(project: "shop", definition: second, source: source, now: 2)
            for (version, definition) in [(v1, first), (v2, second), (v1, first), (v2, second)] {
                let (_, jobs) = try await store.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                          trigger: "api", triggeredBy: "t", now: 10)
                #expect(jobs.map(\.name) == definition.jobs.map(\.name), "version \(version.version)")
                #expect(jobs.map(\.labels) == definition.jobs.map(\.labels), "version \(version.version)")
                let nodes = try await store.nodes(jobIDs: jobs.map(\.id))
                #expect(nodes.map(\.run) == definition.jobs.flatMap { $0.nodes.map(\.run) }, "version \(version.version)")
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func runsAttemptsJobsAndNodes(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            let (v1, definition) = try await pipeline(store)
            let (v2, _) = try await pipeline(store)
            #expect((v1.version, v2.version) == (1, 2) && v2.jobs == ["build", "lint"])
            #expect(try await store.latestPipeline(project: "shop", pipeline: "ci")?.id == v2.id)
            #expect(try await store.pipelines().map(\.version) == [2])
            #expect(try await store.pipelineVersion(id: v1.id)?.source == Self.source)

            let (run, jobs) = try await store.createRun(version: v2, definition: definition, branch: "main", commit: "abc",
                                                        trigger: "api", triggeredBy: "ci-bot", now: 10)
            #expect(run.status == .queued && run.attempt == 1 && run.commit == "abc" && run.triggeredBy == "ci-bot")
            #expect(jobs.map(\.name) == ["build", "lint"] && jobs.map(\.labels) == [["linux"], []])
            #expect(jobs[0].position < jobs[1].position)
            let nodes = try await store.nodes(jobIDs: [jobs[0].id])
            #expect(nodes.map(\.name) == ["compile", "test"] && nodes[1].needs == ["compile"] && nodes.allSatisfy { $0.status == .pending })
            // What a node runs with, stored as the pipeline says it (`network`, `limits`).
            let settings = [(false, ResourceLimits(memory: 64 << 20)), (true, ResourceLimits(memory: 64 << 20, pids: 10))]
            #expect(nodes.map { $0.network } == settings.map(\.0) && nodes.map(\.limits) == settings.map(\.1))

            // A claim marks the job, its run and its attempt running.
            let claimed = try await store.claimJobs([JobClaim(jobID: jobs[0].id, runner: "r1", epoch: 7)], now: 11)
            #expect(claimed.count == 1 && claimed[0]?.job.status == .running && claimed[0]?.run.status == .running)
            #expect(try await store.claimJobs([JobClaim(jobID: jobs[0].id, runner: "r2", epoch: 8)], now: 11) .map { $0 == nil } == [true])
            #expect(try await store.attempt(runID: run.id, number: 1)?.status == .running)
            try await store.updateNode(jobID: jobs[0].id, epoch: 7, node: "compile", status: .running, exitCode: nil, at: 12)
            try await store.updateNode(jobID: jobs[0].id, epoch: 7, node: "compile", status: .failed, exitCode: 2, at: 13)
            // Finishing: the node left pending is skipped; lint still queued keeps the run running.
            let (afterBuild, build) = try await store.finishJob(id: jobs[0].id, epoch: 7, status: .failed, reason: "node compile failed", now: 14)
            #expect(build.status == .failed && build.reason == "node compile failed" && afterBuild.status == .running)
            #expect(try await store.nodes(jobIDs: [jobs[0].id]).map(\.status) == [.failed, .skipped])
            #expect(try await store.nodes(jobIDs: [jobs[0].id]).first?.exitCode == 2)
            let cancelled = try await store.cancelJobs(ids: [jobs[1].id, jobs[0].id], reason: "by test", now: 15)
            #expect(cancelled.jobIDs == [jobs[1].id] && cancelled.runs.map(\.status) == [.failed])
            #expect(try await store.run(id: run.id)?.finishedAt == 15)

            // A second attempt: new jobs at the end of the queue; the first stays readable.
            let (rerun, again) = try await store.createAttempt(runID: run.id, definition: definition, trigger: "manual",
                                                                triggeredBy: "alice", now: 20)
            #expect(rerun.attempt == 2 && rerun.status == .queued && rerun.triggeredBy == "alice" && rerun.finishedAt == nil)
            #expect(try await store.attempts(runID: run.id).map(\.status) == [.failed, .queued])
            #expect(try await store.jobs(runID: run.id, attempt: 1).map(\.status) == [.failed, .cancelled])
            #expect(try await store.jobs(runID: run.id, attempt: 2).map(\.id) == again.map(\.id))
            let nodesAgain = try await store.nodes(jobIDs: [again[0].id])
            #expect(nodesAgain.map { $0.network } == settings.map(\.0) && nodesAgain.map(\.limits) == settings.map(\.1))
            #expect(try await store.activeJobs().map(\.id) == again.map(\.id))
            #expect(try await store.jobs(ids: again.map(\.id)).count == 2)
            #expect(try await store.queuedJobs(matching: RunFilter(project: "shop")).map(\.id) == again.map(\.id))
            #expect(try await store.queuedJobs(matching: RunFilter(project: "other")).isEmpty)

            // Runs: newest first, filters, a cursor.
            let (second, _) = try await store.createRun(version: v2, definition: definition, branch: "dev", commit: "",
                                                        trigger: "webhook", triggeredBy: "github", now: 30)
            #expect(try await store.runs(limit: 10, filter: RunFilter()).map(\.id) == [second.id, run.id])
            #expect(try await store.runs(limit: 10, filter: RunFilter(branch: "dev")).map(\.id) == [second.id])
            #expect(try await store.runs(limit: 10, filter: RunFilter(trigger: "manual")).map(\.id) == [run.id])
            #expect(try await store.runs(limit: 10, filter: RunFilter(before: second.id)).map(\.id) == [run.id])
            #expect(try await store.runs(limit: 1, filter: RunFilter(status: .queued)).count == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func queueMovesRequeuesAndLogLengths(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            let (version, definition) = try await pipeline(store)
            var jobs: [JobRecord] = []
            for _ in 0..<3 {
                jobs += try await store.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                  trigger: "api", triggeredBy: "t", now: 1).1
            }
            #expect(try await store.setPosition(jobID: jobs[5].id, position: -1) == 1)
            #expect(try await store.activeJobs().first?.id == jobs[5].id)
            try await store.renumberQueue(jobs.enumerated().map { ($0.element.id, Double(10 - $0.offset)) })
            #expect(try await store.activeJobs().map(\.id) == jobs.reversed().map(\.id))
            let next = try #require(try await store.claimJobs([JobClaim(jobID: jobs[5].id, runner: "r", epoch: 3)], now: 2).first ?? nil)
            #expect(next.job.id == jobs[5].id && next.nodes.map(\.name) == ["n"] && next.job.status == .running)
            #expect(try await store.setPosition(jobID: next.job.id, position: 0) == 0)

            // Log lengths: fenced by epoch, the last length given wins.
            #expect(try await store.setLogEnds([LogEnd(jobID: next.job.id, node: "n", length: 5, epoch: 3),
                                                LogEnd(jobID: next.job.id, node: "n", length: 9, epoch: 3)]).isEmpty)
            #expect(try await store.setLogEnds([LogEnd(jobID: next.job.id, node: "n", length: 99, epoch: 2)]) == [next.job.id])
            #expect(try await store.logLengths(jobID: next.job.id) == ["n": 9])
            #expect(try await store.logEnds(jobIDs: [next.job.id], node: nil) == [LogEnd(jobID: next.job.id, node: "n", length: 9)])
            #expect(try await store.logEnds(jobIDs: [next.job.id], node: "other").isEmpty)

            // The runner is lost: requeued at the front, its log and upload gone.
            _ = try await store.saveUpload(jobID: next.job.id, name: "a.txt", size: 3, sha256: String(repeating: "a", count: 64), now: 3)
            #expect(try await store.uploads().map(\.name) == ["a.txt"])
            if let cluster = store as? any ClusterStore { _ = try await cluster.adoptOrphans(silentFor: .zero) }
            let front = try #require(try await store.activeJobs().first { $0.status == .queued }).position
            let run = try await store.requeueLostJob(id: next.job.id, reason: "requeued (1 of 1): runner lost", now: 4)
            #expect(run.status == .queued)
            let requeued = try #require(try await store.job(id: next.job.id))
            // At the front: one place before the first queued job.
            #expect(requeued.status == .queued && requeued.lostCount == 1 && requeued.runner == nil)
            #expect(try await store.activeJobs().first?.id == next.job.id)
            #expect(requeued.position == front - 1)
            #expect(try await store.logLengths(jobID: next.job.id).isEmpty)
            #expect(try await store.uploads().isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func artifactsAndTheirSearch(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            let (version, definition) = try await pipeline(store)
            let (run, jobs) = try await store.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                        trigger: "api", triggeredBy: "t", now: 1)
            _ = try await store.claimJobs([JobClaim(jobID: jobs[0].id, runner: "r", epoch: 1)], now: 2)
            let hashes = ["ab", "cd", "ef", "a0"].map { $0 + String(repeating: "0", count: 62) }
            var made: [ArtifactRecord] = []
            for (index, name) in ["dist/App.tar.gz", "report.xml", "dist/app.zip", "coverage/index.html"].enumerated() {
                made.append(try await store.insertArtifact(jobID: jobs[0].id, epoch: 1, name: name, size: Int64(100 * (index + 1)),
                                                           sha256: hashes[index], now: Int64(10 + index)))
            }
            #expect(made[0].project == "shop" && made[0].branch == "main" && made[0].runID == run.id && made[0].job == "build")
            // Uploading a name again replaces it.
            let replaced = try await store.insertArtifact(jobID: jobs[0].id, epoch: 1, name: "report.xml", size: 7,
                                                          sha256: hashes[1], now: 20)
            #expect(replaced.id == made[1].id && replaced.size == 7)
            #expect(try await store.artifacts(runID: run.id).map(\.name) == ["dist/App.tar.gz", "report.xml", "dist/app.zip", "coverage/index.html"])
            #expect(try await store.artifacts(runID: nil).count == 4)
            #expect(try await store.artifact(id: made[2].id)?.sha256 == hashes[2])

            func names(_ query: ArtifactQuery) async throws -> [String] { try await store.searchArtifacts(query).map(\.name) }
            // A substring in any case; a glob of the whole name, case-sensitive.
            #expect(try await names(ArtifactQuery(name: "APP", sort: .oldest)) == ["dist/App.tar.gz", "dist/app.zip"])
            #expect(try await names(ArtifactQuery(name: "ap", sort: .oldest)) == ["dist/App.tar.gz", "dist/app.zip"])
            #expect(try await names(ArtifactQuery(name: "dist/*.zip")) == ["dist/app.zip"])
            #expect(try await names(ArtifactQuery(name: "dist/[A]pp.*")) == ["dist/App.tar.gz"])
            #expect(try await names(ArtifactQuery(name: "*.x?l")) == ["report.xml"])
            #expect(try await names(ArtifactQuery(name: "100%")).isEmpty)
            #expect(try await names(ArtifactQuery(sha256Prefix: "a", sort: .oldest)) == ["dist/App.tar.gz", "coverage/index.html"])
            #expect(try await names(ArtifactQuery(minimumSize: 100, maximumSize: 300, sort: .largest)) == ["dist/app.zip", "dist/App.tar.gz"])
            #expect(try await names(ArtifactQuery(sort: .smallest, limit: 2, offset: 1)) == ["dist/App.tar.gz", "dist/app.zip"])
            #expect(try await names(ArtifactQuery(sort: .name)) == ["coverage/index.html", "dist/App.tar.gz", "dist/app.zip", "report.xml"])
            #expect(try await names(ArtifactQuery(createdAfter: 12, createdBefore: 20, sort: .newest)) == ["coverage/index.html", "dist/app.zip"])
            #expect(try await names(ArtifactQuery(project: "other")).isEmpty)
            #expect(try await names(ArtifactQuery(runID: run.id, sort: .newest, limit: 1)) == ["coverage/index.html"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func projectsWebhooksTokensSessionsDrainsAndRevocations(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            #expect(try await store.saveProject(name: "shop", repository: "https://example.com/a.git", now: 1).hasWebhook == false)
            #expect(try await store.saveProject(name: "shop", repository: "https://example.com/b.git", now: 2).repository
                    == "https://example.com/b.git")
            #expect(try await store.setWebhookSecret(project: "shop", secret: "s3cret"))
            #expect(try await !store.setWebhookSecret(project: "nope", secret: "x"))
            #expect(try await store.webhookSecret(project: "shop") == "s3cret")
            #expect(try await store.project(name: "shop")?.hasWebhook == true)
            #expect(try await store.projects().map(\.name) == ["shop"])

            let delivery = DeliveryRecord(project: "shop", forge: "github", deliveryID: "d1", event: "push", receivedAt: 5,
                                          outcome: .ignored, detail: "", runIDs: [])
            #expect(try await store.recordDelivery(delivery) == nil)
            var updated = delivery
            updated.outcome = .triggered
            updated.runIDs = [1, 2]
            try await store.updateDelivery(updated)
            #expect(try await store.recordDelivery(delivery) == updated)
            #expect(try await store.deliveries(project: "shop", limit: 10) == [updated])

            let token = TokenRecord(name: "ci", role: .automation, secretSHA256: String(repeating: "1", count: 64), createdAt: 1,
                                    expiresAt: 100, revokedAt: nil)
            #expect(try await store.saveToken(token))
            #expect(try await !store.saveToken(token))
            #expect(try await store.tokens() == [token])
            #expect(try await store.revokeToken(name: "ci", now: 50)?.revokedAt == 50)
            #expect(try await store.revokeToken(name: "ci", now: 60)?.revokedAt == 50)
            #expect(try await store.revokeToken(name: "nope", now: 60) == nil)

            // Sessions: at most two per token here; expired ones go.
            for (index, secret) in ["a", "b", "c"].enumerated() {
                try await store.saveWebSession(WebSessionRecord(secretSHA256: secret, tokenName: "ci", createdAt: Int64(10 + index),
                                                                expiresAt: 1000), maximumPerToken: 2)
            }
            #expect(try await store.webSession(secretSHA256: "a") == nil)
            #expect(try await store.webSession(secretSHA256: "c")?.createdAt == 12)
            try await store.deleteWebSession(secretSHA256: "c")
            #expect(try await store.webSession(secretSHA256: "c") == nil)
            try await store.saveWebSession(WebSessionRecord(secretSHA256: "d", tokenName: "x", createdAt: 2000, expiresAt: 3000),
                                           maximumPerToken: 2)
            #expect(try await store.webSession(secretSHA256: "b") == nil)

            try await store.setDrained(runner: "r1", drained: true)
            try await store.setDrained(runner: "r1", drained: true)
            try await store.setDrained(runner: "r2", drained: true)
            try await store.setDrained(runner: "r2", drained: false)
            #expect(try await store.drainedRunners() == ["r1"])
            try await store.revoke(name: "old", fingerprint: nil, now: 7)
            try await store.revoke(name: nil, fingerprint: String(repeating: "f", count: 64), now: 8)
            #expect(try await store.revocations() == [Revocation(name: "old", fingerprint: nil, revokedAt: 7),
                                                      Revocation(name: nil, fingerprint: String(repeating: "f", count: 64), revokedAt: 8)])
        }
    }

    /// A store that can be reopened keeps everything: a coordinator's restart.
    @Test(arguments: StoreKind.allCases)
    func aReopenedStoreHasEverything(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let first = try await database.open()
            let (version, definition) = try await pipeline(first)
            let (run, _) = try await first.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                     trigger: "api", triggeredBy: "t", now: 1)
            let again = try await database.open()  // migrations already applied: nothing changes
            #expect(try await again.run(id: run.id) == run)
            #expect(try await again.activeJobs().count == 2)
        }
    }
}
