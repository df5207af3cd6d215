import Foundation
import Wire

/// Browser sessions: a person pastes an API token once and gets a session whose secret lives
/// in an `HttpOnly` cookie. The session speaks for that token (its name and role) and ends
/// when it expires, when it is closed (sign out) or when the token is revoked or expires. Only
/// the SHA-256 of its secret is stored, in the store, so every coordinator sharing the store
/// knows it.
public struct WebSession: Sendable, Equatable {
    public var principal: Principal
    /// What a state-changing request made with the cookie must carry in `X-Heddle-CSRF`
    /// (derived from the secret: a page of another site can neither read nor make it).
    public var csrf: String
    public var expiresAt: Int64
}

extension CoordinatorCore {
    /// How long a session lasts at most (it ends sooner with its token).
    public static let webSessionLifetime: Int64 = 12 * 3_600_000
    /// Sessions one token may have open at once; the oldest ends when one more opens.
    public static let maximumWebSessionsPerToken = 100
    static let webSessionPrefix = "heddle_session_"

    /// Opens a session for the holder of an API token. Returns its secret (the cookie's value).
    public func openWebSession(token: String, now: Int64 = Date.nowMilliseconds) async throws -> (secret: String, session: WebSession) {
        let principal = try principal(token: token, now: now)
        guard let record = tokens[sha256Hex(Array(token.utf8))] else {
            throw CoordinatorError(.unauthenticated, "the token is not valid (unknown, revoked or expired)")
        }
        var random = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &random) }
        let secret = Self.webSessionPrefix + bytes.map { String(format: "%02x", $0) }.joined()
        let expiresAt = min(now + Self.webSessionLifetime, record.expiresAt ?? .max)
        try await store.saveWebSession(WebSessionRecord(secretSHA256: sha256Hex(Array(secret.utf8)), tokenName: record.name,
                                                        createdAt: now, expiresAt: expiresAt),
                                       maximumPerToken: Self.maximumWebSessionsPerToken)
        logger.info("browser session opened", metadata: ["token": "\(record.name)"])
        return (secret, WebSession(principal: principal, csrf: Self.csrf(secret), expiresAt: expiresAt))
    }

    /// The session a cookie's secret opens; refused when unknown, expired, or when its token
    /// was revoked or expired since.
    public func webSession(secret: String, now: Int64 = Date.nowMilliseconds) async throws -> WebSession {
        let refused = CoordinatorError(.unauthenticated, "the session has ended (signed out, expired, or its token revoked): sign in again")
        guard secret.hasPrefix(Self.webSessionPrefix),
              let record = try await store.webSession(secretSHA256: sha256Hex(Array(secret.utf8))), now < record.expiresAt,
              let token = tokens.values.first(where: { $0.name == record.tokenName }), token.revokedAt == nil,
              token.expiresAt.map({ now < $0 }) ?? true
        else { throw refused }
        return WebSession(principal: Principal(name: token.name, role: token.role), csrf: Self.csrf(secret),
                          expiresAt: record.expiresAt)
    }

    /// Ends a session (sign out); ending one that is not open does nothing.
    public func closeWebSession(secret: String) async throws {
        try await store.deleteWebSession(secretSHA256: sha256Hex(Array(secret.utf8)))
    }

    static func csrf(_ secret: String) -> String {
        sha256Hex(Array("heddle csrf\u{0}\(secret)".utf8))
    }
}
