import Foundation
import GRDB
import Wire

/// The embedded store: SQLite through GRDB, a `DatabasePool` in WAL mode with
/// `synchronous = FULL`, so a committed transaction survives a crash of the process or the
/// machine. Unit tests use an in-memory `DatabaseQueue`.
public struct SQLiteStore: CoordinatorStore {
    let writer: any DatabaseWriter
    /// Every write goes through it: concurrent writes share a transaction (and its fsync).
    let group: GroupCommit

    public init(writer: any DatabaseWriter) throws {
        self.writer = writer
        self.group = GroupCommit(writer: writer)
        try Self.migrator.migrate(writer)
    }

    /// Opens (creating when missing) `directory/heddle.sqlite`.
    public static func open(directory: String) throws -> SQLiteStore {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var config = Configuration()
        // Another connection to the file (a second store, the sqlite3 tool) may hold the write
        // lock for a moment: wait for it rather than fail.
        config.busyMode = .timeout(5)
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        let path = "\(directory)/heddle.sqlite"
        // No database (or an empty file) beside stored logs or artifacts: starting would make
        // an empty fabric and orphan them.
        let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int ?? 0
        if size == 0 {
            for folder in ["logs", "blobs"] {
                let contents = (try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/\(folder)")) ?? []
                guard contents.isEmpty else {
                    let state = FileManager.default.fileExists(atPath: path) ? "is empty" : "is missing"
                    throw StoreError(.inconsistent, "the database \(path) \(state) but \(directory)/\(folder) holds data: restore heddle.sqlite from a backup, or move \(directory) away to start an empty fabric")
                }
            }
        }
        do {
            let pool = try DatabasePool(path: path, configuration: config)
            return try SQLiteStore(writer: pool)
        } catch let error as DatabaseError {
            throw StoreError(.inconsistent, "cannot open the database \(path): \(error.message ?? "SQLite error \(error.resultCode.rawValue)") (SQLite error \(error.resultCode.rawValue)); if the file is damaged, restore it from a backup, or move \(directory) away to start an empty fabric")
        }
    }

    public static func inMemory() throws -> SQLiteStore {
        try SQLiteStore(writer: DatabaseQueue())
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: projects, pipelines, runs, jobs, nodes, logs, artifacts") { db in
            try db.execute(sql: """
                CREATE TABLE project (
                    id INTEGER PRIMARY KEY,
                    name TEXT NOT NULL UNIQUE,
                    repository TEXT NOT NULL DEFAULT '',
                    created_at INTEGER NOT NULL
                );
                CREATE TABLE pipeline_version (
                    id INTEGER PRIMARY KEY,
                    project_id INTEGER NOT NULL REFERENCES project(id),
                    pipeline TEXT NOT NULL,
                    version INTEGER NOT NULL,
                    source TEXT NOT NULL,
                    jobs TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE (project_id, pipeline, version)
                );
                CREATE TABLE run (
                    id INTEGER PRIMARY KEY,
                    project TEXT NOT NULL,
                    pipeline TEXT NOT NULL,
                    pipeline_version_id INTEGER NOT NULL REFERENCES pipeline_version(id),
                    branch TEXT NOT NULL,
                    status TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    trigger TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER
                );
                CREATE TABLE job (
                    id INTEGER PRIMARY KEY,
                    run_id INTEGER NOT NULL REFERENCES run(id),
                    attempt INTEGER NOT NULL,
                    name TEXT NOT NULL,
                    labels TEXT NOT NULL,
                    status TEXT NOT NULL,
                    runner TEXT,
                    epoch INTEGER NOT NULL DEFAULT 0,
                    position REAL NOT NULL,
                    queued_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    reason TEXT NOT NULL DEFAULT ''
                );
                CREATE INDEX job_by_run ON job(run_id, attempt);
                CREATE INDEX job_active ON job(position) WHERE status IN ('queued', 'running');
                CREATE TABLE node (
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    name TEXT NOT NULL,
                    ordinal INTEGER NOT NULL,
                    run TEXT NOT NULL,
                    needs TEXT NOT NULL,
                    env TEXT NOT NULL,
                    timeout INTEGER,
                    artifacts TEXT NOT NULL,
                    status TEXT NOT NULL,
                    exit_code INTEGER,
                    started_at INTEGER,
                    finished_at INTEGER,
                    PRIMARY KEY (job_id, name)
                );
                CREATE TABLE log_chunk (
                    job_id INTEGER NOT NULL,
                    node TEXT NOT NULL,
                    offset INTEGER NOT NULL,
                    data BLOB NOT NULL,
                    PRIMARY KEY (job_id, node, offset)
                ) WITHOUT ROWID;
                CREATE TABLE artifact (
                    id INTEGER PRIMARY KEY,
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    name TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    sha256 TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE (job_id, name)
                );
                """)
        }
        migrator.registerMigration("v2: attempts, job commits, projects' repositories, drained runners") { db in
            try db.execute(sql: """
                CREATE TABLE attempt (
                    run_id INTEGER NOT NULL REFERENCES run(id),
                    number INTEGER NOT NULL,
                    status TEXT NOT NULL,
                    trigger TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    PRIMARY KEY (run_id, number)
                );
                INSERT INTO attempt (run_id, number, status, trigger, created_at, started_at, finished_at)
                    SELECT id, attempt, status, trigger, created_at, started_at, finished_at FROM run;
                ALTER TABLE job ADD COLUMN commit_sha TEXT NOT NULL DEFAULT '';
                ALTER TABLE node ADD COLUMN grace INTEGER;
                CREATE TABLE runner_state (
                    name TEXT PRIMARY KEY,
                    drained INTEGER NOT NULL
                );
                CREATE INDEX run_by_filter ON run(project, pipeline, branch);
                """)
        }
        migrator.registerMigration("v3: lost-job retries, resumable uploads, revocations") { db in
            try db.execute(sql: """
                ALTER TABLE job ADD COLUMN retry_lost INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE job ADD COLUMN lost_count INTEGER NOT NULL DEFAULT 0;
                CREATE TABLE upload (
                    id INTEGER PRIMARY KEY,
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    name TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    sha256 TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    UNIQUE (job_id, name)
                );
                CREATE TABLE revocation (
                    id INTEGER PRIMARY KEY,
                    name TEXT,
                    fingerprint TEXT,
                    revoked_at INTEGER NOT NULL
                );
                """)
        }
        migrator.registerMigration("v4: log bytes in segment files, their durable lengths here") { db in
            try db.execute(sql: """
                CREATE TABLE log_end (
                    job_id INTEGER NOT NULL REFERENCES job(id),
                    node TEXT NOT NULL,
                    length INTEGER NOT NULL,
                    PRIMARY KEY (job_id, node)
                ) WITHOUT ROWID;
                INSERT INTO log_end (job_id, node, length)
                    SELECT job_id, node, MAX(offset + length(data)) FROM log_chunk GROUP BY job_id, node;
                """)
        }
        migrator.registerMigration("v5: no log bytes in the database") { db in
            // Versions before v4 kept log bytes here; v4 moved them to files when it started.
            // This version no longer moves them: a database that still holds some is refused
            // rather than losing them.
            if let count = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM log_chunk"), count > 0 {
                throw StoreError(.inconsistent, "this database still holds \(count) log chunks of a version older than v4: start it once with that version's coordinator, which moves them to files")
            }
            try db.execute(sql: "DROP TABLE log_chunk")
        }
        migrator.registerMigration("v6: API tokens, artifact search") { db in
            // Artifacts carry their run's project, pipeline and branch, so a search across
            // every run is answered from indexes; names are searched through a trigram index.
            try db.execute(sql: """
                ALTER TABLE artifact ADD COLUMN run_id INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE artifact ADD COLUMN project TEXT NOT NULL DEFAULT '';
                ALTER TABLE artifact ADD COLUMN pipeline TEXT NOT NULL DEFAULT '';
                ALTER TABLE artifact ADD COLUMN branch TEXT NOT NULL DEFAULT '';
                UPDATE artifact SET (run_id, project, pipeline, branch) =
                    (SELECT r.id, r.project, r.pipeline, r.branch FROM job j JOIN run r ON r.id = j.run_id WHERE j.id = artifact.job_id);
                CREATE INDEX artifact_by_project ON artifact(project, pipeline, branch);
                CREATE INDEX artifact_by_project_branch ON artifact(project, branch, size);
                CREATE INDEX artifact_by_run ON artifact(run_id);
                CREATE INDEX artifact_by_sha256 ON artifact(sha256);
                CREATE INDEX artifact_by_created ON artifact(created_at);
                CREATE INDEX artifact_by_size ON artifact(size);
                CREATE VIRTUAL TABLE artifact_name USING fts5(name, content='artifact', content_rowid='id', tokenize='trigram');
                INSERT INTO artifact_name(artifact_name) VALUES ('rebuild');
                CREATE TRIGGER artifact_name_insert AFTER INSERT ON artifact BEGIN
                    INSERT INTO artifact_name(rowid, name) VALUES (new.id, new.name);
                END;
                CREATE TRIGGER artifact_name_delete AFTER DELETE ON artifact BEGIN
                    INSERT INTO artifact_name(artifact_name, rowid, name) VALUES ('delete', old.id, old.name);
                END;
                CREATE TRIGGER artifact_name_update AFTER UPDATE OF name ON artifact BEGIN
                    INSERT INTO artifact_name(artifact_name, rowid, name) VALUES ('delete', old.id, old.name);
                    INSERT INTO artifact_name(rowid, name) VALUES (new.id, new.name);
                END;
                """)
            try db.execute(sql: """
                ALTER TABLE project ADD COLUMN webhook_secret TEXT;
                ALTER TABLE run ADD COLUMN commit_sha TEXT NOT NULL DEFAULT '';
                CREATE TABLE delivery (
                    id INTEGER PRIMARY KEY,
                    project TEXT NOT NULL,
                    forge TEXT NOT NULL,
                    delivery_id TEXT NOT NULL,
                    event TEXT NOT NULL,
                    received_at INTEGER NOT NULL,
                    outcome TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    run_ids TEXT NOT NULL,
                    UNIQUE (project, forge, delivery_id)
                );
                CREATE INDEX delivery_by_project ON delivery(project, id);
                """)
            try db.execute(sql: """
                CREATE TABLE api_token (
                    name TEXT PRIMARY KEY,
                    role TEXT NOT NULL,
                    secret_sha256 TEXT NOT NULL UNIQUE,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    revoked_at INTEGER
                );
                """)
        }
        migrator.registerMigration("v7: browser sessions, who started an attempt") { db in
            try db.execute(sql: """
                CREATE TABLE web_session (
                    secret_sha256 TEXT PRIMARY KEY,
                    token_name TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                );
                CREATE INDEX web_session_by_token ON web_session(token_name, created_at);
                CREATE INDEX web_session_by_expiry ON web_session(expires_at);
                ALTER TABLE run ADD COLUMN triggered_by TEXT NOT NULL DEFAULT '';
                ALTER TABLE attempt ADD COLUMN triggered_by TEXT NOT NULL DEFAULT '';
                """)
        }
        migrator.registerMigration("v8: nodes without network") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN network BOOLEAN NOT NULL DEFAULT 1")
        }
        migrator.registerMigration("v9: nodes' resource limits") { db in
            try db.execute(sql: """
                ALTER TABLE node ADD COLUMN memory_limit INTEGER;
                ALTER TABLE node ADD COLUMN cpu_limit_millis INTEGER;
                ALTER TABLE node ADD COLUMN pids_limit INTEGER;
                """)
        }
        migrator.registerMigration("v10: secrets") { db in
            try db.execute(sql: """
                ALTER TABLE node ADD COLUMN secrets TEXT NOT NULL DEFAULT '[]';
                ALTER TABLE run ADD COLUMN fork BOOLEAN NOT NULL DEFAULT 0;
                ALTER TABLE project ADD COLUMN fork_secrets BOOLEAN NOT NULL DEFAULT 0;
                CREATE TABLE secret (
                    project TEXT NOT NULL REFERENCES project(name),
                    name TEXT NOT NULL,
                    sealed BLOB NOT NULL,
                    created_at INTEGER NOT NULL,
                    updated_at INTEGER NOT NULL,
                    PRIMARY KEY (project, name)
                );
                """)
        }
        migrator.registerMigration("v11: container images") { db in
            try db.execute(sql: "ALTER TABLE node ADD COLUMN image TEXT NOT NULL DEFAULT ''")
        }
        migrator.registerMigration("v12: runs' inputs") { db in
            try db.execute(sql: "ALTER TABLE run ADD COLUMN inputs TEXT NOT NULL DEFAULT '{}'")
        }
        migrator.registerMigration("v13: jobs carried over by a re-run of the failed ones") { db in
            try db.execute(sql: "ALTER TABLE job ADD COLUMN carried_from INTEGER REFERENCES job(id)")
        }
        migrator.registerMigration("v14: schedules' latest started due times") { db in
            try db.execute(sql: """
                CREATE TABLE schedule_start (
                    project TEXT NOT NULL,
                    pipeline TEXT NOT NULL,
                    schedule TEXT NOT NULL,
                    due INTEGER NOT NULL,
                    run_id INTEGER REFERENCES run(id),
                    PRIMARY KEY (project, pipeline, schedule)
                )
                """)
        }
        migrator.registerMigration("v15: jobs' caches, and the caches") { db in
            try db.execute(sql: "ALTER TABLE job ADD COLUMN cache TEXT NOT NULL DEFAULT ''")
            try db.execute(sql: """
                CREATE TABLE cache_entry (
                    id INTEGER PRIMARY KEY,
                    project TEXT NOT NULL,
                    branch TEXT NOT NULL,
                    key TEXT NOT NULL,
                    sha256 TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    created_at INTEGER NOT NULL,
                    last_used_at INTEGER NOT NULL,
                    hits INTEGER NOT NULL DEFAULT 0,
                    UNIQUE (project, branch, key)
                )
                """)
            try db.execute(sql: "CREATE INDEX cache_entry_last_used ON cache_entry (last_used_at)")
        }
        return migrator
    }
}

/// JSON as the store keeps it in a TEXT column (keys sorted, so equal values are equal text).
func json<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

func unjson<T: Decodable>(_ text: String) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(text.utf8))
}
