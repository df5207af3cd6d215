import Foundation
import GRDB

// MARK: caches

extension SQLiteStore {
    static let cacheColumns = "id, project, branch, key, sha256, size, created_at, last_used_at, hits"

    static func cacheEntry(_ row: Row) -> CacheEntryRecord {
        CacheEntryRecord(id: row["id"], project: row["project"], branch: row["branch"], key: row["key"], sha256: row["sha256"],
                         size: row["size"], createdAt: row["created_at"], lastUsedAt: row["last_used_at"], hits: row["hits"])
    }

    public func findCache(project: String, branches: [String], key: String, prefixes: [String],
                          now: Int64) async throws -> CacheEntryRecord? {
        try await group.write { db in
            var found: Int64?
            search: for branch in branches {
                found = try Int64.fetchOne(db, sql: "SELECT id FROM cache_entry WHERE project = ? AND branch = ? AND key = ?",
                                           arguments: [project, branch, key])
                if found != nil { break }
                for prefix in prefixes {
                    found = try Int64.fetchOne(db, sql: """
                        SELECT id FROM cache_entry WHERE project = ? AND branch = ? AND substr(key, 1, length(?)) = ?
                        ORDER BY last_used_at DESC, id DESC LIMIT 1
                        """, arguments: [project, branch, prefix, prefix])
                    if found != nil { break search }
                }
            }
            guard let id = found else { return nil }
            try db.execute(sql: "UPDATE cache_entry SET last_used_at = ?, hits = hits + 1 WHERE id = ?", arguments: [now, id])
            return try Row.fetchOne(db, sql: "SELECT \(Self.cacheColumns) FROM cache_entry WHERE id = ?", arguments: [id])
                .map(Self.cacheEntry)
        }
    }

    public func saveCache(project: String, branch: String, key: String, sha256: String, size: Int64,
                          now: Int64) async throws -> CacheEntryRecord? {
        try await group.write { db in
            try db.execute(sql: """
                INSERT INTO cache_entry (project, branch, key, sha256, size, created_at, last_used_at)
                VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, branch, key) DO NOTHING
                """, arguments: [project, branch, key, sha256, size, now, now])
            guard db.changesCount == 1 else { return nil }
            return CacheEntryRecord(id: db.lastInsertedRowID, project: project, branch: branch, key: key, sha256: sha256,
                                    size: size, createdAt: now, lastUsedAt: now, hits: 0)
        }
    }

    public func cache(id: Int64) async throws -> CacheEntryRecord? {
        try await writer.read { db in
            try Row.fetchOne(db, sql: "SELECT \(Self.cacheColumns) FROM cache_entry WHERE id = ?", arguments: [id]).map(Self.cacheEntry)
        }
    }

    public func caches(project: String?) async throws -> [CacheEntryRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.cacheColumns) FROM cache_entry WHERE ? IS NULL OR project = ? ORDER BY last_used_at DESC, id DESC
                """, arguments: [project, project]).map(Self.cacheEntry)
        }
    }

    public func deleteCache(id: Int64) async throws -> CacheEntryRecord? {
        try await group.write { db in
            let entry = try Row.fetchOne(db, sql: "SELECT \(Self.cacheColumns) FROM cache_entry WHERE id = ?", arguments: [id])
                .map(Self.cacheEntry)
            try db.execute(sql: "DELETE FROM cache_entry WHERE id = ?", arguments: [id])
            return entry
        }
    }

    public func evictCaches(maximumBytes: Int64) async throws -> [CacheEntryRecord] {
        try await group.write { db in
            var total = try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(size), 0) FROM cache_entry") ?? 0
            var removed: [CacheEntryRecord] = []
            guard total > maximumBytes else { return [] }
            for row in try Row.fetchAll(db, sql: "SELECT \(Self.cacheColumns) FROM cache_entry ORDER BY last_used_at, id") {
                guard total > maximumBytes else { break }
                let entry = Self.cacheEntry(row)
                try db.execute(sql: "DELETE FROM cache_entry WHERE id = ?", arguments: [entry.id])
                total -= entry.size
                removed.append(entry)
            }
            return removed
        }
    }

    public func blobInUse(sha256: String) async throws -> Bool {
        try await writer.read { db in
            try Bool.fetchOne(db, sql: """
                SELECT EXISTS (SELECT 1 FROM artifact WHERE sha256 = ?) OR EXISTS (SELECT 1 FROM cache_entry WHERE sha256 = ?)
                """, arguments: [sha256, sha256]) ?? false
        }
    }
}
