import Foundation
import Logging
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// API tokens in the core: only their hash is stored; expiry, revocation and restarts hold.
@Suite struct TokenTests {
    let admin = Principal(name: "root", role: .admin)

    @Test(arguments: StoreKind.allCases)
    func aTokenSpeaksForItsRoleUntilItExpiresOrIsRevokedAndSurvivesARestart(kind: StoreKind) async throws {
      try await TestDatabase.with(kind) { database in
        let data = database.directory
        let store = try await database.open()
        let core = try CoordinatorCore(store: store, directory: data.path, logger: Logger(label: "test"))
        try await core.recover()

        let (token, secret) = try await core.access.createToken(name: "bot", role: .automation, expiresInDays: 30, as: admin)
        #expect(try core.access.principal(token: secret) == Principal(name: "bot", role: .automation))
        // Only the hash is stored.
        let stored = try await store.tokens()
        #expect(stored.map(\.secretSHA256) == [sha256Hex(Array(secret.utf8))] && !stored[0].secretSHA256.contains(secret))
        let now = token.createdAt
        #expect(try core.access.principal(token: secret, now: now + 29 * 86_400_000).role == .automation)
        #expect(throws: CoordinatorError(.unauthenticated, "the token is not valid (unknown, revoked or expired)")) {
            try core.access.principal(token: secret, now: now + 30 * 86_400_000)
        }

        // Refusals: a runner token, a bad name, a duplicate, a non-admin caller, bad expiry.
        await #expect(throws: CoordinatorError.self) { try await core.access.createToken(name: "r", role: .runner, expiresInDays: nil, as: admin) }
        await #expect(throws: CoordinatorError.self) { try await core.access.createToken(name: "has space", role: .viewer, expiresInDays: nil, as: admin) }
        await #expect(throws: CoordinatorError.self) { try await core.access.createToken(name: "bot", role: .viewer, expiresInDays: nil, as: admin) }
        await #expect(throws: CoordinatorError.self) { try await core.access.createToken(name: "x", role: .viewer, expiresInDays: 0, as: admin) }
        let automation = Principal(name: "bot", role: .automation)
        await #expect(throws: CoordinatorError.self) { try await core.access.createToken(name: "y", role: .admin, expiresInDays: nil, as: automation) }
        #expect(throws: CoordinatorError.self) { try core.access.tokenList(as: automation) }

        // Revoked, also after a restart; a second token still works there.
        let (_, other) = try await core.access.createToken(name: "look", role: .viewer, expiresInDays: nil, as: admin)
        let revoked = try await core.access.revokeToken(name: "bot", as: admin)
        #expect(revoked.revokedAt != nil)
        #expect(throws: CoordinatorError.self) { try core.access.principal(token: secret) }
        await #expect(throws: CoordinatorError.self) { try await core.access.revokeToken(name: "nobody", as: admin) }
        let restarted = try CoordinatorCore(store: try await database.open(), directory: data.path,
                                            logger: Logger(label: "test"))
        try await restarted.recover()
        #expect(throws: CoordinatorError.self) { try restarted.access.principal(token: secret) }
        #expect(try restarted.access.principal(token: other).role == .viewer)
        #expect(try restarted.access.tokenList(as: admin).map(\.name) == ["bot", "look"])
      }
    }
}
