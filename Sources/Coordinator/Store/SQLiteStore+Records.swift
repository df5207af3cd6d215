import Foundation
import GRDB
import Wire

/// Uploads, revocations, webhooks, API tokens, browser sessions, attempts, projects and drains.
extension SQLiteStore {
    // MARK: uploads and revocations

    public func saveUpload(jobID: Int64, name: String, size: Int64, sha256: String, now: Int64) async throws -> UploadRecord {
        try await group.write { db in
            let id = try Self.upsertFile(db, into: "upload", jobID: jobID, name: name, size: size, sha256: sha256, now: now)
            return UploadRecord(id: id, jobID: jobID, name: name, size: size, sha256: sha256)
        }
    }

    public func uploads() async throws -> [UploadRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT id, job_id, name, size, sha256 FROM upload ORDER BY id").map {
                UploadRecord(id: $0["id"], jobID: $0["job_id"], name: $0["name"], size: $0["size"], sha256: $0["sha256"])
            }
        }
    }

    public func deleteUploads(ids: [Int64]) async throws {
        guard !ids.isEmpty else { return }
        try await group.write { db in
            try db.execute(sql: "DELETE FROM upload WHERE id IN (\(databaseQuestionMarks(count: ids.count)))",
                           arguments: StatementArguments(ids))
        }
    }

    public func revoke(name: String?, fingerprint: String?, now: Int64) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: "INSERT INTO revocation (name, fingerprint, revoked_at) VALUES (?, ?, ?)").execute(
                           arguments: [name, fingerprint, now])
        }
    }

    public func revocations() async throws -> [Revocation] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT name, fingerprint, revoked_at FROM revocation ORDER BY id").map {
                Revocation(name: $0["name"], fingerprint: $0["fingerprint"], revokedAt: $0["revoked_at"])
            }
        }
    }

    // MARK: webhooks

    public func setWebhookSecret(project: String, secret: String) async throws -> Bool {
        try await group.write { db in
            try db.cachedStatement(sql: "UPDATE project SET webhook_secret = ? WHERE name = ?").execute(arguments: [secret, project])
            return db.changesCount == 1
        }
    }

    public func webhookSecret(project: String) async throws -> String? {
        try await writer.read { db in
            try String.fetchOne(db.cachedStatement(sql: "SELECT webhook_secret FROM project WHERE name = ?"), arguments: [project])
        }
    }

    public func recordDelivery(_ delivery: DeliveryRecord) async throws -> DeliveryRecord? {
        try await group.write { db in
            if let seen = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM delivery WHERE project = ? AND forge = ? AND delivery_id = ?"),
                                           arguments: [delivery.project, delivery.forge, delivery.deliveryID]) {
                return try Self.delivery(seen)
            }
            try db.cachedStatement(sql: """
                INSERT INTO delivery (project, forge, delivery_id, event, received_at, outcome, detail, run_ids)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [delivery.project, delivery.forge, delivery.deliveryID, delivery.event, delivery.receivedAt,
                                          delivery.outcome.rawValue, delivery.detail, try json(delivery.runIDs)])
            return nil
        }
    }

    public func updateDelivery(_ delivery: DeliveryRecord) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: """
                UPDATE delivery SET outcome = ?, detail = ?, run_ids = ? WHERE project = ? AND forge = ? AND delivery_id = ?
                """).execute(arguments: [delivery.outcome.rawValue, delivery.detail, try json(delivery.runIDs), delivery.project,
                                          delivery.forge, delivery.deliveryID])
        }
    }

    public func deliveries(project: String, limit: Int) async throws -> [DeliveryRecord] {
        try await writer.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM delivery WHERE project = ? ORDER BY id DESC LIMIT ?"),
                             arguments: [project, limit]).map(Self.delivery)
        }
    }

    static func delivery(_ row: Row) throws -> DeliveryRecord {
        DeliveryRecord(project: row["project"], forge: row["forge"], deliveryID: row["delivery_id"], event: row["event"],
                       receivedAt: row["received_at"], outcome: DeliveryRecord.Outcome(rawValue: row["outcome"]) ?? .refused,
                       detail: row["detail"], runIDs: try unjson(row["run_ids"]))
    }

    // MARK: API tokens

    public func saveToken(_ token: TokenRecord) async throws -> Bool {
        try await group.write { db in
            try db.cachedStatement(sql: """
                INSERT INTO api_token (name, role, secret_sha256, created_at, expires_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (name) DO NOTHING
                """).execute(arguments: [token.name, token.role.rawValue, token.secretSHA256, token.createdAt, token.expiresAt])
            return db.changesCount == 1
        }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM api_token ORDER BY name").map(Self.token)
        }
    }

    public func revokeToken(name: String, now: Int64) async throws -> TokenRecord? {
        try await group.write { db in
            try db.cachedStatement(sql: "UPDATE api_token SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
                .execute(arguments: [now, name])
            return try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM api_token WHERE name = ?"), arguments: [name]).map(Self.token)
        }
    }

    // MARK: browser sessions

    public func saveWebSession(_ session: WebSessionRecord, maximumPerToken: Int) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: "DELETE FROM web_session WHERE expires_at <= ?").execute(arguments: [session.createdAt])
            try db.cachedStatement(sql: """
                DELETE FROM web_session WHERE token_name = ? AND secret_sha256 IN (
                    SELECT secret_sha256 FROM web_session WHERE token_name = ? ORDER BY created_at DESC LIMIT -1 OFFSET ?)
                """).execute(arguments: [session.tokenName, session.tokenName, max(0, maximumPerToken - 1)])
            try db.cachedStatement(sql: """
                INSERT INTO web_session (secret_sha256, token_name, created_at, expires_at) VALUES (?, ?, ?, ?)
                """).execute(arguments: [session.secretSHA256, session.tokenName, session.createdAt, session.expiresAt])
        }
    }

    public func webSession(secretSHA256: String) async throws -> WebSessionRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM web_session WHERE secret_sha256 = ?"),
                             arguments: [secretSHA256]).map {
                WebSessionRecord(secretSHA256: $0["secret_sha256"], tokenName: $0["token_name"], createdAt: $0["created_at"],
                                 expiresAt: $0["expires_at"])
            }
        }
    }

    public func deleteWebSession(secretSHA256: String) async throws {
        try await group.write { db in
            try db.cachedStatement(sql: "DELETE FROM web_session WHERE secret_sha256 = ?").execute(arguments: [secretSHA256])
        }
    }

    static func token(_ row: Row) -> TokenRecord {
        TokenRecord(name: row["name"], role: Role(rawValue: row["role"]) ?? .viewer, secretSHA256: row["secret_sha256"],
                    createdAt: row["created_at"], expiresAt: row["expires_at"], revokedAt: row["revoked_at"])
    }

    // MARK: attempts, projects, runners

    public func attempts(runID: Int64) async throws -> [AttemptRecord] {
        try await writer.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM attempt WHERE run_id = ? ORDER BY number"),
                             arguments: [runID]).map {
                AttemptRecord(runID: $0["run_id"], number: $0["number"],
                              status: Status(rawValue: $0["status"]) ?? .failed, trigger: $0["trigger"],
                              createdAt: $0["created_at"], startedAt: $0["started_at"], finishedAt: $0["finished_at"],
                              triggeredBy: $0["triggered_by"])
            }
        }
    }

    public func attempt(runID: Int64, number: Int) async throws -> AttemptRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM attempt WHERE run_id = ? AND number = ?"),
                             arguments: [runID, number]).map {
                AttemptRecord(runID: $0["run_id"], number: $0["number"],
                              status: Status(rawValue: $0["status"]) ?? .failed, trigger: $0["trigger"],
                              createdAt: $0["created_at"], startedAt: $0["started_at"], finishedAt: $0["finished_at"],
                              triggeredBy: $0["triggered_by"])
            }
        }
    }

    public func pipelineVersion(id: Int64) async throws -> PipelineVersionRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.pipelineColumns) WHERE v.id = ?"), arguments: [id])
                .map(Self.pipelineVersion)
        }
    }

    public func saveProject(name: String, repository: String, now: Int64) async throws -> ProjectRecord {
        try await group.write { db in
            try db.cachedStatement(sql: """
                INSERT INTO project (name, repository, created_at) VALUES (?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET repository = excluded.repository
                """).execute(arguments: [name, repository, now])
            return try Self.fetchProjects(db, where: "name = ?", [name]).first!
        }
    }

    public func projects() async throws -> [ProjectRecord] {
        try await writer.read { db in try Self.fetchProjects(db, where: "1", []) }
    }

    public func project(name: String) async throws -> ProjectRecord? {
        try await writer.read { db in try Self.fetchProjects(db, where: "name = ?", [name]).first }
    }

    static func fetchProjects(_ db: Database, where clause: String, _ arguments: StatementArguments) throws -> [ProjectRecord] {
        try Row.fetchAll(db, sql: """
            SELECT name, repository, created_at, webhook_secret IS NOT NULL AS has_webhook, fork_secrets FROM project
            WHERE \(clause) ORDER BY name
            """, arguments: arguments).map {
            ProjectRecord(name: $0["name"], repository: $0["repository"], createdAt: $0["created_at"], hasWebhook: $0["has_webhook"],
                          forkSecrets: $0["fork_secrets"])
        }
    }

    // MARK: secrets

    public func setSecret(project: String, name: String, sealed: [UInt8], now: Int64) async throws -> Bool {
        try await group.write { db in
            guard try Bool.fetchOne(db, sql: "SELECT 1 FROM project WHERE name = ?", arguments: [project]) != nil else { return false }
            try db.execute(sql: """
                INSERT INTO secret (project, name, sealed, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (project, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at
                """, arguments: [project, name, Data(sealed), now, now])
            return true
        }
    }

    public func secrets(project: String) async throws -> [SecretRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT name, created_at, updated_at FROM secret WHERE project = ? ORDER BY name",
                             arguments: [project]).map {
                SecretRecord(name: $0["name"], createdAt: $0["created_at"], updatedAt: $0["updated_at"])
            }
        }
    }

    public func deleteSecret(project: String, name: String) async throws -> Bool {
        try await group.write { db in
            try db.execute(sql: "DELETE FROM secret WHERE project = ? AND name = ?", arguments: [project, name])
            return db.changesCount > 0
        }
    }

    public func setForkSecrets(project: String, allowed: Bool) async throws -> Bool {
        try await group.write { db in
            try db.execute(sql: "UPDATE project SET fork_secrets = ? WHERE name = ?", arguments: [allowed, project])
            return db.changesCount > 0
        }
    }

    public func anySealedSecret() async throws -> SealedSecret? {
        try await writer.read { db in
            try Row.fetchOne(db, sql: "SELECT project, name, sealed FROM secret LIMIT 1").map {
                SealedSecret(project: $0["project"], name: $0["name"], sealed: [UInt8]($0["sealed"] as Data))
            }
        }
    }

    public func setDrained(runner: String, drained: Bool) async throws {
        try await group.write { db in
            if drained {
                try db.cachedStatement(sql: "INSERT OR REPLACE INTO runner_state (name, drained) VALUES (?, 1)").execute(arguments: [runner])
            } else {
                try db.cachedStatement(sql: "DELETE FROM runner_state WHERE name = ?").execute(arguments: [runner])
            }
        }
    }

    public func drainedRunners() async throws -> Set<String> {
        try await writer.read { db in Set(try String.fetchAll(db, sql: "SELECT name FROM runner_state WHERE drained = 1")) }
    }

    /// A run attempt's status from its jobs': running until every job finished, then failed
    /// if any failed, cancelled if any was cancelled, otherwise succeeded.
}
