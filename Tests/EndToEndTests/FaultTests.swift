import Foundation
import TestSupport
import Testing
import Wire

/// Fault injection with the real binaries: crashes, cut and stalled connections, fencing,
/// revocation, shutdown. Nothing acknowledged is lost, nothing is stored twice.
@Suite(.serialized) struct FaultTests {
    static let lines = 60
    static let streaming = """
        name: stream
        jobs:
          work:
            labels: [linux]
            nodes:
              talk: { run: "for i in $(seq 1 \(lines)); do echo line $i; sleep 0.05; done" }
        """
    static var expected: String { (1...lines).map { "line \($0)\n" }.joined() }

    static let frozen = """
        name: frozen
        jobs:
          work:
            labels: [linux]
            retry: { lost: 1 }
            nodes:
              n: { run: "echo start; sleep 2; echo end" }
        """

    /// A client that sends requests and never reads the answers: the coordinator stops
    /// reading it once 16 frames wait to be written, so its memory stays bounded however long
    /// the client goes on, and the session, silent to the coordinator, is closed.
    @Test func aClientThatNeverReadsItsAnswersCostsBoundedMemory() async throws {
        let fabric = try await Fabric(runnerLabels: [], heartbeat: 2)
        do {
            try await fabric.push("idle.act", "name: idle\njobs:\n  j:\n    labels: [nowhere]\n    nodes:\n      n: { run: \"true\" }\n")
            let tls = TLSFiles(ca: "\(fabric.certs)/ca.pem", certificate: "\(fabric.certs)/admin.pem", key: "\(fabric.certs)/admin.key")
            let endpoint = try Endpoint(parsing: fabric.endpoint)
            let admin = try await HeddleClient.connect(to: endpoint, tls: tls)
            for _ in 0..<400 { _ = try await admin.trigger(project: "shop", pipeline: "idle", branch: "main") }
            // Each answer below is about 400 run summaries.
            let answer = try await admin.runs(limit: 1000)
            #expect(answer.count == 400)
            await admin.connection.close()
            let pid = try #require(fabric.coordinator).pid
            let before = try memory(pid)

            var hello = Heddle_V1_Hello()
            hello.protocolVersion = HeddleVersion.protocolVersion
            var flood = Self.frame(Envelope(id: 1, .hello(hello)))
            var list = Heddle_V1_RunListRequest()
            list.limit = 1000
            let request = Self.frame(Envelope(id: 2, .runList(list)))
            for _ in 0..<100_000 { flood += request }
            let (_, wroteAll) = try await RawClient.exchangeReportingWrite(flood, with: endpoint, tls: tls, reading: false)
            #expect(!wroteAll, "the coordinator read the whole flood")
            let after = try memory(pid)
            // 16 answers may wait (PROTOCOL.md); thousands used to.
            #expect(after.peak - before.resident < 64 << 20, "peak \(after.peak >> 20) MiB, before \(before.resident >> 20) MiB")
            let runs = try #require(try await fabric.list(["runs", "--limit", "5"], "runs"))
            #expect(runs.count == 5)
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// Out of file descriptors: the coordinator warns at start that its limit is below what
    /// `--max-connections` needs, logs (rate limited) that accepting fails, backs off instead
    /// of spinning, and serves again once descriptors are free.
    @Test func outOfDescriptorsTheCoordinatorSaysSoBacksOffAndRecovers() async throws {
        let fabric = try await Fabric(runnerLabels: [], heartbeat: 1, coordinatorArguments: ["--max-connections", "1000"],
                                      descriptorLimit: 64)
        var sockets: [Int32] = []
        do {
            let coordinator = try #require(fabric.coordinator)
            #expect(coordinator.standardError.contains(
                "the open-file limit is 64 (ulimit -n) but --max-connections 1000 needs about 1256"), "\(coordinator.standardError)")
            let port = UInt16(fabric.endpoint.split(separator: ":").last ?? "") ?? 0
            for _ in 0..<100 { sockets.append(try openTCP(Endpoint(host: "127.0.0.1", port: Int(port)))) }
            try await waitUntil("the coordinator to say it cannot accept") {
                coordinator.standardError.contains("cannot accept a connection (accepting again in 1 s)")
            }
            let used = try await cpuUsed(by: coordinator.pid, over: .seconds(2))
            #expect(used < 1.0, "the coordinator used \(used) s of CPU in 2 s while out of descriptors")
            let warnings = coordinator.standardError.components(separatedBy: "cannot accept a connection").count - 1
            #expect(warnings <= 2, "\(warnings) warnings in about 3 s: not rate limited")
            for socket in sockets { close(socket) }
            sockets = []
            try await waitUntil("the coordinator to serve again") {
                try await fabric.heddle(["runs"], timeout: .seconds(30)).status == 0
            }
        } catch {
            for socket in sockets { close(socket) }
            // What the coordinator said, should it have exited (seen once in CI, not reproduced).
            Issue.record("coordinator: \(fabric.coordinator?.standardError.suffix(4000) ?? "")")
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// Whether this process may mount a tmpfs (root with the capability: the test machines).
    static let canMountTmpfs: Bool = {
        guard let point = try? TemporaryDirectory("heddle-mount-probe") else { return false }
        defer { point.remove() }
        guard shell(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", point.path]) == 0 else { return false }
        _ = shell(["umount", point.path])
        return true
    }()

    @discardableResult
    static func shell(_ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }

    static func frame(_ envelope: Envelope) -> [UInt8] {
        let payload: [UInt8] = (try? envelope.serializedBytes()) ?? []
        return [0] + withUnsafeBytes(of: UInt32(payload.count).bigEndian, Array.init) + payload
    }


}

/// A pipeline whose one node makes a random file of `size` bytes, prints its SHA-256 and
/// uploads it as an artifact.
func uploadPipeline(name: String, size: Int) -> String {
    """
    name: \(name)
    jobs:
      work:
        labels: [linux]
        nodes:
          make:
            run: "mkdir -p out && head -c \(size) /dev/urandom > out/big.bin && sha256sum out/big.bin | cut -c1-64"
            artifacts: ["out/big.bin"]
    """
}

/// Waits until a coordinator's uploads directory holds a partial upload with bytes in it.
func waitForAnUpload(in uploads: String) async throws {
    try await waitUntil("the upload to start", timeout: .seconds(120)) {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: uploads)) ?? []
        return files.contains { name in
            (((try? FileManager.default.attributesOfItem(atPath: "\(uploads)/\(name)"))?[.size] as? Int) ?? 0) > 0
        }
    }
}

/// How many lines a node's stored log has.
func logLines(_ fabric: Fabric, _ id: Int, job: String, node: String) async throws -> Int {
    let log = try await fabric.heddle(["logs", String(id), "--job", job, "--node", node])
    return log.output.split(separator: "\n").count
}
