import Foundation
import Logging
import PostgresNIO
import Wire

extension PostgresStore {
    // MARK: webhooks

    public func setWebhookSecret(project: String, secret: String) async throws -> Bool {
        try await read { [self] db in
            try await db.changes("UPDATE project SET webhook_secret = \(secret) WHERE name = \(project) RETURNING 1", logger: logger) == 1
        }
    }

    public func webhookSecret(project: String) async throws -> String? {
        try await read { [self] db in
            try await db.row("SELECT webhook_secret FROM project WHERE name = \(project)", logger: logger)
                .flatMap { try $0.get("webhook_secret", as: String?.self) }
        }
    }

    public func recordDelivery(_ delivery: DeliveryRecord) async throws -> DeliveryRecord? {
        let runIDs = try pgJSON(delivery.runIDs)
        let logger = logger
        return try await transaction { [self] db in
            let inserted = try await db.changes("""
                INSERT INTO delivery (project, forge, delivery_id, event, received_at, outcome, detail, run_ids)
                VALUES (\(delivery.project), \(delivery.forge), \(delivery.deliveryID), \(delivery.event), \(delivery.receivedAt),
                        \(delivery.outcome.rawValue), \(delivery.detail), \(runIDs))
                ON CONFLICT (project, forge, delivery_id) DO NOTHING RETURNING 1
                """, logger: logger)
            if inserted == 1 { return nil }
            return try await db.row("""
                SELECT * FROM delivery WHERE project = \(delivery.project) AND forge = \(delivery.forge)
                AND delivery_id = \(delivery.deliveryID)
                """, logger: logger).map(Self.delivery)
        }
    }

    public func updateDelivery(_ delivery: DeliveryRecord) async throws {
        let runIDs = try pgJSON(delivery.runIDs)
        try await read { [self] db in
            try await db.query("""
                UPDATE delivery SET outcome = \(delivery.outcome.rawValue), detail = \(delivery.detail), run_ids = \(runIDs)
                WHERE project = \(delivery.project) AND forge = \(delivery.forge) AND delivery_id = \(delivery.deliveryID)
                """, logger: logger)
        }
    }

    public func deliveries(project: String, limit: Int) async throws -> [DeliveryRecord] {
        try await read { [self] db in
            try await db.rows("SELECT * FROM delivery WHERE project = \(project) ORDER BY id DESC LIMIT \(limit)", logger: logger)
                .map(Self.delivery)
        }
    }

    static func delivery(_ row: PostgresRandomAccessRow) throws -> DeliveryRecord {
        DeliveryRecord(project: try row.get("project"), forge: try row.get("forge"), deliveryID: try row.get("delivery_id"),
                       event: try row.get("event"), receivedAt: try row.get("received_at"),
                       outcome: DeliveryRecord.Outcome(rawValue: try row.get("outcome")) ?? .refused,
                       detail: try row.get("detail"), runIDs: try pgUnJSON(try row.get("run_ids")))
    }

    // MARK: API tokens and browser sessions

    public func saveToken(_ token: TokenRecord) async throws -> Bool {
        try await read { [self] db in
            try await db.changes("""
                INSERT INTO api_token (name, role, secret_sha256, created_at, expires_at)
                VALUES (\(token.name), \(token.role.rawValue), \(token.secretSHA256), \(token.createdAt), \(token.expiresAt))
                ON CONFLICT (name) DO NOTHING RETURNING 1
                """, logger: logger) == 1
        }
    }

    public func tokens() async throws -> [TokenRecord] {
        try await read { [self] db in try await db.rows("SELECT * FROM api_token ORDER BY name", logger: logger).map(Self.token) }
    }

    public func revokeToken(name: String, now: Int64) async throws -> TokenRecord? {
        let logger = logger
        return try await transaction { [self] db in
            try await db.query("UPDATE api_token SET revoked_at = \(now) WHERE name = \(name) AND revoked_at IS NULL", logger: logger)
            return try await db.row("SELECT * FROM api_token WHERE name = \(name)", logger: logger).map(Self.token)
        }
    }

    static func token(_ row: PostgresRandomAccessRow) throws -> TokenRecord {
        TokenRecord(name: try row.get("name"), role: Role(rawValue: try row.get("role")) ?? .viewer,
                    secretSHA256: try row.get("secret_sha256"), createdAt: try row.get("created_at"),
                    expiresAt: try row.get("expires_at"), revokedAt: try row.get("revoked_at"))
    }

