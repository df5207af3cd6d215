import APITypes
import Coordinator
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Wire

/// The dashboard: its files at `/` (embedded in the binary), and sign-in: an API token pasted
/// once becomes a session cookie (`HttpOnly`, `Secure`, `SameSite=Strict`).
struct WebRoutes {
    static let sessionPath = "/api/v1/session"
    static let cookieName = "heddle_session"
    static let csrfHeader = HTTPField.Name("X-Heddle-CSRF")!
    /// A sign-in's body (`{"token": "..."}`) is read before anyone is known: small.
    static let maximumSignInBytes = 4096

    let core: CoordinatorCore
    let limiter: FailureLimiter
    let logger: Logger

    func register(on router: Router<HeddleRequestContext>) {
        router.post(RouterPath(Self.sessionPath)) { request, context in try await signIn(request, context) }
        router.get(RouterPath(Self.sessionPath)) { _, _ in try current() }
        router.delete(RouterPath(Self.sessionPath)) { request, _ in try await signOut(request) }
        router.get("/") { request, _ in Self.file("index.html", request) }
        router.get("/assets/:file") { request, context in
            Self.file(context.parameters.get("file") ?? "", request)
        }
    }

    // MARK: sign-in

    /// `{"token": "..."}` → 201 with who the session is, its CSRF value and expiry, and the
    /// cookie. A wrong token counts toward the address's failed sign-ins as a bearer does.
    func signIn(_ request: Request, _ context: HeddleRequestContext) async throws -> Response {
        var request = request
        let body = try await request.collectBody(upTo: Self.maximumSignInBytes)
        struct SignIn: Decodable { var token: String? }
        guard let object = try? JSONDecoder().decode(SignIn.self, from: Data(body.readableBytesView)) else {
            throw Problem(status: .badRequest, code: .badRequest, detail: "the body is a JSON object with the token: {\"token\": \"heddle_...\"}")
        }
        guard let token = object.token, !token.isEmpty else {
            throw Problem(status: .badRequest, code: .badRequest, detail: "the body has no token", field: "token")
        }
        let opened: (secret: String, session: WebSession)
        do {
            opened = try await BrowserSessions(access: core.access).open(token: token.trimmingCharacters(in: .whitespacesAndNewlines))
        } catch let error as CoordinatorError where error.code == .unauthenticated {
            try limiter.failed(client: context.client, credential: token, path: Self.sessionPath, reason: error.message)
            throw error
        }
        logger.info("browser session opened", metadata: ["token": "\(opened.session.principal.name)"])
        var response = try Self.json(Self.describe(opened.session), status: .created)
        response.setCookie(Cookie(name: Self.cookieName, value: opened.secret,
                                  maxAge: Int(max(1, (opened.session.expiresAt - Date.nowMilliseconds + 999) / 1000)),
                                  path: "/", secure: true, httpOnly: true, sameSite: .strict))
        return response
    }

    /// Who is signed in (any credentials); with a session cookie, its CSRF value and expiry.
    func current() throws -> Response {
        let principal = try StreamRoutes.principal()
        if let session = Caller.session { return try Self.json(Self.describe(session)) }
        return try Self.json(Components.Schemas.Session(name: principal.name, role: .init(principal.role)))
    }

    /// Ends the session of the cookie (204) and clears the cookie.
    func signOut(_ request: Request) async throws -> Response {
        if let secret = request.cookies[Self.cookieName]?.value {
            try await BrowserSessions(access: core.access).close(secret: secret)
        }
        var response = Response(status: .noContent)
        response.setCookie(Cookie(name: Self.cookieName, value: "", maxAge: 0, path: "/", secure: true, httpOnly: true,
                                  sameSite: .strict))
        return response
    }

    /// Equal strings, compared in time that does not depend on where they differ.
    static func sameSecret(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    static func describe(_ session: WebSession) -> Components.Schemas.Session {
        Components.Schemas.Session(name: session.principal.name, role: .init(session.principal.role),
                                   csrf: session.csrf, expiresAt: Date(timeIntervalSince1970: Double(session.expiresAt) / 1000))
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        let data = try APIJSON.encoder.encode(value)
        return Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    // MARK: files

    /// The dashboard's files, by name: content type and bytes (SwiftPM `embedInCode`).
    static let files: [String: (type: String, bytes: [UInt8])] = [
        "index.html": ("text/html; charset=utf-8", PackageResources.index_html),
        "app.css": ("text/css; charset=utf-8", PackageResources.app_css),
        "app.js": ("text/javascript; charset=utf-8", PackageResources.app_js),
        "api.js": ("text/javascript; charset=utf-8", PackageResources.api_js),
        "ansi.js": ("text/javascript; charset=utf-8", PackageResources.ansi_js),
        "graph.js": ("text/javascript; charset=utf-8", PackageResources.graph_js),
        "log.js": ("text/javascript; charset=utf-8", PackageResources.log_js),
        "pages.js": ("text/javascript; charset=utf-8", PackageResources.pages_js),
        "run.js": ("text/javascript; charset=utf-8", PackageResources.run_js),
        "queue.js": ("text/javascript; charset=utf-8", PackageResources.queue_js),
    ]
    static let tags: [String: String] = files.mapValues { "\"\(SHA256.hash(data: $0.bytes).prefix(12).map { String(format: "%02x", $0) }.joined())\"" }

    /// A file with its ETag (a client revalidates each load: the binary may have changed) and
    /// a Content-Security-Policy that allows only this origin's scripts and styles.
    static func file(_ name: String, _ request: Request) -> Response {
        guard let file = files[name], let tag = tags[name] else {
            return Problem(status: .notFound, code: .notFound, detail: "there is no file \(name) in the dashboard").response
        }
        var headers: HTTPFields = [
            .contentType: file.type, .eTag: tag, .cacheControl: "no-cache",
            HTTPField.Name("Content-Security-Policy")!:
                "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            HTTPField.Name("X-Content-Type-Options")!: "nosniff", HTTPField.Name("Referrer-Policy")!: "no-referrer",
        ]
        if let match = request.headers[.ifNoneMatch], StreamRoutes.anyTagMatches(match, tag) {
            return Response(status: .notModified, headers: [.eTag: tag])
        }
        headers[.contentLength] = String(file.bytes.count)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }
}

extension Components.Schemas.Session.RolePayload {
    init(_ role: Wire.Role) {
        self = switch role {
        case .runner: .runner
        case .viewer: .viewer
        case .automation: .automation
        case .admin: .admin
        }
    }
}
