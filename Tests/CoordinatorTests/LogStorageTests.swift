import Foundation
import GRDB
import Logging
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Node logs on disk: segment files, group commit, acknowledgements, and a database that
/// still holds log bytes of an older version.
@Suite struct LogStorageTests {
    func bytes(_ count: Int, seed: Int = 0) -> Data {
        Data((0..<count).map { UInt8(truncatingIfNeeded: ($0 + seed) % 251) })
    }

    @Test func segmentsRollAndAWriteAtAnEarlierOffsetReplacesWhatFollowed() throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let block = 4096
        let files = LogFiles(directory: "\(data.path)/logs", segmentSize: Int64(block))
        let key = LogKey(jobID: 7, node: "build")
        func stored(_ files: LogFiles, end: Int) throws -> Data {
            var out = Data()
            while let piece = try files.read(key, from: Int64(out.count), end: Int64(end), piece: 3000) {
                #expect(piece.offset == Int64(out.count))
                out += piece.data
            }
            return out
        }
        let first = bytes(2 * block + 1000)
        try files.writeDurably([LogWrite(key: key, offset: 0, data: first)])
        #expect(files.segments(key) == [0, Int64(block), Int64(2 * block)])
        #expect(try stored(files, end: first.count) == first)
        // Bytes past the durable length (say, written before a crash) are replaced, not kept.
        let replaced = block + 500
        try files.writeDurably([LogWrite(key: key, offset: Int64(replaced), data: Data("XYZ".utf8))])
        #expect(files.segments(key) == [0, Int64(block)])
        #expect(try stored(files, end: replaced + 3) == first.prefix(replaced) + Data("XYZ".utf8))
        // The same from a fresh instance (after a restart): the files are the truth, and the
        // padding of the last block written does not show.
        let reopened = LogFiles(directory: "\(data.path)/logs", segmentSize: Int64(block))
        try reopened.writeDurably([LogWrite(key: key, offset: Int64(replaced + 1), data: Data("ab".utf8))])
        #expect(try stored(reopened, end: replaced + 3) == first.prefix(replaced) + Data("Xab".utf8))
        // Dropping the middle leaves a jump in offsets; the segment being written stays.
        let more = bytes(3 * block, seed: 3)
        try reopened.writeDurably([LogWrite(key: key, offset: Int64(replaced + 3), data: more)])
        let end = replaced + 3 + more.count
        reopened.drop(key, from: Int64(block), to: Int64(3 * block))
        var records: [LogChunkRecord] = []
        while let piece = try reopened.read(key, from: records.last.map { $0.offset + Int64($0.data.count) } ?? 0,
                                            end: Int64(end)) {
            records.append(piece)
        }
        #expect(records.first?.offset == 0 && records.first?.data == first.prefix(block))
        #expect(records.dropFirst().first?.offset == Int64(3 * block))
        #expect(records.last.map { $0.offset + Int64($0.data.count) } == Int64(end))
        #expect(reopened.storedBytes(key, end: Int64(end)) == Int64(end - 2 * block))
    }

    @Test func directFilesWriteWholeBlocksAndCutThePadding() throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let path = "\(data.path)/f"
        let content = bytes(3 * 4096 + 123)
        let file = try DirectFile(path: path, scratch: WriteScratch(capacity: 8192))
        try file.append(content.prefix(5000))
        try file.flush()
        // More than the scratch holds: whole blocks are written as it fills.
        try file.append(content.dropFirst(5000))
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).count >= 8192)
        try file.flush()
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).prefix(content.count) == content)
        try file.cut()
        file.close()
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == content)
        // Reopened in the middle of a block: what follows is cut, the rest continues.
        let again = try DirectFile(path: path, length: 4100, scratch: WriteScratch(capacity: 8192))
        try again.append(Data("tail".utf8))
        try again.cut()
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == content.prefix(4100) + Data("tail".utf8))
    }

    @Test(arguments: [true, false])
    func partialBlocksArePaddedThenCutWithOrWithoutThePageCache(direct: Bool) throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let path = "\(data.path)/f"
        let content = bytes(10_000)
        let file = try DirectFile(path: path, scratch: WriteScratch(capacity: 8192), direct: direct)
        #expect(file.direct == direct)
        try file.append(content.prefix(3000))
        try file.flush()
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).count == 4096, "the partial block, padded")
        try file.append(content.dropFirst(3000))
        try file.cut()
        try file.sync()
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == content)
    }

    func storedLog(_ core: CoordinatorCore, runID: Int64) async throws -> Data {
        let watcher = RecordingOutbox()
        let viewer = try await core.open("viewer", .viewer, watcher)
        try await core.watch(session: viewer, requestID: 5, WatchRequest(runID: runID))
        let (logs, _) = try await watcher.watchedLogs()
        #expect(logs.count <= 1)
        return logs.values.first ?? Data()
    }

    @Test(arguments: StoreKind.allCases) func chunksQueuedTogetherAreCommittedTogetherAndAcknowledgedOnceDurable(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await DurabilityTests.Setup.make(database)
        let (core, runner, job, runID, data) = (setup.core, setup.runner, setup.job, setup.runID, setup.data)
        var expected = Data()
        let count = 200
        for index in 0..<count {
            let append = LogBytes(job: job, node: "n", offset: UInt64(expected.count), data: bytes(1000 + index, seed: index))
            expected += append.data
            // Queued, not waited for: the session reads its next frame at once.
            #expect(try await core.queueLog(session: setup.session, append) == nil)
        }
        var acks: [UInt64] = []
        while acks.last != UInt64(expected.count) {
            if case .logAck(let ack) = try await runner.next().body { acks.append(ack.durableOffset) }
        }
        #expect(acks == acks.sorted(), "acknowledgements only move forward")
        #expect(await core.logBatches < count, "chunks that arrive while a commit runs share the next one")
        // A chunk already durable is acknowledged at once.
        let again = LogBytes(job: job, node: "n", offset: 0, data: expected.prefix(10))
        #expect(try await core.queueLog(session: setup.session, again) == UInt64(expected.count))

        // What was acknowledged is there after a restart.
        let restarted = try CoordinatorCore(store: try await database.open(), directory: data.path,
                                            logger: Logger(label: "test"))
        try await restarted.recover()
        #expect(try await storedLog(restarted, runID: runID) == expected)
      }
    }

    /// Bytes the store recorded that the data directory does not hold (a coordinator on
    /// another --data) are reported missing, by a read and by a watch, never as trimmed by the
    /// size limit; a log the limit did trim still reads with its gap.
    @Test func bytesMissingFromTheDataDirectoryAreReportedMissingNotTrimmed() async throws {
      try await TestDatabase.with(.sqlite) { database in
        var limits = CoordinatorLimits()
        limits.maximumLogBytes = 64 * 1024
        let setup = try await DurabilityTests.Setup.make(database, limits: limits)
        _ = try await setup.writeLog([Data(repeating: 65, count: 95)])
        let admin = Principal(name: "root", role: .admin)
        let read = LogRead(runID: setup.runID, job: "j", node: "n")
        #expect(try await setup.core.catalog.readLog(read, as: admin).data.count == 95)
        try FileManager.default.removeItem(atPath: "\(setup.data.path)/logs")
        do {
            _ = try await setup.core.catalog.readLog(read, as: admin)
            Issue.record("a log whose bytes are gone was read")
        } catch let error as CoordinatorError {
            #expect(error.message.contains("bytes 0 to 95 of the log of node 'n'") && error.message.contains("missing from the data directory"),
                    "\(error.message)")
        }
        let watcher = RecordingOutbox()
        let viewer = try await setup.core.open("viewer", .viewer, watcher)
        await #expect(throws: CoordinatorError.self) {
            try await setup.core.watch(session: viewer, requestID: 5, WatchRequest(runID: setup.runID))
        }
      }
    }

    /// A reader of a large stored log gets it at its own pace: the coordinator holds at most
    /// the session's byte budget and one piece for it, not the log.
    @Test(arguments: StoreKind.allCases) func readingALargeLogHoldsOnlyWhatTheReaderIsAbout(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await DurabilityTests.Setup.make(database)
        let expected = try await setup.writeLog((0..<24).map { bytes(1 << 20, seed: $0) })
        let budget = Outbox.Budget()
        let reader = RecordingOutbox(budget: budget)
        let viewer = try await setup.core.open("viewer", .viewer, reader)
        let watching = Task { try await setup.core.watch(session: viewer, requestID: 5, WatchRequest(runID: setup.runID)) }
        let (logs, _) = try await reader.watchedLogs()
        try await watching.value
        #expect(logs["n"] == expected)
        #expect(budget.peak <= Outbox.byteBudget + (1 << 20), "held \(budget.peak) bytes for one reader")
      }
    }

    /// A follower that stops reading while a node writes falls behind the live tail; it is fed
    /// from storage again at its pace, and still gets every byte once, in order, then the end.
    @Test(arguments: StoreKind.allCases) func aFollowerThatFallsBehindCatchesUpFromStorage(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await DurabilityTests.Setup.make(database)
        let budget = Outbox.Budget()
        let reader = RecordingOutbox(budget: budget)
        let watching = try await setup.core.startWatch(requestID: 5, WatchRequest(runID: setup.runID, follow: true), reader)
        let expected = try await setup.writeLog((0..<24).map { bytes(1 << 20, seed: $0) })
        try await setup.node(.running)
        try await setup.node(.succeeded)
        try await setup.finish(.succeeded)
        let (logs, end) = try await reader.watchedLogs()
        try await watching.value
        #expect(logs["n"] == expected)
        #expect(end.status == .succeeded)
        #expect(budget.peak <= Outbox.byteBudget + 2 << 20, "held \(budget.peak) bytes for one follower")
      }
    }

    @Test(arguments: StoreKind.allCases) func aFollowerSeesANodesLastOutputBeforeItsEnd(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let setup = try await DurabilityTests.Setup.make(database)
        let watcher = RecordingOutbox()
        let viewer = try await setup.core.open("viewer", .viewer, watcher)
        let watching = try await setup.core.startWatch(session: viewer, requestID: 5,
                                                       WatchRequest(runID: setup.runID, follow: true), watcher)
        for offset in stride(from: 0, to: 64 << 10, by: 1024) {
            // Not waited for, as a session does.
            _ = try await setup.core.queueLog(session: setup.session, setup.append(at: offset, bytes(1024, seed: offset)))
        }
        try await setup.node(.succeeded)
        var shown = 0
        _ = try await watcher.first("the node's end") { envelope -> Bool? in
            guard case .watchEvent(let event) = envelope.body else { return nil }
            if case .log(let chunk) = event.event { shown = Int(chunk.offset) + chunk.data.count }
            if case .job(let job) = event.event, job.nodes.first?.status == .succeeded {
                #expect(shown == 64 << 10, "the node's end was shown before its last output")
                return true
            }
            return nil
        }
        await setup.core.endWatches(session: viewer)
        try await watching.value
      }
    }

    /// Versions before v4 kept log bytes in the database; this one no longer moves them to
    /// files, so it refuses such a database rather than lose them.
    @Test func aDatabaseStillHoldingLogBytesOfAnOlderVersionIsRefused() throws {
        let data = try TemporaryDirectory()
        defer { data.remove() }
        let queue = try DatabaseQueue(path: "\(data.path)/old.sqlite")
        try SQLiteStore.migrator.migrate(queue, upTo: "v4: log bytes in segment files, their durable lengths here")
        try queue.write { db in
            try db.execute(sql: "INSERT INTO log_chunk (job_id, node, offset, data) VALUES (1, 'n', 0, x'41')")
        }
        do {
            _ = try SQLiteStore(writer: queue)
            Issue.record("a database with log bytes in it was opened")
        } catch let error as StoreError {
            #expect(error.message.contains("1 log chunks of a version older than v4"))
        }
        // Without such bytes it upgrades, and the table goes.
        try queue.write { db in try db.execute(sql: "DELETE FROM log_chunk") }
        _ = try SQLiteStore(writer: queue)
        #expect(try queue.read { db in try db.tableExists("log_chunk") } == false)
    }
}
