import Foundation
import Glibc

/// A node log read by line (`Catalog.readLines`).
public struct LogLines: Sendable, Equatable {
    /// The first line returned (1-based), and where it starts.
    public var firstLine: Int64
    public var offset: Int64
    /// The bytes of the lines returned, each with its newline (the log's last line perhaps
    /// without); at most `Catalog.maximumLineBytes`, so a very long line may come cut.
    public var data: Data
    /// Lines in `data` (a cut or unfinished last one counts).
    public var count: Int64
    /// Ranges the size limit dropped inside the lines returned: the position in `data` where
    /// each was, and how many bytes it had. A dropped range ends the line before it.
    public var gaps: [(at: Int64, dropped: Int64)]
    /// When the lines' bytes were read: the marks among them, and the one in force at `offset`.
    public var times: [LogTime] = []
    /// The log's lines and durable length now, and whether its job finished.
    public var lines: Int64
    public var length: Int64
    public var finished: Bool

    public static func == (a: LogLines, b: LogLines) -> Bool {
        a.firstLine == b.firstLine && a.offset == b.offset && a.data == b.data && a.count == b.count
            && a.gaps.map(\.at) == b.gaps.map(\.at) && a.gaps.map(\.dropped) == b.gaps.map(\.dropped)
            && a.lines == b.lines && a.length == b.length && a.finished == b.finished
    }
}

/// What to look for in a node log (`Catalog.searchLog`).
public struct LogSearch: Sendable {
    public var text: String
    /// A POSIX extended regular expression; else plain text.
    public var regex: Bool
    public var caseSensitive: Bool
    /// The line the search starts from (1-based): `lines` are the first matching lines at or
    /// after it, or with `backward` the last ones before it.
    public var from: Int64
    public var backward: Bool
    public var limit: Int

    public init(text: String, regex: Bool = false, caseSensitive: Bool = false, from: Int64 = 1, backward: Bool = false,
                limit: Int = 100) {
        self.text = text
        self.regex = regex
        self.caseSensitive = caseSensitive
        self.from = from
        self.backward = backward
        self.limit = limit
    }
}

public struct LogSearchResult: Sendable, Equatable {
    /// Lines of the whole log that match.
    public var total: Int64
    /// Up to `limit` of them from `from` on (or before it), ascending.
    public var lines: [Int64]
    /// Lines searched (the log's, now).
    public var searched: Int64
}

extension Catalog {
    /// The most lines one read returns, and the most bytes.
    public static let maximumLinesPerRead: Int64 = 10_000
    public static let maximumLineBytes = 4 << 20

    /// The node log a request names, its key, durable length and whether its job finished.
    func locate(_ request: LogRead) async throws -> (key: LogKey, length: Int64, finished: Bool) {
        guard let run = try await store.run(id: request.runID) else {
            throw CoordinatorError.notFound("run \(request.runID) does not exist")
        }
        let attempt = try run.attempt(asked: request.attempt)
        let jobs = try await store.jobs(runID: request.runID, attempt: attempt)
        guard let job = jobs.first(where: { $0.name == request.job }) else {
            throw CoordinatorError.notFound("run \(request.runID) has no job '\(request.job)' (jobs: \(jobs.map(\.name).joined(separator: ", ")))")
        }
        let nodes = try await store.nodes(jobIDs: [job.id])
        guard nodes.contains(where: { $0.name == request.node }) else {
            throw CoordinatorError.notFound("job '\(request.job)' has no node '\(request.node)' (nodes: \(nodes.sorted { $0.ordinal < $1.ordinal }.map(\.name).joined(separator: ", ")))")
        }
        // A job carried over by a re-run of the failed jobs shows the log of the one it copies.
        let length = try await store.logEnds(jobIDs: [job.logJobID], node: request.node).first?.length ?? 0
        return (LogKey(jobID: job.logJobID, node: request.node), length, job.status.isFinished)
    }

    func lineIndex(_ key: LogKey, length: Int64) async throws -> LogLineIndexes.Index {
        try await lineIndexes.index(key, length: length) { from in
            try await logStore.checkedPiece(of: key, from: from, end: length, limit: limits.maximumLogBytes)
        }
    }