    public func saveWebSession(_ session: WebSessionRecord, maximumPerToken: Int) async throws {
        let logger = logger
        try await transaction { [self] db in
            try await db.query("DELETE FROM web_session WHERE expires_at <= \(session.createdAt)", logger: logger)
            try await db.query("""
                DELETE FROM web_session WHERE token_name = \(session.tokenName) AND secret_sha256 IN (
                    SELECT secret_sha256 FROM web_session WHERE token_name = \(session.tokenName)
                    ORDER BY created_at DESC OFFSET \(max(0, maximumPerToken - 1)))
                """, logger: logger)
            try await db.query("""
                INSERT INTO web_session (secret_sha256, token_name, created_at, expires_at)
                VALUES (\(session.secretSHA256), \(session.tokenName), \(session.createdAt), \(session.expiresAt))
                """, logger: logger)
        }
    }

    public func webSession(secretSHA256: String) async throws -> WebSessionRecord? {
        try await read { [self] db in
            try await db.row("SELECT * FROM web_session WHERE secret_sha256 = \(secretSHA256)", logger: logger).map {
                WebSessionRecord(secretSHA256: try $0.get("secret_sha256"), tokenName: try $0.get("token_name"),
                                 createdAt: try $0.get("created_at"), expiresAt: try $0.get("expires_at"))
            }
        }
    }

    public func deleteWebSession(secretSHA256: String) async throws {
        try await read { [self] db in
            try await db.query("DELETE FROM web_session WHERE secret_sha256 = \(secretSHA256)", logger: logger)
        }
    }

    // MARK: logs

    public func setLogEnds(_ ends: [LogEnd]) async throws -> Set<Int64> {
        guard !ends.isEmpty else { return [] }
        let logger = logger
        let me = coordinatorID
        return try await batched { db in
            // Fenced jobs, locked (shared) in id order: two coordinators never wait on each other in a circle.
            let fencedIDs = Array(Set(ends.compactMap { $0.epoch == nil ? nil : $0.jobID })).sorted()
            var current: [Int64: Int64] = [:]
            if !fencedIDs.isEmpty {
                for row in try await db.rows("""
                    SELECT id, epoch FROM job WHERE id = ANY(\(fencedIDs)) AND status = 'running' AND holder = \(me)
                    ORDER BY id FOR SHARE
                    """, logger: logger) {
                    current[try row.get("id")] = try row.get("epoch")
                }
            }
            var leased: [Int64: Bool] = [:]
            for end in ends {
                guard let epoch = end.epoch else { continue }
                leased[end.jobID] = (leased[end.jobID] ?? true) && current[end.jobID] == epoch
            }
            var refused = Set<Int64>()
            var jobIDs: [Int64] = []
            var nodes: [String] = []
            var lengths: [Int64] = []
            for end in ends {
                if end.epoch != nil, leased[end.jobID] != true {
                    refused.insert(end.jobID)
                    continue
                }
                jobIDs.append(end.jobID)
                nodes.append(end.node)
                lengths.append(end.length)
            }
            if !jobIDs.isEmpty {
                // The last length given for a log wins, as in a loop of upserts.
                try await db.query("""
                    INSERT INTO log_end (job_id, node, length)
                    SELECT DISTINCT ON (job_id, node) job_id, node, length
                    FROM unnest(\(jobIDs)::bigint[], \(nodes)::text[], \(lengths)::bigint[]) WITH ORDINALITY AS e(job_id, node, length, i)
                    ORDER BY job_id, node, i DESC
                    ON CONFLICT (job_id, node) DO UPDATE SET length = excluded.length
                    """, logger: logger)
            }
            return refused
        }
    }

    public func logLengths(jobID: Int64) async throws -> [String: Int64] {
        try await read { [self] db in
            var lengths: [String: Int64] = [:]
            for row in try await db.rows("SELECT node, length FROM log_end WHERE job_id = \(jobID)", logger: logger) {
                lengths[try row.get("node")] = try row.get("length")
            }
            return lengths
        }
    }

    public func logEnds(jobIDs: [Int64], node: String?) async throws -> [LogEnd] {
        guard !jobIDs.isEmpty else { return [] }
        return try await read { [self] db in
            try await db.rows("""
                SELECT e.job_id, e.node, e.length FROM log_end e JOIN node n ON n.job_id = e.job_id AND n.name = e.node
                WHERE e.job_id = ANY(\(jobIDs)) AND (\(node)::text IS NULL OR e.node = \(node))
                ORDER BY e.job_id, n.ordinal
                """, logger: logger).map { LogEnd(jobID: try $0.get("job_id"), node: try $0.get("node"), length: try $0.get("length")) }
        }
    }

    // MARK: artifacts

