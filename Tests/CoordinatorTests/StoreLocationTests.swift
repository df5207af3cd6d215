import Foundation
import Logging
import PostgresNIO
import TestSupport
import Testing
@testable import Coordinator

/// What `--store` takes, and the pool it makes.
@Suite struct StoreLocationTests {
    @Test func anAddressIsReadWithItsDefaults() throws {
        let location = try PostgresStore.Location(parsing: "postgres://ci:se%40cret@db.example.com/heddle")
        #expect(location.host == "db.example.com")
        #expect(location.port == 5432)
        #expect(location.user == "ci")
        #expect(location.password == "se@cret")
        #expect(location.database == "heddle")
        #expect(location.tls == .require, "TLS is required away from the loopback")
        #expect(location.maximumConnections == PostgresStore.Location.defaultMaximumConnections)
        #expect(location.description == "postgres://ci@db.example.com:5432/heddle")

        let local = try PostgresStore.Location(parsing: "postgresql://ci@127.0.0.1:6543/heddle?pool_max_conns=3")
        #expect(local.port == 6543)
        #expect(local.tls == .disable)
        #expect(local.maximumConnections == 3)

        let socket = try PostgresStore.Location(parsing: "postgres://ci@/heddle?host=/run/postgresql&sslmode=prefer")
        #expect(socket.socketPath == "/run/postgresql/.s.PGSQL.5432")
        #expect(socket.tls == .prefer)
    }

    @Test(arguments: [
        ("mysql://ci@db/heddle", "a store is postgres://"),
        ("postgres://ci@db/", "names no database"),
        ("postgres://ci@db/heddle?sslmode=verify-full", "sslmode is disable, prefer or require"),
        ("postgres://ci@db/heddle?pool_max_conns=0", "pool_max_conns is a whole number from 1 to 100, not 0"),
        ("postgres://ci@db/heddle?pool_max_conns=many", "pool_max_conns is a whole number from 1 to 100, not many"),
        ("postgres://ci@db/heddle?pool_max_conns=101", "pool_max_conns is a whole number from 1 to 100, not 101"),
    ])
    func aWrongAddressIsRefusedSayingWhy(address: String, message: String) throws {
        let error = try #require(throws: StoreError.self) { try PostgresStore.Location(parsing: address) }
        #expect("\(error)".contains(message), "\(error)")
    }

    /// Four statements more at once than the pool's limit (`pool_max_conns`, or the default
    /// without it): the pool opens exactly that many connections, and the others wait their
    /// turn on them.
    @Test(arguments: [3, nil])
    func aPoolOpensAtMostItsConnections(limit: Int?) async throws {
        try await TestDatabase.with(.postgres) { database in
            var location = try #require(database.location)
            if let limit { location.maximumConnections = limit }
            let expected = limit ?? PostgresStore.Location.defaultMaximumConnections
            let store = try await PostgresStore.connect(location, callDeadline: .seconds(60))
            defer { store.close() }
            let logger = Logger(label: "test.pool")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<(expected + 4) {
                    group.addTask {
                        try await store.client.withConnection { _ = try await $0.query("SELECT pg_sleep(0.2)", logger: logger) }
                    }
                }
                try await group.waitForAll()
            }
            let connections = try await Self.connections(to: location.database)
            #expect(connections == expected)
        }
    }

    /// How many server processes are connected to `database`.
    static func connections(to database: String) async throws -> Int {
        try await TestDatabase.admin(try #require(TestDatabase.serverAddress)) { connection, logger in
            let rows = try await connection.query(
                "SELECT count(*)::int FROM pg_stat_activity WHERE datname = \(database) AND backend_type = 'client backend'",
                logger: logger)
            var count = 0
            for try await value in rows.decode(Int.self) { count = value }
            return count
        }
    }
}