    /// Lines `first` to `first + count - 1` (1-based) of a node log, at most
    /// `maximumLinesPerRead` and `maximumLineBytes`; past the last line, none (with the log's
    /// line count, so `count` 0 asks only for that).
    public func readLines(_ request: LogRead, first: Int64, count: Int64, as principal: Principal) async throws -> LogLines {
        try Authorization.check(principal, .watchRun)
        guard first >= 1 else { throw CoordinatorError.invalid("a line number is 1 or more, not \(first)") }
        guard (0...Self.maximumLinesPerRead).contains(count) else {
            throw CoordinatorError.invalid("a read takes 0 to \(Self.maximumLinesPerRead) lines, not \(count)")
        }
        let (key, length, finished) = try await locate(request)
        let index = try await lineIndex(key, length: length)
        var result = LogLines(firstLine: first, offset: length, data: Data(), count: 0, gaps: [], lines: index.lines,
                              length: length, finished: finished)
        guard first <= index.lines, count > 0 else { return result }
        // From the recorded start at or before the line, skip to it, then take `count` lines.
        let anchor = index.anchor(before: first)
        var line = anchor.line
        var next = anchor.offset
        var lineHasBytes = false
        var taking = line == first
        if taking { result.offset = next }
        var taken: Int64 = 0
        reading: while next < length {
            guard let piece = try await logStore.checkedPiece(of: key, from: next, end: length, limit: limits.maximumLogBytes) else { break }
            if piece.offset > next {
                if lineHasBytes {  // a dropped range ends the line before it
                    if taking { taken += 1 }
                    line += 1
                    lineHasBytes = false
                    if taking && taken == count { break reading }
                    if line == first { taking = true }
                }
                if taking {
                    if result.data.isEmpty && taken == 0 { result.offset = piece.offset }
                    result.gaps.append((Int64(result.data.count), piece.offset - next))
                } else if line == first {
                    taking = true
                    result.offset = piece.offset
                }
            }
            let bytes = piece.data.prefix(Int(length - piece.offset))
            var start = bytes.startIndex
            while start < bytes.endIndex {
                if !taking {
                    // Skip to the line's start.
                    guard let newline = bytes[start...].firstIndex(of: 10) else {
                        lineHasBytes = true
                        start = bytes.endIndex
                        break
                    }
                    line += 1
                    lineHasBytes = false
                    start = newline + 1
                    if line == first {
                        taking = true
                        result.offset = piece.offset + Int64(start - bytes.startIndex)
                    }
                    continue
                }
                let newline = bytes[start...].firstIndex(of: 10)
                let end = newline.map { $0 + 1 } ?? bytes.endIndex
                let room = Self.maximumLineBytes - result.data.count
                if end - start > room {
                    result.data.append(bytes[start..<(start + room)])
                    taken += 1
                    break reading
                }
                result.data.append(bytes[start..<end])
                start = end
                if newline != nil {
                    taken += 1
                    line += 1
                    lineHasBytes = false
                    if taken == count { break reading }
                } else {
                    lineHasBytes = true
                }
            }
            next = piece.offset + Int64(bytes.count)
        }
        if lineHasBytes && taking { taken += 1 }  // the last line, unfinished or cut by a gap
        result.count = taken
        if taken > 0 {
            let end = result.offset + Int64(result.data.count) + result.gaps.reduce(0) { $0 + $1.dropped }
            result.times = try await logStore.times(of: key, from: result.offset, to: end)
        }
        return result
    }