    public func insertArtifact(jobID: Int64, epoch: Int64, name: String, size: Int64, sha256: String,
                               now: Int64) async throws -> ArtifactRecord {
        let logger = logger
        let me = coordinatorID
        return try await transaction { [self] db in
            try await Self.fence(db, jobID: jobID, epoch: epoch, holder: me, logger: logger)
            let row = try await db.row("""
                INSERT INTO artifact (job_id, name, size, sha256, created_at, run_id, project, pipeline, branch)
                SELECT \(jobID), \(name), \(size), \(sha256), \(now), r.id, r.project, r.pipeline, r.branch
                FROM job j JOIN run r ON r.id = j.run_id WHERE j.id = \(jobID)
                ON CONFLICT (job_id, name) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256, created_at = excluded.created_at
                RETURNING id
                """, logger: logger)
            let id: Int64 = try row!.get("id")
            return try await db.row("SELECT \(unescaped: Self.artifactColumns) WHERE a.id = \(id)", logger: logger).map(Self.artifact)!
        }
    }

    static let artifactColumns = """
        a.id, j.run_id, a.job_id, j.attempt, j.name AS job, a.name, a.size, a.sha256, a.created_at, a.project, a.pipeline,
        a.branch FROM artifact a JOIN job j ON j.id = a.job_id
        """

    static func artifact(_ row: PostgresRandomAccessRow) throws -> ArtifactRecord {
        ArtifactRecord(id: try row.get("id"), runID: try row.get("run_id"), jobID: try row.get("job_id"),
                       attempt: try row.get("attempt"), job: try row.get("job"), name: try row.get("name"),
                       size: try row.get("size"), sha256: try row.get("sha256"), createdAt: try row.get("created_at"),
                       project: try row.get("project"), pipeline: try row.get("pipeline"), branch: try row.get("branch"))
    }

    public func artifacts(runID: Int64?) async throws -> [ArtifactRecord] {
        try await read { [self] db in
            if let runID {
                return try await db.rows("SELECT \(unescaped: Self.artifactColumns) WHERE j.run_id = \(runID) ORDER BY a.id",
                                         logger: logger).map(Self.artifact)
            }
            return try await db.rows("""
                SELECT \(unescaped: Self.artifactColumns) WHERE a.id IN (SELECT id FROM artifact ORDER BY id DESC LIMIT 1000)
                ORDER BY a.id
                """, logger: logger).map(Self.artifact)
        }
    }

    public func artifact(id: Int64) async throws -> ArtifactRecord? {
        try await read { [self] db in
            try await db.row("SELECT \(unescaped: Self.artifactColumns) WHERE a.id = \(id)", logger: logger).map(Self.artifact)
        }
    }

    public func searchArtifacts(_ query: ArtifactQuery) async throws -> [ArtifactRecord] {
        var builder = QueryBuilder()
        var clauses: [String] = []
        if let name = query.name {
            if name.contains(where: { "*?[".contains($0) }) {
                clauses.append("a.name ~ \(builder.bind(Self.regex(glob: name)))")
            } else {
                let escaped = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
                    .replacingOccurrences(of: "_", with: "\\_")
                clauses.append("a.name ILIKE \(builder.bind("%\(escaped)%"))")
            }
        }
        for (column, value) in [("a.project", query.project), ("a.pipeline", query.pipeline), ("a.branch", query.branch)] {
            if let value { clauses.append("\(column) = \(builder.bind(value))") }
        }
        if let run = query.runID { clauses.append("a.run_id = \(builder.bind(run))") }
        if let prefix = query.sha256Prefix {
            clauses.append("a.sha256 >= \(builder.bind(prefix)) AND a.sha256 < \(builder.bind(prefix + "g"))")
        }
        if let minimum = query.minimumSize { clauses.append("a.size >= \(builder.bind(minimum))") }
        if let maximum = query.maximumSize { clauses.append("a.size <= \(builder.bind(maximum))") }
        if let after = query.createdAfter { clauses.append("a.created_at >= \(builder.bind(after))") }
        if let before = query.createdBefore { clauses.append("a.created_at < \(builder.bind(before))") }
        let order = switch query.sort {
        case .newest: "a.id DESC"
        case .oldest: "a.id"
        case .largest: "a.size DESC, a.id DESC"
        case .smallest: "a.size, a.id"
        case .name: "a.name COLLATE \"C\", a.id"
        }
        let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        builder.sql = """
            SELECT \(Self.artifactColumns) \(whereClause) ORDER BY \(order)
            LIMIT \(builder.bind(query.rows)) OFFSET \(builder.bind(query.offset))
            """
        let built = builder.query
        return try await read { [self] db in try await db.rows(built, logger: logger).map(Self.artifact) }
    }

