import Foundation
import Wire

/// Coordinators on one PostgreSQL database (`HEDDLE_BENCH_POSTGRES`, a server URL whose user
/// may create databases; `scripts/bench` starts a throwaway server): each measurement gets a
/// fresh database, and the coordinators share one data directory for log and artifact bytes.
enum ClusterScenarios {
    struct Results {
        /// By number of coordinators, in the order run.
        var jobsPerSecond: [(coordinators: Int, perSecond: Double)] = []
        var triggerToStartP50 = 0.0
        var logThroughput = 0.0
        var queueMoveP99 = 0.0
        var failover = 0.0
        var changeMs = 0.0
        var changeCPUms = 0.0
        var changeDatabaseCPUms = 0.0
    }

    static func run(pki: BenchPKI, root: String, server: String, quick: Bool) async throws -> Results {
        var results = Results()
        let only = ProcessInfo.processInfo.environment["HEDDLE_BENCH_CLUSTER"]
        // HEDDLE_BENCH_CLUSTER=queue: only the moves in a queue of 100,000, for comparing
        // changes quickly.
        if only == "queue" {
            let cluster = try Cluster(pki: pki, root: root, server: server, name: "queue", coordinators: 1)
            defer { cluster.stop() }
            results.queueMoveP99 = try await Scenarios.queueOperations(cluster.fabrics[0], total: 100_000,
                                                                       samples: quick ? 200 : 1000).move
            return results
        }
        // HEDDLE_BENCH_CLUSTER=changes: only the cost of a change with 100,000 queued.
        func changes() async throws {
            let cluster = try Cluster(pki: pki, root: root, server: server, name: "changes", coordinators: 3)
            defer { cluster.stop() }
            (results.changeMs, results.changeCPUms, results.changeDatabaseCPUms) = try await changeCost(cluster, queued: 100_000,
                                                                                                      changes: quick ? 150 : 600)
        }
        if only == "changes" {
            try await changes()
            return results
        }
        let counts = only == "jobs1" ? [1] : only == "jobs3" ? [3] : [1, 2, 3]
        for count in counts {
            let cluster = try Cluster(pki: pki, root: root, server: server, name: "jobs\(count)", coordinators: count)
            defer { cluster.stop() }
            let runs = quick ? 500 : 2000
            // CPU times when the timed runs start (after the warm-up).
            var before: ([Double], Double, Double) = ([], 0, 0)
            let perSecond = try await Scenarios.jobsPerSecond(cluster.fabrics, runners: 4, runs: runs) {
                before = (cluster.processes.map { $0.cpuSeconds() }, CoordinatorProcess.cpuSeconds(ofEvery: "postgres"),
                          CoordinatorProcess.cpuSeconds(of: "self").seconds)
            }
            results.jobsPerSecond.append((count, perSecond))
            if ProcessInfo.processInfo.environment["HEDDLE_BENCH_VERBOSE"] != nil {
                // Where the CPU went, per job: coordinators, the database's processes, and this
                // process (the simulated runners and clients).
                let coordinators = zip(cluster.processes.map { $0.cpuSeconds() }, before.0).reduce(0.0) { $0 + $1.0 - $1.1 }
                let database = CoordinatorProcess.cpuSeconds(ofEvery: "postgres") - before.1
                let bench = CoordinatorProcess.cpuSeconds(of: "self").seconds - before.2
                FileHandle.standardError.write(Data(String(
                    format: "%d coordinators: CPU ms per job: coordinators %.2f, postgres %.2f, bench %.2f\n",
                    count, coordinators * 1000 / Double(runs), database * 1000 / Double(runs), bench * 1000 / Double(runs)).utf8))
            }
        }
        // HEDDLE_BENCH_CLUSTER=jobs: only the jobs per second (jobs1: with one coordinator,
        // jobs3: with three), for comparing changes quickly.
        if ProcessInfo.processInfo.environment["HEDDLE_BENCH_CLUSTER"]?.hasPrefix("jobs") == true { return results }
        do {
            let cluster = try Cluster(pki: pki, root: root, server: server, name: "single", coordinators: 1)
            defer { cluster.stop() }
            let fabric = cluster.fabrics[0]
            results.triggerToStartP50 = try await Scenarios.triggerToStart(fabric, samples: quick ? 100 : 500).0
            results.logThroughput = try await Scenarios.logThroughput(fabric, bytes: quick ? 256 << 20 : 1 << 30)
        }
        do {
            let cluster = try Cluster(pki: pki, root: root, server: server, name: "queue", coordinators: 1)
            defer { cluster.stop() }
            results.queueMoveP99 = try await Scenarios.queueOperations(cluster.fabrics[0], total: 100_000,
                                                                       samples: quick ? 200 : 1000).move
        }
        try await changes()
        do {
            let cluster = try Cluster(pki: pki, root: root, server: server, name: "failover", coordinators: 2)
            defer { cluster.stop() }
            results.failover = try await failover(cluster)
        }
        return results
    }

