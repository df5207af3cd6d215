import APITypes
import Coordinator
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import OpenAPIRuntime
import ServiceLifecycle
import Synchronization
import Wire

/// The routes that stream: a node's log (raw bytes with `Range`, Server-Sent Events that
/// resume at a byte offset, or HTML with its ANSI colours rendered) and `/api/v1/events`.
/// Written by hand (the OpenAPI document describes them; they are left out of the generated
/// code, whose header encoding and buffering do not suit them).
struct StreamRoutes {
    let core: CoordinatorCore
    let streams: StreamCount
    /// Webhook body bytes read and not yet verified, across all connections.
    let unsigned: ByteBudget
    let logger: Logger

    /// Seconds between SSE comments that keep an idle stream (and proxies) alive and find a
    /// client that left.
    static let keepAlive: Duration = .seconds(15)

    func register(on router: Router<HeddleRequestContext>) {
        router.get("/api/v1/runs/:run/jobs/:job/nodes/:node/log") { request, context in
            try await log(request, context)
        }
        router.get("/api/v1/runs/:run/jobs/:job/nodes/:node/log/search") { request, context in
            try await logSearch(request, context)
        }
        router.get("/api/v1/runs/:run/jobs/:job/nodes/:node/log/sections") { request, context in
            try await logSections(request, context)
        }
        router.get("/api/v1/events") { request, _ in
            try events(request)
        }
        router.get("/api/v1/runs/:run/events") { request, context in
            try await runEvents(request, context)
        }
        router.get("/api/v1/artifacts/:artifact/content") { request, context in
            try await download(request, context)
        }
        router.head("/api/v1/artifacts/:artifact/content") { request, context in
            try await download(request, context, headOnly: true)
        }
        router.post("/hooks/:project") { request, context in
            try await hook(request, context)
        }
    }

    // MARK: webhooks

