import Coordinator
import Foundation
import Logging
import Synchronization
import Wire

/// A coordinator in this process on 127.0.0.1, port 0, with its data in a temporary directory.
final class BenchCoordinator: Fabric {
    let endpoint: Endpoint
    let pki: BenchPKI
    let task: Task<Void, Error>

    init(endpoint: Endpoint, pki: BenchPKI, task: Task<Void, Error>) {
        self.endpoint = endpoint
        self.pki = pki
        self.task = task
    }

    static func start(pki: BenchPKI, data: String) async throws -> BenchCoordinator {
        var logger = Logger(label: "bench")
        logger.logLevel = .error
        let core = try CoordinatorCore(store: try SQLiteStore.open(directory: data), directory: data, logger: logger)
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        let server = CoordinatorServer(core: core, host: "127.0.0.1", port: 0, tls: pki.files("coordinator"),
                                       logger: logger, onListening: { continuation.yield($0.port ?? 0) })
        let task = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await server.run() }
                group.addTask { try await LeaseMonitor(core: core).run() }
                try await group.next()
            }
        }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw WireError(.internal, "the coordinator did not start") }
        return BenchCoordinator(endpoint: Endpoint(host: "127.0.0.1", port: port), pki: pki, task: task)
    }


    func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}

enum Scenarios {
    static func pipeline(_ name: String, label: String) -> String {
        "name: \(name)\njobs:\n  j:\n    labels: [\(label)]\n    nodes:\n      n: { run: 'true' }\n"
    }

