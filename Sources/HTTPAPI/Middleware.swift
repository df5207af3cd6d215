import APITypes
import Coordinator
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import NIOSSL
import OpenAPIRuntime
import Synchronization
import Wire

/// The request context: Hummingbird's, plus the connection, for the client certificate and
/// the client's address.
struct HeddleRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    /// The client's IP address, for rate limits and logs: the peer's, or the one a trusted
    /// proxy forwarded for (`ClientAddresses`, set before routing).
    var client: String

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
        client = source.channel.remoteAddress?.ipAddress ?? "unknown"
    }

    var maxUploadSize: Int { HTTPFront.maximumHookBodyBytes }
}

/// Who a request comes from. Behind a reverse proxy (`--trusted-proxy ADDRESS`, repeated)
/// every request comes from the proxy's address; for those, the client is the right-most
/// address of `X-Forwarded-For` that is not itself a trusted proxy. From any other peer the
/// header is ignored (anyone can write it).
public struct ClientAddresses: Sendable {
    public let trustedProxies: Set<String>

    public init(trustedProxies: [String] = []) {
        self.trustedProxies = Set(trustedProxies)
    }

    func client(peer: String?, forwardedFor: String?) -> String {
        let peer = peer ?? "unknown"
        guard trustedProxies.contains(peer), let forwardedFor else { return peer }
        let hops = forwardedFor.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for hop in hops.reversed() where !trustedProxies.contains(hop) {
            return String(hop.prefix(64))
        }
        return peer
    }
}

/// An error the HTTP front answers itself (not from the core): a status, a stable code and
/// one sentence.
struct Problem: Error {
    var status: HTTPResponse.Status
    typealias Code = Components.Schemas.Problem.CodePayload
    var code: Code
    var detail: String
    var field: String?
    var headers: HTTPFields = [:]

    /// The problem+json response (RFC 9457).
    var response: Response {
        let body = Components.Schemas.Problem(_type: "about:blank", title: status.reasonPhrase, status: status.code,
                                              code: code, detail: detail, field: field)
        let data = (try? APIJSON.encoder.encode(body)) ?? Data()
        var headers = self.headers
        headers[.contentType] = "application/problem+json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    init(status: HTTPResponse.Status, code: Code, detail: String, field: String? = nil) {
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
    }

