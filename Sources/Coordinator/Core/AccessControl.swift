import Foundation
import Logging
import Synchronization
import Wire

/// Who may come in: API tokens and revoked certificates (and the records browser sessions are
/// kept in; the HTTP front's `BrowserSessions` holds their rules). It owns the
/// coordinator's working copy of the tokens and revocations (durable in the store, read
/// again when another coordinator of a cluster changed them), behind a lock, so a front checks
/// a request's credential at once, without waiting for the core's other work.
///
/// Token secrets are shown once, when a token is made; the store keeps only their SHA-256 (a
/// token is 256 random bits, so a plain hash is as strong as a slow one and costs a request
/// nothing).
public final class AccessControl: Sendable {
    /// Every token secret starts so: a leaked one is recognisable (secret scanners can match it).
    public static let tokenPrefix = "heddle_"

    private struct State {
        /// API tokens by the SHA-256 of their secret.
        var tokens: [String: TokenRecord] = [:]
        var revocations: [Revocation] = []
    }

    private let state = Mutex(State())
    private let store: any CoordinatorStore
    private let signals: SignalOutbox?
    private let logger: Logger

    /// `signals`: where to tell the other coordinators of a cluster that tokens or
    /// revocations changed (nil on SQLite).
    init(store: any CoordinatorStore, signals: SignalOutbox?, logger: Logger) {
        self.store = store
        self.signals = signals
        self.logger = logger
    }

    /// Reads the tokens and revocations from the store (at start, and after another
    /// coordinator changed them).
    func load() async throws {
        let revocations = try await store.revocations()
        let tokens = try await store.tokens()
        state.withLock {
            $0.revocations = revocations
            $0.tokens = Dictionary(tokens.map { ($0.secretSHA256, $0) }, uniquingKeysWith: { $1 })
        }
    }

    // MARK: tokens

    /// Makes a token with `role` (not `runner`: runners use certificates), valid for
    /// `expiresInDays` (nil: no expiry). Returns it and its secret.
    public func createToken(name: String, role: Role, expiresInDays: Int?, as principal: Principal) async throws
        -> (token: TokenRecord, secret: String)
    {
        try Authorization.check(principal, .manageTokens)
        if let problem = Names.problem(name, "token name") { throw CoordinatorError.invalid(problem) }
        guard role != .runner else {
            throw CoordinatorError.invalid("a token's role is viewer, automation or admin; runners use certificates")
        }
        if let days = expiresInDays, !(1...3650).contains(days) {
            throw CoordinatorError.invalid("a token expires in 1 to 3650 days, not \(days)")
        }
        let secret = Self.tokenPrefix + Self.randomSecret()
        let now = Date.nowMilliseconds
        let token = TokenRecord(name: name, role: role, secretSHA256: sha256Hex(Array(secret.utf8)), createdAt: now,
                                expiresAt: expiresInDays.map { now + Int64($0) * 86_400_000 }, revokedAt: nil)
        guard try await store.saveToken(token) else {
            throw CoordinatorError(.failedPrecondition, "a token named \(name) exists; revoke it or choose another name")
        }
        state.withLock { $0.tokens[token.secretSHA256] = token }
        signals?.add(.state)
        logger.notice("API token created", metadata: ["token": "\(name)", "role": "\(role.rawValue)", "by": "\(principal)"])
        return (token, secret)
    }

    /// Every token (revoked and expired ones too), by name.
    public func tokenList(as principal: Principal) throws(CoordinatorError) -> [TokenRecord] {
        try Authorization.check(principal, .manageTokens)
        return state.withLock { $0.tokens.values.sorted { $0.name < $1.name } }
    }

    /// Revokes a token: requests that carry it are refused from now on.
    public func revokeToken(name: String, as principal: Principal) async throws -> TokenRecord {
        try Authorization.check(principal, .manageTokens)
        guard let token = try await store.revokeToken(name: name, now: Date.nowMilliseconds) else {
            throw CoordinatorError.notFound("there is no token named \(name)")
        }
        state.withLock { $0.tokens[token.secretSHA256] = token }
        signals?.add(.state)
        logger.notice("API token revoked", metadata: ["token": "\(name)", "by": "\(principal)"])
        return token
    }

    /// Who a bearer token speaks for. Unknown, revoked and expired tokens are refused with
    /// the same answer (the caller learns nothing about which tokens exist).
    public func principal(token secret: String, now: Int64 = Date.nowMilliseconds) throws(CoordinatorError) -> Principal {
        let token = try validToken(secret: secret, now: now)
        return Principal(name: token.name, role: token.role)
    }