    /// The number of the line that holds byte `offset` of a node log (the last line when the
    /// offset is past its end; 1 for an empty log).
    public func lineNumber(_ request: LogRead, containing offset: Int64, as principal: Principal) async throws -> Int64 {
        try Authorization.check(principal, .watchRun)
        guard offset >= 0 else { throw CoordinatorError.invalid("a log offset is 0 or more, not \(offset)") }
        let (key, length, _) = try await locate(request)
        let index = try await lineIndex(key, length: length)
        guard offset < length else { return max(1, index.lines) }
        // The last recorded start at or before the offset, then its newlines up to it.
        var low = 0, high = index.starts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if index.starts[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        var line = Int64(low) * LogLineIndexes.Index.stride + 1
        var next = index.starts[low]
        var lineHasBytes = false
        while next <= offset {
            guard let piece = try await logStore.checkedPiece(of: key, from: next, end: length, limit: limits.maximumLogBytes) else { break }
            if piece.offset > next {
                if lineHasBytes { line += 1 }
                lineHasBytes = false
                if piece.offset > offset { return line }
            }
            let bytes = piece.data.prefix(Int(min(length, offset + 1) - piece.offset))
            for (position, byte) in bytes.enumerated() {
                if piece.offset + Int64(position) == offset { return line }
                if byte == 10 {
                    line += 1
                    lineHasBytes = false
                } else {
                    lineHasBytes = true
                }
            }
            next = piece.offset + Int64(bytes.count)
        }
        return line
    }

    /// Searches a whole node log, line by line, its ANSI escape sequences left out: plain text
    /// (any case unless `caseSensitive`) or a POSIX extended regular expression.
    public func searchLog(_ request: LogRead, _ search: LogSearch, as principal: Principal) async throws -> LogSearchResult {
        try Authorization.check(principal, .watchRun)
        guard !search.text.isEmpty, search.text.utf8.count <= 1000, !search.text.utf8.contains(0), !search.text.contains("\n") else {
            throw CoordinatorError.invalid("a search is 1 to 1,000 bytes of one line")
        }
        guard (1...1000).contains(search.limit) else { throw CoordinatorError.invalid("a search returns 1 to 1,000 lines, not \(search.limit)") }
        guard search.from >= 1 else { throw CoordinatorError.invalid("a line number is 1 or more, not \(search.from)") }
        let matcher = try LineMatcher(search)
        let (key, length, _) = try await locate(request)
        var result = LogSearchResult(total: 0, lines: [], searched: 0)
        var line: Int64 = 1
        var carry = Data()  // the start of a line not yet ended
        var next: Int64 = 0
        func consider(_ matches: [Int64]) {
            for matched in matches {
                result.total += 1
                if search.backward {
                    guard matched < search.from else { continue }
                    result.lines.append(matched)
                    if result.lines.count > search.limit { result.lines.removeFirst() }
                } else if matched >= search.from && result.lines.count < search.limit {
                    result.lines.append(matched)
                }
            }
        }
        while next < length {
            guard let piece = try await logStore.checkedPiece(of: key, from: next, end: length, limit: limits.maximumLogBytes) else { break }
            if piece.offset > next && !carry.isEmpty {  // a dropped range ends the line before it
                carry.append(10)
                consider(matcher.matchingLines(in: carry, firstLine: line))
                line += 1
                carry = Data()
            }
            let bytes = piece.data.prefix(Int(length - piece.offset))
            next = piece.offset + Int64(bytes.count)
            guard let last = bytes.lastIndex(of: 10) else {
                carry.append(bytes)
                if carry.count > Self.maximumLineBytes { carry = carry.prefix(Self.maximumLineBytes) }
                continue
            }
            var block = carry
            block.append(bytes[..<(last + 1)])
            consider(matcher.matchingLines(in: block, firstLine: line))
            line += Self.newlines(in: block)
            carry = Data(bytes[(last + 1)...])
        }
        if !carry.isEmpty {
            carry.append(10)
            consider(matcher.matchingLines(in: carry, firstLine: line))
            line += 1
        }
        result.searched = line - 1
        return result
    }
}

extension Catalog {
    /// The newlines in `data`.
    static func newlines(in data: Data) -> Int64 {
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Int64 in
            guard let base = raw.baseAddress else { return 0 }
            var count: Int64 = 0
            var at = 0
            while at < raw.count, let found = memchr(base + at, 10, raw.count - at) {
                count += 1
                at = base.distance(to: found) + 1
            }
            return count
        }
    }
}

