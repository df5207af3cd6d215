import APITypes
import Coordinator
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore

/// A node log read by line (`?line=N&lines=M`) and searched whole (`/log/search`), for the
/// dashboard's log viewer and any client: both answer from the coordinator's line index
/// (`Catalog.readLines`, `Catalog.searchLog`).
extension StreamRoutes {
    /// Lines `line` to `line + lines - 1` as raw bytes, with where they are in the log.
    func lines(_ query: FlatDictionary<Substring, Substring>, _ read: LogRead, principal: Principal) async throws -> Response {
        // `at=OFFSET`: from the line holding that byte.
        let first = if query.get("at") != nil {
            try await core.catalog.lineNumber(read, containing: try Self.integer(query, "at", default: 0, at: 0...Int64.max),
                                              as: principal)
        } else {
            try Self.integer(query, "line", default: 1, at: 1...Int64.max)
        }
        let count = try Self.integer(query, "lines", default: 1000, at: 0...Catalog.maximumLinesPerRead)
        let lines = try await core.catalog.readLines(read, first: first, count: count, as: principal)
        var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8", .cacheControl: "no-store"]
        headers[HTTPField.Name("Heddle-Line")!] = String(lines.firstLine)
        headers[HTTPField.Name("Heddle-Line-Count")!] = String(lines.count)
        headers[HTTPField.Name("Heddle-Offset")!] = String(lines.offset)
        headers[HTTPField.Name("Heddle-Lines")!] = String(lines.lines)
        headers[HTTPField.Name("Heddle-Length")!] = String(lines.length)
        headers[HTTPField.Name("Heddle-Finished")!] = lines.finished ? "true" : "false"
        if !lines.times.isEmpty {
            headers[HTTPField.Name("Heddle-Times")!] = lines.times.map { "\($0.offset):\($0.at)" }.joined(separator: ",")
        }
        if !lines.gaps.isEmpty {
            headers[HTTPField.Name("Heddle-Gaps")!] = lines.gaps.map { "\($0.at):\($0.dropped)" }.joined(separator: ",")
        }
        headers[.contentLength] = String(lines.data.count)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: lines.data)))
    }

    struct SearchAnswer: Encodable {
        var total: Int64
        var lines: [Int64]
        var searched: Int64
    }

    /// `GET .../log/search?q=TEXT[&regex=true][&case=true][&from=LINE][&backward=true][&limit=N]`.
    func logSearch(_ request: Request, _ context: HeddleRequestContext) async throws -> Response {
        let principal = try Self.principal()
        let read = try Self.logRead(request, context)
        let query = request.uri.queryParameters
        guard let text = query.get("q") else {
            throw Problem(status: .badRequest, code: .badRequest, detail: "say what to search for: q=TEXT", field: "q")
        }
        let search = LogSearch(text: text, regex: try Self.flag(query, "regex"), caseSensitive: try Self.flag(query, "case"),
                               from: try Self.integer(query, "from", default: 1, at: 1...Int64.max),
                               backward: try Self.flag(query, "backward"),
                               limit: Int(try Self.integer(query, "limit", default: 100, at: 1...1000)))
        let found = try await core.catalog.searchLog(read, search, as: principal)
        let data = try APIJSON.encoder.encode(SearchAnswer(total: found.total, lines: found.lines, searched: found.searched))
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    struct SectionsAnswer: Encodable {
        struct Section: Encodable {
            var name: String
            var start: Int64
            var end: Int64?
            var collapsed: Bool
            var durationMs: Int64?
        }
        var sections: [Section]
        var lines: Int64
    }

    /// `GET .../log/sections`: the log's collapsible sections.
    func logSections(_ request: Request, _ context: HeddleRequestContext) async throws -> Response {
        let principal = try Self.principal()
        let read = try Self.logRead(request, context)
        let (sections, lines) = try await core.catalog.logSections(read, as: principal)
        let answer = SectionsAnswer(sections: sections.map {
            .init(name: $0.name, start: $0.start, end: $0.end, collapsed: $0.collapsed, durationMs: $0.durationMs)
        }, lines: lines)
        return Response(status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: try APIJSON.encoder.encode(answer))))
    }

    static func integer(_ query: FlatDictionary<Substring, Substring>, _ name: String, default value: Int64,
                        at range: ClosedRange<Int64>) throws -> Int64 {
        guard let text = query.get(name) else { return value }
        guard let number = Int64(text), range.contains(number) else {
            let upper = range.upperBound == Int64.max ? "or more" : "to \(range.upperBound)"
            throw Problem(status: .badRequest, code: .badRequest, detail: "\(name) is \(range.lowerBound) \(upper), not '\(text.prefix(40))'",
                          field: name)
        }
        return number
    }

    static func flag(_ query: FlatDictionary<Substring, Substring>, _ name: String) throws -> Bool {
        guard let text = query.get(name) else { return false }
        switch text {
        case "true", "1": return true
        case "false", "0": return false
        default: throw Problem(status: .badRequest, code: .badRequest, detail: "\(name) is true or false, not '\(text.prefix(40))'", field: name)
        }
    }
}
