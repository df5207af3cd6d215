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
        let record = try validToken(secret: token, now: now)
        let secret = Self.webSessionPrefix + Self.randomSecret()
        let expiresAt = min(now + Self.webSessionLifetime, record.expiresAt ?? .max)
        try await store.saveWebSession(WebSessionRecord(secretSHA256: sha256Hex(Array(secret.utf8)), tokenName: record.name,
                                                        createdAt: now, expiresAt: expiresAt),
                                       maximumPerToken: Self.maximumWebSessionsPerToken)
        logger.info("browser session opened", metadata: ["token": "\(record.name)"])
        return (secret, WebSession(principal: Principal(name: record.name, role: record.role), csrf: Self.csrf(secret),
                                   expiresAt: expiresAt))
    }

    /// The session a cookie's secret opens; refused when unknown, expired, or when its token
    /// was revoked or expired since.
    public func webSession(secret: String, now: Int64 = Date.nowMilliseconds) async throws -> WebSession {
        let refused = CoordinatorError(.unauthenticated, "the session has ended (signed out, expired, or its token revoked): sign in again")
        guard secret.hasPrefix(Self.webSessionPrefix),
              let record = try await store.webSession(secretSHA256: sha256Hex(Array(secret.utf8))), now < record.expiresAt,
              let token = tokens.values.first(where: { $0.name == record.tokenName }), Self.isValid(token, now: now)
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
