import Crypto
import Foundation
import Wire

extension Scenarios {
    /// A run of a one-job pipeline named `name` (label `name`), triggered by an admin and
    /// assigned to a simulated runner that carries that label alone.
    struct StartedJob {
        let admin: HeddleClient
        let runner: HeddleConnection
        /// The runner's pushes after the assignment.
        var pushes: AsyncStream<Envelope>.Iterator
        let runID: UInt64
        let assignment: Heddle_V1_Assignment

        /// Ends the job, then closes both connections: a job left running would stay in the
        /// queue listing (until its lease ran out) and spoil the queue scenario's count.
        func close() async {
            var finish = Heddle_V1_JobFinish()
            finish.job = assignment.job
            finish.status = .cancelled
            finish.reason = "benchmark scenario done"
            _ = try? await runner.request(.jobFinish(finish))
            await runner.close()
            await admin.connection.close()
        }
    }

    static func startJob(_ name: String, on fabric: some Fabric) async throws -> StartedJob {
        let admin = try await fabric.admin()
        _ = try await admin.pushPipeline(project: "bench", fileName: "\(name).act", source: pipeline(name, label: name))
        let runner = try await fabric.runner(labels: [name], capacity: 1)
        var pushes = runner.pushes.makeAsyncIterator()
        let runID = try await admin.trigger(project: "bench", pipeline: name, branch: "main")
        while let envelope = await pushes.next() {
            if case .assignment(let assignment) = envelope.body {
                return StartedJob(admin: admin, runner: runner, pushes: pushes, runID: runID, assignment: assignment)
            }
        }
        throw WireError(.internal, "the runner's connection closed before an assignment")
    }

    static func logAppend(_ job: Heddle_V1_JobRef, offset: Int, _ data: Data) -> Envelope.OneOf_Body {
        var append = Heddle_V1_LogAppend()
        append.job = job
        append.node = "n"
        append.offset = UInt64(offset)
        append.data = data
        return .logAppend(append)
    }

    /// A line written by a node to the same bytes shown to a follower (`logs --follow`):
    /// one line at a time, each sent once the previous one was shown.
    static func tailLatency(_ fabric: BenchCoordinator, samples: Int) async throws -> Double {
        let job = try await startJob("tail", on: fabric)
        let follower = try await fabric.admin()
        var events = try await follower.watch(runID: job.runID, logs: true, follow: true).makeAsyncIterator()
        var latencies: [Double] = []
        var offset = 0
        for index in 0..<samples {
            let line = Data("\u{1B}[32mstep \(index)\u{1B}[0m compiling module \(index % 17)\n".utf8)
            let started = ContinuousClock.now
            try await job.runner.send(logAppend(job.assignment.job, offset: offset, line))
            offset += line.count
            shown: while let event = try await events.next() {
                if case .log(let chunk) = event.event, chunk.offset + UInt64(chunk.data.count) >= UInt64(offset) { break shown }
            }
            latencies.append(seconds(since: started) * 1000)
        }
        await job.close()
        await follower.connection.close()
        return percentile(latencies, 0.5)
    }

