import Foundation
import Logging
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Every name and branch a client gives is bounded and checked by one rule.
@Suite struct NamesTests {
    @Test(arguments: [".", "..", "", String(repeating: "p", count: 101), "a b", "a/b", "nul\0"])
    func badNamesAreRefusedEverywhere(name: String) async throws {
        #expect(Names.problem(name, "x") != nil)
        let core = try CoordinatorCore(store: try SQLiteStore.inMemory(), directory: NSTemporaryDirectory(), logger: Logger(label: "test"))
        await #expect(throws: CoordinatorError.self) {
            _ = try await core.catalog.createProject(name: name, repository: "", as: admin)
        }
        let quoted = "\"\(name.replacingOccurrences(of: "\0", with: "\\0"))\""
        for source in [
            "name: \(quoted)\njobs:\n  j:\n    nodes:\n      n: { run: x }\n",
            "name: ok\njobs:\n  \(quoted):\n    nodes:\n      n: { run: x }\n",
            "name: ok\njobs:\n  j:\n    nodes:\n      \(quoted): { run: x }\n",
            "name: ok\njobs:\n  j:\n    labels: [\(quoted)]\n    nodes:\n      n: { run: x }\n",
        ] {
            #expect(throws: ActError.self, "\(source)") { try ActParser(file: "t.act").parse(source) }
        }
    }

    @Test func theMessagesSayWhy() {
        #expect(Names.problem("..", "project name") == "project name may not be '..'")
        #expect(Names.problem(String(repeating: "p", count: 5000), "project name")
                == "project name 'pppppppppppppppppppp...' is 5000 characters long; the limit is 100")
        #expect(Names.problem("release-1.2_x", "label") == nil)
    }

    @Test(arguments: ["nul\0branch", String(repeating: "b", count: 100_000), "a b", "a..b", "-x", "x/", "x.lock", "a:b", "tab\t"])
    func badBranchesAreRefusedAtTrigger(branch: String) async throws {
        #expect(Names.branchProblem(branch) != nil)
        let core = try CoordinatorCore(store: try SQLiteStore.inMemory(), directory: NSTemporaryDirectory(), logger: Logger(label: "test"))
        try await core.push("shop", "name: ci\njobs:\n  j:\n    nodes:\n      n: { run: x }\n")
        await #expect(throws: CoordinatorError.self) { _ = try await core.trigger("shop", "ci", branch: branch) }
        #expect(try await core.catalog.runs(RunQuery(limit: 10, filter: RunFilter()), as: admin).runs.isEmpty)
    }

    @Test(arguments: ["main", "release/1.2", "feature/x-y_z", "v1.0"])
    func goodBranchesAreAccepted(branch: String) {
        #expect(Names.branchProblem(branch) == nil)
    }

    @Test func aRunnerWithABadLabelIsNotWelcomed() {
        #expect(throws: CoordinatorError.self) { try CoordinatorCore.check(RunnerHello(labels: ["linux", "a b"], capacity: 1, running: [])) }
        #expect(throws: Never.self) { try CoordinatorCore.check(RunnerHello(labels: ["linux", "x86_64"], capacity: 1, running: [])) }
    }
}

/// Every list's default and range come from one table (`ListLimit`), whichever front asks.
@Suite struct ListLimitTests {
    @Test func outOfRangeLimitsAreRefusedWithOneMessage() async throws {
        let core = try CoordinatorCore(store: try SQLiteStore.inMemory(), directory: NSTemporaryDirectory(), logger: Logger(label: "test"))
        try await core.push("shop", "name: ci\njobs:\n  j:\n    nodes:\n      n: { run: x }\n")
        for _ in 0..<3 { _ = try await core.trigger("shop", "ci") }
        func message(_ call: () async throws -> Void) async -> String? {
            do { try await call(); return nil } catch { return (error as? CoordinatorError)?.message }
        }
        #expect(await message { _ = try await core.catalog.runs(RunQuery(limit: 1001), as: admin) } == "limit is 1 to 1000, not 1001")
        #expect(await message { _ = try await core.catalog.runs(RunQuery(limit: 0), as: admin) } == "limit is 1 to 1000, not 0")
        #expect(await message { _ = try await core.catalog.deliveries(project: "shop", limit: 1001, as: admin) } == "limit is 1 to 1000, not 1001")
        #expect(await message { _ = try await core.catalog.searchArtifacts(ArtifactQuery(limit: 501), as: admin) } == "limit is 1 to 500, not 501")
        #expect(await message { _ = try await core.queue(limit: 10_001, as: admin) } == "limit is 1 to 10000, not 10001")
        #expect(await message { _ = try await core.queue(limit: 1001, most: ListLimit.maximumQueueInOneFrame, as: admin) }
                == "limit is 1 to 1000, not 1001")
        // Within range: a page and whether more follow; not given: the default.
        let page = try await core.catalog.runs(RunQuery(limit: 2), as: admin)
        #expect(page.runs.count == 2 && page.more)
        let all = try await core.catalog.runs(RunQuery(), as: admin)
        #expect(all.runs.count == 3 && !all.more)
        #expect(try await core.queue(as: admin).jobs.count == 3)
    }
}
