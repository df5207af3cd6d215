import Foundation
import GRDB
import Wire

/// Reads of runs, jobs and nodes.
extension SQLiteStore {
    // MARK: reads

    static let runColumns = """
        id, project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at, started_at, finished_at,
        commit_sha, triggered_by, fork, inputs
        """

    static func run(_ row: Row) -> RunRecord {
        var run = RunRecord(id: row["id"], project: row["project"], pipeline: row["pipeline"],
                            pipelineVersionID: row["pipeline_version_id"], branch: row["branch"],
                            status: Status(rawValue: row["status"]) ?? .failed, attempt: row["attempt"],
                            trigger: row["trigger"], createdAt: row["created_at"], startedAt: row["started_at"],
                            finishedAt: row["finished_at"])
        run.commit = row["commit_sha"]
        run.triggeredBy = row["triggered_by"]
        run.fork = row["fork"]
        run.inputs = (try? unjson(row["inputs"] as String)) ?? [:]
        return run
    }

    static func fetchRun(_ db: Database, id: Int64) throws -> RunRecord? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT \(runColumns) FROM run WHERE id = ?"), arguments: [id]).map(run)
    }

    public func runs(limit: Int, filter: RunFilter) async throws -> [RunRecord] {
        try await writer.read { db in
            var clauses: [String] = []
            var arguments = StatementArguments()
            for (column, value) in [("project", filter.project), ("pipeline", filter.pipeline),
                                    ("branch", filter.branch), ("status", filter.status?.rawValue),
                                    ("trigger", filter.trigger)] {
                if let value {
                    clauses.append("\(column) = ?")
                    arguments += [value]
                }
            }
            if let before = filter.before {
                clauses.append("id < ?")
                arguments += [before]
            }
            arguments += [limit]
            let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try Row.fetchAll(db, sql: "SELECT \(Self.runColumns) FROM run \(whereClause) ORDER BY id DESC LIMIT ?",
                                    arguments: arguments).map(Self.run)
        }
    }

    public func run(id: Int64) async throws -> RunRecord? {
        try await writer.read { db in try Self.fetchRun(db, id: id) }
    }

    static let jobColumns = """
        id, run_id, attempt, name, labels, status, runner, epoch, position, queued_at, started_at, finished_at, reason,
        commit_sha, retry_lost, lost_count, carried_from, cache
        """

    static func job(_ row: Row) throws -> JobRecord {
        JobRecord(id: row["id"], runID: row["run_id"], attempt: row["attempt"], name: row["name"],
                  labels: try unjson(row["labels"]), status: Status(rawValue: row["status"]) ?? .failed,
                  runner: row["runner"], epoch: row["epoch"], position: row["position"], queuedAt: row["queued_at"],
                  startedAt: row["started_at"], finishedAt: row["finished_at"], reason: row["reason"],
                  commit: row["commit_sha"], retryLost: row["retry_lost"], lostCount: row["lost_count"],
                  carriedFrom: row["carried_from"], cache: try CacheDefinition.fromColumn(row["cache"]))
    }

    public func jobs(runID: Int64, attempt: Int) async throws -> [JobRecord] {
        try await writer.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT \(Self.jobColumns) FROM job WHERE run_id = ? AND attempt = ? ORDER BY id"),
                             arguments: [runID, attempt]).map(Self.job)
        }
    }

    public func job(id: Int64) async throws -> JobRecord? {
        try await writer.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT \(Self.jobColumns) FROM job WHERE id = ?"), arguments: [id]).map(Self.job)
        }
    }

    public func jobs(ids: [Int64]) async throws -> [JobRecord] {
        guard !ids.isEmpty else { return [] }
        return try await writer.read { db in
            try Row.fetchAll(db, sql: "SELECT \(Self.jobColumns) FROM job WHERE id IN (\(databaseQuestionMarks(count: ids.count)))",
                             arguments: StatementArguments(ids)).map(Self.job)
        }
    }

    public func nodes(jobIDs: [Int64]) async throws -> [NodeRecord] {
        guard !jobIDs.isEmpty else { return [] }
        return try await writer.read { db in try Self.fetchNodes(db, jobIDs: jobIDs) }
    }

    static func fetchNodes(_ db: Database, jobIDs: [Int64]) throws -> [NodeRecord] {
        try Row.fetchAll(db, sql: """
            SELECT * FROM node WHERE job_id IN (\(databaseQuestionMarks(count: jobIDs.count)))
            ORDER BY job_id, ordinal
            """, arguments: StatementArguments(jobIDs)).map { row in
            NodeRecord(jobID: row["job_id"], name: row["name"], ordinal: row["ordinal"], run: row["run"],
                       needs: try unjson(row["needs"]), env: try unjson(row["env"]), timeout: row["timeout"], grace: row["grace"],
                       artifacts: try unjson(row["artifacts"]), network: row["network"],
                       limits: ResourceLimits(memory: row["memory_limit"], cpuMillis: row["cpu_limit_millis"], pids: row["pids_limit"]),
                       secrets: try unjson(row["secrets"]), image: row["image"],
                       status: Status(rawValue: row["status"]) ?? .failed, exitCode: row["exit_code"],
                       startedAt: row["started_at"], finishedAt: row["finished_at"])
        }
    }

    public func queuedJobs(matching filter: RunFilter) async throws -> [JobRecord] {
        try await writer.read { db in
            var clauses = ["j.status = 'queued'"]
            var arguments = StatementArguments()
            for (column, value) in [("project", filter.project), ("pipeline", filter.pipeline), ("branch", filter.branch)] {
                if let value {
                    clauses.append("r.\(column) = ?")
                    arguments += [value]
                }
            }
            let columns = Self.jobColumns.split(separator: ",").map { "j." + $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            return try Row.fetchAll(db, sql: """
                SELECT \(columns.joined(separator: ", ")) FROM job j JOIN run r ON r.id = j.run_id
                WHERE \(clauses.joined(separator: " AND ")) ORDER BY j.position
                """, arguments: arguments).map(Self.job)
        }
    }

    public func activeJobs() async throws -> [JobRecord] {
        try await writer.read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.jobColumns) FROM job WHERE status IN ('queued', 'running') ORDER BY position
                """).map(Self.job)
        }
    }
}
