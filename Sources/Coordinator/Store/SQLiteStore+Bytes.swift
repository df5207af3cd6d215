import Foundation
import GRDB
import Wire

/// What the store holds about log and artifact bytes: log lengths, artifacts and their search.
extension SQLiteStore {
    // MARK: logs

    public func setLogEnds(_ ends: [LogEnd]) async throws -> Set<Int64> {
        try await group.write { db in
            let fence = try db.cachedStatement(sql: "SELECT 1 FROM job WHERE id = ? AND epoch = ? AND status = 'running'")
            let statement = try db.cachedStatement(sql: """
                INSERT INTO log_end (job_id, node, length) VALUES (?, ?, ?)
                ON CONFLICT (job_id, node) DO UPDATE SET length = excluded.length
                """)
            var leased: [Int64: Bool] = [:]
            var refused = Set<Int64>()
            for end in ends {
                if let epoch = end.epoch {
                    let holds = try leased[end.jobID] ?? (Int64.fetchOne(fence, arguments: [end.jobID, epoch]) != nil)
                    leased[end.jobID] = holds
                    guard holds else {
                        refused.insert(end.jobID)
                        continue
                    }
                }
                try statement.execute(arguments: [end.jobID, end.node, end.length])
            }
            return refused
        }
    }

    public func logLengths(jobID: Int64) async throws -> [String: Int64] {
        try await writer.read { db in
            var lengths: [String: Int64] = [:]
            for row in try Row.fetchAll(db.cachedStatement(sql: "SELECT node, length FROM log_end WHERE job_id = ?"), arguments: [jobID]) {
                lengths[row["node"]] = row["length"]
            }
            return lengths
        }
    }

    public func logEnds(jobIDs: [Int64], node: String?) async throws -> [LogEnd] {
        guard !jobIDs.isEmpty else { return [] }
        return try await writer.read { db in
            var arguments = StatementArguments(jobIDs)
            var filter = ""
            if let node {
                filter = " AND e.node = ?"
                arguments += [node]
            }
            return try Row.fetchAll(db, sql: """
                SELECT e.job_id, e.node, e.length FROM log_end e
                JOIN node n ON n.job_id = e.job_id AND n.name = e.node
                WHERE e.job_id IN (\(databaseQuestionMarks(count: jobIDs.count)))\(filter)
                ORDER BY e.job_id, n.ordinal
                """, arguments: arguments).map { LogEnd(jobID: $0["job_id"], node: $0["node"], length: $0["length"]) }
        }
    }

    // MARK: artifacts

    public func insertArtifact(jobID: Int64, epoch: Int64, name: String, size: Int64, sha256: String,
                               now: Int64) async throws -> ArtifactRecord {
        try await group.write { db in
            try Self.fence(db, jobID: jobID, epoch: epoch)
            let id = try Self.upsertFile(db, into: "artifact", jobID: jobID, name: name, size: size, sha256: sha256, now: now)
            try db.cachedStatement(sql: """
                UPDATE artifact SET (run_id, project, pipeline, branch) =
                    (SELECT r.id, r.project, r.pipeline, r.branch FROM job j JOIN run r ON r.id = j.run_id WHERE j.id = artifact.job_id)
                WHERE id = ?
                """).execute(arguments: [id])
            return try Self.fetchArtifacts(db, where: "a.id = ?", [id]).first!
        }
    }

    /// Inserts the row of a job's named file in `table` (`upload` or `artifact`), or
    /// replaces its size, hash and time; returns its id.
    static func upsertFile(_ db: Database, into table: String, jobID: Int64, name: String, size: Int64,
                           sha256: String, now: Int64) throws -> Int64 {
        try db.cachedStatement(sql: """
            INSERT INTO \(table) (job_id, name, size, sha256, created_at) VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256,
                created_at = excluded.created_at
            """).execute(arguments: [jobID, name, size, sha256, now])
        return try Int64.fetchOne(db.cachedStatement(sql: "SELECT id FROM \(table) WHERE job_id = ? AND name = ?"),
                                  arguments: [jobID, name])!
    }

    /// Artifacts listed without a run: the latest, so the answer stays one frame.
    static let latestArtifacts = 1000

    public func artifacts(runID: Int64?) async throws -> [ArtifactRecord] {
        try await writer.read { db in
            if let runID {
                return try Self.fetchArtifacts(db, where: "j.run_id = ?", [runID])
            }
            return try Self.fetchArtifacts(db, where: "a.id IN (SELECT id FROM artifact ORDER BY id DESC LIMIT ?)",
                                           [Self.latestArtifacts])
        }
    }

