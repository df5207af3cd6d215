import Foundation
import Logging
import PostgresNIO

// MARK: caches

extension PostgresStore {
    static let cacheColumns = "id, project, branch, key, sha256, size, created_at, last_used_at, hits"

    static func cacheEntry(_ row: PostgresRandomAccessRow) throws -> CacheEntryRecord {
        CacheEntryRecord(id: try row.get("id"), project: try row.get("project"), branch: try row.get("branch"),
                         key: try row.get("key"), sha256: try row.get("sha256"), size: try row.get("size"),
                         createdAt: try row.get("created_at"), lastUsedAt: try row.get("last_used_at"), hits: try row.get("hits"))
    }

    public func findCache(project: String, branches: [String], key: String, prefixes: [String],
                          now: Int64) async throws -> CacheEntryRecord? {
        let logger = logger
        return try await transaction { db in
            var found: Int64?
            search: for branch in branches {
                found = try await db.row("""
                    SELECT id FROM cache_entry WHERE project = \(project) AND branch = \(branch) AND key = \(key)
                    """, logger: logger)?.get("id", as: Int64.self)
                if found != nil { break }
                for prefix in prefixes {
                    found = try await db.row("""
                        SELECT id FROM cache_entry WHERE project = \(project) AND branch = \(branch) AND starts_with(key, \(prefix))
                        ORDER BY last_used_at DESC, id DESC LIMIT 1
                        """, logger: logger)?.get("id", as: Int64.self)
                    if found != nil { break search }
                }
            }
            guard let id = found else { return nil }
            return try await db.row("""
                UPDATE cache_entry SET last_used_at = \(now), hits = hits + 1 WHERE id = \(id)
                RETURNING \(unescaped: Self.cacheColumns)
                """, logger: logger).map(Self.cacheEntry)
        }
    }

    public func saveCache(project: String, branch: String, key: String, sha256: String, size: Int64,
                          now: Int64) async throws -> CacheEntryRecord? {
        try await read { [self] db in
            try await db.row("""
                INSERT INTO cache_entry (project, branch, key, sha256, size, created_at, last_used_at)
                VALUES (\(project), \(branch), \(key), \(sha256), \(size), \(now), \(now))
                ON CONFLICT (project, branch, key) DO NOTHING
                RETURNING \(unescaped: Self.cacheColumns)
                """, logger: logger).map(Self.cacheEntry)
        }
    }

    public func cache(id: Int64) async throws -> CacheEntryRecord? {
        try await read { [self] db in
            try await db.row("SELECT \(unescaped: Self.cacheColumns) FROM cache_entry WHERE id = \(id)", logger: logger)
                .map(Self.cacheEntry)
        }
    }

    public func caches(project: String?) async throws -> [CacheEntryRecord] {
        try await read { [self] db in
            try await db.rows("""
                SELECT \(unescaped: Self.cacheColumns) FROM cache_entry WHERE \(project)::text IS NULL OR project = \(project)
                ORDER BY last_used_at DESC, id DESC
                """, logger: logger).map(Self.cacheEntry)
        }
    }

    public func deleteCache(id: Int64) async throws -> CacheEntryRecord? {
        try await read { [self] db in
            try await db.row("DELETE FROM cache_entry WHERE id = \(id) RETURNING \(unescaped: Self.cacheColumns)", logger: logger)
                .map(Self.cacheEntry)
        }
    }

    public func evictCaches(maximumBytes: Int64) async throws -> [CacheEntryRecord] {
        let logger = logger
        return try await transaction { db in
            // One evictor at a time (several coordinators save caches).
            try await db.query("LOCK TABLE cache_entry IN SHARE ROW EXCLUSIVE MODE", logger: logger)
            return try await db.rows("""
                WITH ranked AS (
                    SELECT id, SUM(size) OVER (ORDER BY last_used_at DESC, id DESC) AS kept FROM cache_entry
                )
                DELETE FROM cache_entry WHERE id IN (SELECT id FROM ranked WHERE kept > \(maximumBytes))
                RETURNING \(unescaped: Self.cacheColumns)
                """, logger: logger).map(Self.cacheEntry)
        }
    }

    public func blobInUse(sha256: String) async throws -> Bool {
        try await read { [self] db in
            try await db.row("""
                SELECT EXISTS (SELECT 1 FROM artifact WHERE sha256 = \(sha256)) OR EXISTS (SELECT 1 FROM cache_entry WHERE sha256 = \(sha256))
                AS used
                """, logger: logger)?.get("used", as: Bool.self) ?? false
        }
    }
}