    /// A forge's delivery: 202 with the runs started, 200 when it starts nothing (and why, or
    /// that it is a duplicate), 401 without a valid signature (and nothing more), 400 when
    /// signed but unusable. What can be refused from the headers is refused before any body
    /// byte is read (no forge headers, an unknown project or one without a webhook secret, no
    /// signature header, a wrong GitLab token: 401; a Content-Length past the limit: 413);
    /// a signed body is read through the HMAC within `unsigned`, the budget of unverified
    /// bytes held across all connections (503 with Retry-After past it). Each refusal closes
    /// the connection instead of reading the rest.
    func hook(_ request: Request, _ context: HeddleRequestContext) async throws -> Response {
        let project = context.parameters.get("project") ?? ""
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        func refused() -> Problem {
            logger.notice("webhook refused: bad or missing signature", metadata: ["project": "\(project.prefix(100))", "client": "\(context.client)"])
            var problem = Problem(status: .unauthorized, code: .unauthenticated, detail: "the signature does not match")
            problem.headers[.connection] = "close"
            return problem
        }
        // Nothing is said to a request without a valid signature.
        guard let (forge, eventName, deliveryID) = Forge.identify(headers),
              let secret = try await core.catalog.webhookSecret(project: project),
              let proof = forge.proof(headers, secret: secret) else { throw refused() }
        let declared = request.headers[.contentLength].flatMap(Int.init)
        let limit = HTTPFront.maximumHookBodyBytes
        if let declared, declared > limit { throw HTTPFront.tooLarge(request) }
        let bytes: Data
        switch proof {
        case .token(let matches):
            guard matches else { throw refused() }
            var request = request
            bytes = Data(try await request.collectBody(upTo: limit).readableBytesView)
        case .mac(let mac):
            bytes = try await readSigned(request, declared: declared, mac: mac, secret: secret, refused: refused)
        }
        let answer = try await core.webhooks.receive(ForgeDelivery(project: project, forge: forge.rawValue, deliveryID: deliveryID,
                                                                  eventName: eventName, event: forge.event(eventName, body: bytes)))
        let status: HTTPResponse.Status
        switch answer.kind {
        case .triggered: status = .accepted
        case .ignored, .duplicate: status = .ok
        case .refused:
            throw Problem(status: .badRequest, code: .badRequest, detail: answer.detail)
        }
        struct Answer: Encodable {
            var delivery: String
            var outcome: String
            var detail: String
            var runs: [Int64]
        }
        let data = try APIJSON.encoder.encode(Answer(delivery: answer.deliveryID, outcome: answer.kind.rawValue,
                                                       detail: answer.detail, runs: answer.runIDs))
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A body whose signature is an HMAC: read piece by piece through the HMAC, each piece
    /// counted against the unverified-bytes budget (the declared length at once when there
    /// is one), the budget given back when the bytes are verified or dropped.
    private func readSigned(_ request: Request, declared: Int?, mac: Data, secret: String,
                            refused: () -> Problem) async throws -> Data {
        let limit = HTTPFront.maximumHookBodyBytes
        func busy() -> Problem {
            logger.notice("webhook refused: too many unverified bytes in flight", metadata: ["budget": "\(unsigned.limit)"])
            var problem = Problem(status: .serviceUnavailable, code: .unavailable,
                                  detail: "too many webhook deliveries are being read at once; send it again shortly")
            problem.headers[.retryAfter] = "5"
            problem.headers[.connection] = "close"
            return problem
        }
        var held = 0
        defer { unsigned.give(held) }
        if let declared {
            guard unsigned.take(declared) else { throw busy() }
            held = declared
        }
        var hmac = HMAC<SHA256>(key: SymmetricKey(data: Data(secret.utf8)))
        var body = Data()
        body.reserveCapacity(min(declared ?? 64 << 10, limit))
        for try await piece in request.body {
            guard body.count + piece.readableBytes <= limit else { throw HTTPFront.tooLarge(request) }
            if body.count + piece.readableBytes > held {
                let more = body.count + piece.readableBytes - held
                guard unsigned.take(more) else { throw busy() }
                held += more
            }
            piece.withUnsafeReadableBytes { raw in
                hmac.update(data: raw)
                body.append(contentsOf: raw)
            }
        }
        // MessageAuthenticationCode's == compares in constant time.
        guard hmac.finalize() == mac else { throw refused() }
        return body
    }

    // MARK: artifacts

    /// An artifact's bytes, streamed piece by piece (so memory holds one piece per download),
    /// with its SHA-256 as ETag and Repr-Digest; `Range` and `If-None-Match` honoured.
    func download(_ request: Request, _ context: HeddleRequestContext, headOnly: Bool = false) async throws -> Response {
        let principal = try Self.principal()
        guard let id = context.parameters.get("artifact", as: Int64.self), id > 0 else {
            throw Problem(status: .badRequest, code: .badRequest, detail: "an artifact id is a positive integer", field: "artifact")
        }
        let artifact = try await core.catalog.artifact(id: id, as: principal)
        let tag = "\"\(artifact.sha256)\""
        var headers: HTTPFields = [
            .contentType: "application/octet-stream", .acceptRanges: "bytes", .eTag: tag,
            .reprDigest: "sha-256=:\(Data(hexString: artifact.sha256)?.base64EncodedString() ?? ""):",
            .contentDisposition: Self.disposition(artifact.name),
        ]
        if let match = request.headers[.ifNoneMatch], Self.anyTagMatches(match, tag) {
            return Response(status: .notModified, headers: [.eTag: tag])
        }
        var start: Int64 = 0, end = artifact.size  // [start, end)
        var status = HTTPResponse.Status.ok
        // If-Range: the range only while the representation is still this one (a strong tag;
        // a date or another tag gets the whole artifact).
        let rangeApplies = request.headers[.ifRange].map { $0.trimmingCharacters(in: .whitespaces) == tag } ?? true
        if let range = request.headers[.range], rangeApplies {
            guard let (from, to) = Self.byteRange(range, length: artifact.size) else {
                var problem = Problem(status: .rangeNotSatisfiable, code: .invalidArgument,
                                      detail: "the range '\(range)' is not within the artifact's \(artifact.size) bytes")
                problem.headers[.contentRange] = "bytes */\(artifact.size)"
                throw problem
            }
            (start, end, status) = (from, to + 1, .partialContent)
            headers[.contentRange] = "bytes \(from)-\(to)/\(artifact.size)"
        }
        headers[.contentLength] = String(end - start)
        if headOnly { return Response(status: status, headers: headers) }
        let core = self.core
        return Response(status: status, headers: headers, body: ResponseBody { [start, end] writer in
            var next = start
            while next < end {
                let slice = try await core.catalog.readArtifact(ArtifactRead(artifactID: id, offset: next, length: Int(min(end - next, 1 << 20))),
                                                        as: principal)
                guard !slice.data.isEmpty else { throw CoordinatorError(.internal, "artifact \(id) ended early at byte \(next)") }
                try await writer.write(ByteBuffer(bytes: slice.data))
                next += Int64(slice.data.count)
            }
            try await writer.finish(nil)
        })
    }

    /// Whether an If-None-Match list names `tag`: `*`, or any entity tag equal to it by weak
    /// comparison (`W/"x"` matches `"x"`; RFC 9110 §13.1.2).
    static func anyTagMatches(_ list: String, _ tag: String) -> Bool {
        if list.trimmingCharacters(in: .whitespaces) == "*" { return true }
        func opaque(_ text: Substring) -> Substring {
            let trimmed = text.drop { $0 == " " || $0 == "\t" }
            return trimmed.hasPrefix("W/") ? trimmed.dropFirst(2) : trimmed
        }
        return list.split(separator: ",").contains { opaque($0).trimmingCharacters(in: .whitespaces) == tag }
    }

    /// `attachment` with the artifact's base name (RFC 6266; non-ASCII names as `filename*`).
    static func disposition(_ name: String) -> String {
        let base = name.split(separator: "/").last.map(String.init) ?? name
        let ascii = String(base.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0 != "\"" && $0 != "\\" ? Character($0) : "_" })
        let encoded = base.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: ".-_~"))) ?? ascii
        return "attachment; filename=\"\(ascii)\"; filename*=UTF-8''\(encoded)"
    }

    static func principal() throws -> Principal {
        guard let principal = Caller.principal else {
            throw CoordinatorError(.unauthenticated, "this request carries no valid credentials")
        }
        return principal
    }

    static func wantsEvents(_ request: Request) -> Bool {
        request.headers[.accept]?.contains("text/event-stream") == true
    }

    // MARK: logs

    func log(_ request: Request, _ context: HeddleRequestContext) async throws -> Response {
        let principal = try Self.principal()
        let read = try Self.logRead(request, context)
        // Unknown run, attempt, job or node: refused here, before any streaming.
        if Self.wantsEvents(request) {
            _ = try await core.catalog.readLog(read, as: principal)
            return try logEvents(read, principal: principal)
        }
        if request.headers[.accept]?.contains("text/html") != true, request.uri.queryParameters.get("line") != nil
            || request.uri.queryParameters.get("lines") != nil || request.uri.queryParameters.get("at") != nil {
            return try await lines(request.uri.queryParameters, read, principal: principal)
        }
        let first = try await core.catalog.readLog(read, as: principal)
        if request.headers[.accept]?.contains("text/html") == true {
            return html(read, principal: principal, first: first)
        }
        return try raw(request, read, principal: principal, first: first)
    }

    /// The node log a request names (run, attempt, job, node) and the offset it starts at.
    static func logRead(_ request: Request, _ context: HeddleRequestContext) throws -> LogRead {
        guard let runID = context.parameters.get("run", as: Int64.self), runID > 0 else {
            throw Problem(status: .badRequest, code: .badRequest, detail: "a run id is a positive integer", field: "run")
        }
        // Percent-decoded: a matrix job's instance is named `test (debian, 3.11)`.
        let job = (context.parameters.get("job") ?? "").removingPercentEncoding ?? ""
        let node = (context.parameters.get("node") ?? "").removingPercentEncoding ?? ""
        let query = request.uri.queryParameters
        var attempt: Int?
        if let text = query.get("attempt") {
            guard let value = Int(text), value >= 1 else {
                throw Problem(status: .badRequest, code: .badRequest, detail: "attempt is 1 or more, not '\(text)'", field: "attempt")
            }
            attempt = value
        }
        var offset: Int64 = 0
        if let text = request.headers[.lastEventID] ?? query.get("offset").map({ String($0) }) {
            guard let value = Int64(text), value >= 0 else {
                throw Problem(status: .badRequest, code: .badRequest,
                              detail: "a log offset (offset or Last-Event-ID) is a byte count, 0 or more, not '\(text)'", field: "offset")
            }
            offset = value
        }
        return LogRead(runID: runID, attempt: attempt, job: job, node: node, offset: offset)
    }

    /// The raw bytes; `Range: bytes=A-B`, `A-` or `-N` answers 206 with `Content-Range`.
    func raw(_ request: Request, _ read: LogRead, principal: Principal, first: LogPiece) throws -> Response {
        let length = first.length
        var start = read.offset, end = length  // [start, end)
        var status = HTTPResponse.Status.ok
        var headers: HTTPFields = [.contentType: "text/plain; charset=utf-8", .acceptRanges: "bytes",
                                   .cacheControl: "no-store"]
        if let range = request.headers[.range] {
            guard let (from, to) = Self.byteRange(range, length: length) else {
                var problem = Problem(status: .rangeNotSatisfiable, code: .invalidArgument,
                                      detail: "the range '\(range)' is not within the log's \(length) bytes")
                problem.headers[.contentRange] = "bytes */\(length)"
                throw problem
            }
            start = from
            end = to + 1
            status = .partialContent
            headers[.contentRange] = "bytes \(from)-\(to)/\(length)"
        }
        let core = self.core
        if status == .partialContent {
            headers[.contentLength] = String(end - start)
        }
        let exact = status == .partialContent
        // The piece read to check the request is the first one sent, unless a range starts elsewhere.
        let opening = start == read.offset ? first : nil
        return Response(status: status, headers: headers, body: ResponseBody { [start, end] writer in
            var next = start
            var pending = opening
            while next < end {
                var piece = read
                piece.offset = next
                let got: LogPiece
                if let opening = pending {
                    got = opening
                    pending = nil
                } else {
                    got = try await core.catalog.readLog(piece, as: principal)
                }
                guard !got.data.isEmpty else { break }
                if got.offset > next {
                    // Bytes the log dropped (past its size limit): a range cannot be exact.
                    if exact { throw CoordinatorError(.failedPrecondition, "bytes \(next)-\(got.offset - 1) of this log were dropped") }
                    try await writer.write(ByteBuffer(string: "\n[… \(got.offset - next) bytes dropped: the log passed its size limit …]\n"))
                }
                let data = got.data.prefix(Int(end - got.offset))
                try await writer.write(ByteBuffer(bytes: data))
                next = got.offset + Int64(data.count)
            }
            try await writer.finish(nil)
        })
    }

    /// `bytes=A-B`, `bytes=A-` or `bytes=-N` within `length` bytes, as an inclusive range.
    static func byteRange(_ header: String, length: Int64) -> (Int64, Int64)? {
        guard header.hasPrefix("bytes="), !header.contains(",") else { return nil }
        let spec = header.dropFirst("bytes=".count)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        if parts[0].isEmpty {
            guard let suffix = Int64(parts[1]), suffix > 0, length > 0 else { return nil }
            return (max(0, length - suffix), length - 1)
        }
        guard let from = Int64(parts[0]), from >= 0, from < length else { return nil }
        if parts[1].isEmpty { return (from, length - 1) }
        guard let to = Int64(parts[1]), to >= from else { return nil }
        return (from, min(to, length - 1))
    }

    /// The log as an HTML page, its ANSI colours rendered, streamed piece by piece.
    static let htmlLogStyle = "body{margin:0;background:#1e1e1e;color:#e5e5e5}pre.log{margin:0;padding:1em;font:13px/1.4 ui-monospace,monospace;white-space:pre-wrap;word-break:break-all}"
    /// The HTML log's policy: styles inline (its sheet and the colours' `style` attributes),
    /// nothing else: no script, no other resource, not framed.
    static let htmlLogPolicy = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

    func html(_ read: LogRead, principal: Principal, first: LogPiece) -> Response {
        let core = self.core
        let title = "\(read.job)/\(read.node) of run \(read.runID)".htmlEscaped
        return Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store",
                                               .contentSecurityPolicy: Self.htmlLogPolicy,
                                               HTTPField.Name("X-Content-Type-Options")!: "nosniff"],
                        body: ResponseBody { writer in
            try await writer.write(ByteBuffer(string: """
                <!doctype html><html><head><meta charset="utf-8"><title>\(title)</title>
                <style>\(Self.htmlLogStyle)</style>
                </head><body><pre class="log">
                """))
            var renderer = ANSIHTMLRenderer()
            var next = read.offset
            var piece = first
            while true {
                if piece.data.isEmpty { break }
                if piece.offset > next {
                    try await writer.write(ByteBuffer(string: renderer.finish()
                        + "\n<span style=\"color:#cdcd00\">[… \(piece.offset - next) bytes dropped: the log passed its size limit …]</span>\n"))
                }
                try await writer.write(ByteBuffer(string: renderer.feed(piece.data)))
                next = piece.offset + Int64(piece.data.count)
                var request = read
                request.offset = next
                piece = try await core.catalog.readLog(request, as: principal)
            }
            try await writer.write(ByteBuffer(string: renderer.finish() + "</pre></body></html>\n"))
            try await writer.finish(nil)
        })
    }

    /// Server-Sent Events: `log` events whose id is the byte offset after their bytes (so
    /// `Last-Event-ID` resumes with no gap and no duplicate), `job` events as the job and its
    /// nodes change, and `end` when the attempt is over; then the stream ends.
    func logEvents(_ read: LogRead, principal: Principal) throws -> Response {
        let request = WatchRequest(runID: read.runID, attempt: read.attempt, job: read.job, node: read.node, logs: true,
                                   follow: true, from: UInt64(read.offset))
        return try stream(principal: principal) { core, session in
            try await core.watch(session: session, requestID: 1, request)
        } render: { event in
            guard case .watch(_, let watched) = event else { return nil }
            switch watched {
            case .log(let chunk):
                return SSE.log(chunk)
            case .job(let job):
                return SSE.event("job", Self.job(job))
            case .end(let run):
                return SSE.event("end", Self.end(run))
            }
        }
    }

    /// A run attempt's job and node changes as Server-Sent Events, then `end`: what a page
    /// showing the run (its graph) follows.
    func runEvents(_ request: Request, _ context: HeddleRequestContext) async throws -> Response {
        let principal = try Self.principal()
        guard let runID = context.parameters.get("run", as: Int64.self), runID > 0 else {
            throw Problem(status: .badRequest, code: .badRequest, detail: "a run id is a positive integer", field: "run")
        }
        var attempt: Int?
        if let text = request.uri.queryParameters.get("attempt") {
            guard let value = Int(text), value >= 1 else {
                throw Problem(status: .badRequest, code: .badRequest, detail: "attempt is 1 or more, not '\(text)'", field: "attempt")
            }
            attempt = value
        }
        // Unknown run or attempt: refused here, before any streaming.
        _ = try await core.catalog.runDetail(runID: runID, attempt: attempt, as: principal)
        let watch = WatchRequest(runID: runID, attempt: attempt, logs: false, follow: true)
        return try stream(principal: principal) { core, session in
            try await core.watch(session: session, requestID: 1, watch)
        } render: { event in
            if case .subscribed = event { return SSE.event("subscribed", Components.Schemas.Subscribed(run: runID)) }
            guard case .watch(_, let watched) = event else { return nil }
            switch watched {
            case .log: return nil
            case .job(let job): return SSE.event("job", Self.job(job))
            case .end(let run): return SSE.event("end", Self.end(run))
            }
        }
    }

    static func job(_ job: JobEvent) -> Components.Schemas.JobChange {
        .init(id: job.id, name: job.name, status: API.status(job.status), attempt: job.attempt, runner: job.runner,
              reason: job.reason.isEmpty ? nil : job.reason,
              nodes: job.nodes.isEmpty ? nil : job.nodes.map {
                  .init(name: $0.name, status: API.status($0.status), exitCode: $0.exitCode)
              })
    }

    static func end(_ run: RunRecord) -> Components.Schemas.AttemptEnd {
        .init(run: run.id, attempt: run.attempt, status: API.status(run.status))
    }

    // MARK: events

    /// `/api/v1/events`: the queue's changes (what the binary `QueueWatch` pushes) as
    /// Server-Sent Events, until the client leaves.
    func events(_ request: Request) throws -> Response {
        let principal = try Self.principal()
        // The subscription lasts until the session ends (the client leaves).
        return try stream(principal: principal, lasting: true) { core, session in
            try await core.watchQueue(session: session, requestID: 1)
        } render: { event in
            if case .subscribed = event { return SSE.event("subscribed", Components.Schemas.Subscribed()) }
            guard case .queue(_, let change) = event,
                  let kind = Components.Schemas.QueueChange.Value1Payload.KindPayload(rawValue: change.kind.rawValue)
            else { return nil }
            return SSE.event("queue", Components.Schemas.QueueChange(value1: .init(kind: kind), value2: API.queueEntry(change.entry)))
        }
    }

    /// A streamed SSE response over one core session: `subscribe` runs the subscription
    /// (returning when it is over), `render` turns each event into SSE text (nil: skipped).
    /// Comments every `keepAlive` keep it open; the session closes when either side ends.
    /// With `lasting`, `subscribe` only subscribes and returns; the stream then goes on until
    /// the client leaves (or the coordinator stops). Otherwise the stream ends with it.
    func stream(principal: Principal, lasting: Bool = false,
                subscribe: @escaping @Sendable (CoordinatorCore, UInt64) async throws -> Void,
                render: @escaping @Sendable (SessionEvent) -> String?) throws -> Response {
        guard streams.open() else {
            throw Problem(status: .serviceUnavailable, code: .unavailable,
                          detail: "this coordinator serves \(StreamCount.maximum) event streams at once; try again later")
        }
        let core = self.core, streams = self.streams, logger = self.logger
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-store"],
                        body: ResponseBody { writer in
            defer { streams.close() }
            let sink = StreamSink()
            let session: UInt64
            do {
                session = try await core.openSession(principal, sink: sink, close: { sink.close() })
            } catch {
                try await writer.write(ByteBuffer(string: SSE.event("error", Components.Schemas.StreamError(detail: "\(error)"))))
                try await writer.finish(nil)
                return
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await subscribe(core, session)
                        if lasting { return }
                    } catch is CancellationError {
                    } catch {
                        sink.send(.failure(CoordinatorError(error)))
                    }
                    sink.finish()
                }
                group.addTask {
                    while !Task.isCancelled {
                        try await Task.sleep(for: Self.keepAlive)
                        sink.keepAlive()
                    }
                }
                defer { group.cancelAll() }
                do {
                    try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                    // The coordinator stopping ends the stream (else a graceful shutdown would
                    // wait for every client to leave).
                    try await withGracefulShutdownHandler {
                    for await item in sink.stream {
                        switch item {
                        case .keepAlive:
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                        case .event(let event):
                            if case .failure(let error) = event {
                                try await writer.write(ByteBuffer(string: SSE.event("error", Components.Schemas.StreamError(
                                    code: "\(error.code)", detail: error.message))))
                            } else if let text = render(event) {
                                try await writer.write(ByteBuffer(string: text))
                            }
                            sink.consumed(event)
                        }
                    }
                    } onGracefulShutdown: {
                        sink.finish()
                    }
                } catch {
                    logger.debug("event stream ended", metadata: ["error": "\(error)"])
                }
                sink.close()
                await core.sessionClosed(session: session)
            }
            try? await writer.finish(nil)
        })
    }
}

