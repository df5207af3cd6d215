import Foundation

/// A node's log: job and node name.
public struct LogKey: Hashable, Sendable {
    public var jobID: Int64
    public var node: String

    public init(jobID: Int64, node: String) {
        self.jobID = jobID
        self.node = node
    }
}

/// Bytes for a node log at an offset, as the group commit writes them.
public struct LogWrite: Sendable {
    public var key: LogKey
    public var offset: Int64
    public var data: Data
    /// When the runner read the bytes (`LogTime` marks), kept sparsely beside them.
    public var times: [LogTime]

    public init(key: LogKey, offset: Int64, data: Data, times: [LogTime] = []) {
        self.key = key
        self.offset = offset
        self.data = data
        self.times = times
    }
}

/// Where node log bytes live. The coordinator store records each log's durable length; only
/// bytes below it count, and a write at an offset replaces whatever lies past it. Writes come
/// from one group commit at a time. `LogFiles` (segment files in the data directory) is the
/// implementation today.
public protocol LogStore: Sendable {
    /// Writes the bytes and returns once they are durable. The jobs in `closing` finished:
    /// their logs get no more writes.
    func writeDurably(_ writes: [LogWrite], closing: Set<Int64>) async throws
    /// The first stored piece (at most 1 MiB) of a log at or after `from` and before `end`;
    /// nil when none is stored there. A dropped range shows as a piece starting past `from`.
    func piece(of key: LogKey, from: Int64, end: Int64) async throws -> LogChunkRecord?
    /// Drops what lies between `from` and `to` (in whole pieces, so perhaps less); returns the
    /// bytes still stored up to `end`.
    func dropMiddle(of key: LogKey, from: Int64, to: Int64, end: Int64) async throws -> Int64
    /// Removes every log of a job.
    func removeLogs(jobID: Int64) async throws
    /// The time marks of a log in [from, to), and the last one before `from` (moved to it).
    func times(of key: LogKey, from: Int64, to: Int64) async throws -> [LogTime]
}

extension LogStore {
    /// `piece(of:from:end:)` for a reader, checked: a range the size limit (`limit`) may have
    /// dropped reads as dropped, but bytes the store recorded that storage does not hold
    /// anywhere else are missing, and are reported so (never as a trim). The size limit only
    /// ever drops whole segments after the first half of the limit and before the last half
    /// of the log, and never the segment being written.
    func checkedPiece(of key: LogKey, from: Int64, end: Int64, limit: Int64) async throws -> LogChunkRecord? {
        guard from < end else { return nil }
        let piece = try await piece(of: key, from: from, end: end)
        let gapEnd = piece?.offset ?? end
        if gapEnd > from && (from < limit / 2 || gapEnd > end - limit / 2 || end <= limit) {
            throw CoordinatorError(.internal, """
                bytes \(from) to \(gapEnd) of the log of node '\(key.node)' (job \(key.jobID)) are missing from the data \
                directory: they were stored but are not there (the size limit did not drop them). Is --data the directory \
                they were written to?
                """)
        }
        return piece
    }
}

extension LogFiles: LogStore {
    public func writeDurably(_ writes: [LogWrite], closing: Set<Int64>) async throws {
        try await pool.runIfActive { try self.writeDurably(writes, closing: closing) as Void }
    }

    public func piece(of key: LogKey, from: Int64, end: Int64) async throws -> LogChunkRecord? {
        try await pool.runIfActive { try self.read(key, from: from, end: end) }
    }

    public func dropMiddle(of key: LogKey, from: Int64, to: Int64, end: Int64) async throws -> Int64 {
        try await pool.runIfActive {
            self.drop(key, from: from, to: to)
            return self.storedBytes(key, end: end)
        }
    }

    public func removeLogs(jobID: Int64) async throws {
        try await pool.runIfActive { self.remove(jobID: jobID) }
    }

    public func times(of key: LogKey, from: Int64, to: Int64) async throws -> [LogTime] {
        try await pool.runIfActive { self.readTimes(key).filter { $0.offset < to }.from(from) }
    }
}
