import Crypto
import Foundation
import Logging
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Artifacts verified before they exist, uploads that resume after a restart, results that
/// count once, and logs kept within their limit.
@Suite struct DurabilityTests {
    /// A core on a temporary data directory with one run whose job is leased to runner
    /// session 1 (its outbox in `runner`).
    struct Setup {
        let database: TestDatabase
        var data: TemporaryDirectory { database.directory }
        var core: CoordinatorCore
        var job: LeaseRef
        var runID: Int64
        var runner: RecordingOutbox
        var session: UInt64

        /// `wrap` may put the store behind another (an `InterposedStore` that fails calls).
        static func make(_ database: TestDatabase, limits: CoordinatorLimits = CoordinatorLimits(),
                         wrap: (any CoordinatorStore) -> any CoordinatorStore = { $0 }) async throws -> Setup {
            let core = try CoordinatorCore(store: wrap(try await database.open()), directory: database.directory.path,
                                           limits: limits, logger: Logger(label: "test"))
            try await core.push("shop", "name: ci\njobs:\n  j:\n    nodes:\n      n: { run: 'true' }\n")
            let runID = try await core.trigger("shop", "ci")
            let runner = RecordingOutbox()
            let session = try await core.connectRunner(runner, labels: [])
            let job = LeaseRef(try await runner.assignment().job)
            return Setup(database: database, core: core, job: job, runID: runID, runner: runner, session: session)
        }

        /// A log chunk for the job's node `n`.
        func append(at offset: Int, _ data: Data) -> LogBytes {
            LogBytes(job: job, node: "n", offset: UInt64(offset), data: data)
        }

        /// Appends the pieces to node `n` one after another, each waited for until durable;
        /// returns the whole log.
        func writeLog(_ pieces: [Data]) async throws -> Data {
            var log = Data()
            for piece in pieces {
                _ = try await core.appendLog(session: session, append(at: log.count, piece))
                log += piece
            }
            return log
        }

        /// Reports node `n` in `status` (exit code 1 when failed, 0 when succeeded).
        func node(_ status: Status) async throws {
            let exitCode: Int? = status == .failed ? 1 : status == .succeeded ? 0 : nil
            try await core.nodeUpdate(session: session, NodeReport(job: job, node: "n", status: status, exitCode: exitCode))
        }

        /// The runner reports the job finished as `status`.
        func finish(_ status: Status, reason: String = "") async throws {
            try await core.jobFinished(session: session, JobResult(job: job, status: status, reason: reason))
        }

        func declare(_ name: String, _ content: [UInt8], claimedSize: Int? = nil, claimedHash: [UInt8]? = nil) async throws -> UploadGrant {
            try await core.declareArtifact(session: session, ArtifactDeclaration(
                job: job, name: name, size: UInt64(claimedSize ?? content.count),
                sha256: Data(claimedHash ?? Array(SHA256.hash(data: content)))))
        }

        func chunk(_ upload: UInt64, _ offset: Int, _ bytes: ArraySlice<UInt8>) async throws {
            try await core.artifactChunk(session: session, ArtifactBytes(job: job, uploadID: upload, offset: UInt64(offset),
                                                                         data: Data(bytes)))
        }

        func commit(_ upload: UInt64) async throws -> Int64 {
            try await core.commitArtifact(session: session, job: job, uploadID: upload)
        }

        /// Reads the run's log bytes (without following) and returns its log chunks.
        func readLogs() async throws -> [LogChunk] {
            let watcher = RecordingOutbox()
            let viewer = try await core.open("viewer", .viewer, watcher)
            try await core.watch(session: viewer, requestID: 5, WatchRequest(runID: runID))
            var chunks: [LogChunk] = []
            _ = try await watcher.first("the end of the watch") { envelope -> Bool? in
                guard case .watchEvent(let event) = envelope.body else { return nil }
                if case .log(let log) = event.event {
                    chunks.append(LogChunk(jobID: Int64(log.jobID), job: log.job, node: log.node, offset: log.offset,
                                           data: log.data, dropped: log.dropped))
                }
                if case .end = event.event { return true }
                return nil
            }
            return chunks
        }

