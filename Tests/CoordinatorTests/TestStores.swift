import Foundation
import Logging
import PostgresNIO
import TestSupport
import Testing
@testable import Coordinator

/// The store implementations tests run against. PostgreSQL tests need a server:
/// `HEDDLE_TEST_POSTGRES` is the address of a database on it where the test user may create
/// databases (scripts/test starts a throwaway server and sets it).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }
}

/// One empty database of a kind, for one test; `open()` opens a store on it (as many as a
/// test wants: several coordinators share one database), `remove()` drops it.
final class TestDatabase: Sendable {
    let kind: StoreKind
    let directory: TemporaryDirectory
    /// The PostgreSQL database's address (nil for SQLite).
    let location: PostgresStore.Location?

    static var serverAddress: String? { ProcessInfo.processInfo.environment["HEDDLE_TEST_POSTGRES"] }

    private init(kind: StoreKind, directory: TemporaryDirectory, location: PostgresStore.Location?) {
        self.kind = kind
        self.directory = directory
        self.location = location
    }

    static func make(_ kind: StoreKind) async throws -> TestDatabase {
        let directory = try TemporaryDirectory("heddle-data")
        switch kind {
        case .sqlite:
            return TestDatabase(kind: kind, directory: directory, location: nil)
        case .postgres:
            guard let address = serverAddress else {
                directory.remove()
                throw TestFailure("PostgreSQL tests need HEDDLE_TEST_POSTGRES=postgres://USER@HOST:PORT/DATABASE; scripts/test starts a throwaway server and sets it")
            }
            var location = try PostgresStore.Location(parsing: address)
            location.database = "heddle_test_\(UInt64.random(in: 0..<UInt64.max))"
            // Connections made while the other suites load both cores once took over the
            // production 2 s (FencingTests, in a fresh-clone CI run); these tests are not of
            // connecting to a restarting server (`aDatabaseRestartMidRunIsOnlyAPause` is).
            location.connectTimeout = .seconds(10)
            try await Self.admin(address) { try await $0.query("CREATE DATABASE \(unescaped: location.database)", logger: $1) }
            return TestDatabase(kind: kind, directory: directory, location: location)
        }
    }

    /// Runs `body` with a new database of this kind, removed afterwards.
    static func with<T: Sendable>(_ kind: StoreKind, _ body: (TestDatabase) async throws -> T) async throws -> T {
        let database = try await make(kind)
        do {
            let result = try await body(database)
            await database.remove()
            return result
        } catch {
            await database.remove()
            throw error
        }
    }

    func open() async throws -> any CoordinatorStore {
        // A minute per call, not production's 10 s: on a loaded two-core CI machine calls
        // were starved past 10 s (before scripts/test ran at most six tests at once; kept as
        // a margin). The deadline itself is tested on its own
        // (`aCallTheDatabaseNeverAnswersFailsAtItsDeadline`, 2 s).
        if let location { return try await PostgresStore.connect(location, callDeadline: .seconds(60)) }
        return try SQLiteStore.open(directory: directory.path)
    }

    /// Drops the database (closing whatever is still connected) and the data directory.
    func remove() async {
        defer { directory.remove() }
        guard let location, let address = Self.serverAddress else { return }
        try? await Self.admin(address) {
            try await $0.query("DROP DATABASE IF EXISTS \(unescaped: location.database) WITH (FORCE)", logger: $1)
        }
    }

    /// `body`'s answer, on a connection of its own to `address` (closed afterwards).
    @discardableResult
    static func admin<T>(_ address: String, _ body: (PostgresConnection, Logger) async throws -> T) async throws -> T {
        let location = try PostgresStore.Location(parsing: address)
        let logger = Logger(label: "test.postgres")
        let connection = try await PostgresConnection.connect(
            configuration: .init(host: location.host, port: location.port, username: location.user,
                                 password: location.password, database: location.database, tls: .disable),
            id: 1, logger: logger)
        do {
            let answer = try await body(connection, logger)
            try await connection.close()
            return answer
        } catch {
            try? await connection.close()
            throw error
        }
    }
}
