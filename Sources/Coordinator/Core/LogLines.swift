import Foundation
import Synchronization

/// Line numbers of node logs, so a reader opens any line of any log at once and a search
/// covers a whole log. Each log's index holds the byte offset of every 1,000th line's start
/// and where its sections start and end; it is built the first time the log is read by line,
/// from the stored bytes (one pass, 1 MiB at a time), then grows with each group commit's
/// bytes as they are stored (`extend`), and is brought up to date from the stored bytes when
/// read if it missed some. The same for every store (the bytes are in the data directory's log
/// files, `LogStore`); each coordinator of a cluster keeps its own, in memory (rebuilt after a
/// restart when first read). The 256 logs used last are kept.
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
        /// Lines that start or end a section (`SectionMarker`), in order.
        var markers: [SectionMarker] = []
        /// The start of the line being read when a piece ended before it could be told
        /// whether it marks a section: its number, offset and first bytes.
        var head: (line: Int64, offset: Int64, bytes: [UInt8])? = (1, 0, [])
        static let headBytes = 300

        /// Lines of the log as read: the last one counts though it has no newline yet.
        var lines: Int64 { ended + (scanned > openStart ? 1 : 0) }

        mutating func endLine(nextStart: Int64) {
            ended += 1
            openStart = nextStart
            if ended % Self.stride == 0 { starts.append(nextStart) }
        }

        /// Looks at a line's first bytes (all of them, or `headBytes`) for a section marker.
        mutating func look(line: Int64, offset: Int64, _ bytes: some Collection<UInt8>) {
            guard let first = bytes.first, first == 0x1B || first == UInt8(ascii: ":") || first == UInt8(ascii: "s")
                    || first == 13 else { return }
            if let marker = SectionMarker(line: line, offset: offset, Array(bytes.prefix(Self.headBytes))) { markers.append(marker) }
        }

        /// Counts the lines of `data`, stored at `offset` (after a dropped range when past
        /// `scanned`), and finds the section markers among them.
        mutating func read(_ data: Data, at offset: Int64) {
            if offset > scanned {
                gaps.append((scanned, offset))
                finishHead()
                if scanned > openStart { endLine(nextStart: offset) } else { openStart = offset }
                head = (ended + 1, offset, [])
            }
            data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
                guard let base = raw.baseAddress else { return }
                let bytes = raw.bindMemory(to: UInt8.self)
                var position = 0
                // A line begun in an earlier piece: its first bytes completed.
                if var pending = head {
                    let more = min(raw.count, Self.headBytes - pending.bytes.count)
                    let stop = memchr(base, 10, raw.count).map { base.distance(to: $0) } ?? raw.count
                    pending.bytes += bytes[0..<min(more, stop)]
                    if stop < raw.count || pending.bytes.count >= Self.headBytes {
                        head = nil
                        look(line: pending.line, offset: pending.offset, pending.bytes)
                    } else {
                        head = pending
                    }
                }
                while position < raw.count {
                    let found = memchr(base + position, 10, raw.count - position)
                    let index = found.map { base.distance(to: $0) }
                    if let index {
                        endLine(nextStart: offset + Int64(index) + 1)
                        position = index + 1
                    } else {
                        position = raw.count
                    }
                    // The next line's start: look at it now if its first bytes are here.
                    guard index != nil, position <= raw.count else { break }
                    let line = ended + 1
                    let lineOffset = offset + Int64(position)
                    let stop = memchr(base + position, 10, raw.count - position).map { base.distance(to: $0) } ?? raw.count
                    if stop < raw.count || stop - position >= Self.headBytes {
                        look(line: line, offset: lineOffset, bytes[position..<min(stop, position + Self.headBytes)])
                    } else {
                        head = (line, lineOffset, Array(bytes[position..<stop]))
                    }
                }
            }
            scanned = offset + Int64(data.count)
        }

        /// The last line ended (or a gap came) before its head was complete: look at what there is.
        mutating func finishHead() {
            if let pending = head {
                head = nil
                look(line: pending.line, offset: pending.offset, pending.bytes)
            }
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

    /// Bytes just stored at `offset`: an index kept for that log that ends there takes them
    /// (one being read, or followed, grows as the log does; others are built when read).
    func extend(_ key: LogKey, with data: Data, at offset: Int64) {
        guard !data.isEmpty else { return }
        state.withLock { state in
            guard let scanned = state.indexes[key]?.scanned else { return }
            guard scanned == offset else {
                if offset < scanned { state.indexes[key] = nil }  // rewritten: read anew
                return
            }
            // In place: a copy taken out and put back would copy the index's arrays each commit.
            state.indexes[key]?.read(data, at: offset)
        }
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

/// A line that starts or ends a collapsible section of a log: GitHub's `::group::NAME` and
/// `::endgroup::`, GitLab's `section_start:UNIX_SECONDS:NAME[collapsed=true]` and
/// `section_end:UNIX_SECONDS:NAME` (after any `ESC [ 0 K` and carriage returns).
struct SectionMarker: Sendable, Equatable {
    enum Kind: Sendable, Equatable { case start, end }
    var kind: Kind
    var line: Int64
    var offset: Int64
    var name: String
    /// GitLab's marks carry the time (Unix seconds).
    var seconds: Int64?
    var collapsed = false
    /// GitHub's form (an end closes the innermost group, whatever its name).
    var group = false

    init?(line: Int64, offset: Int64, _ bytes: [UInt8]) {
        var rest = bytes[...]
        // Leading erases and carriage returns.
        while true {
            if rest.starts(with: [0x1B, 0x5B, 0x30, 0x4B]) { rest = rest.dropFirst(4) }
            else if rest.starts(with: [0x1B, 0x5B, 0x4B]) { rest = rest.dropFirst(3) }
            else if rest.first == 13 { rest = rest.dropFirst() }
            else { break }
        }
        let text = String(decoding: rest.prefix { $0 != 10 && $0 != 13 && $0 != 0x1B }, as: UTF8.self)
        self.line = line
        self.offset = offset
        if text.hasPrefix("::group::") {
            kind = .start
            group = true
            name = String(text.dropFirst(9)).trimmingCharacters(in: .whitespaces)
        } else if text.hasPrefix("::endgroup::") {
            kind = .end
            group = true
            name = ""
        } else if text.hasPrefix("section_start:") || text.hasPrefix("section_end:") {
            kind = text.hasPrefix("section_start:") ? .start : .end
            let parts = text.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let seconds = Int64(parts[1]) else { return nil }
            self.seconds = seconds
            var label = String(parts[2])
            if let options = label.firstIndex(of: "[") {
                collapsed = label[options...].contains("collapsed=true")
                label = String(label[..<options])
            }
            name = label
        } else {
            return nil
        }
        guard name.utf8.count <= 200 else { return nil }
    }
}