    /// One artifact: declared with its size and SHA-256, sent in chunks of the size the
    /// coordinator announces without waiting for each, committed once the coordinator has
    /// verified and stored it. The content is hashed before the clock starts.
    static func artifactThroughput(_ fabric: BenchCoordinator, bytes: Int) async throws -> Double {
        let job = try await startJob("artifact", on: fabric)
        let (runner, assignment) = (job.runner, job.assignment)
        let chunkSize = Int(runner.welcome.maxArtifactChunkBytes)
        var base = Data(count: chunkSize)
        base.withUnsafeMutableBytes { for i in 0..<$0.count { $0[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 13) } }
        func chunk(_ index: Int) -> Data {
            var data = base
            withUnsafeBytes(of: UInt64(index).littleEndian) { data.replaceSubrange(0..<8, with: $0) }
            return data.prefix(min(chunkSize, bytes - index * chunkSize))
        }
        let count = (bytes + chunkSize - 1) / chunkSize
        var hasher = SHA256()
        for index in 0..<count { hasher.update(data: chunk(index)) }
        var declare = Heddle_V1_ArtifactDeclare()
        declare.job = assignment.job
        declare.name = "bench.bin"
        declare.size = UInt64(bytes)
        declare.sha256 = Data(hasher.finalize())

        let started = ContinuousClock.now
        guard case .artifactDeclared(let declared) = try await runner.request(.artifactDeclare(declare)).body else {
            throw WireError(.internal, "the artifact was not declared")
        }
        for index in 0..<count {
            var message = Heddle_V1_ArtifactChunk()
            message.job = assignment.job
            message.uploadID = declared.uploadID
            message.offset = UInt64(index * chunkSize)
            message.data = chunk(index)
            try await runner.send(.artifactChunk(message))
        }
        var commit = Heddle_V1_ArtifactCommit()
        commit.job = assignment.job
        commit.uploadID = declared.uploadID
        guard case .artifactCommitted = try await runner.request(.artifactCommit(commit)).body else {
            throw WireError(.internal, "the artifact was not committed")
        }
        let elapsed = seconds(since: started)
        await job.close()
        return Double(bytes) / elapsed / 1_000_000
    }

    /// A job's cache of `bytes` restored by the next run's job, as a runner does (`JobCache`):
    /// found by its key, then read in chunks of the session's chunk size one request at a
    /// time and its SHA-256 checked; MB/s of that read. The cache is saved first by a job of
    /// the same pipeline (an upload committed with the key). Unpacking (`tar -x`) is the
    /// runner's disk and is not in the figure.
    static func cacheRestore(_ fabric: BenchCoordinator, bytes: Int) async throws -> Double {
        let admin = try await fabric.admin()
        let source = "name: cache\njobs:\n  j:\n    labels: [cache]\n    cache: { key: bench, paths: [big] }\n    nodes:\n      n: { run: 'true' }\n"
        _ = try await admin.pushPipeline(project: "bench", fileName: "cache.act", source: source)
        let runner = try await fabric.runner(labels: ["cache"], capacity: 1)
        var pushes = runner.pushes.makeAsyncIterator()
        func nextAssignment() async throws -> Heddle_V1_Assignment {
            _ = try await admin.trigger(project: "bench", pipeline: "cache", branch: "main")
            while let envelope = await pushes.next() {
                if case .assignment(let assignment) = envelope.body { return assignment }
            }
            throw WireError(.internal, "the runner's connection closed before an assignment")
        }
        func finish(_ assignment: Heddle_V1_Assignment) async throws {
            var finish = Heddle_V1_JobFinish()
            finish.job = assignment.job
            finish.status = .succeeded
            _ = try await runner.request(.jobFinish(finish))
        }
        let chunkSize = Int(runner.welcome.maxArtifactChunkBytes)
        var base = Data(count: chunkSize)
        base.withUnsafeMutableBytes { for i in 0..<$0.count { $0[i] = UInt8(truncatingIfNeeded: i &* 2_654_435_761 >> 11) } }
        func chunk(_ index: Int) -> Data {
            var data = base
            withUnsafeBytes(of: UInt64(index).littleEndian) { data.replaceSubrange(0..<8, with: $0) }
            return data.prefix(min(chunkSize, bytes - index * chunkSize))
        }
        let count = (bytes + chunkSize - 1) / chunkSize
        var hasher = SHA256()
        for index in 0..<count { hasher.update(data: chunk(index)) }
        let sha256 = Data(hasher.finalize())

        // The first job saves the cache.
        let saving = try await nextAssignment()
        var declare = Heddle_V1_ArtifactDeclare()
        declare.job = saving.job
        declare.name = ".heddle-cache.tar"
        declare.size = UInt64(bytes)
        declare.sha256 = sha256
        guard case .artifactDeclared(let declared) = try await runner.request(.artifactDeclare(declare)).body else {
            throw WireError(.internal, "the cache was not declared")
        }
        for index in 0..<count {
            var message = Heddle_V1_ArtifactChunk()
            message.job = saving.job
            message.uploadID = declared.uploadID
            message.offset = UInt64(index * chunkSize)
            message.data = chunk(index)
            try await runner.send(.artifactChunk(message))
        }
        var commit = Heddle_V1_ArtifactCommit()
        commit.job = saving.job
        commit.uploadID = declared.uploadID
        commit.cacheKey = "bench"
        guard case .artifactCommitted = try await runner.request(.artifactCommit(commit)).body else {
            throw WireError(.internal, "the cache was not committed")
        }
        try await finish(saving)

        // The next job restores it.
        let restoring = try await nextAssignment()
        let started = ContinuousClock.now
        var find = Heddle_V1_CacheFindRequest()
        find.job = restoring.job
        find.key = "bench"
        guard case .cacheFound(let found) = try await runner.request(.cacheFind(find)).body, found.found, found.exact,
              found.size == UInt64(bytes) else {
            throw WireError(.internal, "the cache was not found")
        }
        var check = SHA256()
        var offset: UInt64 = 0
        while offset < found.size {
            var read = Heddle_V1_CacheReadRequest()
            read.job = restoring.job
            read.cacheID = found.cacheID
            read.offset = offset
            read.length = UInt32(min(UInt64(chunkSize), found.size - offset))
            guard case .cacheData(let data) = try await runner.request(.cacheRead(read)).body, !data.data.isEmpty else {
                throw WireError(.internal, "the cache ended at \(offset)")
            }
            check.update(data: data.data)
            offset += UInt64(data.data.count)
        }
        guard Data(check.finalize()) == sha256 else { throw WireError(.internal, "the restored cache's SHA-256 differs") }
        let elapsed = seconds(since: started)
        try await finish(restoring)
        await runner.close()
        await admin.connection.close()
        return Double(bytes) / elapsed / 1_000_000
    }

