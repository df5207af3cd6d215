import Foundation
import Wire

/// API tokens: credentials for the HTTP front. The secret is shown once, when the token is
/// made; the store keeps only its SHA-256 (a token is 256 random bits, so a plain hash is as
/// strong as a slow one and costs a request nothing).
extension CoordinatorCore {
    /// Every secret starts so: a leaked one is recognisable (and secret scanners can match it).
    public static let tokenPrefix = "heddle_"

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
        tokens[token.secretSHA256] = token
        tell(.state)
        logger.notice("API token created", metadata: ["token": "\(name)", "role": "\(role.rawValue)", "by": "\(principal)"])
        return (token, secret)
    }

    /// Every token (revoked and expired ones too), by name.
    public func tokenList(as principal: Principal) throws(CoordinatorError) -> [TokenRecord] {
        try Authorization.check(principal, .manageTokens)
        return tokens.values.sorted { $0.name < $1.name }
    }

    /// Revokes a token: requests that carry it are refused from now on.
    public func revokeToken(name: String, as principal: Principal) async throws -> TokenRecord {
        try Authorization.check(principal, .manageTokens)
        guard let token = try await store.revokeToken(name: name, now: Date.nowMilliseconds) else {
            throw CoordinatorError.notFound("there is no token named \(name)")
        }
        tokens[token.secretSHA256] = token
        tell(.state)
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
        guard let token = tokens[sha256Hex(Array(secret.utf8))], Self.isValid(token, now: now) else {
            throw CoordinatorError(.unauthenticated, "the token is not valid (unknown, revoked or expired)")
        }
        return token
    }

    static func isValid(_ token: TokenRecord, now: Int64) -> Bool {
        token.revokedAt == nil && (token.expiresAt.map { now < $0 } ?? true)
    }

    /// 256 random bits as URL-safe base64 without padding (43 characters).
    static func randomSecret() -> String {
        var random = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        return Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Refuses a certificate principal whose certificate was revoked (the HTTP front checks
    /// each request this way; the binary front when it opens a session).
    public func checkNotRevoked(_ principal: Principal) throws(CoordinatorError) {
        guard isRevoked(principal) else { return }
        let fingerprint = principal.certificate.map { " (\($0.fingerprint.prefix(16)))" } ?? ""
        throw CoordinatorError(.unauthenticated, "certificate \(principal.name)\(fingerprint) is revoked")
    }
}

extension CoordinatorCore {
    /// Whether the coordinator can do its work now (`/readyz`), and why not.
    public var isReady: (ready: Bool, reason: String) {
        if let since = storageFullSince {
            return (false, "not ready: the coordinator's storage has been full since \(Date(timeIntervalSince1970: Double(since) / 1000))")
        }
        return (true, "ready")
    }
}