/// Server-Sent Events whose data are the schemas `openapi.yaml` declares for them
/// (`LogEvent`, `JobChange`, `AttemptEnd`, `Subscribed`, `QueueChange`, `StreamError`), encoded
/// as the REST API encodes its bodies: sorted keys, dates as ISO 8601.
enum SSE {
    static func event(_ name: String, id: String? = nil, _ value: some Encodable) -> String {
        let data = (try? APIJSON.encoder.encode(value)) ?? Data("{}".utf8)
        var text = "event: \(name)\n"
        if let id { text += "id: \(id)\n" }
        return text + "data: " + String(decoding: data, as: UTF8.self) + "\n\n"
    }
}


extension SSE {
    /// A `log` event, written without JSONSerialization (the hot path: every chunk to every
    /// follower; base64 needs no JSON escaping). The same text `event(_:id:_:)` would make.
    static func log(_ chunk: LogChunk) -> String {
        var text = "event: log\nid: \(chunk.offset + UInt64(chunk.data.count))\ndata: {\"bytes\":\""
        text += chunk.data.base64EncodedString()
        text += chunk.dropped > 0 ? "\",\"dropped\":\(chunk.dropped)" : "\""
        text += ",\"offset\":\(chunk.offset)"
        if !chunk.times.isEmpty {
            text += ",\"times\":[" + chunk.times.map { "[\($0.offset),\($0.at)]" }.joined(separator: ",") + "]"
        }
        text += "}\n\n"
        return text
    }
}

