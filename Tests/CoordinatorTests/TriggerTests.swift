import Foundation
import Logging
import Synchronization
import Testing
@testable import Coordinator

/// A trigger whose pipeline version the store refuses as no longer the latest (another
/// coordinator's push, `CoordinatorStore.createLatestRun`) reads the latest again and tries
/// again; refused three times, it is `UNAVAILABLE` with nothing queued.
@Suite struct TriggerTests {
    /// Refuses the first `refusals` runs of "the latest version", as a store whose version
    /// another coordinator passed does.
    final class PassedStore: InterposedStore, @unchecked Sendable {
        let refusals: Mutex<Int>
        let lookups = Mutex(0)
        init(_ base: any CoordinatorStore, refusals: Int) {
            self.refusals = Mutex(refusals)
            super.init(base)
        }
        override func latestPipeline(project: String, pipeline: String) async throws -> PipelineVersionRecord? {
            lookups.withLock { $0 += 1 }
            return try await super.latestPipeline(project: project, pipeline: pipeline)
        }
        override func createLatestRun(version: PipelineVersionRecord, definition: PipelineDefinition, branch: String, commit: String,
                                      trigger: String, triggeredBy: String, fork: Bool, inputs: [String: String],
                                      now: Int64) async throws -> (RunRecord, [JobRecord])? {
            let refuse = refusals.withLock { left -> Bool in
                guard left > 0 else { return false }
                left -= 1
                return true
            }
            if refuse { return nil }
            return try await super.createLatestRun(version: version, definition: definition, branch: branch, commit: commit,
                                                   trigger: trigger, triggeredBy: triggeredBy, fork: fork, inputs: inputs, now: now)
        }
    }

    @Test(arguments: [0, 2, 3]) func aRefusedVersionIsReadAgainThreeTimesAtMost(refusals: Int) async throws {
        try await TestDatabase.with(.sqlite) { database in
            let store = PassedStore(try await database.open(), refusals: refusals)
            let core = try CoordinatorCore(store: store, directory: database.directory.path, logger: Logger(label: "test"))
            try await core.push("shop", QueueTests.source)
            if refusals < 3 {
                let run = try await core.trigger("shop", "ci")
                #expect(try await core.catalog.runDetail(runID: run, as: CoordinatorTests.admin).run.status == .queued)
            } else {
                do {
                    _ = try await core.trigger("shop", "ci")
                    Issue.record("a trigger refused three times was answered")
                } catch let error as CoordinatorError {
                    #expect(error.code == .unavailable && error.message.contains("got new versions while it was triggered"),
                            "\(error.message)")
                }
                #expect(try await core.queue(as: CoordinatorTests.admin).total == 0, "nothing queued")
            }
            #expect(store.lookups.withLock { $0 } == min(refusals, 2) + 1, "one lookup, then one after each refusal but the last")
        }
    }
}
