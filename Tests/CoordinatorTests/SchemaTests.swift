import Foundation
import GRDB
import Logging
import PostgresNIO
import TestSupport
import Testing
@testable import Coordinator

/// The two stores' schemas, written by hand twice (SQLite's migrations, PostgreSQL's), hold
/// the same tables and columns, but for what only several coordinators need.
@Suite struct SchemaTests {
    /// Tables and columns only the PostgreSQL store has, and why.
    static let onlyPostgres: [String: Set<String>] = [
        // Which coordinator holds a job (writes are fenced by it), and the coordinators' beats.
        "job": ["holder"],
        "coordinator": ["id", "seen_at"],
        // Settings of the cluster: the marker of the data directory every coordinator shares.
        "cluster_setting": ["name", "value"],
        // The queue's counts per range of places, kept by triggers on `job`, for exact places
        // without counting the queue (SQLite's coordinator keeps its queue in memory).
        "queue_count": ["bucket", "shard", "n"],
        // Its migrations' own bookkeeping (GRDB keeps SQLite's in grdb_migrations).
        "heddle_migration": ["name", "applied_at"],
    ]

    @Test func bothStoresHoldTheSameTablesAndColumns() async throws {
        let sqlite = try await Self.sqliteSchema()
        let postgres = try await TestDatabase.with(.postgres) { database in
            _ = try await database.open()
            return try await Self.postgresSchema(database)
        }
        var expected = sqlite
        for (table, columns) in Self.onlyPostgres { expected[table, default: []].formUnion(columns) }
        for table in Set(expected.keys).union(postgres.keys).sorted() {
            let inSQLite = expected[table] ?? []
            let inPostgres = postgres[table] ?? []
            #expect(inSQLite.subtracting(inPostgres).isEmpty, "table \(table): only SQLite has \(inSQLite.subtracting(inPostgres).sorted())")
            #expect(inPostgres.subtracting(inSQLite).isEmpty, "table \(table): only PostgreSQL has \(inPostgres.subtracting(inSQLite).sorted())")
        }
        #expect(sqlite.count >= 14, "the SQLite schema was not read: \(sqlite.keys.sorted())")
    }

    static func sqliteSchema() async throws -> [String: Set<String>] {
        let directory = try TemporaryDirectory("heddle-schema")
        defer { directory.remove() }
        let store = try SQLiteStore.open(directory: directory.path)
        return try await store.writer.read { db in
            var schema: [String: Set<String>] = [:]
            let tables = try String.fetchAll(db, sql: """
                SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'grdb_%'
                """)
            // Full-text indexes are virtual tables with shadow tables of their own: an index
            // (SQLite's artifact-name search; PostgreSQL matches names with ILIKE and regular
            // expressions on the table), not data.
            let indexes = try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")
            for table in tables where !indexes.contains(where: { table == $0 || table.hasPrefix($0 + "_") }) {
                schema[table] = Set(try db.columns(in: table).map(\.name))
            }
            return schema
        }
    }

    static func postgresSchema(_ database: TestDatabase) async throws -> [String: Set<String>] {
        let location = try #require(database.location)
        let logger = Logger(label: "test.schema")
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: location.host, port: location.port, username: location.user,
                                 password: location.password, database: location.database, tls: .disable),
            id: 1, logger: logger)
        defer { Task { try? await connection.close() } }
        var schema: [String: Set<String>] = [:]
        let rows = try await connection.query(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'", logger: logger)
        for try await (table, column) in rows.decode((String, String).self) {
            schema[table, default: []].insert(column)
        }
        return schema
    }
}
