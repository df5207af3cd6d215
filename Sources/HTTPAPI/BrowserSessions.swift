import Coordinator
import Foundation
import Wire

/// A browser session: it speaks for the API token it was opened with (its name and role).
public struct WebSession: Sendable, Equatable {
    public var principal: Principal
    /// What a state-changing request made with the cookie must carry in `X-Heddle-CSRF`
    /// (derived from the secret: a page of another site can neither read nor make it).
    public var csrf: String
    public var expiresAt: Int64
}

/// Browser sessions: a person pastes an API token once and gets a session whose secret lives
/// in an `HttpOnly` cookie. The session speaks for that token and ends when it expires, when
/// it is closed (sign out) or when the token is revoked or expires. Only the SHA-256 of its
/// secret is stored (`AccessControl.saveSession`, in the store), so every coordinator sharing
/// the store knows it.
struct BrowserSessions: Sendable {
    /// How long a session lasts at most (it ends sooner with its token).
    static let lifetime: Int64 = 12 * 3_600_000
    /// Sessions one token may have open at once; the oldest ends when one more opens.
    static let maximumPerToken = 100
    static let prefix = "heddle_session_"

    let access: AccessControl

    /// Opens a session for the holder of an API token. Returns its secret (the cookie's value).
    func open(token: String, now: Int64 = Date.nowMilliseconds) async throws -> (secret: String, session: WebSession) {
        let record = try access.token(secret: token, now: now)
        let secret = Self.prefix + AccessControl.randomSecret()
        let expiresAt = min(now + Self.lifetime, record.expiresAt ?? .max)
        try await access.saveSession(WebSessionRecord(secretSHA256: sha256Hex(Array(secret.utf8)), tokenName: record.name,
                                                      createdAt: now, expiresAt: expiresAt),
                                     maximumPerToken: Self.maximumPerToken)
        return (secret, WebSession(principal: Principal(name: record.name, role: record.role), csrf: Self.csrf(secret),
                                   expiresAt: expiresAt))
    }

    /// The session a cookie's secret opens; refused when unknown, expired, or when its token
    /// was revoked or expired since.
    func session(secret: String, now: Int64 = Date.nowMilliseconds) async throws -> WebSession {
        let refused = CoordinatorError(.unauthenticated, "the session has ended (signed out, expired, or its token revoked): sign in again")
        guard secret.hasPrefix(Self.prefix),
              let record = try await access.session(secretSHA256: sha256Hex(Array(secret.utf8))), now < record.expiresAt,
              let token = access.validToken(named: record.tokenName, now: now)
        else { throw refused }
        return WebSession(principal: Principal(name: token.name, role: token.role), csrf: Self.csrf(secret),
                          expiresAt: record.expiresAt)
    }

    /// Ends a session (sign out); ending one that is not open does nothing.
    func close(secret: String) async throws {
        try await access.deleteSession(secretSHA256: sha256Hex(Array(secret.utf8)))
    }

    static func csrf(_ secret: String) -> String {
        sha256Hex(Array("heddle csrf\u{0}\(secret)".utf8))
    }
}
