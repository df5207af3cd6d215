import Coordinator
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Wire

/// Measures Heddle on this machine: a real coordinator on 127.0.0.1 over mutual TLS, runners
/// simulated with the real client speaking the real protocol, and the baselines (raw TLS on
/// loopback with the same TLS stack, disk writes with fsync) in the same run.
/// Build it in release: `scripts/bench` does.
@main
struct Bench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        let quick = arguments.contains("--quick")
        let json = arguments.contains("--json")
        // `--only jobs,log` runs just those scenarios (for profiling one of them).
        let scenarios = ["baselines", "jobs", "latency", "log", "tail", "artifact", "cache", "queue", "runners", "burst", "http", "hostile", "cluster"]
        var only: [String]?
        if let flag = arguments.firstIndex(of: "--only") {
            let value = arguments.index(after: flag) < arguments.endIndex ? arguments[arguments.index(after: flag)] : ""
            only = value.split(separator: ",").map(String.init)
            guard let names = only, !names.isEmpty, names.allSatisfy(scenarios.contains) else {
                FileHandle.standardError.write(Data("heddle-bench: --only takes a comma-separated list of \(scenarios.joined(separator: ", "))\n".utf8))
                exit(2)
            }
        }
        func wanted(_ name: String) -> Bool { only?.contains(name) ?? true }
        var results: [(String, Double)] = []
        func record(_ key: String, _ value: Double) {
            results.append((key, value))
            if !json { FileHandle.standardError.write(Data("\(key): \(String(format: "%.2f", value))\n".utf8)) }
        }

        let root = NSTemporaryDirectory() + "heddle-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pki = try BenchPKI(directory: root)

        var tls = 0.0
        var disk = 0.0
        if wanted("baselines") {
            tls = try await Baselines.tlsLoopback(pki: pki, bytes: quick ? 256 << 20 : 1 << 30)
            record("tls_loopback_mb_s", tls)
            disk = try Baselines.diskWrite(path: "\(root)/disk.bin", bytes: quick ? 256 << 20 : 1 << 30)
            record("disk_write_mb_s", disk)
        }

        let fabric = try await BenchCoordinator.start(pki: pki, data: "\(root)/data")
        if wanted("jobs") {
            let jobs = try await Scenarios.jobsPerSecond([fabric], runners: 4, runs: quick ? 500 : 2000)
            record("jobs_per_s", jobs)
        }
        if wanted("latency") {
            let (p50, p99) = try await Scenarios.triggerToStart(fabric, samples: quick ? 100 : 500)
            record("trigger_to_start_p50_ms", p50)
            record("trigger_to_start_p99_ms", p99)
        }
        if wanted("log") {
            let logs = try await Scenarios.logThroughput(fabric, bytes: quick ? 256 << 20 : 1 << 30)
            record("log_throughput_mb_s", logs)
            if tls > 0 { record("log_throughput_vs_tls", logs / tls) }
        }
        if wanted("tail") {
            record("tail_latency_p50_ms", try await Scenarios.tailLatency(fabric, samples: quick ? 200 : 1000))
        }
        if wanted("artifact") {
            let artifact = try await Scenarios.artifactThroughput(fabric, bytes: quick ? 256 << 20 : 1 << 30)
            record("artifact_throughput_mb_s", artifact)
            if tls > 0 { record("artifact_throughput_vs_limit", artifact / min(tls, disk)) }
        }
        if wanted("cache") {
            record("cache_restore_mb_s", try await Scenarios.cacheRestore(fabric, bytes: 500 << 20))
        }
        if wanted("queue") {
            let queue = try await Scenarios.queueOperations(fabric, total: 100_000, samples: quick ? 200 : 1000)
            record("queue_move_p99_ms", queue.move)
            record("queue_cancel_p99_ms", queue.cancel)
            record("bulk_cancel_10k_ms", queue.bulk)
            record("queue_list_p50_ms", queue.list)
        }
        await fabric.stop()

        if wanted("runners") {
            let count = 10_000
            let held = try await Scenarios.connectedRunners(pki: pki, data: "\(root)/runners", count: count)
            record("connected_runners", Double(held.listed))
            record("coordinator_rss_mb", held.rss)
            record("coordinator_idle_rss_mb", held.idleRSS)
            record("rss_per_runner_kb", (held.rss - held.idleRSS) * 1024 / Double(max(1, held.listed)))
            record("runner_connects_per_s", Double(count) / held.connectSeconds)
        }
        if wanted("burst") {
            let burst = try await Scenarios.burstRSS(pki: pki, data: "\(root)/burst", bytes: 100_000_000)
            record("burst_rss_mb", burst.peak)
            let read = try await Scenarios.logReaders(pki: pki, data: "\(root)/readers",
                                                      bytes: quick ? 200_000_000 : 500_000_000, readers: 10)
            record("log_readers_rss_mb", read.peak)
            record("log_readers_mb_s", read.mbPerSecond)
        }

        if wanted("http") {
            // HEDDLE_BENCH_ARTIFACTS and HEDDLE_BENCH_FOLLOWERS change the sizes (for profiling).
            let environment = ProcessInfo.processInfo.environment
            let http = try await HTTPScenarios.run(pki: pki, data: "\(root)/http", quick: quick,
                                                   artifacts: environment["HEDDLE_BENCH_ARTIFACTS"].flatMap(Int.init) ?? 1_000_000,
                                                   followers: environment["HEDDLE_BENCH_FOLLOWERS"].flatMap(Int.init) ?? 1000)
            record("api_runs_list_p99_ms", http.runsListP99)
            record("artifact_search_p99_ms", http.searchP99)
            record("webhook_to_queued_p50_ms", http.webhookP50)
            record("http_download_mb_s", http.downloadMBs)
            if tls > 0 { record("http_download_vs_tls", http.downloadMBs / tls) }
            record("sse_followers", http.followers)
            record("sse_followers_seconds", http.followersSeconds)
            record("sse_followers_rss_mb", http.followersRSS)
        }

        if wanted("hostile") {
            let idle = try await HostileScenarios.idleConnections(pki: pki, data: "\(root)/idle", total: quick ? 1000 : 2000)
            record("http_idle_connections_held", Double(idle.held))
            record("http_idle_healthz_max_ms", idle.slowestMs)
            record("webhook_unsigned_rss_mb", try await HostileScenarios.unsignedWebhooks(pki: pki, data: "\(root)/unsigned"))
        }

        if wanted("cluster") {
            // Coordinators on PostgreSQL: only with a server to use (scripts/bench starts one).
            if let server = ProcessInfo.processInfo.environment["HEDDLE_BENCH_POSTGRES"], !server.isEmpty {
                let cluster = try await ClusterScenarios.run(pki: pki, root: root, server: server, quick: quick)
                for (count, value) in cluster.jobsPerSecond { record("pg_jobs_per_s_\(count)_coordinators", value) }
                record("pg_trigger_to_start_p50_ms", cluster.triggerToStartP50)
                record("pg_log_throughput_mb_s", cluster.logThroughput)
                record("pg_queue_move_p99_ms", cluster.queueMoveP99)
                record("pg_failover_s", cluster.failover)
                record("pg_change_100k_ms", cluster.changeMs)
                record("pg_change_100k_cpu_ms", cluster.changeCPUms)
                record("pg_change_100k_db_cpu_ms", cluster.changeDatabaseCPUms)
            } else if only != nil {
                FileHandle.standardError.write(Data("heddle-bench: the cluster scenario needs HEDDLE_BENCH_POSTGRES (scripts/bench sets it)\n".utf8))
                exit(2)
            }
        }

        if json {
            let object = Dictionary(uniqueKeysWithValues: results.map { ($0.0, ($0.1 * 100).rounded() / 100) })
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for (key, value) in results { print("\(key.padding(toLength: 28, withPad: " ", startingAt: 0)) \(String(format: "%10.2f", value))") }
        }
    }
}

/// Certificates for the run, written to a temporary directory.
struct BenchPKI {
    let directory: String
    init(directory: String) throws {
        self.directory = directory
        let ca = try PKI.makeCA()
        try PEMFiles.write(ca, directory: directory, name: "ca")
        try PEMFiles.write(try PKI.issueServer(ca: ca), directory: directory, name: "coordinator")
        try PEMFiles.write(try PKI.issueClient(role: .admin, name: "admin", ca: ca), directory: directory, name: "admin")
        try PEMFiles.write(try PKI.issueClient(role: .runner, name: "runner", ca: ca), directory: directory, name: "runner")
    }
    func files(_ name: String) -> TLSFiles {
        TLSFiles(ca: "\(directory)/ca.pem", certificate: "\(directory)/\(name).pem", key: "\(directory)/\(name).key")
    }
}

func seconds(since start: ContinuousClock.Instant) -> Double {
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}