/// Finds the lines of a block (whole lines, each ending in a newline) that match a search,
/// their ANSI escape sequences removed first.
final class LineMatcher {
    let search: LogSearch
    private var compiled = regex_t()
    /// `compiled` holds a compiled expression, to free.
    private var ready = false
    private let needle: [UInt8]

    init(_ search: LogSearch) throws(CoordinatorError) {
        self.search = search
        needle = Array((search.caseSensitive ? search.text : search.text.lowercased()).utf8)
        if search.regex {
            var flags = REG_EXTENDED | REG_NEWLINE
            if !search.caseSensitive { flags |= REG_ICASE }
            let code = regcomp(&compiled, search.text, flags)
            guard code == 0 else {
                var message = [CChar](repeating: 0, count: 256)
                regerror(code, &compiled, &message, message.count)
                throw CoordinatorError.invalid("'\(search.text.prefix(100))' is not a regular expression: \(String(cString: message))")
            }
            ready = true
        }
    }

    deinit {
        if ready { regfree(&compiled) }
    }

    /// The numbers of the lines of `block` that match; its first line is `firstLine`. The
    /// whole block is searched at once (a regular expression with REG_NEWLINE, or the text),
    /// each match's line found by counting newlines up to it, and the search goes on from the
    /// next line.
    func matchingLines(in block: Data, firstLine: Int64) -> [Int64] {
        var text = Self.stripped(block, lowercase: !search.caseSensitive && !search.regex)
        text.append(0)
        var found: [Int64] = []
        let regex = search.regex
        let needle = self.needle
        text.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            let end = buffer.count - 1
            var cursor = 0          // a line start
            var line = firstLine    // the line at `cursor`
            while cursor < end {
                var hit: Int?
                if regex {
                    var match = regmatch_t()
                    let code = UnsafeRawPointer(base + cursor).withMemoryRebound(to: CChar.self, capacity: end - cursor + 1) {
                        regexec(&compiled, $0, 1, &match, 0)
                    }
                    if code == 0 { hit = cursor + Int(match.rm_so) }
                } else {
                    hit = Self.find(base + cursor, end - cursor, needle).map { cursor + $0 }
                }
                guard let position = hit else { break }
                // The newlines between the cursor and the match.
                var scan = cursor
                while scan < position, let newline = memchr(base + scan, 10, position - scan) {
                    scan = UnsafeMutablePointer<UInt8>(newline.assumingMemoryBound(to: UInt8.self)) - base + 1
                    line += 1
                }
                found.append(line)
                guard let next = memchr(base + position, 10, end - position) else { break }
                cursor = UnsafeMutablePointer<UInt8>(next.assumingMemoryBound(to: UInt8.self)) - base + 1
                line += 1
            }
        }
        return found
    }

    /// Where `needle` first is in `count` bytes at `haystack`, without crossing a newline.
    static func find(_ haystack: UnsafePointer<UInt8>, _ count: Int, _ needle: [UInt8]) -> Int? {
        guard needle.count <= count, let first = needle.first else { return nil }
        var position = 0
        while position + needle.count <= count,
              let hit = memchr(haystack + position, Int32(first), count - position - needle.count + 1) {
            let index = UnsafePointer<UInt8>(hit.assumingMemoryBound(to: UInt8.self)) - haystack
            if memcmp(haystack + index, needle, needle.count) == 0 { return index }
            position = index + 1
        }
        return nil
    }

    /// The block without ANSI escape sequences (CSI `ESC [ ... final`, OSC `ESC ] ... BEL or
    /// ESC \`, and two-byte `ESC X`), ASCII letters lowered when asked.
    static func stripped(_ block: Data, lowercase: Bool) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(block.count + 1)
        block.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            guard let start = raw.baseAddress else { return }
            let bytes = start.assumingMemoryBound(to: UInt8.self)
            let n = raw.count
            var i = 0
            while i < n {
                // Everything up to the next escape, at once.
                let stop = memchr(bytes + i, 0x1B, n - i).map { UnsafePointer<UInt8>($0.assumingMemoryBound(to: UInt8.self)) - bytes } ?? n
                out.append(contentsOf: UnsafeBufferPointer(start: bytes + i, count: stop - i))
                i = stop
                guard i + 1 < n else { break }
                let kind = bytes[i + 1]
                if kind == UInt8(ascii: "[") {
                    i += 2
                    while i < n && !(0x40...0x7E).contains(bytes[i]) && bytes[i] != 10 { i += 1 }
                    if i < n && bytes[i] != 10 { i += 1 }
                } else if kind == UInt8(ascii: "]") {
                    i += 2
                    while i < n && bytes[i] != 7 && bytes[i] != 10 && !(bytes[i] == 0x1B && i + 1 < n && bytes[i + 1] == UInt8(ascii: "\\")) { i += 1 }
                    if i < n && bytes[i] == 7 { i += 1 } else if i < n && bytes[i] == 0x1B { i += 2 }
                } else {
                    i += 2
                }
            }
        }
        out.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            // A NUL would end the text for the regular expression.
            var at = 0
            while at < buffer.count, let zero = memchr(base + at, 0, buffer.count - at) {
                let index = UnsafeMutablePointer<UInt8>(zero.assumingMemoryBound(to: UInt8.self)) - base
                base[index] = 32
                at = index + 1
            }
            if lowercase {
                for k in 0..<buffer.count where base[k] &- 65 < 26 { base[k] &+= 32 }
            }
        }
        return out
    }
}