    /// A pipeline of `jobs` jobs that no runner takes (their label is carried by none).
    static func widePipeline(_ name: String, jobs: Int) -> String {
        var text = "name: \(name)\njobs:\n"
        for index in 0..<jobs { text += "  j\(index):\n    labels: [nobody]\n    nodes:\n      n: { run: 'true' }\n" }
        return text
    }

    /// A queue of `total` jobs (runs of 1,000 jobs): single moves and cancels timed one
    /// request at a time from an admin client, then a bulk cancel of 10,000 of them.
    static func queueOperations(_ fabric: some Fabric, total: Int, samples: Int)
        async throws -> (move: Double, cancel: Double, bulk: Double, list: Double) {
        let admin = try await fabric.admin()
        _ = try await admin.pushPipeline(project: "bench", fileName: "wide.act", source: widePipeline("wide", jobs: 1000))
        _ = try await admin.pushPipeline(project: "bench", fileName: "bulk.act", source: widePipeline("bulk", jobs: 1000))
        var wideRuns: [UInt64] = []
        for _ in 0..<(total - 10_000) / 1000 { wideRuns.append(try await admin.trigger(project: "bench", pipeline: "wide", branch: "main")) }
        for _ in 0..<10 { _ = try await admin.trigger(project: "bench", pipeline: "bulk", branch: "main") }
        var ids: [UInt64] = []
        for runID in wideRuns.prefix(max(1, 2 * samples / 1000 + 1)) { ids += try await admin.run(runID).jobs.map(\.id) }
        var generator = SystemRandomNumberGenerator()
        ids.shuffle(using: &generator)

        // What `heddle queue` asks for: the first 100 and the total.
        var lists: [Double] = []
        for _ in 0..<20 {
            let started = ContinuousClock.now
            let page = try await admin.queue(limit: 100)
            guard page.total == UInt32(total), page.jobs.count == 100 else {
                throw WireError(.internal, "the queue listed \(page.jobs.count) of \(page.total)")
            }
            lists.append(seconds(since: started) * 1000)
        }
        var moves: [Double] = []
        for index in 0..<samples {
            let target: Heddle_V1_QueueMoveRequest.OneOf_Target = switch index % 4 {
            case 0: .top(true)
            case 1: .bottom(true)
            case 2: .position(UInt32.random(in: 1...UInt32(total / 2)))
            default: .beforeJob(ids[(index + 1) % ids.count])
            }
            let started = ContinuousClock.now
            _ = try await admin.move(job: ids[index], to: target)
            moves.append(seconds(since: started) * 1000)
        }
        if ProcessInfo.processInfo.environment["HEDDLE_BENCH_VERBOSE"] != nil {
            let kinds = ["top", "bottom", "position", "before"]
            for (kind, name) in kinds.enumerated() {
                let some = moves.enumerated().filter { $0.offset % 4 == kind }.map(\.element)
                FileHandle.standardError.write(Data(String(format: "moves to %@: p50 %.2f p90 %.2f max %.2f ms\n", name,
                    percentile(some, 0.5), percentile(some, 0.9), some.max() ?? 0).utf8))
            }
        }
        var cancels: [Double] = []
        for id in ids.suffix(samples) {
            let started = ContinuousClock.now
            let result = try await admin.cancel(jobs: [id])
            guard result.count == 1 else { throw WireError(.internal, "cancel of job \(id) cancelled \(result.count)") }
            cancels.append(seconds(since: started) * 1000)
        }
        var bulk = Heddle_V1_BulkCancelRequest()
        bulk.pipeline = "bulk"
        let started = ContinuousClock.now
        let result = try await admin.bulkCancel(bulk)
        let bulkMs = seconds(since: started) * 1000
        guard result.count == 10_000 else { throw WireError(.internal, "bulk cancel cancelled \(result.count), not 10,000") }
        // Leave nothing queued for later scenarios.
        var rest = Heddle_V1_BulkCancelRequest()
        rest.pipeline = "wide"
        _ = try await admin.bulkCancel(rest)
        await admin.connection.close()
        return (percentile(moves, 0.99), percentile(cancels, 0.99), bulkMs, percentile(lists, 0.5))
    }