    /// A glob of a whole name (`*`, `?`, `[...]`, as SQLite's GLOB) as an anchored POSIX regular
    /// expression.
    static func regex(glob: String) -> String {
        var pattern = "^"
        var characters = Array(glob)[...]
        while let character = characters.popFirst() {
            switch character {
            case "*": pattern += ".*"
            case "?": pattern += "."
            case "[":
                // A class up to its closing bracket; `[^...]` negates it (SQLite also takes `^`).
                guard let close = characters.dropFirst().firstIndex(of: "]") else {
                    pattern += "\\["
                    continue
                }
                var body = String(characters[characters.startIndex..<close])
                characters = characters[(close + 1)...]
                body = body.replacingOccurrences(of: "\\", with: "\\\\")
                pattern += "[" + body + "]"
            default:
                if "\\.^$+()|{}]".contains(character) { pattern += "\\" }
                pattern.append(character)
            }
        }
        return pattern + "$"
    }

    // MARK: runs, jobs and nodes

    static let runColumns = """
        id, project, pipeline, pipeline_version_id, branch, status, attempt, trigger, created_at, started_at, finished_at,
        commit_sha, triggered_by, fork, inputs
        """

    /// A run from a row of `runColumns`, each named with `prefix` (`r_` where the row is a
    /// job's and its run's).
    static func run(_ row: PostgresRandomAccessRow, prefix: String) throws -> RunRecord {
        func get<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T { try row.get(prefix + column) }
        var run = RunRecord(id: try get("id"), project: try get("project"), pipeline: try get("pipeline"),
                            pipelineVersionID: try get("pipeline_version_id"), branch: try get("branch"),
                            status: Status(rawValue: try get("status")) ?? .failed, attempt: try get("attempt"),
                            trigger: try get("trigger"), createdAt: try get("created_at"),
                            startedAt: try get("started_at"), finishedAt: try get("finished_at"))
        run.commit = try get("commit_sha")
        run.triggeredBy = try get("triggered_by")
        run.fork = try get("fork")
        run.inputs = (try? pgUnJSON(try get("inputs", as: String.self))) ?? [:]
        return run
    }

    static func run(_ row: PostgresRandomAccessRow) throws -> RunRecord { try run(row, prefix: "") }

    static func fetchRun(_ db: PostgresConnection, id: Int64, logger: Logger) async throws -> RunRecord? {
        try await db.row("SELECT \(unescaped: runColumns) FROM run WHERE id = \(id)", logger: logger).map(run)
    }

    public func runs(limit: Int, filter: RunFilter) async throws -> [RunRecord] {
        var builder = QueryBuilder()
        var clauses: [String] = []
        for (column, value) in [("project", filter.project), ("pipeline", filter.pipeline), ("branch", filter.branch),
                                ("status", filter.status?.rawValue), ("trigger", filter.trigger)] {
            if let value { clauses.append("\(column) = \(builder.bind(value))") }
        }
        if let before = filter.before { clauses.append("id < \(builder.bind(before))") }
        let whereClause = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        builder.sql = "SELECT \(Self.runColumns) FROM run \(whereClause) ORDER BY id DESC LIMIT \(builder.bind(limit))"
        let built = builder.query
        return try await read { [self] db in try await db.rows(built, logger: logger).map(Self.run) }
    }

    public func run(id: Int64) async throws -> RunRecord? {
        try await read { [self] db in try await Self.fetchRun(db, id: id, logger: logger) }
    }

    static let jobColumns = """
        id, run_id, attempt, name, labels::text AS labels, status, runner, epoch, position, queued_at, started_at, finished_at,
        reason, commit_sha, retry_lost, lost_count, carried_from, cache
        """

