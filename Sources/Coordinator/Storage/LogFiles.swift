import Foundation
import NIOPosix
import Synchronization


/// Node log bytes on disk: `logs/<job id>/n-<node>/<start offset>`, each node log a run of
/// segment files. A segment holds the bytes from its start offset on; a new one begins when
/// the current one reaches `segmentSize`, or where a log continues past a dropped range. The
/// size limit drops whole segments from the middle of a log, so readers see a gap. Segments
/// are written with `DirectFile` (no page cache).
///
/// Only the length recorded in the store (`log_end`) counts: bytes past it (padding of the
/// last block, or bytes never acknowledged) are cut when the log is next written, and the
/// next write at that offset replaces them. All methods block; callers run them on a thread
/// pool. Writes come from one group commit at a time.
public final class LogFiles: @unchecked Sendable {
    let directory: String
    /// A multiple of the file block, so a full segment ends on a block boundary.
    let segmentSize: Int64
    /// The segment each recently written log appends to.
    private let open = Mutex<[LogKey: OpenSegment]>([:])
    static let maximumOpenLogs = 256
    /// Where segments gather bytes to write (one batch at a time, under `open`'s lock).
    private let scratch = WriteScratch(capacity: 8 << 20)
    /// The last time mark kept of each log written to lately (`times` files).
    private let lastTimes = Mutex<[LogKey: LogTime]>([:])
    /// Marks closer than this to the last one kept are not kept.
    static let timeResolution: Int64 = 100


    struct OpenSegment {
        var file: DirectFile
        var start: Int64
        var end: Int64 { start + file.length }
    }

    let pool: NIOThreadPool

    /// Segments of `segmentSize` bytes (rounded to the file block) under `directory`; the
    /// blocking file work runs on `pool`.
    public init(directory: String, segmentSize: Int64, pool: NIOThreadPool = .singleton) {
        self.directory = directory
        self.pool = pool
        self.segmentSize = max(Int64(DirectFile.block), segmentSize / Int64(DirectFile.block) * Int64(DirectFile.block))
    }

    func jobDirectory(_ jobID: Int64) -> String { "\(directory)/\(jobID)" }
    func logDirectory(_ key: LogKey) -> String { "\(directory)/\(key.jobID)/n-\(key.node)" }

    /// Segment start offsets of a node log, ascending.
    func segments(_ key: LogKey) -> [Int64] {
        ((try? FileManager.default.contentsOfDirectory(atPath: logDirectory(key))) ?? []).compactMap { Int64($0) }.sorted()
    }

    /// What one `writeDurably` call has to sync before it returns.
    private struct Batch {
        /// Segments written to, by path.
        var dirty: [String: DirectFile] = [:]
        /// Directories that gained an entry.
        var directories: Set<String> = []
    }

    /// Writes the bytes and makes them durable (file data, and the directory entries of
    /// new segments): returns once an fsync covered every byte. Segments filled on the way
    /// are synced with the rest at the end, not one by one. The open segments of the jobs in
    /// `closing` (finished) are closed afterwards.
    func writeDurably(_ writes: [LogWrite], closing: Set<Int64> = []) throws {
        try open.withLock { open in
            var batch = Batch()
            do {
                for write in writes { try append(write, open: &open, batch: &batch) }
                for file in batch.dirty.values {
                    try file.flush()
                    try file.sync()
                }
                for path in batch.directories { try Self.syncDirectory(path) }
            } catch {
                // After a failure nothing open is trusted: the next write reopens from disk.
                for segment in open.values { segment.file.close() }
                open = [:]
                throw error
            }
            for write in writes where !write.times.isEmpty { appendTimes(write.key, write.times) }
            if !closing.isEmpty { lastTimes.withLock { last in last = last.filter { !closing.contains($0.key.jobID) } } }
            for key in open.keys where closing.contains(key.jobID) {
                try? open[key]!.file.cut()  // no padding left behind; the bytes are durable already
                open[key]!.file.close()
                open[key] = nil
            }
        }
    }

    private func append(_ write: LogWrite, open: inout [LogKey: OpenSegment], batch: inout Batch) throws {
        var segment = try segmentFor(write.key, at: write.offset, open: &open, batch: &batch)
        open[write.key] = segment
        var written = 0
        while written < write.data.count {
            if segment.end - segment.start >= segmentSize {
                open[write.key] = nil
                try retire(segment, batch: &batch)
                segment = try createSegment(write.key, start: segment.end, created: &batch.directories)
                open[write.key] = segment
            }
            let count = min(Int(segmentSize - (segment.end - segment.start)), write.data.count - written)
            let base = write.data.startIndex + written
            try segment.file.append(count == write.data.count ? write.data : write.data[base..<base + count])
            batch.dirty[segment.file.path] = segment.file
            written += count
        }
    }

    /// Takes a segment out of use: its padding is cut; synced with the batch when written in it.
    private func retire(_ segment: OpenSegment, batch: inout Batch) throws {
        try segment.file.cut()
        if batch.dirty[segment.file.path] == nil { segment.file.close() }
    }

