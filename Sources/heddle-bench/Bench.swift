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
        var results: [(String, Double)] = []
        func record(_ key: String, _ value: Double) {
            results.append((key, value))
            if !json { FileHandle.standardError.write(Data("\(key): \(String(format: "%.2f", value))\n".utf8)) }
        }

        let root = NSTemporaryDirectory() + "heddle-bench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pki = try BenchPKI(directory: root)

        let tls = try await Baselines.tlsLoopback(pki: pki, bytes: quick ? 256 << 20 : 1 << 30)
        record("tls_loopback_mb_s", tls)
        let disk = try Baselines.diskWrite(path: "\(root)/disk.bin", bytes: quick ? 256 << 20 : 1 << 30)
        record("disk_write_mb_s", disk)

        let fabric = try await BenchCoordinator.start(pki: pki, data: "\(root)/data")
        let jobs = try await Scenarios.jobsPerSecond(fabric, runners: 4, runs: quick ? 500 : 2000)
        record("jobs_per_s", jobs)
        let (p50, p99) = try await Scenarios.triggerToStart(fabric, samples: quick ? 100 : 500)
        record("trigger_to_start_p50_ms", p50)
        record("trigger_to_start_p99_ms", p99)
        let logs = try await Scenarios.logThroughput(fabric, bytes: quick ? 64 << 20 : 256 << 20)
        record("log_throughput_mb_s", logs)
        record("log_throughput_vs_tls", logs / tls)
        await fabric.stop()

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