        var blobFiles: [String] {
            let enumerator = FileManager.default.enumerator(atPath: "\(data.path)/blobs")
            return (enumerator?.allObjects as? [String] ?? []).filter { $0.count > 60 }
        }
    }

    let content = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }

    /// The artifact's bytes were stored but the store could not record it (a database
    /// restarting): the commit fails, and the same commit sent again records it, without its
    /// bytes sent again.
    @Test(arguments: StoreKind.allCases) func aCommitTheStoreCouldNotRecordSucceedsWhenSentAgain(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        var hooks: StoreHooks?
        let setup = try await Setup.make(database, wrap: { store in
            let interposed = InterposedStore(store)
            hooks = interposed.hooks
            return interposed
        })
        let grant = try await setup.declare("a.bin", content)
        try await setup.chunk(grant.uploadID, 0, content[...])
        hooks?.fail(["insertArtifact"])
        await #expect(throws: (any Error).self) { _ = try await setup.commit(grant.uploadID) }
        hooks?.fail([])
        // Declared again (the runner reconnected): every byte is there already.
        let again = try await setup.declare("a.bin", content)
        #expect(again.uploadID == grant.uploadID && again.committedOffset == UInt64(content.count))
        let id = try await setup.commit(grant.uploadID)
        let listed = try await setup.core.catalog.artifacts(runID: setup.runID, as: Principal(name: "admin", role: .admin))
        #expect(listed.map(\.id) == [id])
        #expect(listed.first?.sha256 == SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined())
        #expect(setup.blobFiles.count == 1)
        await #expect(throws: CoordinatorError.self) { _ = try await setup.commit(grant.uploadID) }
      }
    }

    @Test(arguments: StoreKind.allCases) func aWrongHashOrSizeStoresNothing(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup.make(database)
        let wrongHash = try await setup.declare("a.bin", content, claimedHash: Array(repeating: 7, count: 32))
        try await setup.chunk(wrongHash.uploadID, 0, content[...])
        await #expect(throws: CoordinatorError.self) { _ = try await setup.commit(wrongHash.uploadID) }
        let short = try await setup.declare("b.bin", content, claimedSize: content.count + 10)
        try await setup.chunk(short.uploadID, 0, content[...])
        await #expect(throws: CoordinatorError.self) { _ = try await setup.commit(short.uploadID) }
        let long = try await setup.declare("c.bin", Array(content.prefix(100)))
        await #expect(throws: CoordinatorError.self) { try await setup.chunk(long.uploadID, 0, content[...]) }
        #expect(try await setup.core.catalog.artifacts(runID: setup.runID, as: admin).isEmpty)
        #expect(setup.blobFiles.isEmpty)
      }
    }

    @Test(arguments: StoreKind.allCases) func anArtifactOverTheLimitIsRefusedBeforeAnyByte(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        var limits = CoordinatorLimits()
        limits.maximumArtifactSize = 1000
        let setup = try await Setup.make(database, limits: limits)
        do {
            _ = try await setup.declare("big.bin", content)
            Issue.record("an artifact over the limit was accepted")
        } catch let error as CoordinatorError {
            #expect(error.code == .resourceExhausted)
        }
      }
    }

    @Test(arguments: StoreKind.allCases) func anUploadResumesAfterARestartFromWhatWasStored(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        var setup = try await Setup.make(database)
        // Big enough that whole blocks reach the disk before the restart (a few MiB at a time).
        let content = (0..<10_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let sent = 9_000_000
        let declared = try await setup.declare("r.bin", content)
        for offset in stride(from: 0, to: sent, by: 500_000) {
            try await setup.chunk(declared.uploadID, offset, content[offset..<offset + 500_000])
        }
        try await setup.core.uploads.settle()

        // The coordinator goes away and comes back on the same data.
        let blobs = try BlobStore(directory: setup.data.path)
        setup.core = CoordinatorCore(store: try await database.open(), artifacts: blobs,
                                     logs: LogFiles(directory: "\(setup.data.path)/logs", segmentSize: 1 << 20),
                                     logger: Logger(label: "test"))
        try await setup.core.recover()
        setup.session = try await setup.core.connectRunner(RecordingOutbox(), labels: [], running: [setup.job])
        let resumed = try await setup.declare("r.bin", content)
        #expect(resumed.uploadID == declared.uploadID)
        // What was on disk: whole blocks (what was still buffered is sent again).
        let stored = Int(resumed.committedOffset)
        #expect(stored % 4096 == 0 && stored <= sent && stored >= sent - (4 << 20))
        try await setup.chunk(resumed.uploadID, stored, content[stored...])
        let id = try await setup.commit(resumed.uploadID)
        let data = try await setup.core.catalog.readArtifact(ArtifactRead(artifactID: id), as: admin)
        #expect(data.artifact.size == Int64(content.count))
        #expect(data.artifact.sha256 == hex(SHA256.hash(data: content)))
        let inFlight = blobs.inFlight.total
        #expect(inFlight == 0, "every chunk accepted was written and hashed")
      }
    }

    @Test(arguments: StoreKind.allCases) func artifactsOfEveryRunAreTheLatestThousand(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup.make(database)
        // The coordinator's own store (another coordinator's may not write for a job held here).
        let store = await setup.core.store
        // Written 8 at a time: they share transactions (group commit on SQLite); on PostgreSQL
        // each waits for the job's row (every write is fenced on it), so more at once wait
        // longer, and on a machine busy with the other suites (100 at a time was seen to, and
        // once 20) past a call's deadline.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<1001 {
                if index >= 8 { try await group.next() }
                group.addTask {
                    _ = try await store.insertArtifact(jobID: setup.job.jobID, epoch: setup.job.epoch, name: "a\(index)", size: 1,
                                                       sha256: String(repeating: "0", count: 64), now: 0)
                }
            }
            try await group.waitForAll()
        }
        let all = try await setup.core.catalog.artifacts(runID: nil, as: admin)
        let ofTheRun = try await setup.core.catalog.artifacts(runID: setup.runID, as: admin)
        #expect(ofTheRun.count == 1001)
        #expect(all.count == 1000)
        #expect(all.map(\.id) == Array(ofTheRun.map(\.id).suffix(1000)), "the latest, oldest first")
      }
    }

    @Test(arguments: StoreKind.allCases) func aResultSentTwiceCountsOnce(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup.make(database)
        try await setup.node(.running)
        try await setup.node(.succeeded)
        try await setup.finish(.succeeded)
        try await setup.finish(.succeeded)
        // Decided once: a different word afterwards changes nothing.
        try await setup.finish(.failed)
        #expect(try await setup.core.catalog.runDetail(runID: setup.runID, as: admin).run.status == .succeeded)
        // Another epoch is not the same job's result.
        let other = JobResult(job: LeaseRef(jobID: setup.job.jobID, epoch: setup.job.epoch + 1), status: .succeeded, reason: "")
        await #expect(throws: CoordinatorError.self) { try await setup.core.jobFinished(session: setup.session, other) }
      }
    }

    /// The runner's word alone cannot make a job succeed: its nodes decide.
    @Test(arguments: StoreKind.allCases, [
        ([Status.running], Status.succeeded, Status.failed, Status.failed,
         "node 'n' was still running when the runner finished the job"),
        ([.running, .failed], .succeeded, .failed, .failed, "node 'n' failed"),
        ([], .succeeded, .failed, .skipped, "the runner reported success but node 'n' is pending"),
        ([.running], .cancelled, .cancelled, .cancelled, "cancelled by the runner"),
        ([.running, .succeeded], .succeeded, .succeeded, .succeeded, ""),
    ])
    func aJobsResultFollowsItsNodes(kind: StoreKind, expected: ([Status], Status, Status, Status, String)) async throws {
        let (updates, reported, job, node, reason) = expected
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup.make(database)
        for status in updates { try await setup.node(status) }
        try await setup.finish(reported, reason: reported == .cancelled ? "cancelled by the runner" : "")
        let detail = try await setup.core.catalog.runDetail(runID: setup.runID, as: admin)
        #expect(detail.jobs[0].status == job)
        #expect(detail.jobs[0].reason == reason)
        #expect(detail.jobs[0].nodes[0].status == node)
        #expect(detail.run.status == job)
      }
    }

    /// Log bytes sent just before the JobFinish (not yet committed when it arrives) are stored
    /// and acknowledged, not dropped with the job's lease.
    @Test(arguments: StoreKind.allCases) func logBytesSentJustBeforeTheResultAreKept(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await Setup.make(database)
        try await setup.node(.running)
        var expected = Data()
        for index in 0..<50 {
            let piece = Data(repeating: UInt8(65 + index % 26), count: 10_000)
            _ = try await setup.core.queueLog(session: setup.session, setup.append(at: expected.count, piece))  // not waited for
            expected += piece
        }
        try await setup.node(.succeeded)
        try await setup.finish(.succeeded)
        let acked = try await setup.runner.first("the acknowledgement of every byte") { envelope -> Bool? in
            if case .logAck(let ack) = envelope.body, ack.durableOffset == UInt64(expected.count) { return true }
            if case .error(let error) = envelope.body { throw TestFailure("an error instead: \(error.message)") }
            return nil
        }
        #expect(acked)
        #expect(try await setup.readLogs().reduce(Data()) { $0 + $1.data } == expected)
      }
    }

    @Test(arguments: StoreKind.allCases) func aLogPastItsLimitKeepsHeadAndTailAndSaysWhatWasDropped(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        var limits = CoordinatorLimits()
        limits.maximumLogBytes = 64 * 1024
        let setup = try await Setup.make(database, limits: limits)
        let chunk = 4096
        let total = 1024 * 1024
        for offset in stride(from: 0, to: total, by: chunk) {
            let data = Data((0..<chunk).map { UInt8(truncatingIfNeeded: (offset + $0) / chunk) })
            _ = try await setup.core.appendLog(session: setup.session, setup.append(at: offset, data))
        }
        // Segments are dropped in the background, off the commit path.
        var chunks: [LogChunk] = []
        try await waitUntil("the log trimmed to its limit") {
            chunks = try await setup.readLogs()
            return chunks.reduce(0) { $0 + $1.data.count } <= Int(limits.maximumLogBytes + limits.maximumLogBytes / 8)
        }
        let stored = chunks.reduce(0) { $0 + $1.data.count }
        let dropped = chunks.reduce(0) { $0 + Int($1.dropped) }
        #expect(stored <= Int(limits.maximumLogBytes + limits.maximumLogBytes / 8))
        #expect(stored + dropped == total)
        #expect(chunks.first?.offset == 0 && chunks.first?.dropped == 0)
        let last = try #require(chunks.last)
        #expect(last.offset + UInt64(last.data.count) == UInt64(total), "the tail ends where the log ends")
        #expect(chunks.contains { $0.dropped > 0 })
      }
    }
}