    /// A column list (`jobColumns`, `runColumns`) with each column qualified by `table`.
    static func qualified(_ columns: String, by table: String) -> String {
        columns.split(separator: ",").map { "\(table)." + $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .joined(separator: ", ")
    }

    /// A column list with each column read from `table` and named with `prefix`
    /// (`run.id AS r_id, ...`), for a row of several tables' columns.
    static func prefixed(_ columns: String, from table: String, as prefix: String) -> String {
        columns.split(separator: ",").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            .map { "\(table).\($0) AS \(prefix)\($0)" }.joined(separator: ", ")
    }

    static func job(_ row: PostgresRandomAccessRow) throws -> JobRecord {
        JobRecord(id: try row.get("id"), runID: try row.get("run_id"), attempt: try row.get("attempt"), name: try row.get("name"),
                  labels: try pgUnJSON(try row.get("labels")), status: Status(rawValue: try row.get("status")) ?? .failed,
                  runner: try row.get("runner"), epoch: try row.get("epoch"), position: try row.get("position"),
                  queuedAt: try row.get("queued_at"), startedAt: try row.get("started_at"), finishedAt: try row.get("finished_at"),
                  reason: try row.get("reason"), commit: try row.get("commit_sha"), retryLost: try row.get("retry_lost"),
                  lostCount: try row.get("lost_count"), carriedFrom: try row.get("carried_from"),
                  cache: try CacheDefinition.fromColumn(try row.get("cache", as: String.self)))
    }

    public func jobs(runID: Int64, attempt: Int) async throws -> [JobRecord] {
        try await read { [self] db in
            try await db.rows("""
                SELECT \(unescaped: Self.jobColumns) FROM job WHERE run_id = \(runID) AND attempt = \(attempt) ORDER BY id
                """, logger: logger).map(Self.job)
        }
    }

    public func job(id: Int64) async throws -> JobRecord? {
        try await read { [self] db in
            try await db.row("SELECT \(unescaped: Self.jobColumns) FROM job WHERE id = \(id)", logger: logger).map(Self.job)
        }
    }

    public func jobs(ids: [Int64]) async throws -> [JobRecord] {
        guard !ids.isEmpty else { return [] }
        return try await read { [self] db in
            try await db.rows("SELECT \(unescaped: Self.jobColumns) FROM job WHERE id = ANY(\(ids))", logger: logger).map(Self.job)
        }
    }

    public func nodes(jobIDs: [Int64]) async throws -> [NodeRecord] {
        guard !jobIDs.isEmpty else { return [] }
        return try await read { [self] db in try await Self.fetchNodes(db, jobIDs: jobIDs, logger: logger) }
    }

    static func fetchNodes(_ db: PostgresConnection, jobIDs: [Int64], logger: Logger) async throws -> [NodeRecord] {
        try await db.rows("SELECT * FROM node WHERE job_id = ANY(\(jobIDs)) ORDER BY job_id, ordinal", logger: logger).map(node)
    }

    /// Every column of `node`, as `node(_:prefix:)` reads them.
    static let nodeReadColumns = "job_id, \(nodeColumns), status, exit_code, started_at, finished_at"

    /// A node from a row of `nodeReadColumns`, each named with `prefix`.
    static func node(_ row: PostgresRandomAccessRow, prefix: String) throws -> NodeRecord {
        func get<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T { try row.get(prefix + column) }
        return NodeRecord(jobID: try get("job_id"), name: try get("name"), ordinal: try get("ordinal"),
                          run: try get("run"), needs: try pgUnJSON(try get("needs")), env: try pgUnJSON(try get("env")),
                          timeout: try get("timeout"), grace: try get("grace"),
                          artifacts: try pgUnJSON(try get("artifacts")), network: try get("network"),
                          limits: ResourceLimits(memory: try get("memory_limit"), cpuMillis: try get("cpu_limit_millis"),
                                                 pids: try get("pids_limit")),
                          secrets: try pgUnJSON(try get("secrets")), image: try get("image"),
                          status: Status(rawValue: try get("status")) ?? .failed, exitCode: try get("exit_code"),
                          startedAt: try get("started_at"), finishedAt: try get("finished_at"))
    }

    static func node(_ row: PostgresRandomAccessRow) throws -> NodeRecord { try node(row, prefix: "") }

    public func queuedJobs(matching filter: RunFilter) async throws -> [JobRecord] {
        var builder = QueryBuilder()
        var clauses = ["j.status = 'queued'"]
        for (column, value) in [("project", filter.project), ("pipeline", filter.pipeline), ("branch", filter.branch)] {
            if let value { clauses.append("r.\(column) = \(builder.bind(value))") }
        }
        builder.sql = """
            SELECT \(Self.qualified(Self.jobColumns, by: "j")) FROM job j JOIN run r ON r.id = j.run_id
            WHERE \(clauses.joined(separator: " AND ")) ORDER BY j.position, j.id
            """
        let built = builder.query
        return try await read { [self] db in try await db.rows(built, logger: logger).map(Self.job) }
    }

    public func activeJobs() async throws -> [JobRecord] {
        try await read { [self] db in
            try await db.rows("""
                SELECT \(unescaped: Self.jobColumns) FROM job WHERE status IN ('queued', 'running') ORDER BY position, id
                """, logger: logger).map(Self.job)
        }
    }
}