    /// The core's error as an HTTP answer.
    init(_ error: CoordinatorError) {
        let (status, code): (HTTPResponse.Status, Code) = switch error.code {
        case .badRequest: (.badRequest, .badRequest)
        case .unauthenticated: (.unauthorized, .unauthenticated)
        case .permissionDenied: (.forbidden, .permissionDenied)
        case .notFound: (.notFound, .notFound)
        case .invalidArgument: (.badRequest, .invalidArgument)
        case .failedPrecondition: (.conflict, .failedPrecondition)
        case .staleLease: (.conflict, .staleEpoch)
        case .resourceExhausted: (.contentTooLarge, .resourceExhausted)
        case .internal: (.internalServerError, ._internal)
        case .unavailable: (.serviceUnavailable, .unavailable)
        }
        self.init(status: status, code: code, detail: error.message)
        if error.code == .unauthenticated { headers[.wwwAuthenticate] = #"Bearer realm="heddle""# }
    }
}

/// Renders every error as problem+json: the core's errors with their status, malformed
/// requests as 400 naming the field, unknown routes 404 and known routes with another method
/// 405 (with `Allow`). Anything else is a fault of the coordinator: 500, logged.
struct ProblemMiddleware: RouterMiddleware {
    typealias Context = HeddleRequestContext
    let routes: DocumentedRoutes
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return problem(for: error, request: request).response
        }
    }

    func problem(for error: any Error, request: Request) -> Problem {
        switch error {
        case let problem as Problem:
            return problem
        case let error as CoordinatorError:
            if error.code == .internal { logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"]) }
            return Problem(error)
        case is NIOTooManyBytesError:
            // A chunked body past the limit (a declared length past it is refused before reading).
            return HTTPFront.tooLarge(request)
        case let error as ServerError:
            if let core = error.underlyingError as? CoordinatorError { return problem(for: core, request: request) }
            if let problem = error.underlyingError as? Problem { return problem }
            if error.underlyingError is NIOTooManyBytesError { return HTTPFront.tooLarge(request) }
            if let answer = error.underlyingError as? any HTTPResponseConvertible, answer.httpStatus == .notAcceptable {
                // The route answers JSON and the Accept header excludes it.
                return Problem(status: .notAcceptable, code: .notAcceptable,
                               detail: "this route answers application/json, which the Accept header (\(request.headers[.accept] ?? "")) does not accept")
            }
            if error.operationInput == nil {
                // The request did not decode: the caller's mistake.
                return Self.malformed(error)
            }
            logger.error("request failed", metadata: ["operation": "\(error.operationID)", "error": "\(error.underlyingError)"])
            return Problem(status: .internalServerError, code: ._internal, detail: "internal error: \(error.underlyingError)")
        case let error as HTTPError:
            if error.status == .notFound {
                return routes.problem(method: request.method, path: request.uri.path)
            }
            if error.status == .contentTooLarge { return HTTPFront.tooLarge(request) }
            return Problem(status: error.status, code: error.status.code < 500 ? .badRequest : ._internal,
                           detail: error.body ?? error.status.reasonPhrase)
        default:
            logger.error("request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
            return Problem(status: .internalServerError, code: ._internal, detail: "internal error: \(error)")
        }
    }

    /// A request that did not decode, naming the field at fault when a JSON decoder said which.
    static func malformed(_ error: ServerError) -> Problem {
        if let decoding = findDecodingError(error.underlyingError, depth: 0) {
            let (field, detail) = describe(decoding)
            if let field, !field.isEmpty {
                return Problem(status: .badRequest, code: .badRequest, detail: detail, field: field)
            }
        }
        if let decoding = findDecodingError(error.underlyingError, depth: 0), let context = decoding.context {
            return Problem(status: .badRequest, code: .badRequest,
                           detail: "a path or query parameter is malformed: \(context.debugDescription)")
        }
        let detail = "the request is malformed: \(error.causeDescription)"
        return Problem(status: .badRequest, code: .badRequest, detail: detail)
    }

    static func findDecodingError(_ value: Any, depth: Int) -> DecodingError? {
        if let decoding = value as? DecodingError { return decoding }
        guard depth < 6 else { return nil }
        for child in Mirror(reflecting: value).children {
            if let found = findDecodingError(child.value, depth: depth + 1) { return found }
        }
        return nil
    }

    static func describe(_ error: DecodingError) -> (field: String?, detail: String) {
        func path(_ keys: [any CodingKey]) -> String {
            keys.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined().trimmingPrefix(".").description
        }
        switch error {
        case .keyNotFound(let key, let context):
            let field = path(context.codingPath + [key])
            return (field, "the body lacks the required field '\(field)'")
        case .typeMismatch(let type, let context):
            let field = path(context.codingPath)
            return (field, "field '\(field)' is not a valid \(Self.typeName(type))")
        case .valueNotFound(let type, let context):
            let field = path(context.codingPath)
            return (field, "field '\(field)' is null; it must be a \(Self.typeName(type))")
        case .dataCorrupted(let context):
            let field = path(context.codingPath)
            if field.isEmpty { return (nil, "the body is not valid JSON") }
            return (field, "field '\(field)' has a value this API does not accept")
        @unknown default:
            return (nil, "the body is malformed")
        }
    }

    static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "string"
        case is Int.Type, is Int64.Type, is Int32.Type: "integer"
        case is Bool.Type: "boolean"
        case is Double.Type: "number"
        default: "value of that type"
        }
    }
}

