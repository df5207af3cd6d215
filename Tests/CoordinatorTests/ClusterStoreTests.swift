import Foundation
import Testing
import TestSupport
@testable import Coordinator

/// What `PostgresStore` adds as a `ClusterStore`: moves placed by the database, and the
/// signals between coordinators as they travel in a notification.
@Suite struct ClusterStoreTests {
    /// The queue after a move, as the queue's rule says (the job taken out, then put at the
    /// target among the others).
    static func model(_ queue: [Int64], moving job: Int64, to target: MoveTarget) -> [Int64] {
        var others = queue.filter { $0 != job }
        let slot = switch target {
        case .top: 0
        case .bottom: others.count
        case .position(let n): min(max(n - 1, 0), others.count)
        case .before(let anchor): others.firstIndex(of: anchor)!
        case .after(let anchor): others.firstIndex(of: anchor)! + 1
        }
        others.insert(job, at: slot)
        return others
    }

    @Test func movesArePlacedByTheDatabaseForEveryTarget() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let source = "name: ci\njobs:\n  j: { nodes: { n: { run: 'true' } } }\n"
            let definition = try ActParser(file: "ci.act").parse(source)
            let version = try await store.savePipeline(project: "shop", definition: definition, source: source, now: 1)
            var expected: [Int64] = []
            for _ in 0..<6 {
                let (_, jobs) = try await store.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                          trigger: "api", triggeredBy: "t", now: 2)
                expected.append(jobs[0].id)
            }
            func queue() async throws -> [Int64] {
                try await store.activeJobs().filter { $0.status == .queued }.map(\.id)
            }
            let (a, b, c, d, e, f) = (expected[0], expected[1], expected[2], expected[3], expected[4], expected[5])
            let moves: [(Int64, MoveTarget)] = [(f, .top), (a, .bottom), (e, .position(2)), (b, .before(f)), (c, .after(a)),
                                                (c, .position(99)), (d, .position(1))]
            for (job, target) in moves {
                guard case .moved = try await store.moveQueued(jobID: job, to: target) else {
                    Issue.record("move of \(job) to \(target) not applied")
                    return
                }
                expected = Self.model(expected, moving: job, to: target)
                #expect(try await queue() == expected, "after moving \(job) to \(target)")
            }
            #expect(try await store.moveQueued(jobID: b, to: .before(b)) == .noSuchAnchor)
            #expect(try await store.moveQueued(jobID: b, to: .after(999_999)) == .noSuchAnchor)
            #expect(try await store.moveQueued(jobID: 999_999, to: .top) == .notQueued)
            #expect(try await queue() == expected, "a refused move changes nothing")

            // Moves into one gap halve it until no number fits between the neighbours: then the
            // queue is renumbered in the same transaction, and the order is still the rule's.
            var renumbered = false
            for index in 0..<80 {
                let job = index.isMultiple(of: 2) ? c : e
                guard case .moved(_, let again) = try await store.moveQueued(jobID: job, to: .after(d)) else {
                    Issue.record("move \(index) not applied")
                    return
                }
                renumbered = renumbered || again
                expected = Self.model(expected, moving: job, to: .after(d))
            }
            #expect(renumbered, "80 moves into one gap must use up its precision")
            #expect(try await queue() == expected)

            // A claimed job is no longer queued: it cannot be moved.
            _ = try await store.claimJobs([JobClaim(jobID: a, runner: "r1", epoch: 1)], now: 3)
            #expect(try await store.moveQueued(jobID: a, to: .top) == .notQueued)
            store.close()
        }
    }

    @Test func signalsSurviveTheirNotificationAndBrokenOnesAreDropped() {
        let signals: [ClusterSignal] = [.queue, .state, .resync, .moved(jobID: 7, position: 0.1 + 0.2),
                                        .moved(jobID: 8, position: -3.5e-9), .cancel(jobID: 9, reason: "by a|b"),
                                        .claimed(jobIDs: [1, 2]), .run(runIDs: [3])]
        for signal in signals {
            #expect(PostgresStore.decode(PostgresStore.encode(signal)) == signal)
        }
        for broken in ["moved|7", "moved|x|1.0", "moved|7|nan", "moved|7|inf", "cancel|x|why", "what", ""] {
            #expect(PostgresStore.decode(broken) == nil, "\(broken)")
        }
    }
}

extension ClusterStoreTests {
    /// A database that stops answering mid call (a proxy in between stalls): the call fails
    /// `unavailable` once it has held its connection for the deadline, instead of waiting
    /// forever, and once the database answers again the store works on new connections.
    @Test func aCallTheDatabaseNeverAnswersFailsAtItsDeadline() async throws {
        try await TestDatabase.with(.postgres) { database in
            let location = try #require(database.location)
            let proxy = try await TCPProxy(to: location.host, port: location.port)
            var through = location
            through.port = proxy.port
            let store = try await PostgresStore.connect(through, callDeadline: .seconds(2))
            defer { store.close() }
            do {
                #expect(try await store.pipelines().isEmpty)
                await proxy.stall()
                let stalled = await withDeadline(.seconds(30)) { try await store.pipelines() }
                #expect(Self.unavailable(stalled), "\(stalled)")
                await proxy.resume()
                await proxy.cut()  // the stalled connections go; new ones are made
                try await waitUntil("the store to answer again", timeout: .seconds(30)) {
                    (try? await store.pipelines()) != nil
                }
                // A call that does not end even once its connection is closed (as postgres-nio
                // was seen to leave a query after a database restart): its caller is answered
                // at the deadline all the same, and the store goes on.
                let stuck = await withDeadline(.seconds(30)) {
                    try await store.read { _ in
                        await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }
                    }
                }
                #expect(Self.unavailable(stuck), "\(stuck)")
                #expect(try await store.pipelines().isEmpty)
            } catch {
                await proxy.stop()
                throw error
            }
            await proxy.stop()
        }
    }

    /// Whether the call failed as `unavailable` (not succeeded, nor still running at the
    /// test's deadline).
    static func unavailable<T>(_ result: Result<T, any Error>) -> Bool {
        guard case .failure(let error) = result else { return false }
        return (error as? StoreError)?.code == .unavailable
    }
}