    /// The open segment a write at `offset` continues, after making the log end there:
    /// segments past it are removed, the one holding it is cut at it, and a write past the
    /// end (after a dropped range) starts a new segment.
    private func segmentFor(_ key: LogKey, at offset: Int64, open: inout [LogKey: OpenSegment],
                            batch: inout Batch) throws -> OpenSegment {
        if let segment = open[key], segment.end == offset { return segment }
        if let segment = open.removeValue(forKey: key) { try retire(segment, batch: &batch) }
        if open.count >= Self.maximumOpenLogs, let evicted = open.first {
            open[evicted.key] = nil
            try retire(evicted.value, batch: &batch)
        }
        var holder: Int64?
        for start in segments(key) {
            if start >= offset {
                unlink("\(logDirectory(key))/\(start)")
            } else {
                holder = start
            }
        }
        if let start = holder {
            let path = "\(logDirectory(key))/\(start)"
            var info = stat()
            if stat(path, &info) == 0, start + Int64(info.st_size) >= offset {
                return OpenSegment(file: try DirectFile(path: path, length: offset - start, scratch: scratch),
                                   start: start)
            }
        }
        return try createSegment(key, start: offset, created: &batch.directories)
    }

    private func createSegment(_ key: LogKey, start: Int64, created: inout Set<String>) throws -> OpenSegment {
        let folder = logDirectory(key)
        if !FileManager.default.fileExists(atPath: folder) {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            created.insert(jobDirectory(key.jobID))
            created.insert(directory)
            created.insert((directory as NSString).deletingLastPathComponent)
        }
        created.insert(folder)
        return OpenSegment(file: try DirectFile(path: "\(folder)/\(start)", length: 0, scratch: scratch),
                           start: start)
    }

    /// The first stored piece (at most `piece` bytes) of a node log at or after `from` and
    /// before `end`; nil when none is stored there. A dropped range shows as a piece that
    /// starts past `from`.
    func read(_ key: LogKey, from: Int64, end: Int64, piece: Int = 1 << 20) throws -> LogChunkRecord? {
        let starts = segments(key)
        for (index, start) in starts.enumerated() where start < end {
            // A segment ends where the next begins (bytes past that are padding).
            let stop = index + 1 < starts.count ? min(end, starts[index + 1]) : end
            guard stop > from else { continue }
            let offset = max(from, start)
            let path = "\(logDirectory(key))/\(start)"
            let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                if errno == ENOENT { continue }  // dropped while we listed
                throw Self.failure("open \(path)", errno)
            }
            defer { close(fd) }
            var data = Data(count: Int(min(Int64(piece), stop - offset)))
            let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset - start)) }
            guard n >= 0 else { throw Self.failure("read \(path)", errno) }
            if n == 0 { continue }
            data.count = n
            return LogChunkRecord(jobID: key.jobID, node: key.node, offset: offset, data: data)
        }
        return nil
    }

    /// Bytes kept of a node log up to `end` (its length less what was dropped).
    func storedBytes(_ key: LogKey, end: Int64) -> Int64 {
        let starts = segments(key)
        var total: Int64 = 0
        for (index, start) in starts.enumerated() where start < end {
            var info = stat()
            guard stat("\(logDirectory(key))/\(start)", &info) == 0 else { continue }
            var stop = min(start + Int64(info.st_size), end)
            if index + 1 < starts.count { stop = min(stop, starts[index + 1]) }
            total += max(0, stop - start)
        }
        return total
    }

    /// Removes the segments that lie entirely in [from, to).
    func drop(_ key: LogKey, from: Int64, to: Int64) {
        let starts = segments(key)
        for (index, start) in starts.enumerated() where start >= from && index + 1 < starts.count {
            // The last segment is the one being written: never dropped.
            var info = stat()
            let path = "\(logDirectory(key))/\(start)"
            guard stat(path, &info) == 0, start + Int64(info.st_size) <= to else { continue }
            unlink(path)
        }
    }

    /// A log's time marks: `times` beside its segments, 16 bytes each (offset and Unix
    /// milliseconds, little-endian), in order; one is kept when it comes 100 ms or more after
    /// the last kept. Not synced: they only say when bytes came, and a mark lost in a crash
    /// leaves the lines after it the time of the one before.
    private func appendTimes(_ key: LogKey, _ marks: [LogTime]) {
        var last = lastTimes.withLock { $0[key] } ?? readTimes(key).last
        var bytes = [UInt8]()
        for mark in marks {
            if let kept = last, mark.offset <= kept.offset || mark.at < kept.at + Self.timeResolution { continue }
            withUnsafeBytes(of: mark.offset.littleEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: mark.at.littleEndian) { bytes.append(contentsOf: $0) }
            last = mark
        }
        if let last { lastTimes.withLock { $0[key] = last } }
        guard !bytes.isEmpty else { return }
        let fd = Glibc.open("\(logDirectory(key))/times", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
    }

    /// A log's time marks, in order (none when it has no `times` file).
    func readTimes(_ key: LogKey) -> [LogTime] {
        guard let data = FileManager.default.contents(atPath: "\(logDirectory(key))/times") else { return [] }
        var marks: [LogTime] = []
        marks.reserveCapacity(data.count / 16)
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var at = 0
            while at + 16 <= raw.count {
                let offset = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: Int64.self))
                let time = Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 8, as: Int64.self))
                if let previous = marks.last, offset <= previous.offset { break }  // a torn tail
                marks.append(LogTime(offset: offset, at: time))
                at += 16
            }
        }
        return marks
    }

    /// Removes every node log of a job.
    func remove(jobID: Int64) {
        lastTimes.withLock { last in last = last.filter { $0.key.jobID != jobID } }
        open.withLock { open in
            for key in open.keys where key.jobID == jobID {
                open[key]!.file.close()
                open[key] = nil
            }
        }
        try? FileManager.default.removeItem(atPath: jobDirectory(jobID))
    }

    static func syncDirectory(_ path: String) throws {
        let fd = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open \(path)", errno) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw failure("sync \(path)", errno) }
    }

    static func failure(_ what: String, _ code: Int32) -> CoordinatorError {
        CoordinatorError(.internal, "cannot \(what): \(String(cString: strerror(code)))")
    }
}