/// Bodies are read whole, up to their route's limit (`HTTPFront.bodyLimit`), after the
/// caller's credentials are checked: a larger one is answered 413 before (by its
/// Content-Length) or while it is read, so memory is bounded whatever a client sends.
struct BodyLimitMiddleware: RouterMiddleware {
    typealias Context = HeddleRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let limit = HTTPFront.bodyLimit(request)
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit {
            throw HTTPFront.tooLarge(request)
        }
        // A forge's delivery is read by its route, signature first.
        if request.uri.path.hasPrefix("/hooks/") { return try await next(request, context) }
        var request = request
        let body: ByteBuffer
        do {
            body = try await request.collectBody(upTo: limit)
        } catch let error as HTTPError where error.status == .contentTooLarge {
            throw HTTPFront.tooLarge(request)
        } catch is NIOTooManyBytesError {
            throw HTTPFront.tooLarge(request)
        }
        // No body at all means "all defaults": `{}` (every optional body here is an object
        // whose fields are optional; a required one then names its missing field).
        if body.readableBytes == 0, request.method == .post || request.method == .put || request.method == .patch,
           request.headers[.contentType] == nil {
            var head = request.head
            head.headerFields[.contentType] = "application/json"
            request = Request(head: head, body: .init(buffer: ByteBuffer(string: "{}")))
        } else if body.readableBytes > 0, request.headers[.contentType]?.lowercased().hasPrefix("application/json") == true {
            // Said before decoding, which cannot tell broken syntax from a wrong value, and
            // would take a null for an absent field: no field of this API is nullable.
            guard let json = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView), options: [.fragmentsAllowed]) else {
                throw Problem(status: .badRequest, code: .badRequest, detail: "the body is not valid JSON")
            }
            if let field = Self.firstNull(in: json, at: "") {
                throw Problem(status: .badRequest, code: .badRequest,
                              detail: "field '\(field)' is null; leave it out instead (no field of this API takes null)", field: field)
            }
        }
        return try await next(request, context)
    }

    /// The path of the first null in a JSON value (`commit`, `jobs[2].name`), or nil.
    static func firstNull(in value: Any, at path: String) -> String? {
        switch value {
        case is NSNull:
            return path.isEmpty ? "(the body)" : path
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                if let found = firstNull(in: object[key]!, at: path.isEmpty ? key : "\(path).\(key)") { return found }
            }
            return nil
        case let array as [Any]:
            for (index, item) in array.enumerated() {
                if let found = firstNull(in: item, at: "\(path)[\(index)]") { return found }
            }
            return nil
        default:
            return nil
        }
    }
}