/// A collapsible section of a node log (`Catalog.logSections`).
public struct LogSection: Sendable, Equatable {
    public var name: String
    /// The line that starts it, and the one that ends it (nil while it is open).
    public var start: Int64
    public var end: Int64?
    /// It asked to be shown folded (GitLab's `[collapsed=true]`; GitHub's groups always do).
    public var collapsed: Bool
    /// From its start to its end: GitLab's own times, else when the runner read those lines.
    public var durationMs: Int64?
}

extension Catalog {
    /// The most sections one answer lists.
    public static let maximumSections = 10_000

    /// The sections of a node log, in the order they start (nested ones after their parent),
    /// and the log's lines now.
    public func logSections(_ request: LogRead, as principal: Principal) async throws -> (sections: [LogSection], lines: Int64) {
        try Authorization.check(principal, .watchRun)
        let (key, length, _) = try await locate(request)
        let index = try await lineIndex(key, length: length)
        var sections: [LogSection] = []
        var open: [(index: Int, marker: SectionMarker)] = []
        var ends: [Int: SectionMarker] = [:]
        for marker in index.markers {
            switch marker.kind {
            case .start:
                guard sections.count < Self.maximumSections else { continue }
                open.append((sections.count, marker))
                sections.append(LogSection(name: marker.name, start: marker.line, end: nil,
                                           collapsed: marker.group || marker.collapsed, durationMs: nil))
            case .end:
                // GitHub's end closes the innermost group; GitLab's the innermost section of its name.
                guard let at = open.lastIndex(where: { marker.group ? $0.marker.group : (!$0.marker.group && $0.marker.name == marker.name) })
                else { continue }
                let (position, start) = open[at]
                open.removeSubrange(at...)
                sections[position].end = marker.line
                ends[position] = marker
                if let from = start.seconds, let to = marker.seconds { sections[position].durationMs = max(0, to - from) * 1000 }
            }
        }
        // The others' durations from the time marks of their first and last lines.
        if sections.indices.contains(where: { sections[$0].durationMs == nil && ends[$0] != nil }) {
            let marks = try await logStore.times(of: key, from: 0, to: length)
            func time(at offset: Int64) -> Int64? { marks.last { $0.offset <= offset }?.at }
            let starts = Dictionary(index.markers.filter { $0.kind == .start }.map { ($0.line, $0.offset) }, uniquingKeysWith: { a, _ in a })
            for (position, end) in ends where sections[position].durationMs == nil {
                if let startOffset = starts[sections[position].start], let from = time(at: startOffset), let to = time(at: end.offset) {
                    sections[position].durationMs = max(0, to - from)
                }
            }
        }
        return (sections, index.lines)
    }
}