    /// The token of a secret, when it is neither revoked nor expired at `now`.
    func validToken(secret: String, now: Int64) throws(CoordinatorError) -> TokenRecord {
        let hash = sha256Hex(Array(secret.utf8))
        guard let token = state.withLock({ $0.tokens[hash] }), Self.isValid(token, now: now) else {
            throw CoordinatorError(.unauthenticated, "the token is not valid (unknown, revoked or expired)")
        }
        return token
    }

    static func isValid(_ token: TokenRecord, now: Int64) -> Bool {
        token.revokedAt == nil && (token.expiresAt.map { now < $0 } ?? true)
    }

    /// 256 random bits as URL-safe base64 without padding (43 characters).
    public static func randomSecret() -> String {
        var random = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    // MARK: certificates

    /// Whether the principal's certificate was revoked (by fingerprint, or by name for every
    /// certificate of that name issued up to the revocation).
    public func isRevoked(_ principal: Principal) -> Bool {
        guard let certificate = principal.certificate else { return false }
        let revocations = state.withLock { $0.revocations }
        return revocations.contains { revocation in
            if let fingerprint = revocation.fingerprint, fingerprint == certificate.fingerprint { return true }
            if let name = revocation.name, name == principal.name,
               // Certificates carry seconds: one issued in the second of the revocation is covered.
               Int64(certificate.issuedAt.timeIntervalSince1970.rounded(.down)) <= revocation.revokedAt / 1000 { return true }
            return false
        }
    }

    /// Refuses a certificate principal whose certificate was revoked (the HTTP front checks
    /// each request this way; the binary front when it opens a session).
    public func checkNotRevoked(_ principal: Principal) throws(CoordinatorError) {
        guard isRevoked(principal) else { return }
        let fingerprint = principal.certificate.map { " (\($0.fingerprint.prefix(16)))" } ?? ""
        throw CoordinatorError(.unauthenticated, "certificate \(principal.name)\(fingerprint) is revoked")
    }

    /// Revokes certificates by name or fingerprint (64 hex digits), stored first.
    func revoke(name: String?, fingerprint: String?, as principal: Principal) async throws -> Revocation {
        try Authorization.check(principal, .revoke)
        let name = name.flatMap { $0.isEmpty ? nil : $0 }
        let fingerprint = fingerprint.flatMap { $0.isEmpty ? nil : $0.lowercased() }
        guard name != nil || fingerprint != nil else { throw CoordinatorError.invalid("revoke needs a name or a fingerprint") }
        if let fingerprint, fingerprint.count != 64 || !fingerprint.allSatisfy(\.isHexDigit) {
            throw CoordinatorError.invalid("a fingerprint is the 64 hex digits of the certificate's SHA-256")
        }
        let revocation = Revocation(name: name, fingerprint: fingerprint, revokedAt: Date.nowMilliseconds)
        try await store.revoke(name: revocation.name, fingerprint: revocation.fingerprint, now: revocation.revokedAt)
        signals?.add(.state)
        state.withLock { $0.revocations.append(revocation) }
        return revocation
    }

    // MARK: what browser sessions are made of (the HTTP front keeps their rules)

    /// The token a secret is, when it is neither revoked nor expired at `now` (a front opens a
    /// browser session speaking for it).
    public func token(secret: String, now: Int64 = Date.nowMilliseconds) throws(CoordinatorError) -> TokenRecord {
        try validToken(secret: secret, now: now)
    }

    /// The token of that name, when it is neither revoked nor expired at `now`.
    public func validToken(named name: String, now: Int64 = Date.nowMilliseconds) -> TokenRecord? {
        state.withLock { $0.tokens.values.first { $0.name == name } }.flatMap { Self.isValid($0, now: now) ? $0 : nil }
    }

    /// Stores a browser session's record (only the SHA-256 of its secret), so every
    /// coordinator sharing the store knows it; a token's oldest session goes past
    /// `maximumPerToken`.
    public func saveSession(_ record: WebSessionRecord, maximumPerToken: Int) async throws {
        try await store.saveWebSession(record, maximumPerToken: maximumPerToken)
    }

    /// A browser session's record, by the SHA-256 of its secret.
    public func session(secretSHA256: String) async throws -> WebSessionRecord? {
        try await store.webSession(secretSHA256: secretSHA256)
    }

    /// Forgets a browser session (sign out).
    public func deleteSession(secretSHA256: String) async throws {
        try await store.deleteWebSession(secretSHA256: secretSHA256)
    }
}