    /// Simulated runners (real TLS, real Hello, heartbeats) connected to a coordinator
    /// process; after three heartbeat intervals the coordinator must still list them all.
    /// Returns how many it lists, its RSS before and with them.
    static func connectedRunners(pki: BenchPKI, data: String, count: Int)
        async throws -> (listed: Int, idleRSS: Double, rss: Double, connectSeconds: Double) {
        let interval = 2.0
        let coordinator = try CoordinatorProcess.start(pki: pki, data: data, heartbeatInterval: interval)
        defer { coordinator.stop() }
        let fabric = RemoteFabric(endpoint: coordinator.endpoint, pki: pki)
        let idle = coordinator.memory().rss
        let started = ContinuousClock.now
        let connections = try await withThrowingTaskGroup(of: [HeddleConnection].self) { group in
            let lanes = 32
            for lane in 0..<lanes {
                group.addTask {
                    var mine: [HeddleConnection] = []
                    for _ in stride(from: lane, to: count, by: lanes) {
                        mine.append(try await fabric.runner(labels: ["sim"], capacity: 1))
                    }
                    return mine
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        let connectSeconds = seconds(since: started)
        // Heartbeats must keep every session: a peer silent for three intervals is dropped.
        try await Task.sleep(for: .seconds(interval * 3.5))
        let admin = try await fabric.admin()
        // Counted: sessions the coordinator heard from within the last two intervals.
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        let listed = try await admin.runners().filter { now - $0.lastHeartbeatMs <= Int64(interval * 2000) }.count
        let rss = coordinator.memory().rss
        await admin.connection.close()
        await withTaskGroup(of: Void.self) { group in
            for connection in connections { group.addTask { await connection.close() } }
        }
        return (listed, idle, rss, connectSeconds)
    }

    /// A node writing 100 MB as fast as it can while a follower shows it: the coordinator
    /// process's peak RSS over the burst.
    static func burstRSS(pki: BenchPKI, data: String, bytes: Int) async throws -> (peak: Double, idle: Double) {
        let coordinator = try CoordinatorProcess.start(pki: pki, data: data)
        defer { coordinator.stop() }
        let fabric = RemoteFabric(endpoint: coordinator.endpoint, pki: pki)
        let job = try await startJob("burst", on: fabric)
        let idle = coordinator.memory().rss
        let follower = try await fabric.admin()
        let events = try await follower.watch(runID: job.runID, logs: true, follow: true)
        let shown = Task {
            var total = 0
            for try await event in events {
                if case .log(let chunk) = event.event { total = Int(chunk.offset) + chunk.data.count }
                if total >= bytes { break }
            }
        }
        try await writeLog(job, bytes: bytes)
        _ = try await shown.value
        let peak = coordinator.memory().peak
        await job.close()
        await follower.connection.close()
        return (peak, idle)
    }
}

extension Scenarios {
    /// A node log of `bytes` (stored whole: `--max-log-bytes` above it), then `readers`
    /// clients reading it back at once (`heddle logs RUN`): the coordinator's peak RSS while
    /// they read, and their combined throughput. Reads go at the readers' pace, so the peak
    /// does not grow with the log.
    static func logReaders(pki: BenchPKI, data: String, bytes: Int, readers: Int)
        async throws -> (peak: Double, idle: Double, mbPerSecond: Double) {
        let coordinator = try CoordinatorProcess.start(pki: pki, data: data,
                                                       extraArguments: ["--max-log-bytes", String(2 * bytes)])
        defer { coordinator.stop() }
        let fabric = RemoteFabric(endpoint: coordinator.endpoint, pki: pki)
        let job = try await startJob("readers", on: fabric)
        try await writeLog(job, bytes: bytes)
        let idle = coordinator.memory().rss
        coordinator.resetPeak()
        let started = ContinuousClock.now
        let runID = job.runID
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<readers {
                group.addTask {
                    let reader = try await fabric.admin()
                    var total = 0
                    for try await event in try await reader.watch(runID: runID, logs: true, follow: false) {
                        if case .log(let chunk) = event.event { total = Int(chunk.offset) + chunk.data.count }
                    }
                    await reader.connection.close()
                    guard total == bytes else { throw WireError(.internal, "a reader got \(total) of \(bytes) bytes") }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = seconds(since: started)
        let peak = coordinator.memory().peak
        await job.close()
        return (peak, idle, Double(bytes * readers) / elapsed / 1_000_000)
    }
}

extension Scenarios {
    /// Sends `bytes` of log for the job's node as fast as the connection takes them (1 MiB
    /// chunks) and returns once the coordinator acknowledged them all as durable.
    static func writeLog(_ job: StartedJob, bytes: Int) async throws {
        let chunk = Data((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 % 95 + 32) })
        let runner = job.runner
        async let acked: Void = {
            // The same stream the job's assignment came from (one reader at a time).
            var pushes = runner.pushes.makeAsyncIterator()
            while let envelope = await pushes.next() {
                if case .logAck(let ack) = envelope.body, ack.durableOffset >= UInt64(bytes) { return }
            }
        }()
        var offset = 0
        while offset < bytes {
            let piece = chunk.prefix(bytes - offset)
            try await job.runner.send(logAppend(job.assignment.job, offset: offset, piece))
            offset += piece.count
        }
        await acked
    }
}

/// A coordinator to measure, on 127.0.0.1: admins and simulated runners connect to it.
protocol Fabric: Sendable {
    var endpoint: Endpoint { get }
    var pki: BenchPKI { get }
}

extension Fabric {
    func admin() async throws -> HeddleClient {
        try await HeddleClient.connect(to: endpoint, tls: pki.files("admin"))
    }

    /// A simulated runner: the real client and protocol, no processes.
    func runner(labels: [String], capacity: UInt32) async throws -> HeddleConnection {
        var hello = Heddle_V1_Hello()
        hello.labels = labels
        hello.capacity = capacity
        return try await HeddleConnection.connect(to: endpoint, tls: pki.files("runner"), hello: hello)
    }
}

/// A coordinator in another process.
struct RemoteFabric: Fabric {
    let endpoint: Endpoint
    let pki: BenchPKI
}