/// Event streams open at once, bounded.
final class StreamCount: Sendable {
    static let maximum = 10_000
    private let count = Mutex(0)

    func open() -> Bool {
        count.withLock { count in
            guard count < Self.maximum else { return false }
            count += 1
            return true
        }
    }

    func close() { count.withLock { $0 -= 1 } }
}

/// The core's `EventSink` for one streamed response: events wait in a bounded stream until
/// the response writer takes them. Log bytes waiting are counted against a budget (the core
/// sends stored bytes only while there is room, so a slow reader sets the pace); a reader
/// that lets more than `maximumEvents` events pile up is cut off.
final class StreamSink: EventSink, Sendable {
    enum Item: Sendable {
        case event(SessionEvent)
        case keepAlive
    }

    static let byteBudget = 2 << 20
    static let maximumEvents = 4096

    let stream: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation
    private struct State {
        var bytes = 0
        var events = 0
        var closed = false
        var waiters: [CheckedContinuation<Bool, Never>] = []
    }
    private let state = Mutex(State())

    init() {
        (stream, continuation) = AsyncStream.makeStream(of: Item.self)
    }

    static func weight(_ event: SessionEvent) -> Int {
        if case .watch(_, .log(let chunk)) = event { return chunk.data.count }
        return 0
    }