    /// Trivial jobs end to end: triggered by eight tasks, each on an admin connection of its
    /// own, taken by simulated runners that report success at once, measured from the first
    /// timed trigger until every timed result is stored, after `warmUp` runs. With several
    /// coordinators, runner i and trigger task i go to coordinator i modulo their number.
    /// `timing` is called when the timed runs start.
    static func jobsPerSecond(_ fabrics: [any Fabric], runners count: Int, runs: Int,
                              warmUp: Int = Scenarios.warmUpRuns, timing: () -> Void = {}) async throws -> Double {
        precondition(warmUp > 0 && runs > 0)
        // One admin connection per trigger task (a coordinator handles one connection's
        // requests one at a time), task i on coordinator i modulo their number.
        // HEDDLE_BENCH_ADMINS=coordinators: one per coordinator instead (as before 2026-12-07).
        let perCoordinator = ProcessInfo.processInfo.environment["HEDDLE_BENCH_ADMINS"] == "coordinators"
        var admins: [HeddleClient] = []
        for index in 0..<(perCoordinator ? fabrics.count : 8) { admins.append(try await fabrics[index % fabrics.count].admin()) }
        _ = try await admins[0].pushPipeline(project: "bench", fileName: "trivial.act", source: pipeline("trivial", label: "trivial"))
        let finished = Counter()
        let triggerMs = Samples()
        let finishMs = Samples()
        // Yields once the warm-up's runs are done, then once the measured ones are.
        let (done, signal) = AsyncStream.makeStream(of: Void.self)
        var connections: [HeddleConnection] = []
        for index in 0..<count {
            connections.append(try await fabrics[index % fabrics.count].runner(labels: ["trivial"], capacity: 16))
        }
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for connection in connections {
                group.addTask {
                    await withTaskGroup(of: Void.self) { jobs in
                        for await envelope in connection.pushes {
                            guard case .assignment(let assignment) = envelope.body else { continue }
                            jobs.addTask {
                                var finish = Heddle_V1_JobFinish()
                                finish.job = assignment.job
                                finish.status = .succeeded
                                let finishStart = ContinuousClock.now
                                _ = try? await connection.request(.jobFinish(finish))
                                finishMs.add(seconds(since: finishStart) * 1000)
                                let count = finished.increment()
                                if count == warmUp || count == warmUp + runs { signal.yield() }
                            }
                        }
                    }
                }
            }
            /// `total` runs triggered by eight tasks at once, spread over the coordinators.
            func trigger(_ total: Int) async throws {
                try await withThrowingTaskGroup(of: Void.self) { triggers in
                    let perTask = total / 8
                    for part in 0..<8 {
                        let admin = admins[part % admins.count]
                        triggers.addTask {
                            let count = part == 7 ? total - perTask * 7 : perTask
                            for _ in 0..<count {
                                let start = ContinuousClock.now
                                _ = try await admin.trigger(project: "bench", pipeline: "trivial", branch: "main")
                                let ms = seconds(since: start) * 1000
                                triggerMs.add(ms)
                            }
                        }
                    }
                    try await triggers.waitForAll()
                }
            }
            var iterator = done.makeAsyncIterator()
            try await trigger(warmUp)
            _ = await iterator.next()
            timing()
            let start = ContinuousClock.now
            try await trigger(runs)
            let triggered = seconds(since: start)
            _ = await iterator.next()
            let elapsed = seconds(since: start)
            if ProcessInfo.processInfo.environment["HEDDLE_BENCH_VERBOSE"] != nil {
                FileHandle.standardError.write(Data(String(format: "triggered in %.2f s, all done in %.2f s\n", triggered, elapsed).utf8))
                let timed = Array(triggerMs.all.suffix(runs))
                FileHandle.standardError.write(Data(String(format: "triggers: p50 %.2f ms, p90 %.2f ms\n",
                    percentile(timed, 0.5), percentile(timed, 0.9)).utf8))
                let finishes = Array(finishMs.all.suffix(runs))
                FileHandle.standardError.write(Data(String(format: "job finishes: p50 %.2f ms, p90 %.2f ms\n",
                    percentile(finishes, 0.5), percentile(finishes, 0.9)).utf8))
            }
            for connection in connections { await connection.close() }
            for admin in admins { await admin.connection.close() }
            group.cancelAll()
            return Double(runs) / elapsed
        }
    }

    /// Runs done before the jobs per second are timed, the same for every store: each
    /// coordinator's pool opens its connections, whose PostgreSQL server processes fill their
    /// caches and prepare the statements at their first calls (three coordinators opened 27
    /// server sessions where one opened 14), and runners and clients make their sessions. What
    /// is timed is then what a running fabric does, not its first second.
    static let warmUpRuns = 100

    /// Idle coordinator and runner: from the trigger request to the assignment at the runner.
    static func triggerToStart(_ fabric: some Fabric, samples: Int) async throws -> (Double, Double) {
        let admin = try await fabric.admin()
        _ = try await admin.pushPipeline(project: "bench", fileName: "latency.act", source: pipeline("latency", label: "latency"))
        let runner = try await fabric.runner(labels: ["latency"], capacity: 1)
        var pushes = runner.pushes.makeAsyncIterator()
        var latencies: [Double] = []
        for _ in 0..<samples {
            let start = ContinuousClock.now
            _ = try await admin.trigger(project: "bench", pipeline: "latency", branch: "main")
            var assignment: Heddle_V1_Assignment?
            while assignment == nil, let envelope = await pushes.next() {
                if case .assignment(let received) = envelope.body { assignment = received }
            }
            latencies.append(seconds(since: start) * 1000)
            guard let assignment else { break }
            var finish = Heddle_V1_JobFinish()
            finish.job = assignment.job
            finish.status = .succeeded
            _ = try await runner.request(.jobFinish(finish))
        }
        await runner.close()
        await admin.connection.close()
        return (percentile(latencies, 0.5), percentile(latencies, 0.99))
    }

    /// One node writing as fast as it can: log chunks as the runner sends them when output
    /// waits (1 MiB), until the coordinator has acknowledged every byte as durable.
    static func logThroughput(_ fabric: some Fabric, bytes: Int) async throws -> Double {
        let job = try await startJob("log", on: fabric)
        var pushes = job.pushes
        let chunk = Data((0..<(1024 * 1024)).map { UInt8(truncatingIfNeeded: $0 % 95 + 32) })
        let start = ContinuousClock.now
        async let acked: Void = {
            while let envelope = await pushes.next() {
                if case .logAck(let ack) = envelope.body, ack.durableOffset >= UInt64(bytes) { return }
            }
        }()
        var offset = 0
        while offset < bytes {
            try await job.runner.send(logAppend(job.assignment.job, offset: offset, chunk))
            offset += chunk.count
        }
        await acked
        let elapsed = seconds(since: start)
        await job.close()
        return Double(bytes) / elapsed / 1_000_000
    }
}

/// Measurements added from many tasks.
final class Samples: Sendable {
    private let values = Mutex<[Double]>([])
    func add(_ value: Double) { values.withLock { $0.append(value) } }
    var all: [Double] { values.withLock { $0 } }
}

final class Counter: Sendable {
    private let value = Mutex(0)

    /// Adds one; returns the new count.
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
}
