import Foundation
import PostgresNIO
import Synchronization
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
                guard case .moved(let moved) = try await store.moveQueued(jobID: job, to: .after(d)), case let again = moved.renumbered else {
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

    /// The queue's counts per range of places (`queue_count`) follow every change of a queued
    /// row: a renumber of the whole queue that moves its jobs to another range, a move, a
    /// claim, a cancel and a lost job's return; a job's end changes none.
    @Test func queueCountsFollowEveryChangeOfAQueuedRow() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(store, labels: [[]])
            // Places from 5,001 on: a renumber (1, 2, ...) moves every job to the first range.
            try await store.read { db in try await db.query("SELECT setval('job_position', 5000)", logger: store.logger) }
            var ids: [Int64] = []
            for _ in 0..<6 { ids.append(try await Self.queue(store, version, definition)[0].id) }
            func check(_ context: String) async throws {
                let (counted, queued) = try await store.read { db in
                    let counted = try await db.rows(
                        "SELECT bucket, sum(n)::bigint AS n FROM queue_count GROUP BY bucket HAVING sum(n) <> 0", logger: store.logger)
                    let queued = try await db.rows("""
                        SELECT floor(position / 1024)::bigint AS bucket, count(*)::bigint AS n FROM job WHERE status = 'queued' GROUP BY 1
                        """, logger: store.logger)
                    func byBucket(_ rows: [PostgresRandomAccessRow]) throws -> [Int64: Int64] {
                        Dictionary(uniqueKeysWithValues: try rows.map { (try $0.get("bucket", as: Int64.self), try $0.get("n", as: Int64.self)) })
                    }
                    return (try byBucket(counted), try byBucket(queued))
                }
                #expect(counted == queued, "counts \(context)")
            }
            try await check("after the runs")
            var renumbered = false
            for index in 0..<80 {
                guard case .moved(let moved) = try await store.moveQueued(jobID: ids[index.isMultiple(of: 2) ? 2 : 4], to: .after(ids[3]))
                else { Issue.record("move \(index) not applied"); return }
                renumbered = renumbered || moved.renumbered
            }
            #expect(renumbered)
            #expect(try await store.activeJobs().allSatisfy { $0.position < 1024 }, "the renumber kept the places")
            try await check("after a renumber")
            _ = try await store.moveQueued(jobID: ids[0], to: .bottom)
            try await check("after a move")
            _ = try await store.claimJobs([JobClaim(jobID: ids[1], runner: "r", epoch: 1), JobClaim(jobID: ids[5], runner: "r", epoch: 2)],
                                          now: 3)
            try await check("after claims")
            _ = try await store.cancelJobs(ids: [ids[2]], reason: "test", now: 3)
            try await check("after a cancel")
            _ = try await store.requeueLostJob(id: ids[1], reason: "lost", now: 4)
            try await check("after a requeue")
            _ = try await store.finishJob(id: ids[5], epoch: 2, status: .succeeded, reason: "", now: 5)
            try await check("after an end")
            #expect(try await store.queueHead(limit: 0).queued == 4)
            store.close()
        }
    }

    /// A job appended after a move to the bottom goes after the moved job (places past the
    /// last come from the sequence new jobs take theirs from).
    @Test func aJobQueuedAfterAMoveToTheBottomGoesAfterIt() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(store, labels: [[]])
            var ids: [Int64] = []
            for _ in 0..<3 { ids.append(try await Self.queue(store, version, definition)[0].id) }
            for id in [ids[0], ids[1], ids[0]] { _ = try await store.moveQueued(jobID: id, to: .bottom) }
            ids.append(try await Self.queue(store, version, definition)[0].id)
            #expect(try await store.activeJobs().map(\.id) == [ids[2], ids[1], ids[0], ids[3]])
            #expect(try await store.queuePlaces(jobIDs: [ids[0]]) == [ids[0]: 3])
            #expect(try await store.queuePlaces(jobIDs: ids) == [ids[2]: 1, ids[1]: 2, ids[0]: 3, ids[3]: 4])
            store.close()
        }
    }

    /// Property: in a queue spanning several ranges of counted places (3,000 jobs, ranges of
    /// 1,024), after claims and cancels out of order and random moves of every kind, every
    /// job's place, the queue's total and every move are the rule's, before and after the
    /// counts are folded; and the counts equal a count of the queue.
    @Test func placesAcrossRangesStayExactUnderMovesClaimsCancelsAndFolds() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            var random = SystemRandomNumberGenerator()
            let (version, definition) = try await Self.pipeline(store, labels: Array(repeating: [], count: 500))
            var expected: [Int64] = []
            for _ in 0..<6 { expected += try await Self.queue(store, version, definition).map(\.id) }
            let claimed = Array(expected.shuffled(using: &random).prefix(40))
            _ = try await store.claimJobs(claimed.enumerated().map { JobClaim(jobID: $1, runner: "r\($0)", epoch: 1) }, now: 3)
            let cancelled = Array(expected.filter { !claimed.contains($0) }.shuffled(using: &random).prefix(40))
            _ = try await store.cancelJobs(ids: cancelled, reason: "test", now: 3)
            expected.removeAll { claimed.contains($0) || cancelled.contains($0) }

            func check(_ context: String) async throws {
                let places = try await store.queuePlaces(jobIDs: expected)
                let model = Dictionary(uniqueKeysWithValues: expected.enumerated().map { ($1, $0 + 1) })
                #expect(places == model, "places \(context)")
                #expect(try await store.queueHead(limit: 0).queued == expected.count, "total \(context)")
                let counted = try await store.read { db in
                    try await db.row("SELECT (SELECT COALESCE(sum(n), 0) FROM queue_count)::bigint AS counted", logger: store.logger)!
                        .get("counted", as: Int64.self)
                }
                #expect(counted == Int64(expected.count), "counts \(context)")
            }
            try await check("after claims and cancels")
            for index in 0..<120 {
                let job = expected.randomElement(using: &random)!
                let other = expected.filter { $0 != job }.randomElement(using: &random)!
                let target: MoveTarget = switch index % 5 {
                case 0: .top
                case 1: .bottom
                case 2: .before(other)
                case 3: .after(other)
                default: .position(Int.random(in: 1...(expected.count + 20), using: &random))
                }
                guard case .moved(let moved) = try await store.moveQueued(jobID: job, to: target), case let place = moved.place else {
                    Issue.record("move of \(job) to \(target) not applied")
                    return
                }
                expected = Self.model(expected, moving: job, to: target)
                #expect(place == expected.firstIndex(of: job)! + 1, "the place a move to \(target) answers")
                #expect(moved.job.id == job && moved.job.position == moved.position && moved.run.id == moved.job.runID)
                #expect(try await store.queuePlaces(jobIDs: [job]) == [job: expected.firstIndex(of: job)! + 1],
                        "the place of \(job) after its move to \(target)")
                if index % 40 == 39 {
                    try await check("after \(index + 1) moves")
                    try await store.transaction { db in try await PostgresStore.foldQueueCounts(db, logger: store.logger) }
                    try await check("after \(index + 1) moves and a fold")
                }
            }
            #expect(try await store.activeJobs().filter { $0.status == .queued }.map(\.id) == expected)
            store.close()
        }
    }

    static let labelChoices: [Set<String>] = [[], ["linux"], ["linux", "x86"], ["gpu"], ["linux", "gpu"]]

    static func pipeline(_ store: any CoordinatorStore, labels: [Set<String>]) async throws -> (PipelineVersionRecord, PipelineDefinition) {
        var source = "name: ci\njobs:\n"
        for (index, set) in labels.enumerated() {
            source += "  j\(index): { labels: [\(set.sorted().joined(separator: ", "))], nodes: { n: { run: 'true' } } }\n"
        }
        let definition = try ActParser(file: "ci.act").parse(source)
        return (try await store.savePipeline(project: "shop", definition: definition, source: source, now: 1), definition)
    }

    static func queue(_ store: any CoordinatorStore, _ version: PipelineVersionRecord,
                      _ definition: PipelineDefinition) async throws -> [JobRecord] {
        try await store.createRun(version: version, definition: definition, branch: "main", commit: "", trigger: "api",
                                  triggeredBy: "t", now: 2).1
    }

    /// Property: a claim takes exactly the jobs the in-memory scheduler would place (queue
    /// order, label fit, least busy runner), after random moves, for random runners.
    @Test func aClaimTakesWhatTheSchedulerWouldPlace() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            var random = SystemRandomNumberGenerator()
            let labels = (0..<8).map { _ in Self.labelChoices.randomElement(using: &random)! }
            let (version, definition) = try await Self.pipeline(store, labels: labels)
            var ids: [Int64] = []
            for _ in 0..<6 { ids += try await Self.queue(store, version, definition).map(\.id) }
            var epoch: Int64 = 100
            for round in 0..<6 {
                for _ in 0..<10 {
                    let target: MoveTarget = switch Int.random(in: 0..<4, using: &random) {
                    case 0: .top
                    case 1: .bottom
                    case 2: .position(Int.random(in: 1...ids.count, using: &random))
                    default: .after(ids.randomElement(using: &random)!)
                    }
                    _ = try await store.moveQueued(jobID: ids.randomElement(using: &random)!, to: target)
                }
                // The model: the scheduler on the store's queue, with the same runners.
                var scheduler = Scheduler()
                for job in try await store.activeJobs() where job.status == .queued {
                    scheduler.enqueue(.init(id: job.id, labels: Set(job.labels), position: job.position))
                }
                var slots: [ClaimSlot] = []
                for runner in 0..<Int.random(in: 1...3, using: &random) {
                    let set = Self.labelChoices.randomElement(using: &random)!
                    let free = Int.random(in: 1...4, using: &random)
                    scheduler.addRunner(UInt64(runner), labels: set, capacity: free)
                    slots.append(ClaimSlot(runner: "r\(runner)", labels: set, running: 0,
                                           epochs: (0..<free).map { _ in epoch += 1; return epoch }))
                }
                let expected = Set(scheduler.assign().map(\.jobID))
                let claimed = try await store.claimQueued(slots, now: 3)
                #expect(Set(claimed.map(\.job.id)) == expected, "round \(round)")
                for job in claimed {
                    let slot = try #require(slots.first { $0.epochs.contains(job.job.epoch) })
                    #expect(slot.runner == job.job.runner && Set(job.job.labels).isSubset(of: slot.labels))
                    #expect(job.job.status == .running && job.run.status == .running && job.nodes.map(\.name) == ["n"])
                }
            }
            store.close()
        }
    }

    /// The queue is read by label set: a claim whose slots no queued job's labels fit takes
    /// nothing, and one that a job behind a thousand others fits takes it first, then the
    /// others in queue order when they fit too.
    @Test func aClaimFindsTheJobsThatFitBehindManyThatDoNot() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let labels: [Set<String>] = Array(repeating: ["gpu"], count: 1000) + [["linux"], ["linux", "x86"]]
            let (version, definition) = try await Self.pipeline(store, labels: labels)
            let jobs = try await Self.queue(store, version, definition)
            #expect(try await store.claimQueued([ClaimSlot(runner: "mac", labels: ["mac"], running: 0, epochs: [1, 2])], now: 3).isEmpty)
            let linux = try await store.claimQueued([ClaimSlot(runner: "l", labels: ["linux", "x86"], running: 0, epochs: [4, 5, 6])], now: 3)
            #expect(linux.map(\.job.id) == jobs.suffix(2).map(\.id))
            #expect(linux.map(\.job.epoch) == [4, 5])
            let gpu = try await store.claimQueued([ClaimSlot(runner: "g", labels: ["gpu", "linux"], running: 0, epochs: [7, 8, 9])], now: 3)
            #expect(gpu.map(\.job.id) == jobs.prefix(3).map(\.id))
            store.close()
        }
    }

    /// Three coordinators claiming at once while jobs are moved and new runs queued: no job is
    /// claimed twice, every job a claim marked running came back from it with its run and
    /// nodes (a run committed while a claim ran included), and once they stop, no queued job
    /// fits a runner that still had room.
    @Test func concurrentClaimersThroughThreeCoordinatorsTakeEachJobOnceAndSkipNone() async throws {
        try await TestDatabase.with(.postgres) { database in
            var opened: [PostgresStore] = []
            for _ in 0..<3 { opened.append(try #require(try await database.open() as? PostgresStore)) }
            let stores = opened
            var random = SystemRandomNumberGenerator()
            let labels = (0..<10).map { _ in Self.labelChoices.randomElement(using: &random)! }
            let (version, definition) = try await Self.pipeline(stores[0], labels: labels)
            var ids: [Int64] = []
            for _ in 0..<30 { ids += try await Self.queue(stores[0], version, definition).map(\.id) }
            let runnerLabels: [Set<String>] = [["linux", "x86"], ["gpu", "linux"], []]
            let movable = ids
            /// Whether runs are still being queued, and their jobs.
            final class Queuing: Sendable {
                let running = Mutex(true)
                let jobs = Mutex<[Int64]>([])
            }
            let queuing = Queuing()
            let claims = try await withThrowingTaskGroup(of: [ClaimedJob].self) { group in
                for (index, store) in stores.enumerated() {
                    group.addTask {
                        var mine: [ClaimedJob] = []
                        var epoch = Int64(index) * 1_000_000
                        var empty = 0
                        // Each coordinator: two runners, small batches, until three claims in a
                        // row find nothing once no more runs come.
                        while empty < 3 || queuing.running.withLock({ $0 }) {
                            let slots = (0..<2).map { runner in
                                ClaimSlot(runner: "c\(index)r\(runner)", labels: runnerLabels[(index + runner) % 3], running: 0,
                                          epochs: (0..<Int.random(in: 1...5)).map { _ in epoch += 1; return epoch })
                            }
                            let claimed = try await store.claimQueued(slots, now: 3)
                            empty = claimed.isEmpty ? empty + 1 : 0
                            mine += claimed
                        }
                        return mine
                    }
                }
                group.addTask {
                    for _ in 0..<60 {
                        _ = try await stores[0].moveQueued(jobID: movable.randomElement()!, to: Bool.random() ? .top : .bottom)
                    }
                    return []
                }
                group.addTask {
                    defer { queuing.running.withLock { $0 = false } }
                    for _ in 0..<60 {
                        let jobs = try await Self.queue(stores[1], version, definition).map(\.id)
                        queuing.jobs.withLock { $0 += jobs }
                    }
                    return []
                }
                return try await group.reduce(into: [ClaimedJob]()) { $0 += $1 }
            }
            ids += queuing.jobs.withLock { $0 }
            let claimedIDs = claims.map(\.job.id)
            #expect(claimedIDs.count == Set(claimedIDs).count, "a job was claimed twice")
            for claimed in claims {
                #expect(claimed.run.id == claimed.job.runID && claimed.nodes.map(\.name) == ["n"], "job \(claimed.job.id)")
            }
            let stored = try await stores[0].jobs(ids: ids)
            #expect(Set(stored.filter { $0.status == .running }.map(\.id)) == Set(claimedIDs))
            for job in stored where job.status == .queued {
                #expect(!runnerLabels.contains { Set(job.labels).isSubset(of: $0) }, "job \(job.id) fits a runner and was skipped")
            }
            for store in stores { store.close() }
        }
    }

    /// Writes batched into one transaction are fenced one by one: a stale end in a batch is
    /// refused, and the others of its batch are stored.
    @Test func aJobsEndBatchedWithOthersIsFencedLikeASingleOne() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(store, labels: [[]])
            var ids: [Int64] = []
            for _ in 0..<20 { ids.append(try await Self.queue(store, version, definition)[0].id) }
            let claims = ids.enumerated().map { JobClaim(jobID: $0.element, runner: "r", epoch: Int64(10 + $0.offset)) }
            _ = try await store.claimJobs(claims, now: 3)
            // All at once, so they share transactions; every third one with a stale epoch.
            let results = await withTaskGroup(of: (Int64, Bool).self) { group in
                for (index, claim) in claims.enumerated() {
                    group.addTask {
                        let epoch = index % 3 == 0 ? claim.epoch - 1 : claim.epoch
                        do {
                            _ = try await store.finishJob(id: claim.jobID, epoch: epoch, status: .succeeded, reason: "", now: 4)
                            return (claim.jobID, true)
                        } catch let error as StoreError {
                            return (claim.jobID, error.code == .staleLease ? false : true)
                        } catch {
                            return (claim.jobID, true)
                        }
                    }
                }
                return await group.reduce(into: [Int64: Bool]()) { $0[$1.0] = $1.1 }
            }
            for (index, id) in ids.enumerated() {
                let job = try #require(try await store.job(id: id))
                if index % 3 == 0 {
                    #expect(results[id] == false && job.status == .running, "a stale end was stored (job \(id))")
                } else {
                    #expect(results[id] == true && job.status == .succeeded, "an end batched with a stale one was lost (job \(id))")
                }
            }
            store.close()
        }
    }

    /// Property: a batch's steps (`PostgresBatches.steps`) hold every write once; a step of
    /// ends holds ends next to each other in the batch, and one of runs holds runs, at most one
    /// of either claiming; writes and ends keep their order; without `together`, every end and
    /// run is alone. (A run that joined an earlier step once let the ends after it take it in.)
    @Test func aBatchsStepsHoldEveryWriteOnceInOrder() {
        var random = SystemRandomNumberGenerator()
        let choices: [PostgresBatches.Kind] = [.write, .end(claims: false), .end(claims: true), .create(claims: false),
                                               .create(claims: true)]
        for _ in 0..<2_000 {
            let kinds = (0..<Int.random(in: 1...12, using: &random)).map { _ in choices.randomElement(using: &random)! }
            for together in [true, false] {
                let steps = PostgresBatches.steps(kinds, together: together)
                var seen: [Int] = []
                var ordered: [Int] = []  // writes and ends, in the steps' order
                for step in steps {
                    switch step {
                    case .write(let index):
                        #expect(kinds[index] == .write)
                        seen.append(index)
                        ordered.append(index)
                    case .ends(let range):
                        let claiming = range.filter { kinds[$0] == .end(claims: true) }
                        #expect(range.allSatisfy { if case .end = kinds[$0] { true } else { false } }, "\(kinds): \(steps)")
                        #expect(claiming.count <= 1 && (together || range.count == 1), "\(kinds): \(steps)")
                        seen += range
                        ordered += range
                    case .creates(let indices):
                        let claiming = indices.filter { kinds[$0] == .create(claims: true) }
                        #expect(indices.allSatisfy { if case .create = kinds[$0] { true } else { false } }, "\(kinds): \(steps)")
                        #expect(claiming.count <= 1 && (together || indices.count == 1) && indices == indices.sorted())
                        seen += indices
                    }
                }
                #expect(seen.sorted() == Array(kinds.indices), "\(kinds): \(steps)")
                #expect(ordered == ordered.sorted(), "\(kinds): \(steps)")
            }
        }
    }

    /// The statement a batch's runs share (`PostgresStore.insertRuns`) stores each run as a
    /// single one would: its jobs at the end of the queue in the order asked, each node with
    /// its own job; a run of a passed version asked only while it is the latest is not stored,
    /// and a claim carried by such a run does not happen; a claim carried by a stored run
    /// takes the queue's fitting jobs in order, older ones first, and is answered to that run
    /// alone.
    @Test func runsInOneStatementAreEachStoredAndOneOfThemClaims() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let (old, oldDefinition) = try await Self.pipeline(store, labels: [[], []])
            let source = "name: ci\njobs:\n  k: { labels: [], nodes: { m: { run: 'true' } } }\n"
            let definition = try ActParser(file: "ci.act").parse(source)
            let latest = try await store.savePipeline(project: "shop", definition: definition, source: source, now: 1)
            func insert(_ version: PipelineVersionRecord, _ definition: PipelineDefinition, latestOnly: Bool,
                        slots: [ClaimSlot] = []) throws -> PostgresStore.RunInsert {
                PostgresStore.RunInsert(version: version, definition: definition, json: try store.jobsJSON(version, definition),
                                        branch: "main", commit: "c", trigger: "api", triggeredBy: "t", fork: false, inputs: ["k": "v"],
                                        inputsJSON: #"{"k":"v"}"#, now: 7, latestOnly: latestOnly, slots: slots)
            }
            func insertRuns(_ runs: [PostgresStore.RunInsert]) async throws -> [CreatedAndClaimed?] {
                try await store.transaction(explicit: false) { [logger = store.logger, holder = store.coordinatorID] db in
                    try await PostgresStore.insertRuns(db, runs, holder: holder, logger: logger)
                }
            }
            let slot = { (epochs: [Int64]) in ClaimSlot(runner: "r", labels: [], running: 0, epochs: epochs) }
            let first = try await insertRuns([insert(old, oldDefinition, latestOnly: false),
                                              insert(old, oldDefinition, latestOnly: true, slots: [slot([5])])])
            try #require(first.count == 2)
            let a = try #require(first[0])
            #expect(first[1] == nil, "a run of a passed version was stored")
            #expect(a.jobs.map(\.name) == ["j0", "j1"] && a.claimed.isEmpty && a.run.inputs == ["k": "v"])
            #expect(try await store.jobs(ids: a.jobs.map(\.id)).allSatisfy { $0.status == .queued }, "a refused run's claim happened")
            let second = try await insertRuns([insert(latest, definition, latestOnly: false),
                                               insert(latest, definition, latestOnly: true, slots: [slot([8, 9, 10])])])
            let c = try #require(second[0])
            let d = try #require(second[1])
            #expect(c.run.id != d.run.id && c.claimed.isEmpty)
            let positions = (a.jobs + c.jobs + d.jobs).map(\.position)
            #expect(positions == positions.sorted() && Set(positions).count == positions.count, "places not in the order asked")
            #expect(d.claimed.map(\.job.id) == a.jobs.map(\.id) + c.jobs.map(\.id), "the claim did not take the queue in order")
            #expect(d.claimed.map(\.job.epoch) == [8, 9, 10])
            for claimed in d.claimed {
                let expected = claimed.job.runID == a.run.id ? ["n"] : ["m"]
                #expect(claimed.nodes.map(\.name) == expected && claimed.nodes.allSatisfy { $0.jobID == claimed.job.id })
            }
            let nodes = try await store.nodes(jobIDs: (a.jobs + c.jobs + d.jobs).map(\.id))
            #expect(nodes.map(\.jobID) == (a.jobs + c.jobs + d.jobs).map(\.id).sorted(), "a node not with its own job")
            let (runD, runC) = (try await store.run(id: d.run.id), try await store.run(id: c.run.id))
            #expect(runD?.status == .queued && runC?.status == .running)
            store.close()
        }
    }

    /// The statement a batch's ends share (`PostgresStore.endJobs`) fences and answers each end
    /// as a single one would: in the order asked, ended in the order of the jobs' ids (each
    /// end's run as that end left it), a stale epoch, a job another coordinator holds and a job
    /// that does not exist refused without failing the others, and a second end of a job ended
    /// earlier in the same statement refused.
    @Test func endsInOneStatementAreEachFencedAndAnsweredInOrder() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let other = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(store, labels: [[], []])
            let first = try await Self.queue(store, version, definition)
            let second = try await Self.queue(store, version, definition)
            let third = try await Self.queue(store, version, definition)
            _ = try await store.claimJobs([JobClaim(jobID: first[0].id, runner: "r", epoch: 10),
                                           JobClaim(jobID: first[1].id, runner: "r", epoch: 11),
                                           JobClaim(jobID: second[0].id, runner: "r", epoch: 12)], now: 3)
            _ = try await other.claimJobs([JobClaim(jobID: second[1].id, runner: "s", epoch: 13)], now: 3)
            typealias End = PostgresStore.JobEnd
            let ends = [
                End(id: first[1].id, epoch: 11, status: .succeeded, reason: "", now: 4),
                End(id: first[0].id, epoch: 10, status: .succeeded, reason: "", now: 4),
                End(id: second[0].id, epoch: 9, status: .failed, reason: "", now: 4),
                End(id: second[1].id, epoch: 13, status: .failed, reason: "", now: 4),
                End(id: 987_654, epoch: 1, status: .failed, reason: "", now: 4),
                End(id: 987_655, epoch: nil, status: .cancelled, reason: "", now: 4),
                End(id: third[0].id, epoch: nil, status: .cancelled, reason: "cancelled by t", now: 4),
                End(id: first[0].id, epoch: 10, status: .failed, reason: "", now: 5),
            ]
            let results = try await store.transaction(explicit: false) { [logger = store.logger, holder = store.coordinatorID] db in
                try await PostgresStore.endJobs(db, ends, holder: holder, logger: logger)
            }
            try #require(results.count == ends.count)
            func ended(_ index: Int) -> (RunRecord, JobRecord)? { (try? results[index].get()).map { ($0.run, $0.job) } }
            func refusal(_ index: Int) -> StoreError? {
                if case .failure(let error) = results[index] { error } else { nil }
            }
            // first[0] has the lower id: ended first, its run still running; first[1] ended it.
            #expect(ended(1)?.1.id == first[0].id && ended(1)?.1.status == .succeeded && ended(1)?.0.status == .running)
            #expect(ended(0)?.1.id == first[1].id && ended(0)?.0.status == .succeeded && ended(0)?.0.finishedAt == 4)
            #expect(refusal(2) == .staleLease(jobID: second[0].id, epoch: 9))
            #expect(refusal(3) == .heldElsewhere(jobID: second[1].id))
            #expect(refusal(4) == .staleLease(jobID: 987_654, epoch: 1))
            #expect(refusal(5)?.code == .notFound)
            #expect(ended(6)?.1.status == .cancelled && ended(6)?.1.reason == "cancelled by t")
            #expect(refusal(7) == .staleLease(jobID: first[0].id, epoch: 10), "a job ended twice in one statement")
            let stored = Dictionary(uniqueKeysWithValues: try await store.jobs(ids: [first[0].id, second[0].id, second[1].id, third[0].id])
                .map { ($0.id, $0.status) })
            #expect([first[0].id, second[0].id, second[1].id, third[0].id].map { stored[$0] } == [.succeeded, .running, .running, .cancelled])
            #expect(try await store.nodes(jobIDs: [third[0].id]).map(\.status) == [.cancelled])
            #expect(try await store.run(id: first[0].runID)?.status == .succeeded)
            store.close()
            other.close()
        }
    }

    /// An end that carries free slots (`finishJobAndClaim`) claims for them once it is stored,
    /// in the same statement as the ends next to it: the queue's fitting jobs in order, answered
    /// to that end alone. A refused end claims nothing.
    @Test func anEndsClaimHappensOnlyOnceItsEndIsStored() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(store, labels: [[]])
            var jobs: [JobRecord] = []
            for _ in 0..<4 { jobs += try await Self.queue(store, version, definition) }
            _ = try await store.claimJobs([JobClaim(jobID: jobs[0].id, runner: "r", epoch: 10),
                                           JobClaim(jobID: jobs[1].id, runner: "r", epoch: 11)], now: 3)
            typealias End = PostgresStore.JobEnd
            func endJobs(_ ends: [End]) async throws -> [Result<EndedAndClaimed, StoreError>] {
                try await store.transaction(explicit: false) { [logger = store.logger, holder = store.coordinatorID] db in
                    try await PostgresStore.endJobs(db, ends, holder: holder, logger: logger)
                }
            }
            let slot = ClaimSlot(runner: "r", labels: [], running: 1, epochs: [20])
            let refused = try await endJobs([End(id: jobs[0].id, epoch: 9, status: .succeeded, reason: "", now: 4, slots: [slot])])
            #expect(refused.count == 1 && (try? refused[0].get()) == nil)
            #expect(try await store.job(id: jobs[2].id)?.status == .queued, "a refused end claimed")
            let ended = try await endJobs([End(id: jobs[1].id, epoch: 11, status: .succeeded, reason: "", now: 4),
                                           End(id: jobs[0].id, epoch: 10, status: .failed, reason: "", now: 4,
                                               slots: [ClaimSlot(runner: "r", labels: [], running: 0, epochs: [21, 22])])])
            let first = try #require(try? ended[0].get())
            let second = try #require(try? ended[1].get())
            #expect(first.claimed.isEmpty && first.job.status == .succeeded && second.job.status == .failed)
            #expect(second.claimed.map(\.job.id) == [jobs[2].id, jobs[3].id] && second.claimed.map(\.job.epoch) == [21, 22])
            #expect(second.claimed.allSatisfy { $0.nodes.map(\.name) == ["n"] && $0.job.status == .running })
            store.close()
        }
    }

    /// A batch's runs that the database refuses as a whole (here one run's branch holds a NUL
    /// byte, which text cannot) go again one by one: that run fails alone and stores nothing,
    /// and every other run of its batch is stored with its job.
    @Test func aRunTheDatabaseRefusesFailsAloneInItsBatch() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(store, labels: [[]])
            let results = await withTaskGroup(of: (Int, RunRecord?).self) { group in
                for index in 0..<20 {
                    group.addTask {
                        let run = try? await store.createRun(version: version, definition: definition,
                                                             branch: index == 7 ? "bad\u{0}branch" : "main", commit: "",
                                                             trigger: "api", triggeredBy: "t", now: 2).0
                        return (index, run)
                    }
                }
                return await group.reduce(into: [Int: RunRecord?]()) { $0[$1.0] = $1.1 }
            }
            #expect(results[7]! == nil, "a run with a NUL byte was stored")
            let stored = results.compactMap { $0.value }
            #expect(stored.count == 19 && Set(stored.map(\.id)).count == 19)
            #expect(try await store.runs(limit: 100, filter: RunFilter()).count == 19)
            #expect(try await store.activeJobs().count == 19, "a stored run without its job, or a refused run's job")
            store.close()
        }
    }

    /// A batch's ends that the database refuses as a whole (here one end's reason holds a NUL
    /// byte, which text cannot) go again one by one: that end fails alone, and every other end
    /// of its batch is stored.
    @Test func anEndTheDatabaseRefusesFailsAloneInItsBatch() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(store, labels: [[]])
            var ids: [Int64] = []
            for _ in 0..<20 { ids.append(try await Self.queue(store, version, definition)[0].id) }
            let claims = ids.enumerated().map { JobClaim(jobID: $0.element, runner: "r", epoch: Int64(10 + $0.offset)) }
            _ = try await store.claimJobs(claims, now: 3)
            let results = await withTaskGroup(of: (Int64, StoreError?).self) { group in
                for (index, claim) in claims.enumerated() {
                    group.addTask {
                        do {
                            _ = try await store.finishJob(id: claim.jobID, epoch: claim.epoch, status: .failed,
                                                          reason: index == 7 ? "bad\u{0}byte" : "exit 1", now: 4)
                            return (claim.jobID, nil)
                        } catch {
                            return (claim.jobID, error as? StoreError ?? StoreError(.inconsistent, "\(error)"))
                        }
                    }
                }
                return await group.reduce(into: [Int64: StoreError?]()) { $0[$1.0] = $1.1 }
            }
            let stored = Dictionary(uniqueKeysWithValues: try await store.jobs(ids: ids).map { ($0.id, $0) })
            for (index, id) in ids.enumerated() {
                let job = try #require(stored[id])
                if index == 7 {
                    #expect(results[job.id]??.code == .database && job.status == .running, "job \(job.id)")
                } else {
                    #expect(results[job.id]! == nil && job.status == .failed, "job \(job.id): \(String(describing: results[job.id]))")
                }
            }
            store.close()
        }
    }

    /// PostgreSQL's rule for an attempt's status (`heddle_attempt_status`, used by every end,
    /// cancel and requeue there) gives `Outcome.attemptStatus`'s answer for every list of up to
    /// three job statuses, the empty one included.
    @Test func theDatabasesAttemptStatusIsOutcomes() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            var built: [[Status]] = [[]]
            var longest: [[Status]] = [[]]
            for _ in 0..<3 {
                longest = longest.flatMap { list in Status.allCases.map { list + [$0] } }
                built += longest
            }
            let lists = built
            let expected = 1 + 7 + 49 + 343
            #expect(lists.count == expected)
            let logger = store.logger
            // One statement for all of them: each list a comma-joined text, split again there.
            let joined = lists.map { $0.map(\.rawValue).joined(separator: ",") }
            let answers = try await store.read { db in
                try await db.rows("""
                    SELECT heddle_attempt_status(string_to_array(l, ',')) AS s
                    FROM unnest(\(joined)::text[]) WITH ORDINALITY AS t(l, i) ORDER BY i
                    """, logger: logger).map { try $0.get("s", as: String.self) }
            }
            #expect(answers.count == lists.count)
            for (list, answer) in zip(lists, answers) {
                #expect(answer == Outcome.attemptStatus(jobs: list).rawValue, "\(list)")
            }
            store.close()
        }
    }

    /// Two coordinators ending the last two jobs of one attempt at once: each end locks the
    /// run, then reads its jobs afresh (`heddle_end_jobs`), so one of them sees both ended and
    /// the run and its attempt end, whichever commits first.
    @Test func twoCoordinatorsEndingTheLastTwoJobsOfARunAtOnceEndIt() async throws {
        try await TestDatabase.with(.postgres) { database in
            let first = try #require(try await database.open() as? PostgresStore)
            let second = try #require(try await database.open() as? PostgresStore)
            let (version, definition) = try await Self.pipeline(first, labels: [[], []])
            for round in 0..<24 {
                let jobs = try await Self.queue(first, version, definition)
                _ = try await first.claimJobs([JobClaim(jobID: jobs[0].id, runner: "a", epoch: 1)], now: 3)
                _ = try await second.claimJobs([JobClaim(jobID: jobs[1].id, runner: "b", epoch: 1)], now: 3)
                let last: Status = [.failed, .succeeded, .cancelled][round % 3]
                async let one = first.finishJob(id: jobs[0].id, epoch: 1, status: .succeeded, reason: "", now: 4)
                async let other = second.finishJob(id: jobs[1].id, epoch: 1, status: last, reason: "r", now: 5)
                let (ended, alsoEnded) = try await (one, other)
                #expect(ended.1.status == .succeeded && alsoEnded.1.status == last && alsoEnded.1.reason == "r")
                #expect([ended.0.status, alsoEnded.0.status].contains(last), "neither end saw the run end (round \(round))")
                let run = try #require(try await first.run(id: jobs[0].runID))
                #expect(run.status == last && run.finishedAt != nil && run.startedAt == 3, "round \(round): \(run)")
                let attempt = try #require(try await first.attempt(runID: run.id, number: 1))
                #expect(attempt.status == last && attempt.finishedAt != nil)
                let nodes = try await first.nodes(jobIDs: jobs.map(\.id))
                // Pending nodes end with their job: cancelled with a cancelled one, else skipped.
                #expect(nodes.count == 2 && nodes.allSatisfy { $0.status == ($0.jobID == jobs[1].id && last == .cancelled ? .cancelled : .skipped) })
            }
            first.close()
            second.close()
        }
    }

    /// A coordinator answers a trigger's `latestPipeline` from the version it read before; after
    /// another coordinator's push, the run's insert refuses that version, and the next lookup
    /// reads the new one. A re-run's `createRun` of an older version is not refused.
    @Test func aTriggerAfterAnotherCoordinatorsPushRunsTheNewVersion() async throws {
        try await TestDatabase.with(.postgres) { database in
            let first = try #require(try await database.open() as? PostgresStore)
            let second = try #require(try await database.open() as? PostgresStore)
            func push(_ store: PostgresStore, _ command: String) async throws -> (PipelineVersionRecord, PipelineDefinition) {
                let source = "name: ci\njobs:\n  j: { nodes: { n: { run: '\(command)' } } }\n"
                let definition = try ActParser(file: "ci.act").parse(source)
                return (try await store.savePipeline(project: "shop", definition: definition, source: source, now: 1), definition)
            }
            func latestRun(_ store: PostgresStore) async throws -> (RunRecord, [JobRecord])? {
                let version = try #require(try await store.latestPipeline(project: "shop", pipeline: "ci"))
                return try await store.createLatestRun(version: version, definition: try ActParser(file: "ci.act").parse(version.source),
                                                       branch: "main", commit: "", trigger: "api", triggeredBy: "t", fork: false,
                                                       inputs: [:], now: 2)
            }
            let (v1, definition1) = try await push(second, "true")
            let run1 = try #require(try await latestRun(first))
            #expect(run1.0.pipelineVersionID == v1.id)
            let (v2, _) = try await push(second, "false")
            // `first` still knows v1 as the latest: its insert is refused, nothing written.
            #expect(try await first.latestPipeline(project: "shop", pipeline: "ci")?.id == v1.id)
            let queued = try await first.activeJobs().count
            #expect(try await latestRun(first) == nil)
            #expect(try await first.activeJobs().count == queued)
            // Read again: v2.
            let run2 = try #require(try await latestRun(first))
            #expect(run2.0.pipelineVersionID == v2.id)
            #expect(try await first.run(id: run2.0.id)?.pipelineVersionID == v2.id)
            // Its own push is known at once.
            let (v3, _) = try await push(first, "echo 3")
            #expect(try await first.latestPipeline(project: "shop", pipeline: "ci")?.id == v3.id)
            // An explicit older version (a re-run's, a schedule's) is still created.
            let older = try await first.createRun(version: v1, definition: definition1, branch: "main", commit: "",
                                                  trigger: "api", triggeredBy: "t", now: 3)
            #expect(older.0.pipelineVersionID == v1.id)
            first.close()
            second.close()
        }
    }

    /// `--data` is checked against the marker the database recorded: the first coordinator
    /// writes it; the same directory passes; another directory, one without a marker, and a
    /// directory of another database with data in it are refused, naming `--data`.
    @Test func aCoordinatorOnAnotherDataDirectoryIsRefused() async throws {
        try await TestDatabase.with(.postgres) { database in
            let store = try #require(try await database.open() as? PostgresStore)
            let shared = try TemporaryDirectory("heddle-shared")
            let other = try TemporaryDirectory("heddle-other")
            defer { shared.remove(); other.remove() }
            try await store.checkDataDirectory(shared.path)
            #expect(FileManager.default.fileExists(atPath: "\(shared.path)/\(PostgresStore.dataMarker)"))
            try await store.checkDataDirectory(shared.path)  // the same directory, again
            func refused(_ directory: String, _ fragment: String) async {
                do {
                    try await store.checkDataDirectory(directory)
                    Issue.record("--data \(directory) was accepted")
                } catch let error as StoreError {
                    #expect(error.code == .inconsistent && error.message.contains("--data \(directory)") && error.message.contains(fragment),
                            "\(error.message)")
                } catch {
                    Issue.record("unexpected \(error)")
                }
            }
            await refused(other.path, "has no heddle-data.id")
            try Data("another\n".utf8).write(to: URL(fileURLWithPath: "\(other.path)/\(PostgresStore.dataMarker)"))
            await refused(other.path, "says another")
            store.close()
            // A fresh database given a directory that holds another database's logs.
            try await TestDatabase.with(.postgres) { fresh in
                let second = try #require(try await fresh.open() as? PostgresStore)
                try FileManager.default.createDirectory(atPath: "\(shared.path)/logs/1", withIntermediateDirectories: true)
                do {
                    try await second.checkDataDirectory(shared.path)
                    Issue.record("a directory of another database was accepted")
                } catch let error as StoreError {
                    #expect(error.message.contains("--data \(shared.path) holds another database's data"), "\(error.message)")
                }
                second.close()
            }
        }
    }

    @Test func signalsSurviveTheirNotificationAndBrokenOnesAreDropped() {
        let signals: [ClusterSignal] = [.queue, .state, .resync, .moved(jobID: 7, position: 0.1 + 0.2),
                                        .moved(jobID: 8, position: -3.5e-9), .cancel(jobID: 9, reason: "by a|b"),
                                        .run(runIDs: [3]), .hello]
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