/// Finds who calls `/api/v1` and `/metrics` (a bearer token, else a session cookie, else a
/// client certificate of the fabric's CA) and runs the request as that caller; 401 without
/// valid credentials. Valid credentials always pass. Wrong ones are counted per client
/// address and per credential prefix (`FailureLimiter`): past `maximumFailures` in a minute
/// for either, a wrong credential is answered 429 with `Retry-After` instead of 401, and
/// logged once per minute instead of each time. Never the secret is logged.
struct AuthenticationMiddleware: RouterMiddleware {
    typealias Context = HeddleRequestContext
    let core: CoordinatorCore
    let limiter: FailureLimiter
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        // Signing in is how a browser gets credentials: its route checks the token itself.
        guard path.hasPrefix("/api/") || path == "/metrics", path != "/api/v1/openapi.json",
              !(path == WebRoutes.sessionPath && request.method == .post) else {
            return try await next(request, context)
        }
        let principal: Principal
        let session: WebSession?
        do {
            (principal, session) = try await self.caller(of: request, context: context)
        } catch {
            // A wrong credential is an attempt; none at all is not (a page or a probe that has
            // not signed in yet), nor is a session that ended or a missing CSRF header.
            let presented = request.headers[.authorization] ?? request.cookies[WebRoutes.cookieName]?.value
            if request.headers[.authorization] != nil
                || (request.cookies[WebRoutes.cookieName] == nil && error.message != Self.noCredentials) {
                try limiter.failed(client: context.client, credential: presented, path: path, reason: error.message)
            }
            throw error
        }
        return try await Caller.$principal.withValue(principal) {
            try await Caller.$session.withValue(session) { try await next(request, context) }
        }
    }

    /// Who calls, and the session when the cookie signed the request in.
    func caller(of request: Request, context: Context) async throws(CoordinatorError) -> (Principal, WebSession?) {
        if let authorization = request.headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else {
                throw CoordinatorError(.unauthenticated, "the Authorization header must be `Bearer TOKEN`")
            }
            return (try core.access.principal(token: String(parts[1]).trimmingCharacters(in: .whitespaces)), nil)
        }
        if let secret = request.cookies[WebRoutes.cookieName]?.value {
            let session: WebSession
            do {
                session = try await BrowserSessions(access: core.access).session(secret: secret)
            } catch {
                throw CoordinatorError(error)
            }
            // A request that changes something must prove it comes from the dashboard's own
            // page: a page of another site can send the cookie (were SameSite not honoured)
            // but can neither read nor compute this header's value.
            if ![.get, .head, .options].contains(request.method),
               !WebRoutes.sameSecret(request.headers[WebRoutes.csrfHeader] ?? "", session.csrf) {
                throw CoordinatorError(.permissionDenied,
                                       "a request signed in by the session cookie that changes something must carry the X-Heddle-CSRF header given at sign-in")
            }
            return (session.principal, session)
        }
        if let identity = await Self.certificate(of: context.channel) {
            switch identity {
            case .success(let identity):
                let principal = Principal(identity)
                try core.access.checkNotRevoked(principal)
                return (principal, nil)
            case .failure(let error):
                throw CoordinatorError(.unauthenticated, error.message)
            }
        }
        throw CoordinatorError(.unauthenticated, Self.noCredentials)
    }

    static let noCredentials = "this request carries no credentials: send `Authorization: Bearer TOKEN` (heddle tokens create), sign in at / for a session cookie, or present a client certificate"

    /// The identity of a client certificate (verified by the TLS handshake against the
    /// fabric's CA), nil when none was presented or the connection is plain.
    static func certificate(of channel: any Channel) async -> Result<PeerIdentity, WireError>? {
        guard let peer = try? await channel.nioSSL_peerCertificate().get() else { return nil }
        do {
            return .success(try PeerIdentity(peer))
        } catch let error as WireError {
            return .failure(error)
        } catch {
            return .failure(WireError(.unauthenticated, "the client certificate cannot be read: \(error)"))
        }
    }
}

/// Wrong credentials per client address and per credential prefix (the first 16
/// characters presented: a token's `heddle_` and 9 more), in one-minute windows, for a
/// bounded number of each. Only failures are counted and only failures are refused: behind
/// one proxy address, or with a guessed prefix, valid credentials still pass.
final class FailureLimiter: Sendable {
    static let maximumFailures = 20
    static let window: Int64 = 60_000
    static let maximumKeys = 4096
    static let prefixLength = 16