    /// What one change to a long queue costs the cluster: `queued` jobs waiting for a label no
    /// runner has, one runner with free slots (and other labels) on each of three
    /// coordinators, then `changes` changes one at a time through the coordinators in turn (a
    /// trigger of one more job, a move, a cancel). Returns the mean milliseconds per change
    /// (request to answer), the coordinators' CPU milliseconds per change (all three, from
    /// /proc, over the changes and one second after them) and the database's (every
    /// `postgres` process's, over the same time).
    static func changeCost(_ cluster: Cluster, queued: Int, changes: Int) async throws -> (ms: Double, cpuMs: Double, databaseCPUms: Double) {
        let fabrics = cluster.fabrics
        var admins: [HeddleClient] = []
        for fabric in fabrics { admins.append(try await fabric.admin()) }
        _ = try await admins[0].pushPipeline(project: "bench", fileName: "wide.act", source: Scenarios.widePipeline("wide", jobs: 1000))
        _ = try await admins[0].pushPipeline(project: "bench", fileName: "one.act", source: Scenarios.widePipeline("one", jobs: 1))
        var runs: [UInt64] = []
        for index in 0..<queued / 1000 { runs.append(try await admins[index % 3].trigger(project: "bench", pipeline: "wide", branch: "main")) }
        var ids: [UInt64] = []
        for runID in runs.prefix(2) { ids += try await admins[0].run(runID).jobs.map(\.id) }
        var runners: [HeddleConnection] = []
        for fabric in fabrics { runners.append(try await fabric.runner(labels: ["elsewhere"], capacity: 4)) }
        let cpuBefore = cluster.processes.map { $0.cpuSeconds() }
        let databaseBefore = CoordinatorProcess.cpuSeconds(ofEvery: "postgres")
        let started = ContinuousClock.now
        for index in 0..<changes {
            let admin = admins[index % 3]
            switch index % 3 {
            case 0: _ = try await admin.trigger(project: "bench", pipeline: "one", branch: "main")
            case 1: _ = try await admin.move(job: ids[index], to: index % 2 == 0 ? .top(true) : .bottom(true))
            default: _ = try await admin.cancel(jobs: [ids[ids.count - index]])
            }
        }
        let elapsed = seconds(since: started)
        try await Task.sleep(for: .seconds(1))
        let cpu = zip(cluster.processes.map { $0.cpuSeconds() }, cpuBefore).reduce(0.0) { $0 + $1.0 - $1.1 }
        let database = CoordinatorProcess.cpuSeconds(ofEvery: "postgres") - databaseBefore
        for runner in runners { await runner.close() }
        for admin in admins { await admin.connection.close() }
        return (elapsed * 1000 / Double(changes), cpu * 1000 / Double(changes), database * 1000 / Double(changes))
    }

