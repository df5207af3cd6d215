import Crypto
import Foundation
import Logging
import TestSupport
import Testing
@testable import Coordinator

/// Fencing by the store itself: two stores on one database (as two coordinators would be),
/// a job whose lease moved from one runner to another, and the first runner's late writes.
@Suite struct FencingTests {
    @Test(arguments: StoreKind.allCases)
    func aStaleWriterIsRefusedByTheStoreAndWritesNothing(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let first = try await database.open()
        let second = try await database.open()
        let source = "name: ci\njobs:\n  j:\n    nodes:\n      n: { run: 'true' }\n"
        let definition = try ActParser(file: "ci.act").parse(source)
        let version = try await first.savePipeline(project: "shop", definition: definition, source: source, now: 1)
        let (_, jobs) = try await first.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                  trigger: "api", triggeredBy: "test", now: 1)
        let job = jobs[0].id
        #expect(try await first.claimJobs([JobClaim(jobID: job, runner: "r1", epoch: 1)], now: 2).first??.job.epoch == 1)
        // The lease of r1 is lost; the other store requeues the job and r2 takes it at epoch 2.
        // (In a cluster the other coordinator first takes the job over: the first never beat.)
        if let cluster = second as? any ClusterStore {
            #expect(try await cluster.adoptOrphans(silentFor: .zero).map(\.id) == [job])
        }
        _ = try await second.requeueLostJob(id: job, reason: "runner lost", now: 3)
        _ = try await second.claimJobs([JobClaim(jobID: job, runner: "r2", epoch: 2)], now: 4)

        // Every kind of runner write at epoch 1, through either store: refused.
        for store in [first, second] {
            await expectStale { try await store.setJobCommit(id: job, epoch: 1, commit: "aaaa") }
            await expectStale { try await store.updateNode(jobID: job, epoch: 1, node: "n", status: .failed, exitCode: 1, at: 5) }
            await expectStale {
                _ = try await store.insertArtifact(jobID: job, epoch: 1, name: "stale.txt", size: 1,
                                                   sha256: String(repeating: "0", count: 64), now: 5)
            }
            await expectStale { _ = try await store.finishJob(id: job, epoch: 1, status: .failed, reason: "stale", now: 5) }
            // A log length at epoch 1 is not recorded; the store names the job it refused.
            #expect(try await store.setLogEnds([LogEnd(jobID: job, node: "n", length: 99, epoch: 1)]) == [job])
        }
        #expect(try await first.logLengths(jobID: job).isEmpty)
        // Nothing of them was written; the holder of epoch 2 writes.
        var stored = try #require(try await first.job(id: job))
        #expect(stored.status == .running && stored.runner == "r2" && stored.epoch == 2 && stored.commit.isEmpty)
        #expect(try await first.nodes(jobIDs: [job]).map(\.status) == [.pending])
        #expect(try await first.artifacts(runID: stored.runID).isEmpty)

        // In a cluster only the holder (the store that claimed it) writes, even at the current epoch.
        if first is any ClusterStore {
            await expectStale { try await first.setJobCommit(id: job, epoch: 2, commit: "bbbb") }
            #expect(try await first.setLogEnds([LogEnd(jobID: job, node: "n", length: 10, epoch: 2)]) == [job])
        }
        try await second.setJobCommit(id: job, epoch: 2, commit: "bbbb")
        #expect(try await second.setLogEnds([LogEnd(jobID: job, node: "n", length: 10, epoch: 2)]).isEmpty)
        #expect(try await first.logLengths(jobID: job) == ["n": 10])
        try await second.updateNode(jobID: job, epoch: 2, node: "n", status: .succeeded, exitCode: 0, at: 6)
        _ = try await second.insertArtifact(jobID: job, epoch: 2, name: "out.txt", size: 1,
                                            sha256: String(repeating: "1", count: 64), now: 6)
        _ = try await second.finishJob(id: job, epoch: 2, status: .succeeded, reason: "", now: 7)
        stored = try #require(try await first.job(id: job))
        #expect(stored.status == .succeeded && stored.commit == "bbbb")
        #expect(try await first.artifacts(runID: stored.runID).map(\.name) == ["out.txt"])
        // A finished job takes no more runner writes, whatever the epoch.
        await expectStale { try await second.updateNode(jobID: job, epoch: 2, node: "n", status: .failed, exitCode: 1, at: 8) }
      }
    }

    func expectStale(_ write: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async {
        do {
            try await write()
            Issue.record("a write with a stale lease was accepted", sourceLocation: sourceLocation)
        } catch let error as StoreError {
            #expect(error.code == .staleLease, sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }
}

extension FencingTests {
    /// Another coordinator took a job over as an orphan (this one seemed silent: a database
    /// restart longer than its beats), while the job's runner is still connected here. The
    /// runner's next writes take the job back and are stored: a log chunk (its length
    /// recorded and acknowledged) and an artifact's record.
    @Test func writesOfAJobAdoptedElsewhereTakeItBackWhileItsRunnerIsConnectedHere() async throws {
        try await TestDatabase.with(.postgres) { database in
            let here = try await database.open()
            let other = try #require(try await database.open() as? any ClusterStore)
            let core = try CoordinatorCore(store: here, directory: database.directory.path, logger: Logger(label: "test"))
            try await core.push("shop", "name: ci\njobs:\n  j:\n    nodes:\n      n: { run: 'true' }\n")
            _ = try await core.trigger("shop", "ci")
            let runner = RecordingOutbox()
            let session = try await core.connectRunner(runner, labels: [])
            let job = LeaseRef(try await runner.assignment().job)

            // (No coordinator beats in this test: the other store finds this one silent.)
            #expect(try await other.adoptOrphans(silentFor: .zero).map(\.id) == [job.jobID])
            let durable = try await core.appendLog(session: session, LogBytes(job: job, node: "n", offset: 0,
                                                                               data: Data("hello\n".utf8)))
            #expect(durable == 6)
            #expect(try await here.logLengths(jobID: job.jobID) == ["n": 6])

            #expect(try await other.adoptOrphans(silentFor: .zero).map(\.id) == [job.jobID])
            let content = Array("an artifact".utf8)
            let grant = try await core.declareArtifact(session: session, ArtifactDeclaration(
                job: job, name: "a.txt", size: UInt64(content.count), sha256: Data(SHA256.hash(data: content))))
            try await core.artifactChunk(session: session, ArtifactBytes(job: job, uploadID: grant.uploadID, offset: 0,
                                                                         data: Data(content)))
            let id = try await core.commitArtifact(session: session, job: job, uploadID: grant.uploadID)
            let stored = try #require(try await here.job(id: job.jobID))
            #expect(try await here.artifacts(runID: stored.runID).map(\.id) == [id])
        }
    }
}