    public func artifact(id: Int64) async throws -> ArtifactRecord? {
        try await writer.read { db in try Self.fetchArtifacts(db, where: "a.id = ?", [id]).first }
    }

    static func fetchArtifacts(_ db: Database, where clause: String, _ arguments: StatementArguments) throws -> [ArtifactRecord] {
        try Row.fetchAll(db, sql: """
            SELECT \(artifactColumns) FROM artifact a JOIN job j ON j.id = a.job_id WHERE \(clause) ORDER BY a.id
            """, arguments: arguments).map(artifact)
    }

    static let artifactColumns = """
        a.id, j.run_id, a.job_id, j.attempt, j.name AS job, a.name, a.size, a.sha256, a.created_at, a.project, a.pipeline,
        a.branch
        """

    static func artifact(_ row: Row) -> ArtifactRecord {
        ArtifactRecord(id: row["id"], runID: row["run_id"], jobID: row["job_id"], attempt: row["attempt"],
                       job: row["job"], name: row["name"], size: row["size"], sha256: row["sha256"],
                       createdAt: row["created_at"], project: row["project"], pipeline: row["pipeline"], branch: row["branch"])
    }

    public func searchArtifacts(_ query: ArtifactQuery) async throws -> [ArtifactRecord] {
        try await writer.read { db in
            var clauses: [String] = []
            var arguments = StatementArguments()
            // A name alone, newest or oldest first: the trigram index gives the page itself, in
            // id order, without collecting every match (a common part matches most names).
            let nameAlone = !query.hasFiltersBesideName && (query.sort == .newest || query.sort == .oldest)
            let page = nameAlone ? " ORDER BY rowid \(query.sort == .newest ? "DESC" : "ASC") LIMIT \(query.rows) OFFSET \(query.offset)" : ""
            var pagedInIndex = false
            if let name = query.name {
                if name.contains(where: { "*?[".contains($0) }) {
                    clauses.append("a.id IN (SELECT rowid FROM artifact_name WHERE name GLOB ?\(page))")
                    arguments += [name]
                    pagedInIndex = nameAlone
                } else if name.count >= 3, !name.contains(where: { "%_".contains($0) }) {
                    // The trigram index answers a substring of three characters or more.
                    clauses.append("a.id IN (SELECT rowid FROM artifact_name WHERE name LIKE ?\(page))")
                    arguments += ["%\(name)%"]
                    pagedInIndex = nameAlone
                } else {
                    let escaped = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                        .replacingOccurrences(of: "_", with: "\\_")
                    clauses.append("a.name LIKE ? ESCAPE '\\'")
                    arguments += ["%\(escaped)%"]
                }
            }
            for (column, value) in [("a.project", query.project), ("a.pipeline", query.pipeline), ("a.branch", query.branch)] {
                if let value {
                    clauses.append("\(column) = ?")
                    arguments += [value]
                }
            }
            if let run = query.runID {
                clauses.append("a.run_id = ?")
                arguments += [run]
            }
            if let prefix = query.sha256Prefix {
                // Hex digits only (checked by the core): a range on the index.
                clauses.append("a.sha256 >= ? AND a.sha256 < ?")
                arguments += [prefix, prefix + "g"]
            }
            // Sorted by id, a size range is checked row by row along the id order (`+a.size`
            // keeps the size index out): the page is found without sorting every match.
            let size = query.sort == .newest || query.sort == .oldest ? "+a.size" : "a.size"
            if let minimum = query.minimumSize {
                clauses.append("\(size) >= ?")
                arguments += [minimum]
            }
            if let maximum = query.maximumSize {
                clauses.append("\(size) <= ?")
                arguments += [maximum]
            }
            if let after = query.createdAfter {
                clauses.append("a.created_at >= ?")
                arguments += [after]
            }
            if let before = query.createdBefore {
                clauses.append("a.created_at < ?")
                arguments += [before]
            }
            let order = switch query.sort {
            case .newest: "a.id DESC"
            case .oldest: "a.id"
            case .largest: "a.size DESC, a.id DESC"
            case .smallest: "a.size, a.id"
            case .name: "a.name, a.id"
            }
            // With the page taken in the name index, the outer query only orders it.
            let offset = pagedInIndex ? 0 : query.offset
            arguments += [query.rows, offset]
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try Row.fetchAll(db, sql: """
                SELECT \(Self.artifactColumns) FROM artifact a JOIN job j ON j.id = a.job_id \(whereClause)
                ORDER BY \(order) LIMIT ? OFFSET ?
                """, arguments: arguments).map(Self.artifact)
        }
    }
}