    /// A simulated runner streams a job's log into coordinator 0, which is killed (`kill -9`);
    /// the runner connects to coordinator 1 at once, listing the job, and sends its next log
    /// bytes: seconds from the kill to those bytes acknowledged as durable there. (A real
    /// runner adds its first reconnect delay, 0.125–0.375 s.)
    static func failover(_ cluster: Cluster) async throws -> Double {
        let job = try await Scenarios.startJob("failover", on: cluster.fabrics[0])
        let line = Data("before the kill\n".utf8)
        var pushes = job.pushes
        try await job.runner.send(Scenarios.logAppend(job.assignment.job, offset: 0, line))
        while let envelope = await pushes.next() {
            if case .logAck(let ack) = envelope.body, ack.durableOffset >= UInt64(line.count) { break }
        }
        let killed = ContinuousClock.now
        kill(cluster.processes[0].process.processIdentifier, SIGKILL)
        cluster.processes[0].process.waitUntilExit()
        await job.runner.waitClosed()
        var hello = Heddle_V1_Hello()
        hello.labels = ["failover"]
        hello.capacity = 1
        hello.runningJobs = [job.assignment.job]
        let runner = try await HeddleConnection.connect(to: cluster.fabrics[1].endpoint, tls: cluster.pki.files("runner"), hello: hello)
        var after = runner.pushes.makeAsyncIterator()
        let next = Data("after the kill\n".utf8)
        try await runner.send(Scenarios.logAppend(job.assignment.job, offset: line.count, next))
        var acknowledged = false
        while let envelope = await after.next() {
            if case .logAck(let ack) = envelope.body, ack.durableOffset >= UInt64(line.count + next.count) {
                acknowledged = true
                break
            }
        }
        let elapsed = seconds(since: killed)
        await runner.close()
        await job.admin.connection.close()
        guard acknowledged else { throw WireError(.internal, "coordinator 1 never acknowledged the runner's bytes") }
        return elapsed
    }
}

/// Coordinator processes (release build) on one fresh database and one shared data directory.
final class Cluster: @unchecked Sendable {
    let pki: BenchPKI
    let processes: [CoordinatorProcess]
    var fabrics: [RemoteFabric] { processes.map { RemoteFabric(endpoint: $0.endpoint, pki: pki) } }

    init(pki: BenchPKI, root: String, server: String, name: String, coordinators: Int) throws {
        self.pki = pki
        let database = "heddle_bench_\(name)"
        try Self.psql(server, "DROP DATABASE IF EXISTS \(database)")
        try Self.psql(server, "CREATE DATABASE \(database)")
        var store = Self.url(server, database: database)
        // HEDDLE_BENCH_POOL_MAX_CONNS=N: each coordinator's pool at most N connections (the
        // store's `pool_max_conns`), for comparing pool sizes.
        if let count = ProcessInfo.processInfo.environment["HEDDLE_BENCH_POOL_MAX_CONNS"] {
            store += (store.contains("?") ? "&" : "?") + "pool_max_conns=\(count)"
        }
        let data = "\(root)/cluster-\(name)"
        var started: [CoordinatorProcess] = []
        do {
            for _ in 0..<coordinators {
                started.append(try CoordinatorProcess.start(pki: pki, data: data, heartbeatInterval: 1,
                                                            extraArguments: ["--store", store]))
            }
        } catch {
            for process in started { process.stop() }
            throw error
        }
        processes = started
    }

    func stop() {
        for process in processes { process.stop() }
    }

    /// The server URL with another database (`postgres://user@host:port/db?query`).
    static func url(_ server: String, database: String) -> String {
        guard var components = URLComponents(string: server) else { return server }
        components.path = "/" + database
        return components.string ?? server
    }

    static func psql(_ server: String, _ sql: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["psql", "--quiet", "--no-psqlrc", "-v", "ON_ERROR_STOP=1", server, "-c", sql]
        let error = Pipe()
        process.standardError = error
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let message = String(decoding: error.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            throw WireError(.internal, "psql failed (\(sql)): \(message)")
        }
    }
}