    private struct Window {
        var start: Int64
        var failures: Int
    }
    private let windows = Mutex<[String: Window]>([:])
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    /// Counts a wrong credential. Below the limit for both its address and its prefix, the
    /// caller answers 401 (and it is logged); past it, throws 429 with `Retry-After`, logged
    /// once, when the limit is reached.
    func failed(client: String, credential: String?, path: String, reason: String,
                now: Int64 = Date.nowMilliseconds) throws(Problem) {
        var keys = ["address " + client]
        if let credential, !credential.isEmpty {
            let secret = credential.lowercased().hasPrefix("bearer ") ? String(credential.dropFirst(7)) : credential
            keys.append("credential " + String(secret.trimmingCharacters(in: .whitespaces).prefix(Self.prefixLength)))
        }
        let counts = keys.map { count($0, now: now) }
        let worst = counts.max { $0.failures < $1.failures }!
        if worst.failures <= Self.maximumFailures {
            logger.notice("refused credentials", metadata: ["client": "\(client)", "path": "\(path)", "reason": "\(reason)",
                                                            "failures": "\(worst.failures)"])
            return
        }
        let wait = Int((Self.window - (now - worst.start) + 999) / 1000)
        if worst.failures == Self.maximumFailures + 1 {
            logger.warning("wrong credentials past the limit: answered 429 until the minute is over",
                           metadata: ["client": "\(client)", "limit": "\(Self.maximumFailures) a minute", "retry.after": "\(wait)"])
        }
        var problem = Problem(status: .tooManyRequests, code: .tooManyRequests,
                              detail: "too many wrong credentials from \(client) or with this credential; valid credentials still pass; try again in \(wait) s")
        problem.headers[.retryAfter] = String(wait)
        throw problem
    }

    /// One more failure for `key` in its window: the window's start and its failures now.
    private func count(_ key: String, now: Int64) -> Window {
        windows.withLock { windows in
            if windows.count >= Self.maximumKeys, windows[key] == nil {
                windows = windows.filter { now - $0.value.start < Self.window }
                if windows.count >= Self.maximumKeys, let oldest = windows.min(by: { $0.value.start < $1.value.start }) {
                    windows[oldest.key] = nil
                }
            }
            var window = windows[key].flatMap { now - $0.start < Self.window ? $0 : nil } ?? Window(start: now, failures: 0)
            window.failures += 1
            windows[key] = window
            return window
        }
    }
}

/// The routes `openapi.yaml` documents, to tell an unknown route (404) from a known one
/// asked with another method (405).
struct DocumentedRoutes: Sendable {
    /// Path templates split in segments ("{x}" matches any one segment), with their methods.
    let routes: [(segments: [String], methods: Set<String>)]

    init(document: String, prefix: String, extra: [(String, Set<String>)]) {
        var routes: [(segments: [String], methods: Set<String>)] = []
        let object = (try? JSONSerialization.jsonObject(with: Data(document.utf8))) as? [String: Any]
        for (path, item) in (object?["paths"] as? [String: Any]) ?? [:] {
            let methods = Set(((item as? [String: Any]) ?? [:]).keys.map { $0.uppercased() }
                .filter { ["GET", "POST", "PUT", "PATCH", "DELETE"].contains($0) })
            routes.append(((prefix + path).split(separator: "/").map(String.init), methods))
        }
        for (path, methods) in extra { routes.append((path.split(separator: "/").map(String.init), methods)) }
        self.routes = routes
    }

    func problem(method: HTTPRequest.Method, path: String) -> Problem {
        let segments = path.split(separator: "/").map(String.init)
        let allowed = routes.filter { route in
            route.segments.count == segments.count
                && zip(route.segments, segments).allSatisfy { $0.hasPrefix("{") || $0 == $1 }
        }.reduce(into: Set<String>()) { $0.formUnion($1.methods) }
        guard !allowed.isEmpty else {
            return Problem(status: .notFound, code: .notFound, detail: "there is no route \(method.rawValue) \(path)")
        }
        var problem = Problem(status: .methodNotAllowed, code: .methodNotAllowed,
                              detail: "\(path) answers \(allowed.sorted().joined(separator: ", ")), not \(method.rawValue)")
        problem.headers[.allow] = allowed.sorted().joined(separator: ", ")
        return problem
    }
}

extension DecodingError {
    var context: Context? {
        switch self {
        case .keyNotFound(_, let context), .typeMismatch(_, let context), .valueNotFound(_, let context),
             .dataCorrupted(let context): context
        @unknown default: nil
        }
    }
}
