import Crypto
import Foundation
import TestSupport
import Testing
import Wire

/// The real coordinator's HTTP front against hostile clients, beside `HostileInputTests` for
/// the binary port: idle and slow connections, descriptors running out, unsigned webhook
/// bodies, credential floods, path tricks, unacceptable `Accept`, oversized chunked bodies.
@Suite(.serialized) struct HTTPHostileTests {
    func port(_ url: String?) -> Int { Int(url?.split(separator: ":").last ?? "") ?? 0 }

    @Test func idleAndSlowConnectionsAreClosedAndNeverLockOthersOut() async throws {
        let fabric = try await Fabric(runnerLabels: [], coordinatorArguments: [
            // Timeouts short for the test, but not so short that a handshake on a machine busy
            // with the other suites misses them (4 s was missed once in a fresh-clone CI run,
            // when the coordinator stalled for 3 s).
            "--http", "127.0.0.1:0", "--max-http-connections", "16", "--http-header-timeout", "10", "--http-idle-timeout", "2",
        ])
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        do {
            let client = try fabric.http()
            // 40 connections that never say a word: more than the cap.
            for _ in 0..<40 { sockets.append(try openTCP(Endpoint(host: "127.0.0.1", port: port(fabric.httpURL)))) }
            // A new client is still answered: it takes the place of the one idle longest.
            let health = try await client.request("GET", "/healthz", timeout: .seconds(10))
            #expect(health.status == 200)
            let coordinator = try #require(fabric.coordinator)
            try await waitUntil("the coordinator to say the cap was reached") {
                coordinator.standardError.contains("HTTP connections at the cap (16, --max-http-connections)")
            }
            // Every silent connection is closed: evicted, or past the header timeout.
            try await waitUntil("the 40 silent connections to be closed", timeout: .seconds(30)) {
                sockets.allSatisfy(closedByPeer)
            }
            // A header sent a byte at a time, never finished: closed after the timeout.
            let slow = try await client.raw(Array("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".utf8), timeout: .seconds(30))
            #expect(slow.closed && slow.text.isEmpty, "\(slow.text)")
            // A kept-alive connection answered, then silent: closed after the idle timeout.
            let kept = try await client.raw(client.head("GET", "/healthz", []), timeout: .seconds(30))
            #expect(kept.closed && kept.text.hasPrefix("HTTP/1.1 200"), "\(kept.text)")
            // A body that stops halfway: closed after the idle timeout, nothing stored.
            let stalled = try await client.raw(client.head("POST", "/api/v1/session", [("Content-Length", "100")]) + Array("{\"tok".utf8),
                                               timeout: .seconds(30))
            #expect(stalled.closed && stalled.text.isEmpty, "\(stalled.text)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    /// With few descriptors, the HTTP front holds at most half of what is left, so runners
    /// and the CLI can still connect to the binary port while idle HTTP clients pile up, and
    /// the coordinator does not spin.
    @Test func idleHTTPClientsCannotTakeTheBinaryPortsDescriptors() async throws {
        let fabric = try await Fabric(runnerLabels: [], heartbeat: 1, coordinatorArguments: ["--http", "127.0.0.1:0"],
                                      descriptorLimit: 128)
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        do {
            let coordinator = try #require(fabric.coordinator)
            #expect(coordinator.standardError.contains("the HTTP front holds at most 48"), "\(coordinator.standardError)")
            for _ in 0..<300 { sockets.append(try openTCP(Endpoint(host: "127.0.0.1", port: port(fabric.httpURL)))) }
            let health = try await fabric.http().request("GET", "/healthz", timeout: .seconds(5))
            #expect(health.status == 200)
            let runs = try await fabric.heddle(["runs"], timeout: .seconds(10))
            #expect(runs.status == 0, "\(runs.error)")
            let used = try await cpuUsed(by: coordinator.pid, over: .seconds(2))
            #expect(used < 1.0, "the coordinator used \(used) s of CPU in 2 s with idle HTTP clients piled up")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func webhookBodiesAreNotReadBeforeTheyCanBeChecked() async throws {
        let fabric = try await Fabric(runnerLabels: [], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            let created = try await fabric.heddle(["project", "create", "app", "--repo", "/nowhere", "--webhook-secret"])
            #expect(created.status == 0, "\(created.error)")
            let client = try fabric.http()
            let eight = 8 << 20
            let github = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1"), ("Content-Type", "application/json")]
            let wrong = ("X-Hub-Signature-256", "sha256=" + String(repeating: "ab", count: 32))
            // Refused from the headers alone, the body never sent: the answer comes anyway, and
            // the connection closes.
            for (headers, status, path) in [
                (github + [wrong, ("Content-Length", "\(eight)")], 401, "/hooks/nosuchproject"),
                (github + [("Content-Length", "\(eight)")], 401, "/hooks/app"),
                ([("Content-Length", "\(eight)")], 401, "/hooks/app"),
                (github + [wrong, ("Content-Length", "\(eight + 1)")], 413, "/hooks/app"),
            ] {
                let answer = try await client.raw(client.head("POST", path, headers), timeout: .seconds(10))
                #expect(answer.closed && answer.text.hasPrefix("HTTP/1.1 \(status)"), "\(path) \(headers): \(answer.text)")
            }
            // A chunked body past the limit: 413, not 500, and nothing logged as a failure.
            let chunk = [UInt8](repeating: 0x20, count: 1 << 20)
            var chunked = client.head("POST", "/hooks/app", github + [wrong, ("Transfer-Encoding", "chunked")])
            for _ in 0..<9 { chunked += Array("100000\r\n".utf8) + chunk + Array("\r\n".utf8) }
            chunked += Array("0\r\n\r\n".utf8)
            let tooLarge = try await client.raw(chunked, timeout: .seconds(20))
            #expect(tooLarge.text.hasPrefix("HTTP/1.1 413"), "\(tooLarge.text)")

            // 40 unsigned deliveries of 8 MiB at once: the coordinator holds at most its budget
            // of unverified bytes; each is refused (401 once read and checked, or 503 past the
            // budget).
            let coordinator = try #require(fabric.coordinator)
            let body = [UInt8](repeating: 0x7B, count: eight)
            /// 40 deliveries at once; their answers' statuses, and the coordinator's RSS growth
            /// meanwhile (peak over them, counted from their start, less RSS before).
            func forty(_ request: [UInt8]) async throws -> (statuses: [String], growth: Int) {
                let before = try memory(coordinator.pid)
                try "5".write(toFile: "/proc/\(coordinator.pid)/clear_refs", atomically: false, encoding: .utf8)
                let statuses = try await withThrowingTaskGroup(of: String.self) { group in
                    for _ in 0..<40 { group.addTask { String(try await client.raw(request, timeout: .seconds(60)).text.prefix(12)) } }
                    return try await group.reduce(into: []) { $0.append($1) }
                }
                return (statuses, try memory(coordinator.pid).peak - before.resident)
            }
            // A project that does not exist: refused from the headers, bodies unread.
            let unknown = try await forty(client.head("POST", "/hooks/nosuch", github + [wrong, ("Content-Length", "\(eight)")]) + body)
            #expect(unknown.statuses.allSatisfy { $0 == "HTTP/1.1 401" }, "\(unknown.statuses)")
            #expect(unknown.growth < 64 << 20, "\(unknown.growth >> 20) MiB for bodies nobody reads")
            // The project: each body read through the HMAC within the budget of unverified
            // bytes (401 once read and checked), or refused past it (503).
            let signed = try await forty(client.head("POST", "/hooks/app", github + [wrong, ("Content-Length", "\(eight)")]) + body)
            #expect(signed.statuses.allSatisfy { $0 == "HTTP/1.1 401" || $0 == "HTTP/1.1 503" }, "\(signed.statuses)")
            #expect(signed.statuses.contains("HTTP/1.1 503"), "no delivery was refused for the budget: \(signed.statuses)")
            // 40 × 8 MiB is 320 MiB; the budget is 16 MiB (scripts/bench measures the release
            // build: webhook_unsigned_rss_mb).
            #expect(signed.growth < 64 << 20, "\(signed.growth >> 20) MiB for 40 unsigned deliveries")
            #expect(!coordinator.standardError.contains("request failed"), "\(coordinator.standardError)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func wrongCredentialsAreSlowedWithoutLockingOutValidOnes() async throws {
        let fabric = try await Fabric(runnerLabels: [], coordinatorArguments: ["--http", "127.0.0.1:0", "--trusted-proxy", "127.0.0.1"])
        do {
            let admin = try await fabric.createToken("ops", role: "admin")
            let client = try fabric.http()
            func get(_ token: String, from address: String) async throws -> HTTPTestClient.Response {
                try await client.request("GET", "/api/v1/runs", headers: [("Authorization", "Bearer \(token)"), ("X-Forwarded-For", address)])
            }
            // One client behind the proxy fails 20 times: 401s, then 429 with Retry-After.
            for _ in 0..<20 {
                #expect(try await get("heddle_\(UUID().uuidString)", from: "192.0.2.1").status == 401)
            }
            let limited = try await get("heddle_\(UUID().uuidString)", from: "192.0.2.1")
            #expect(limited.status == 429 && Int(limited.header("Retry-After") ?? "") ?? 0 > 0, "\(limited.text)")
            // Valid credentials from that very client still pass; another client is not limited.
            #expect(try await get(admin, from: "192.0.2.1").status == 200)
            #expect(try await get("heddle_\(UUID().uuidString)", from: "192.0.2.2").status == 401)
            // One token tried from many addresses: limited by its prefix.
            var last = 0
            for index in 0...20 { last = try await get("heddle_samesame_\(index)", from: "198.51.100.\(index)").status }
            #expect(last == 429)
            // Signing in with a wrong token counts the same way; a right one passes.
            let signIn = try await client.json("POST", "/api/v1/session", ["token": admin], headers: [("X-Forwarded-For", "192.0.2.1")])
            #expect(signIn.status == 201, "\(signIn.text)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func pathsAcceptBodiesAndMetricsAnswerExactly() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            let client = try fabric.http()
            let admin = try await fabric.createToken("ops", role: "admin")
            let bearer = [("Authorization", "Bearer \(admin)")]
            // One form of every path before authentication.
            for path in ["/metrics/", "//metrics", "/%6Detrics", "/api//v1/runs", "/api/v1/runs/"] {
                let answer = try await client.request("GET", path)
                #expect(answer.status == 401, "\(path): \(answer.status) \(answer.text)")
            }
            #expect(try await client.request("GET", "//metrics", headers: bearer).status == 200)
            // An Accept without JSON: 406, said as a problem, not logged as a failure.
            let html = try await client.request("GET", "/api/v1/runs", headers: bearer + [("Accept", "text/html")])
            #expect(html.status == 406 && html.object?["code"] as? String == "not_acceptable", "\(html.status) \(html.text)")
            #expect(try await client.request("GET", "/api/v1/runs", headers: bearer + [("Accept", "text/html, */*;q=0.8")]).status == 200)
            // No field takes null: said, naming the field, not taken as absent.
            let null = try await client.json("POST", "/api/v1/projects", ["name": "x", "repository": NSNull()], headers: bearer)
            #expect(null.status == 400 && null.object?["field"] as? String == "repository", "\(null.text)")
            // Oversized chunked bodies: 413 with and without credentials.
            let chunk = [UInt8](repeating: 0x20, count: 512 << 10)
            for (path, headers) in [("/api/v1/session", [(String, String)]()), ("/api/v1/projects", bearer)] {
                var chunked = client.head("POST", path, headers + [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")])
                for _ in 0..<3 { chunked += Array("80000\r\n".utf8) + chunk + Array("\r\n".utf8) }
                chunked += Array("0\r\n\r\n".utf8)
                let answer = try await client.raw(chunked, timeout: .seconds(20))
                #expect(answer.text.hasPrefix("HTTP/1.1 413"), "\(path): \(answer.text)")
            }
            // The answers above are counted by status, none as 500.
            let metrics = try await client.request("GET", "/metrics", headers: bearer).text
            #expect(metrics.contains("http_response_status_code=\"401\"") && metrics.contains("http_response_status_code=\"406\""),
                    "\(metrics.split(separator: "\n").filter { $0.hasPrefix("hb_") })")
            #expect(!metrics.split(separator: "\n").contains { $0.hasPrefix("hb_request_errors") && $0.contains("\"500\"") })
            let coordinator = try #require(fabric.coordinator)
            #expect(!coordinator.standardError.contains("request failed"), "\(coordinator.standardError)")

            // An artifact: HEAD as GET without the body; weak tags match; If-Range honoured.
            try await fabric.push("ci.act", HTTPAPITests.pipeline)
            let run = try await fabric.trigger("shop/ci")
            _ = try await fabric.waitForRun(run, ["succeeded"])
            let artifacts = try await client.request("GET", "/api/v1/runs/\(run)/artifacts", headers: bearer)
            let artifact = try #require((artifacts.object?["artifacts"] as? [[String: Any]])?.first?["id"] as? Int, "\(artifacts.text)")
            let content = "/api/v1/artifacts/\(artifact)/content"
            let full = try await client.request("GET", content, headers: bearer)
            let head = try await client.request("HEAD", content, headers: bearer)
            #expect(full.status == 200 && full.text == "two\n")
            #expect(head.status == 200 && head.body.isEmpty && head.header("Content-Length") == "4" && head.header("ETag") == full.header("ETag"))
            let tag = try #require(full.header("ETag"))
            #expect(try await client.request("GET", content, headers: bearer + [("If-None-Match", "W/\(tag)")]).status == 304)
            let ranged = try await client.request("GET", content, headers: bearer + [("Range", "bytes=1-2"), ("If-Range", tag)])
            #expect(ranged.status == 206 && ranged.text == "wo")
            let changed = try await client.request("GET", content, headers: bearer + [("Range", "bytes=1-2"), ("If-Range", "\"other\"")])
            #expect(changed.status == 200 && changed.text == "two\n")
            // The HTML log: a policy that allows no script.
            let log = try await client.request("GET", "/api/v1/runs/\(run)/jobs/test/nodes/first/log", headers: bearer + [("Accept", "text/html")])
            #expect(log.status == 200 && log.header("Content-Security-Policy")?.contains("default-src 'none'") == true)

            // TLS 1.2 offers AEAD suites only.
            let cbc = try await shellOutput(["openssl", "s_client", "-connect", "127.0.0.1:\(port(fabric.httpURL))", "-tls1_2",
                                             "-cipher", "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES256-SHA:ECDHE-ECDSA-AES256-SHA"],
                                         logs: fabric.root)
            #expect(cbc.status != 0, "a CBC suite was accepted: \(cbc.output)")
            let gcm = try await shellOutput(["openssl", "s_client", "-connect", "127.0.0.1:\(port(fabric.httpURL))", "-tls1_2"],
                                            logs: fabric.root)
            #expect(gcm.status == 0 && (gcm.output.contains("GCM") || gcm.output.contains("CHACHA20")), "\(gcm.output)")
        } catch {
            await fabric.stop()
            throw error
        }
        await fabric.stop()
    }

    @Test func addressesGivenAsNamesAreRefused() async throws {
        let root = try TemporaryDirectory("heddle-plain")
        defer { root.remove() }
        let coordinator = try ManagedProcess(Binaries.path("heddle-coordinator"), [
            "--data", root.file("data"), "--listen", "127.0.0.1:0", "--http", "127.evil.example:0", "--http-plain",
            "--ca", root.file("none.pem"), "--cert", root.file("none.pem"), "--key", root.file("none.key"),
        ], logs: root)
        let status = try await coordinator.waitForExit(timeout: .seconds(30))
        #expect(status != 0)
        #expect(coordinator.standardError.contains("only on a loopback address"), "\(coordinator.standardError)")
        // A trusted proxy is an address too, not a name.
        let proxied = try ManagedProcess(Binaries.path("heddle-coordinator"), [
            "--data", root.file("data"), "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--trusted-proxy", "proxy.example",
            "--ca", root.file("none.pem"), "--cert", root.file("none.pem"), "--key", root.file("none.key"),
        ], logs: root)
        #expect(try await proxied.waitForExit(timeout: .seconds(30)) != 0)
        #expect(proxied.standardError.contains("--trusted-proxy takes an IP address, not 'proxy.example'"), "\(proxied.standardError)")
    }

    /// A command's exit status and output (standard output and error), with its standard
    /// input closed.
    func shellOutput(_ arguments: [String], logs: TemporaryDirectory) async throws -> (status: Int32, output: String) {
        let process = try ManagedProcess("/usr/bin/env", arguments, logs: logs)
        let status = try await process.waitForExit(timeout: .seconds(30))
        return (status, process.standardOutput + process.standardError)
    }
}
