import Foundation
import Synchronization

/// Line numbers of node logs, so a reader opens any line of any log at once and a search
/// covers a whole log. Each log's index holds the byte offset of every 1,000th line's start;
/// it is built the first time the log is read by line, from the stored bytes (one pass, 1 MiB
/// at a time), and extended by the bytes stored since each time it is read again. The same
/// for every store (the bytes are in the data directory's log files, `LogStore`); each
/// coordinator of a cluster keeps its own. The 256 logs used last are kept.
///
/// A range the size limit dropped ends the line before it: the next stored byte starts a line.
final class LogLineIndexes: Sendable {
    struct Index: Sendable {
        /// The lines between two recorded starts.
        static let stride: Int64 = 1000
        /// `starts[i]`: where line `i * stride + 1` starts.
        var starts: [Int64] = [0]
        /// Bytes read into the index (the log's length when it was last extended).
        var scanned: Int64 = 0
        /// Lines ended so far (by a newline, or by a dropped range after them).
        var ended: Int64 = 0
        /// Where the line after the last ended one starts.
        var openStart: Int64 = 0
        /// Ranges the size limit dropped, (start, end).
        var gaps: [(Int64, Int64)] = []

        /// Lines of the log as read: the last one counts though it has no newline yet.
        var lines: Int64 { ended + (scanned > openStart ? 1 : 0) }

        mutating func endLine(nextStart: Int64) {
            ended += 1
            openStart = nextStart
            if ended % Self.stride == 0 { starts.append(nextStart) }
        }

        /// Counts the lines of `data`, stored at `offset` (after a dropped range when past
        /// `scanned`).
        mutating func read(_ data: Data, at offset: Int64) {
            if offset > scanned {
                gaps.append((scanned, offset))
                if scanned > openStart { endLine(nextStart: offset) } else { openStart = offset }
            }
            data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                guard let base = raw.baseAddress else { return }
                var position = 0
                while position < raw.count,
                      let found = memchr(base + position, 10, raw.count - position) {
                    let index = base.distance(to: found)
                    endLine(nextStart: offset + Int64(index) + 1)
                    position = index + 1
                }
            }
            scanned = offset + Int64(data.count)
        }

        /// The recorded start at or before line `line` (1-based), and that line's number.
        func anchor(before line: Int64) -> (line: Int64, offset: Int64) {
            let index = Int(min(Int64(starts.count - 1), max(0, (line - 1) / Self.stride)))
            return (Int64(index) * Self.stride + 1, starts[index])
        }
    }

    private struct State {
        var indexes: [LogKey: Index] = [:]
        var used: [LogKey: UInt64] = [:]
        var clock: UInt64 = 0
    }
    private let state = Mutex(State())
    /// One extension at a time per log.
    private let building = Mutex<[LogKey: [CheckedContinuation<Void, Never>]]>([:])
    static let kept = 256

    /// The log's index, extended to its stored length `length`; `read(from)` is the store's
    /// next piece at or after `from` (nil at the end).
    func index(_ key: LogKey, length: Int64,
               read: (Int64) async throws -> LogChunkRecord?) async throws -> Index {
        await acquire(key)
        defer { release(key) }
        var index = state.withLock { state -> Index in
            state.clock += 1
            state.used[key] = state.clock
            return state.indexes[key] ?? Index()
        }
        if length < index.scanned { index = Index() }  // the log was cut (a job run again): read anew
        while index.scanned < length, let piece = try await read(index.scanned), piece.offset < length {
            index.read(piece.data.prefix(Int(length - piece.offset)), at: piece.offset)
        }
        if index.scanned < length { index.read(Data(), at: length) }  // dropped up to the end
        let kept = index
        state.withLock { state in
            state.indexes[key] = kept
            if state.indexes.count > Self.kept, let oldest = state.used.min(by: { $0.value < $1.value })?.key {
                state.indexes[oldest] = nil
                state.used[oldest] = nil
            }
        }
        return index
    }

    private func acquire(_ key: LogKey) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let free = building.withLock { building -> Bool in
                if building[key] == nil {
                    building[key] = []
                    return true
                }
                building[key]!.append(continuation)
                return false
            }
            if free { continuation.resume() }
        }
    }

    private func release(_ key: LogKey) {
        let next = building.withLock { building -> CheckedContinuation<Void, Never>? in
            guard var waiting = building[key], !waiting.isEmpty else {
                building[key] = nil
                return nil
            }
            let next = waiting.removeFirst()
            building[key] = waiting
            return next
        }
        next?.resume()
    }
}