/// A damaged or missing database is refused at start with what to do, never replaced by an
/// empty fabric while logs or artifacts are still there.
@Suite struct DatabaseOpenTests {
    func refusal(_ directory: String) -> String {
        do {
            _ = try SQLiteStore.open(directory: directory)
            return "opened"
        } catch {
            return "\(error)"
        }
    }

    @Test func aCorruptDatabaseIsRefusedNamingTheFile() throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: data.file("heddle.sqlite")))
        let message = refusal(data.path)
        #expect(message.hasPrefix("cannot open the database \(data.file("heddle.sqlite")): file is not a database (SQLite error 26)"), "\(message)")
        #expect(message.hasSuffix("restore it from a backup, or move \(data.path) away to start an empty fabric"))
    }

    @Test(arguments: [true, false])
    func anEmptyOrMissingDatabaseBesideStoredDataIsRefused(emptyFile: Bool) throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        try FileManager.default.createDirectory(atPath: data.file(emptyFile ? "logs/7" : "blobs/ab"), withIntermediateDirectories: true)
        if emptyFile { _ = FileManager.default.createFile(atPath: data.file("heddle.sqlite"), contents: Data()) }
        let folder = emptyFile ? "logs" : "blobs"
        #expect(refusal(data.path) == "the database \(data.file("heddle.sqlite")) \(emptyFile ? "is empty" : "is missing") but \(data.path)/\(folder) holds data: restore heddle.sqlite from a backup, or move \(data.path) away to start an empty fabric")
    }

    @Test func aNewDirectoryStartsAnEmptyFabric() throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        #expect(refusal(data.path) == "opened")
        #expect(refusal(data.path) == "opened")
    }
}