    func send(_ event: SessionEvent) {
        let overflow = state.withLock { state -> Bool in
            guard !state.closed else { return false }
            state.events += 1
            state.bytes += Self.weight(event)
            if state.events > Self.maximumEvents { return true }
            continuation.yield(.event(event))
            return false
        }
        if overflow { close() }
    }

    func keepAlive() {
        state.withLock { state in
            if !state.closed { continuation.yield(.keepAlive) }
        }
    }

    /// The writer took an event.
    func consumed(_ event: SessionEvent) {
        let ready = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.events -= 1
            state.bytes -= Self.weight(event)
            guard state.bytes < Self.byteBudget else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in ready { waiter.resume(returning: true) }
    }

    var hasRoom: Bool { state.withLock { !$0.closed && $0.bytes < Self.byteBudget } }
    var isClosed: Bool { state.withLock { $0.closed } }

    func room() async -> Bool {
        await withCheckedContinuation { waiter in
            let now = state.withLock { state -> Bool? in
                if state.closed { return false }
                if state.bytes < Self.byteBudget { return true }
                state.waiters.append(waiter)
                return nil
            }
            if let now { waiter.resume(returning: now) }
        }
    }

    /// No more events: what was sent is still written, then the stream ends.
    func finish() {
        state.withLock { _ in continuation.finish() }
    }

    /// The reader left or fell too far behind: nothing more is sent.
    func close() {
        let waiting = state.withLock { state -> [CheckedContinuation<Bool, Never>] in
            state.closed = true
            continuation.finish()
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiting { waiter.resume(returning: false) }
    }
}

extension String {
    var htmlEscaped: String {
        replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

extension HTTPField.Name {
    static let lastEventID = HTTPField.Name("Last-Event-ID")!
    static let reprDigest = HTTPField.Name("Repr-Digest")!
    static let contentSecurityPolicy = HTTPField.Name("Content-Security-Policy")!
}

