import Foundation
import TestSupport
import Testing
import Wire

/// The HTTP front of the real coordinator binary over real HTTPS: tokens, roles, every route
/// of the OpenAPI document answering as documented, errors as problem+json.
@Suite(.serialized) struct HTTPAPITests {
    static let pipeline = """
        name: ci
        jobs:
          test:
            labels: [linux]
            cache: { key: ci, paths: [out.txt] }
            nodes:
              first:
                run: printf 'one\\n'
              second:
                run: printf 'two\\n' > out.txt
                needs: [first]
                artifacts: ["out.txt"]
        """

    /// Pushes the pipeline (admin, over HTTP) and makes the project first.
    func setUp(_ fabric: Fabric) async throws {
        let admin = try fabric.http(as: "admin")
        let project = try await admin.json("POST", "/api/v1/projects", ["name": "shop"])
        #expect(project.status == 201, "\(project.text)")
        let push = try await admin.json("POST", "/api/v1/projects/shop/pipelines", ["source": Self.pipeline, "fileName": "ci.act"])
        #expect(push.status == 201, "\(push.text)")
        #expect(push.object?["name"] as? String == "ci" && push.object?["jobs"] as? [String] == ["test"])
    }

    func bearer(_ secret: String) -> [(String, String)] { [("Authorization", "Bearer \(secret)")] }

    /// Waits until the run's status is one of `statuses`, reading it over HTTP.
    func waitForRun(_ client: HTTPTestClient, _ id: Int, _ statuses: Set<String>, headers: [(String, String)] = []) async throws -> [String: Any] {
        var last: [String: Any] = [:]
        try await waitUntil("run \(id) to be \(statuses.sorted())", timeout: .seconds(60)) {
            let response = try await client.request("GET", "/api/v1/runs/\(id)", headers: headers)
            last = response.object ?? [:]
            return statuses.contains((last["run"] as? [String: Any])?["status"] as? String ?? "")
        }
        return last
    }

    @Test func tokensAndCertificatesGiveRolesAndEverythingElseIsRefusedAsJSON() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            #expect(fabric.httpURL?.hasPrefix("https://127.0.0.1:") == true)
            try await setUp(fabric)
            let anonymous = try fabric.http()

            // No credentials, a wrong token, another scheme: 401 as JSON, and no hint.
            for headers in [[], bearer("heddle_wrong"), [("Authorization", "Basic YWRtaW46YWRtaW4=")]] {
                let refused = try await anonymous.request("GET", "/api/v1/runs", headers: headers)
                #expect(refused.status == 401)
                #expect(refused.header("Content-Type") == "application/problem+json")
                #expect(refused.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
                #expect(refused.object?["code"] as? String == "unauthenticated" && refused.object?["status"] as? Int == 401)
            }

            // Tokens: made by the CLI, listed without secrets, each role as the table says.
            let viewer = try await fabric.createToken("look", role: "viewer")
            let automation = try await fabric.createToken("ci-bot", role: "automation")
            #expect(viewer.hasPrefix("heddle_") && viewer != automation)
            let listed = try await fabric.list(["tokens", "list"], "tokens") ?? []
            #expect(listed.map { $0["name"] as? String } == ["ci-bot", "look"])
            #expect(!listed.contains { $0["secret"] != nil })
            let duplicate = try await fabric.heddle(["tokens", "create", "--name", "look", "--role", "admin"])
            #expect(duplicate.status != 0 && duplicate.error.contains("a token named look exists"))

            let read = try await anonymous.request("GET", "/api/v1/runs", headers: bearer(viewer))
            #expect(read.status == 200 && (read.object?["runs"] as? [Any])?.isEmpty == true, "\(read.text)")
            let viewerTrigger = try await anonymous.json("POST", "/api/v1/projects/shop/pipelines/ci/runs", ["branch": "main"],
                                                         headers: bearer(viewer))
            #expect(viewerTrigger.status == 403)
            #expect(viewerTrigger.object?["code"] as? String == "permission_denied")
            #expect((viewerTrigger.object?["detail"] as? String)?.contains("needs one of the roles automation, admin") == true,
                    "\(viewerTrigger.text)")

            let triggered = try await anonymous.json("POST", "/api/v1/projects/shop/pipelines/ci/runs", ["branch": "main"],
                                                     headers: bearer(automation))
            #expect(triggered.status == 201, "\(triggered.text)")
            let runID = triggered.object?["run"] as? Int ?? 0
            #expect(triggered.object?["attempt"] as? Int == 1 && triggered.object?["url"] as? String == "/api/v1/runs/\(runID)")
            let bulk = try await anonymous.json("POST", "/api/v1/queue/cancel", ["dryRun": true], headers: bearer(automation))
            #expect(bulk.status == 403 && (bulk.object?["detail"] as? String)?.contains("needs the admin role") == true)

            // The run goes through the real runner; the API shows jobs, nodes, runner and durations.
            let done = try await waitForRun(anonymous, runID, ["succeeded", "failed"], headers: bearer(viewer))
            let run = done["run"] as? [String: Any] ?? [:]
            #expect(run["status"] as? String == "succeeded", "\(done)\n\(fabric.logs)")
            #expect(run["trigger"] as? String == "api" && (run["durationMs"] as? Int ?? -1) >= 0)
            #expect(run["triggeredBy"] as? String == "ci-bot")
            #expect((done["attempts"] as? [[String: Any]])?.first?["triggeredBy"] as? String == "ci-bot")
            let job = (done["jobs"] as? [[String: Any]])?.first ?? [:]
            #expect(job["runner"] as? String == "runner-1" && job["status"] as? String == "succeeded")
            let nodes = job["nodes"] as? [[String: Any]] ?? []
            #expect(nodes.map { $0["name"] as? String } == ["first", "second"])
            #expect(nodes.map { $0["exitCode"] as? Int } == [0, 0])
            #expect(nodes.last?["needs"] as? [String] == ["first"])
            #expect((done["attempts"] as? [[String: Any]])?.map { $0["number"] as? Int } == [1])

            // Metrics, for any credential: what the run did, and the present state.
            let metrics = try await anonymous.request("GET", "/metrics", headers: bearer(viewer))
            #expect(metrics.status == 200 && metrics.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
            let lines = Set(metrics.text.split(separator: "\n").map(String.init))
            #expect(lines.contains(#"heddle_jobs_finished_total{status="succeeded"} 1"#), "\(metrics.text)")
            #expect(lines.contains("heddle_runners_connected 1.0") && lines.contains("heddle_queue_jobs 0.0"))
            #expect(lines.contains { $0.hasPrefix("heddle_log_bytes_total ") && $0 != "heddle_log_bytes_total 0" })
            #expect(lines.contains { $0.hasPrefix("heddle_log_commit_seconds_count ") })
            #expect(lines.contains { $0.hasPrefix("heddle_store_commit_seconds_bucket{le=\"0.001\"}") })
            #expect(lines.contains { $0.hasPrefix("heddle_artifact_bytes_total ") })
            #expect(try await anonymous.request("GET", "/metrics").status == 401)

            // A viewer certificate reads and may not write, like a viewer token.
            let issued = try await fabric.heddle(["certs", "issue", "--dir", fabric.certs, "--role", "viewer", "--name", "watcher"])
            #expect(issued.status == 0, "\(issued.error)")
            let watcher = try fabric.http(as: "watcher")
            #expect(try await watcher.request("GET", "/api/v1/queue").status == 200)
            #expect(try await watcher.request("POST", "/api/v1/runs/\(runID)/rerun").status == 403)

            // A revoked token is refused from then on.
            let revoked = try await fabric.heddle(["tokens", "revoke", "look"])
            #expect(revoked.status == 0 && revoked.output.contains("revoked token look"))
            #expect(try await anonymous.request("GET", "/api/v1/runs", headers: bearer(viewer)).status == 401)

            // Errors: unknown route 404, wrong method 405 with Allow, malformed JSON 400 naming
            // the field, unknown id 404, an oversized body 413; all problem+json.
            let admin = try fabric.http(as: "admin")
            let unknown = try await admin.request("GET", "/api/v1/nope")
            #expect(unknown.status == 404 && unknown.object?["code"] as? String == "not_found")
            let wrongMethod = try await admin.request("DELETE", "/api/v1/projects")
            #expect(wrongMethod.status == 405 && wrongMethod.header("Allow") == "GET, POST")
            let missing = try await admin.json("POST", "/api/v1/projects", ["nam": "x"])
            #expect(missing.status == 400 && missing.object?["field"] as? String == "name", "\(missing.text)")
            let wrongType = try await admin.json("POST", "/api/v1/tokens", ["name": "t", "role": "root"])
            #expect(wrongType.status == 400 && wrongType.object?["field"] as? String == "role", "\(wrongType.text)")
            let broken = try await admin.request("POST", "/api/v1/projects", headers: [("Content-Type", "application/json")],
                                                 body: Array("{\"name\":".utf8))
            #expect(broken.status == 400 && broken.object?["detail"] as? String == "the body is not valid JSON")
            let noRun = try await admin.request("GET", "/api/v1/runs/999")
            #expect(noRun.status == 404 && noRun.object?["detail"] as? String == "run 999 does not exist")
            let notANumber = try await admin.request("GET", "/api/v1/runs/abc")
            #expect(notANumber.status == 400)
            let huge = try await admin.request("POST", "/api/v1/projects", headers: [("Content-Type", "application/json")],
                                               body: [UInt8](repeating: 0x20, count: (1 << 20) + 1))
            #expect(huge.status == 413 && huge.object?["code"] as? String == "resource_exhausted")
            for response in [unknown, wrongMethod, missing, broken, noRun, notANumber, huge] {
                #expect(response.header("Content-Type") == "application/problem+json")
            }

            // Health and the contract need no credentials.
            #expect(try await anonymous.request("GET", "/healthz").text == "ok\n")
            #expect(try await anonymous.request("GET", "/readyz").status == 200)
            let document = try await anonymous.request("GET", "/api/v1/openapi.json")
            #expect(document.status == 200 && document.object?["openapi"] as? String == "3.1.0")

            // Wrong credentials from one address are limited: past 20 a minute, 429 with
            // Retry-After; valid credentials still pass.
            var limited: HTTPTestClient.Response?
            for _ in 0..<25 {
                let response = try await anonymous.request("GET", "/api/v1/runs", headers: bearer("heddle_guess"))
                if response.status == 429 { limited = response; break }
                #expect(response.status == 401)
            }
            #expect(limited?.object?["code"] as? String == "too_many_requests")
            #expect(Int(limited?.header("Retry-After") ?? "") ?? 0 > 0)
            #expect(try await anonymous.request("GET", "/api/v1/runs", headers: bearer(automation)).status == 200)
            #expect(try await anonymous.request("GET", "/api/v1/runs", headers: bearer("heddle_other")).status == 429)
            #expect(fabric.coordinator?.standardError.contains("heddle_guess") == false, "a secret was logged")
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }

    /// Every operation of the committed OpenAPI document is called, and answers with a status
    /// it documents and a body holding every property its schema requires.
    @Test func everyDocumentedRouteAnswersAsDocumented() async throws {
        let (keys, key) = try Fabric.secretsKey()
        defer { keys.remove() }
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0", "--secrets-key-file", key])
        do {
            try await setUp(fabric)
            let admin = try fabric.http(as: "admin")
            let document = try #require(try await admin.request("GET", "/api/v1/openapi.json").object)
            let paths = document["paths"] as? [String: [String: Any]] ?? [:]
            let schemas = (document["components"] as? [String: Any])?["schemas"] as? [String: [String: Any]] ?? [:]
            let runner = try await fabric.http(as: "admin").request("GET", "/api/v1/runners")
            #expect((runner.object?["runners"] as? [[String: Any]])?.first?["name"] as? String == "runner-1")

            // A queued job to move and cancel: a pipeline no runner can take.
            try await fabric.push("gpu.act", """
                name: gpu
                jobs:
                  train:
                    labels: [gpu]
                    nodes:
                      fit:
                        run: "true"
                """)
            var calls: [(method: String, path: String, template: String, body: Any?)] = [
                ("GET", "/api/v1/projects", "/projects", nil),
                ("POST", "/api/v1/projects", "/projects", ["name": "other", "repository": ""]),
                ("GET", "/api/v1/projects/shop", "/projects/{project}", nil),
                ("GET", "/api/v1/projects/shop/pipelines", "/projects/{project}/pipelines", nil),
                ("POST", "/api/v1/projects/shop/pipelines", "/projects/{project}/pipelines", ["source": Self.pipeline]),
                ("GET", "/api/v1/projects/shop/pipelines/ci", "/projects/{project}/pipelines/{pipeline}", nil),
                ("POST", "/api/v1/projects/shop/pipelines/ci/runs", "/projects/{project}/pipelines/{pipeline}/runs", nil),
                ("POST", "/api/v1/projects/shop/pipelines/gpu/runs", "/projects/{project}/pipelines/{pipeline}/runs", ["branch": "dev"]),
                ("POST", "/api/v1/projects/shop/pipelines/gpu/runs", "/projects/{project}/pipelines/{pipeline}/runs", ["branch": "dev"]),
            ]
            var answers: [String: HTTPTestClient.Response] = [:]
            func call(_ method: String, _ path: String, _ template: String, _ body: Any?) async throws {
                let response = try await admin.json(method, path, body)
                answers["\(method) \(template)"] = response
                let operation = try #require(paths[template]?[method.lowercased()] as? [String: Any], "\(method) \(template) is not documented")
                let responses = operation["responses"] as? [String: Any] ?? [:]
                let documented = responses.keys.compactMap(Int.init)
                #expect(documented.contains(response.status), "\(method) \(path): \(response.status) \(response.text)")
                guard let success = responses[String(response.status)] as? [String: Any],
                      let schema = ((success["content"] as? [String: Any])?["application/json"] as? [String: Any])?["schema"] as? [String: Any]
                else { return }
                let resolved = resolve(schema, schemas)
                for field in resolved["required"] as? [String] ?? [] {
                    #expect(response.object?[field] != nil, "\(method) \(path) lacks \(field): \(response.text)")
                }
            }
            for entry in calls { try await call(entry.method, entry.path, entry.template, entry.body) }
            let firstRun = answers["POST /projects/{project}/pipelines/{pipeline}/runs"]?.object?["run"] as? Int ?? 0
            _ = try await waitForRun(admin, firstRun - 2, ["succeeded", "failed"])
            let queue = try await admin.request("GET", "/api/v1/queue").object?["jobs"] as? [[String: Any]] ?? []
            let queued = queue.filter { $0["status"] as? String == "queued" }.compactMap { $0["job"] as? Int }
            #expect(queued.count == 2, "\(queue)")
            #expect(queue.first?["waitingReason"] as? String != nil)
            calls = [
                ("GET", "/api/v1/runs?project=shop&limit=1", "/runs", nil),
                ("GET", "/api/v1/runs/\(firstRun - 2)?attempt=1", "/runs/{run}", nil),
                ("POST", "/api/v1/runs/\(firstRun - 2)/rerun", "/runs/{run}/rerun", nil),
                ("GET", "/api/v1/queue?limit=10", "/queue", nil),
                ("POST", "/api/v1/queue/\(queued.last ?? 0)/move", "/queue/{job}/move", ["to": "top"]),
                ("POST", "/api/v1/runs/\(firstRun - 1)/cancel", "/runs/{run}/cancel", nil),
                ("POST", "/api/v1/jobs/\(queued.last ?? 0)/cancel", "/jobs/{job}/cancel", nil),
                ("POST", "/api/v1/queue/cancel", "/queue/cancel", ["project": "shop", "dryRun": true]),
                ("GET", "/api/v1/runners", "/runners", nil),
                ("POST", "/api/v1/runners/runner-1/drain", "/runners/{runner}/drain", nil),
                ("POST", "/api/v1/runners/runner-1/undrain", "/runners/{runner}/undrain", nil),
                ("POST", "/api/v1/projects/shop/webhook", "/projects/{project}/webhook", nil),
                ("GET", "/api/v1/projects/shop/deliveries?limit=5", "/projects/{project}/deliveries", nil),
                ("GET", "/api/v1/schedules?project=shop", "/schedules", nil),
                ("POST", "/api/v1/session", "/session", ["token": try await fabric.createToken("browser", role: "viewer")]),
                ("GET", "/api/v1/session", "/session", nil),
                ("DELETE", "/api/v1/session", "/session", nil),
                ("POST", "/api/v1/tokens", "/tokens", ["name": "reader", "role": "viewer", "expiresInDays": 30]),
                ("GET", "/api/v1/tokens", "/tokens", nil),
                ("DELETE", "/api/v1/tokens/reader", "/tokens/{name}", nil),
                ("PUT", "/api/v1/projects/shop/secrets/DEPLOY_TOKEN", "/projects/{project}/secrets/{name}", ["value": "deploy-value"]),
                ("PUT", "/api/v1/projects/shop/secrets-for-forks", "/projects/{project}/secrets-for-forks", ["allowed": true]),
                ("GET", "/api/v1/projects/shop/secrets", "/projects/{project}/secrets", nil),
                ("DELETE", "/api/v1/projects/shop/secrets/DEPLOY_TOKEN", "/projects/{project}/secrets/{name}", nil),
            ]
            for entry in calls { try await call(entry.method, entry.path, entry.template, entry.body) }
            // The job's cache, saved by the first run that succeeded.
            try await call("GET", "/api/v1/caches?project=shop", "/caches", nil)
            let cacheID = (answers["GET /caches"]?.object?["caches"] as? [[String: Any]])?.first?["id"] as? Int ?? 0
            #expect(cacheID > 0, "\(answers["GET /caches"]?.text ?? "")")
            try await call("DELETE", "/api/v1/caches/\(cacheID)", "/caches/{cache}", nil)
            #expect(answers["DELETE /caches/{cache}"]?.object?["key"] as? String == "ci")
            try await call("GET", "/api/v1/runs/\(firstRun - 2)/jobs/test/nodes/first/log", "/runs/{run}/jobs/{job}/nodes/{node}/log", nil)
            #expect(answers["GET /runs/{run}/jobs/{job}/nodes/{node}/log"]?.text == "one\n")
            try await call("GET", "/api/v1/runs/\(firstRun - 2)/jobs/test/nodes/first/log/search?q=ON%20&regex=false",
                           "/runs/{run}/jobs/{job}/nodes/{node}/log/search", nil)
            #expect(answers["GET /runs/{run}/jobs/{job}/nodes/{node}/log/search"]?.text == #"{"lines":[],"searched":1,"total":0}"#)
            try await call("GET", "/api/v1/runs/\(firstRun - 2)/jobs/test/nodes/first/log/sections",
                           "/runs/{run}/jobs/{job}/nodes/{node}/log/sections", nil)
            #expect(answers["GET /runs/{run}/jobs/{job}/nodes/{node}/log/sections"]?.text == #"{"lines":1,"sections":[]}"#)
            let found = try await admin.request("GET", "/api/v1/runs/\(firstRun - 2)/jobs/test/nodes/first/log/search?q=%5Eo.e%24&regex=true")
            #expect(found.object?["lines"] as? [Int] == [1] && found.object?["total"] as? Int == 1, "\(found.text)")
            let badRegex = try await admin.request("GET", "/api/v1/runs/\(firstRun - 2)/jobs/test/nodes/first/log/search?q=%28&regex=true")
            #expect(badRegex.status == 400 && badRegex.text.contains("is not a regular expression"), "\(badRegex.text)")
            // Bad line reads and searches: 400 naming what is wrong.
            let log = "/api/v1/runs/\(firstRun - 2)/jobs/test/nodes/first/log"
            for (query, says) in [("?line=0", "line is 1 or more"), ("?line=1&lines=10001", "lines is 0 to 10000"),
                                  ("?at=-1", "at is 0 or more"), ("/search", "say what to search for"),
                                  ("/search?q=x&limit=0", "limit is 1 to 1000"), ("/search?q=x&regex=maybe", "regex is true or false"),
                                  ("/search?q=x&from=0", "from is 1 or more")] {
                let answer = try await admin.request("GET", log + query)
                #expect(answer.status == 400 && answer.text.contains(says), "\(query): \(answer.status) \(answer.text)")
            }
            let byLine = try await admin.request("GET", "/api/v1/runs/\(firstRun - 2)/jobs/test/nodes/first/log?line=1&lines=5")
            #expect(byLine.text == "one\n" && byLine.headers.contains { $0 == ("Heddle-Lines", "1") }
                    && byLine.headers.contains { $0 == ("Heddle-Line-Count", "1") } && byLine.headers.contains { $0 == ("Heddle-Offset", "0") },
                    "\(byLine.headers)")
            try await call("GET", "/api/v1/runs/\(firstRun - 2)/artifacts", "/runs/{run}/artifacts", nil)
            let artifact = (answers["GET /runs/{run}/artifacts"]?.object?["artifacts"] as? [[String: Any]])?.first?["id"] as? Int ?? 0
            try await call("GET", "/api/v1/artifacts?name=out.&sort=name", "/artifacts", nil)
            try await call("GET", "/api/v1/artifacts/\(artifact)", "/artifacts/{artifact}", nil)
            try await call("GET", "/api/v1/artifacts/\(artifact)/content", "/artifacts/{artifact}/content", nil)
            #expect(answers["GET /artifacts/{artifact}/content"]?.text == "two\n")
            try await call("HEAD", "/api/v1/artifacts/\(artifact)/content", "/artifacts/{artifact}/content", nil)
            #expect(answers["HEAD /artifacts/{artifact}/content"]?.body.isEmpty == true
                    && answers["HEAD /artifacts/{artifact}/content"]?.header("Content-Length") == "4")
            #expect((answers["GET /artifacts"]?.object?["artifacts"] as? [[String: Any]])?.first?["id"] as? Int == artifact)
            let events = try await admin.stream("/api/v1/events", headers: [("Accept", "text/event-stream")])
            #expect(events.status == 200 && events.headers.contains { $0 == ("Content-Type", "text/event-stream") })
            await events.close()
            answers["GET /events"] = HTTPTestClient.Response(status: events.status, headers: events.headers, body: [])
            // A finished run's events: its end, then the stream ends.
            let runEvents = try await admin.stream("/api/v1/runs/\(firstRun - 2)/events?attempt=1", headers: [("Accept", "text/event-stream")])
            #expect(runEvents.status == 200)
            let ended = try await self.events(runEvents) { $0.contains { $0.event == "end" } }
            #expect(ended.last?.object?["status"] as? String == "succeeded", "\(ended)")
            await runEvents.close()
            answers["GET /runs/{run}/events"] = HTTPTestClient.Response(status: runEvents.status, headers: runEvents.headers, body: [])

            // Every documented operation was called.
            let documented = Set(paths.flatMap { path, item in
                item.keys.filter { $0 != "parameters" }.map { "\($0.uppercased()) \(path)" }
            })
            #expect(Set(answers.keys) == documented, "not called: \(documented.subtracting(answers.keys).sorted())")

            // What the calls did, read back.
            #expect(answers["GET /runs"]?.object?["next"] as? String != nil, "a first page of one has a next")
            #expect(answers["POST /queue/{job}/move"]?.object?["position"] as? Int == 1)
            #expect(answers["POST /runners/{runner}/drain"]?.object.flatMap { ($0["runners"] as? [[String: Any]])?.first?["drained"] as? Bool } == true)
            #expect(answers["POST /runs/{run}/cancel"]?.object?["count"] as? Int == 1)
            #expect(answers["POST /jobs/{job}/cancel"]?.object?["count"] as? Int == 1)
            #expect((answers["POST /runs/{run}/rerun"]?.object?["attempt"] as? Int) == 2)
            #expect((answers["POST /projects/{project}/webhook"]?.object?["url"] as? String) == "\(fabric.httpURL ?? "")/hooks/shop")
            #expect((answers["POST /projects/{project}/webhook"]?.object?["secret"] as? String)?.count == 64)
            let created = answers["POST /tokens"]?.object
            #expect((created?["secret"] as? String)?.hasPrefix("heddle_") == true)
            #expect((created?["token"] as? [String: Any])?["expiresAt"] != nil)
            #expect((answers["DELETE /tokens/{name}"]?.object?["revoked"] as? Bool) == true)
            #expect(answers["POST /session"]?.object?["role"] as? String == "viewer")
            #expect(answers["GET /session"]?.object?["role"] as? String == "admin")
            #expect(answers["DELETE /session"]?.status == 204)
            let secrets = answers["GET /projects/{project}/secrets"]
            #expect(secrets?.object?["forksAllowed"] as? Bool == true, "\(secrets?.text ?? "")")
            #expect((secrets?.object?["secrets"] as? [[String: Any]])?.map { $0["name"] as? String } == ["DEPLOY_TOKEN"])
            #expect(secrets?.text.contains("deploy-value") == false)
            #expect((answers["DELETE /projects/{project}/secrets/{name}"]?.object?["secrets"] as? [Any])?.isEmpty == true)
            let missing = try await admin.json("DELETE", "/api/v1/projects/shop/secrets/DEPLOY_TOKEN", nil)
            #expect(missing.status == 404 && missing.text.contains("project shop has no secret DEPLOY_TOKEN"), "\(missing.text)")
            let secret = created?["secret"] as? String ?? ""
            #expect(try await fabric.http().request("GET", "/api/v1/runs", headers: bearer(secret)).status == 401)
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }

    func resolve(_ schema: [String: Any], _ schemas: [String: [String: Any]]) -> [String: Any] {
        guard let reference = schema["$ref"] as? String else { return schema }
        return schemas[String(reference.split(separator: "/").last ?? "")] ?? [:]
    }

    /// Reads SSE events from `stream` until `done` says so or the stream ends, with a deadline.
    func events(_ stream: HTTPTestClient.Stream, timeout: Duration = .seconds(60),
                until done: @escaping @Sendable ([SSEEvent]) -> Bool) async throws -> [SSEEvent] {
        try await withThrowingTaskGroup(of: [SSEEvent].self) { group in
            group.addTask {
                var parser = SSEParser()
                var events: [SSEEvent] = []
                for await bytes in stream.body {
                    events += parser.feed(bytes)
                    if done(events) { break }
                }
                return events
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TestFailure("no end of the event stream within \(timeout)")
            }
            defer { group.cancelAll() }
            return try await group.next()!
        }
    }

    static func bytes(of events: [SSEEvent]) -> [UInt8] {
        events.filter { $0.event == "log" }.flatMap {
            Array(Data(base64Encoded: $0.object?["bytes"] as? String ?? "") ?? Data())
        }
    }

    /// A node's log over HTTP: raw with ranges, live as events resumed after a dropped
    /// connection with no gap and no duplicate, and as HTML with its colours.
    @Test func aNodeLogIsReadRawByRangeLiveAsEventsAndAsHTML() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            try await fabric.push("logs.act", #"""
                name: logs
                jobs:
                  show:
                    labels: [linux]
                    nodes:
                      colours:
                        run: |
                          printf '\033[32mgreen\033[0m \033[1;38;5;196mred\033[0m \033[38;2;1;2;3mrgb\033[0m\n'
                          printf 'loading 10%%\rloading 100%%\n'
                          printf 'bad \377 byte\n'
                          printf '<tag> & "q"'
                      stream:
                        run: |
                          for i in 1 2 3 4 5 6 7 8; do echo "line $i"; sleep 0.25; done
                """#)
            let viewer = try await fabric.createToken("look", role: "viewer")
            let client = try fabric.http()
            let auth = bearer(viewer)
            let runID = try await fabric.trigger("shop/logs")
            let path = "/api/v1/runs/\(runID)/jobs/show/nodes/stream/log"

            // Live: some events, the connection dropped, then resumed from the last id.
            let first = try await client.stream(path, headers: auth + [("Accept", "text/event-stream")])
            #expect(first.status == 200)
            #expect(first.headers.first { $0.0.lowercased() == "content-type" }?.1 == "text/event-stream")
            let before = try await events(first) { events in events.contains { $0.event == "log" } }
            await first.close()
            let lastID = try #require(before.last { $0.event == "log" }?.id)
            let resumed = try await client.stream(path, headers: auth + [("Accept", "text/event-stream"), ("Last-Event-ID", lastID)])
            let after = try await events(resumed) { events in events.contains { $0.event == "end" } }
            await resumed.close()
            let expected = (1...8).map { "line \($0)\n" }.joined()
            let joined = Self.bytes(of: before.filter { Int($0.id ?? "") ?? 0 <= Int(lastID)! }) + Self.bytes(of: after)
            #expect(String(decoding: joined, as: UTF8.self) == expected, "before \(before)\nafter \(after)")
            #expect(after.last?.event == "end" && after.last?.object?["status"] as? String == "succeeded", "\(after)")
            let firstOffset = after.first { $0.event == "log" }?.object?["offset"] as? Int
            #expect(firstOffset == Int(lastID), "the resumed stream starts where the first stopped")

            // Raw: the exact bytes, and ranges of them.
            let colours = "/api/v1/runs/\(runID)/jobs/show/nodes/colours/log"
            let raw = try await client.request("GET", colours, headers: auth)
            let written: [UInt8] = Array("\u{1B}[32mgreen\u{1B}[0m \u{1B}[1;38;5;196mred\u{1B}[0m \u{1B}[38;2;1;2;3mrgb\u{1B}[0m\n".utf8)
                + Array("loading 10%\rloading 100%\n".utf8) + Array("bad ".utf8) + [0xFF] + Array(" byte\n".utf8)
                + Array("<tag> & \"q\"".utf8)
            #expect(raw.status == 200 && raw.body == written, "\(raw.text)")
            let range = try await client.request("GET", colours, headers: auth + [("Range", "bytes=5-9")])
            #expect(range.status == 206 && range.body == Array(written[5...9]))
            #expect(range.header("Content-Range") == "bytes 5-9/\(written.count)")
            let suffix = try await client.request("GET", colours, headers: auth + [("Range", "bytes=-11")])
            #expect(suffix.status == 206 && suffix.body == Array(written.suffix(11)))
            let outside = try await client.request("GET", colours, headers: auth + [("Range", "bytes=\(written.count)-")])
            #expect(outside.status == 416 && outside.header("Content-Range") == "bytes */\(written.count)")
            let offset = try await client.request("GET", colours + "?offset=6", headers: auth)
            #expect(offset.body == Array(written.dropFirst(6)))

            // HTML: colours as styles, the carriage return overwrote, text escaped.
            let html = try await client.request("GET", colours, headers: auth + [("Accept", "text/html")])
            #expect(html.status == 200 && html.header("Content-Type") == "text/html; charset=utf-8")
            let page = html.text
            #expect(page.contains(#"<span style="color:#00cd00">green</span>"#), "\(page)")
            #expect(page.contains(#"<span style="color:#ff3030;font-weight:bold">red</span>"#))
            #expect(page.contains(#"<span style="color:#888889">rgb</span>"#))
            #expect(page.contains("loading 100%\n") && !page.contains("loading 10%"))
            #expect(page.contains("bad \u{FFFD} byte") && page.contains("&lt;tag&gt; &amp; &quot;q&quot;</pre>"))

            // Unknown node or run: 404 as JSON, before anything streams.
            let noNode = try await client.request("GET", "/api/v1/runs/\(runID)/jobs/show/nodes/nope/log", headers: auth)
            #expect(noNode.status == 404 && (noNode.object?["detail"] as? String)?.contains("has no node 'nope'") == true)
            #expect(try await client.request("GET", "/api/v1/runs/999/jobs/show/nodes/x/log", headers: auth).status == 404)
            #expect(try await client.request("GET", colours, headers: [("Accept", "text/event-stream")]).status == 401)
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }

    /// `/api/v1/events` streams queue changes as they happen.
    @Test func queueChangesArriveAsEvents() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            try await setUp(fabric)
            let client = try fabric.http(as: "admin")
            let stream = try await client.stream("/api/v1/events", headers: [("Accept", "text/event-stream")])
            #expect(stream.status == 200)
            let runID = try await fabric.trigger("shop/ci")
            let seen = try await events(stream) { events in
                events.contains { $0.object?["kind"] as? String == "finished" }
            }
            await stream.close()
            let kinds = seen.filter { $0.object?["run"] as? Int == runID }.compactMap { $0.object?["kind"] as? String }
            #expect(kinds == ["queued", "claimed", "finished"], "\(seen)")
            // Each is a `QueueChange`: `kind` and the job's `QueueEntry` as `GET /queue` lists it.
            let required = ["kind", "job", "run", "attempt", "project", "pipeline", "name", "branch", "labels", "status", "queuedAt"]
            for event in seen where event.object?["run"] as? Int == runID {
                let keys = Set(event.object?.keys.map { $0 } ?? [])
                #expect(Set(required).isSubset(of: keys), "\(event.object ?? [:])")
                #expect((event.object?["queuedAt"] as? String)?.hasSuffix("Z") == true)
            }
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }

    /// Artifacts found by a search across runs, from the CLI and over HTTP, and downloaded
    /// whole and by range with matching SHA-256, ETag and Repr-Digest.
    @Test func artifactsAreSearchedAcrossRunsAndDownloadedByRange() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            try await fabric.push("build.act", """
                name: build
                jobs:
                  make:
                    labels: [linux]
                    nodes:
                      compile:
                        run: |
                          mkdir -p out && head -c 3000000 /dev/urandom > out/app.bin
                          echo "$HEDDLE_BRANCH" > out/notes.txt
                        artifacts: ["out/*"]
                """)
            let first = try await fabric.trigger("shop/build", branch: "main")
            try await fabric.waitForRun(first, ["succeeded"])
            let second = try await fabric.trigger("shop/build", branch: "release/1.0")
            try await fabric.waitForRun(second, ["succeeded"])
            let client = try fabric.http(as: "admin")

            // Over HTTP: by name substring, glob, branch, size, with pages.
            let bins = try await client.request("GET", "/api/v1/artifacts?name=APP")
            let found = bins.object?["artifacts"] as? [[String: Any]] ?? []
            #expect(found.map { $0["run"] as? Int } == [second, first], "\(bins.text)")
            #expect(found.allSatisfy { $0["name"] as? String == "out/app.bin" && $0["size"] as? Int == 3_000_000 })
            let glob = try await client.request("GET", "/api/v1/artifacts?name=out/*.txt&branch=release/1.0")
            let notes = glob.object?["artifacts"] as? [[String: Any]] ?? []
            #expect(notes.count == 1 && notes.first?["run"] as? Int == second && notes.first?["branch"] as? String == "release/1.0")
            let small = try await client.request("GET", "/api/v1/artifacts?maxSize=100&sort=oldest")
            #expect((small.object?["artifacts"] as? [[String: Any]])?.map { $0["run"] as? Int } == [first, second])
            let page = try await client.request("GET", "/api/v1/artifacts?project=shop&limit=3")
            #expect((page.object?["artifacts"] as? [Any])?.count == 3)
            let next = try #require(page.object?["next"] as? String)
            let rest = try await client.request("GET", "/api/v1/artifacts?project=shop&limit=3&cursor=\(next)")
            #expect((rest.object?["artifacts"] as? [Any])?.count == 1 && rest.object?["next"] == nil)
            // A name alone pages through the name index itself, newest first.
            let named = try await client.request("GET", "/api/v1/artifacts?name=out&limit=3")
            let namedPage = named.object?["artifacts"] as? [[String: Any]] ?? []
            #expect(namedPage.count == 3 && namedPage.first?["run"] as? Int == second)
            let namedNext = try #require(named.object?["next"] as? String)
            let namedRest = try await client.request("GET", "/api/v1/artifacts?name=out&limit=3&cursor=\(namedNext)")
            let last = namedRest.object?["artifacts"] as? [[String: Any]] ?? []
            #expect(last.count == 1 && namedRest.object?["next"] == nil && last.first?["run"] as? Int == first)
            let sha = found[0]["sha256"] as? String ?? ""
            let bySHA = try await client.request("GET", "/api/v1/artifacts?sha256=\(sha.prefix(10).uppercased())")
            #expect((bySHA.object?["artifacts"] as? [[String: Any]])?.map { $0["id"] as? Int } == [found[0]["id"] as? Int])
            let badSHA = try await client.request("GET", "/api/v1/artifacts?sha256=xyz")
            #expect(badSHA.status == 400 && (badSHA.object?["detail"] as? String)?.contains("hex digits") == true)

            // From the CLI, the same search.
            let cli = try await fabric.json(["artifacts", "search", "app", "--branch", "main"]) as? [String: Any]
            let cliFound = cli?["artifacts"] as? [[String: Any]] ?? []
            #expect(cliFound.map { $0["run"] as? Int } == [first] && cliFound.first?["project"] as? String == "shop", "\(String(describing: cli))")
            // The CLI's --json is the REST API's body, field for field.
            for (arguments, path) in [(["runs", "show", String(first)], "/api/v1/runs/\(first)"),
                                      (["runs", "--project", "shop"], "/api/v1/runs?project=shop"),
                                      (["artifacts", "--run", String(second)], "/api/v1/runs/\(second)/artifacts"),
                                      (["project", "list"], "/api/v1/projects"),
                                      (["tokens", "list"], "/api/v1/tokens")] {
                let printed = try await fabric.json(arguments) as? NSDictionary
                let answered = try await client.request("GET", path)
                #expect(answered.status == 200 && printed != nil && printed == answered.object.map(NSDictionary.init),
                        "heddle \(arguments.joined(separator: " ")) --json printed \(String(describing: printed)); GET \(path) answered \(answered.text)")
            }
            let table = try await fabric.heddle(["artifacts", "search", "*.txt", "--max-size", "1K"])
            #expect(table.status == 0 && table.output.contains("out/notes.txt") && table.output.contains("release/1.0"), "\(table.output)")

            // Download: whole, its SHA-256 matching; by range; the ETag answered 304.
            let id = found[0]["id"] as? Int ?? 0
            let whole = try await client.request("GET", "/api/v1/artifacts/\(id)/content")
            #expect(whole.status == 200 && whole.body.count == 3_000_000)
            #expect(sha256Hex(whole.body) == sha)
            #expect(whole.header("ETag") == "\"\(sha)\"" && whole.header("Content-Length") == "3000000")
            #expect(whole.header("Content-Disposition") == "attachment; filename=\"app.bin\"; filename*=UTF-8''app.bin")
            let digestBytes = stride(from: 0, to: sha.count, by: 2).map {
                UInt8(sha.dropFirst($0).prefix(2), radix: 16) ?? 0
            }
            let digest = Data(digestBytes).base64EncodedString()
            #expect(whole.header("Repr-Digest") == "sha-256=:\(digest):")
            let part = try await client.request("GET", "/api/v1/artifacts/\(id)/content", headers: [("Range", "bytes=1000000-1999999")])
            #expect(part.status == 206 && part.body == Array(whole.body[1_000_000...1_999_999]))
            #expect(part.header("Content-Range") == "bytes 1000000-1999999/3000000")
            let tail = try await client.request("GET", "/api/v1/artifacts/\(id)/content", headers: [("Range", "bytes=2999990-")])
            #expect(tail.body == Array(whole.body.suffix(10)))
            let same = try await client.request("GET", "/api/v1/artifacts/\(id)/content", headers: [("If-None-Match", "\"\(sha)\"")])
            #expect(same.status == 304 && same.body.isEmpty)
            let outside = try await client.request("GET", "/api/v1/artifacts/\(id)/content", headers: [("Range", "bytes=3000000-")])
            #expect(outside.status == 416 && outside.header("Content-Range") == "bytes */3000000")
            let missing = try await client.request("GET", "/api/v1/artifacts/99999/content")
            #expect(missing.status == 404 && missing.object?["detail"] as? String == "artifact 99999 does not exist")
            let shown = try await client.request("GET", "/api/v1/artifacts/\(id)")
            #expect(shown.object?["url"] as? String == "/api/v1/artifacts/\(id)/content")
            let ofRun = try await client.request("GET", "/api/v1/runs/\(first)/artifacts")
            #expect((ofRun.object?["artifacts"] as? [[String: Any]])?.compactMap { $0["name"] as? String }.sorted() == ["out/app.bin", "out/notes.txt"])
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }

    /// Every documented operation, called with a viewer's and an automation token (and no
    /// credentials): refused (403, naming the roles that may) exactly where the role table
    /// says, and never refused where it allows.
    @Test func everyRouteIsAllowedOrRefusedAsTheRoleTableSays() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            let client = try fabric.http()
            let document = try #require(try await client.request("GET", "/api/v1/openapi.json").object)
            let paths = document["paths"] as? [String: [String: Any]] ?? [:]
            let viewer = try await fabric.createToken("v", role: "viewer")
            let automation = try await fabric.createToken("a", role: "automation")
            let automationMay: Set<String> = ["POST /projects/{project}/pipelines/{pipeline}/runs", "POST /runs/{run}/rerun",
                                              "POST /runs/{run}/cancel", "POST /jobs/{job}/cancel"]
            let bodies: [String: Any] = [
                "POST /projects": ["name": "p2"], "POST /projects/{project}/pipelines": ["source": Self.pipeline],
                "POST /queue/{job}/move": ["to": "top"], "POST /queue/cancel": ["dryRun": true],
                "POST /tokens": ["name": "t2", "role": "viewer"],
                "PUT /projects/{project}/secrets/{name}": ["value": "value1"],
                "PUT /projects/{project}/secrets-for-forks": ["allowed": true],
            ]
            var checked = 0
            for (template, item) in paths {
                for method in item.keys where method != "parameters" {
                    let key = "\(method.uppercased()) \(template)"
                    let path = "/api/v1" + template.replacingOccurrences(of: "{project}", with: "shop")
                        .replacingOccurrences(of: "{pipeline}", with: "ci").replacingOccurrences(of: "{run}", with: "999")
                        .replacingOccurrences(of: "{job}", with: "999").replacingOccurrences(of: "{node}", with: "n")
                        .replacingOccurrences(of: "{runner}", with: "r").replacingOccurrences(of: "{artifact}", with: "999").replacingOccurrences(of: "{cache}", with: "999")
                        .replacingOccurrences(of: "{name}", with: "nobody")
                    for (role, secret) in [("viewer", viewer), ("automation", automation), ("none", "")] {
                        let headers = secret.isEmpty ? [] : bearer(secret)
                        let status: Int
                        if template.hasSuffix("/events") {
                            let stream = try await client.stream(path, headers: headers + [("Accept", "text/event-stream")])
                            status = stream.status
                            await stream.close()
                        } else {
                            status = try await client.json(method.uppercased(), path, bodies[key], headers: headers).status
                        }
                        let allowed = role == "none" ? false
                            : (method == "get" || method == "head") && template != "/tokens"
                            || role == "automation" && automationMay.contains(key)
                            || key == "DELETE /session"
                        if key == "POST /session" {
                            // Signing in needs no credentials: without a token in the body, 400.
                            #expect(status == 400, "\(key) as \(role): \(status)")
                        } else if role == "none" {
                            #expect(status == 401, "\(key) without credentials: \(status)")
                        } else if allowed {
                            #expect(status != 401 && status != 403, "\(key) as \(role): \(status)")
                        } else {
                            #expect(status == 403, "\(key) as \(role): \(status)")
                        }
                        checked += 1
                    }
                }
            }
            #expect(checked >= 3 * 25)
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }

    /// A browser's sign-in: the token becomes an HttpOnly, Secure, SameSite=Strict cookie that
    /// reads, changes only with the CSRF header, ends at sign-out and with its token.
    @Test func aSessionCookieReadsChangesOnlyWithItsCSRFHeaderAndEndsAtSignOut() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            let client = try fabric.http()
            let token = try await fabric.createToken("person", role: "automation")
            #expect(try await client.json("POST", "/api/v1/session", ["token": "heddle_wrong"]).status == 401)
            #expect(try await client.json("POST", "/api/v1/session", ["nothing": 1]).status == 400)
            let signedIn = try await client.json("POST", "/api/v1/session", ["token": token])
            #expect(signedIn.status == 201, "\(signedIn.text)")
            let cookie = try #require(signedIn.header("Set-Cookie"))
            for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
                #expect(cookie.contains(attribute), "\(cookie)")
            }
            let value = String(cookie.split(separator: ";")[0])
            #expect(value.hasPrefix("heddle_session=heddle_session_"))
            let csrf = try #require(signedIn.object?["csrf"] as? String)
            let withCookie = [("Cookie", value)]
            #expect(try await client.request("GET", "/api/v1/runs", headers: withCookie).status == 200)
            let me = try await client.request("GET", "/api/v1/session", headers: withCookie)
            #expect(me.object?["name"] as? String == "person" && me.object?["csrf"] as? String == csrf)
            // Changing something: refused without the header or with a wrong one.
            let refused = try await client.json("POST", "/api/v1/runs/999/cancel", headers: withCookie)
            #expect(refused.status == 403 && refused.object?["code"] as? String == "permission_denied", "\(refused.text)")
            #expect(try await client.json("POST", "/api/v1/runs/999/cancel", headers: withCookie + [("X-Heddle-CSRF", (csrf.hasPrefix("0") ? "1" : "0") + csrf.dropFirst())]).status == 403)
            #expect(try await client.json("POST", "/api/v1/runs/999/cancel", headers: withCookie + [("X-Heddle-CSRF", csrf)]).status == 404)
            // Revoking the token ends its sessions; a new one ends at sign-out.
            #expect(try await fabric.http(as: "admin").request("DELETE", "/api/v1/tokens/person").status == 200)
            #expect(try await client.request("GET", "/api/v1/runs", headers: withCookie).status == 401)
            let other = try await fabric.createToken("person2", role: "viewer")
            let second = try await client.json("POST", "/api/v1/session", ["token": other])
            let secondCookie = [("Cookie", String(try #require(second.header("Set-Cookie")).split(separator: ";")[0]))]
            let secondCSRF = second.object?["csrf"] as? String ?? ""
            #expect(try await client.request("DELETE", "/api/v1/session", headers: secondCookie).status == 403)
            let out = try await client.request("DELETE", "/api/v1/session", headers: secondCookie + [("X-Heddle-CSRF", secondCSRF)])
            #expect(out.status == 204 && out.header("Set-Cookie")?.contains("Max-Age=0") == true)
            #expect(try await client.request("GET", "/api/v1/runs", headers: secondCookie).status == 401)
            // The dashboard's files: the page, its modules with a CSP, 404 for others.
            let page = try await client.request("GET", "/")
            #expect(page.status == 200 && page.text.contains("/assets/app.js"))
            let script = try await client.request("GET", "/assets/app.js")
            #expect(script.status == 200 && script.header("Content-Type")?.hasPrefix("text/javascript") == true)
            #expect(script.header("Content-Security-Policy")?.contains("default-src 'self'") == true)
            let tag = try #require(script.header("ETag"))
            #expect(try await client.request("GET", "/assets/app.js", headers: [("If-None-Match", tag)]).status == 304)
            #expect(try await client.request("GET", "/assets/nothing.js").status == 404)
            // Wrong tokens at sign-in count as failed sign-ins (the first was above): once 20
            // came within a minute, 429 for wrong ones; a good token still signs in.
            var statuses: [Int] = []
            for _ in 0..<19 {
                statuses.append(try await client.json("POST", "/api/v1/session", ["token": "heddle_guess"]).status)
            }
            #expect(Set(statuses) == [401])
            let blocked = try await client.json("POST", "/api/v1/session", ["token": "heddle_guess_again"])
            #expect(blocked.status == 429 && blocked.header("Retry-After") != nil, "\(blocked.text)")
            #expect(try await client.json("POST", "/api/v1/session", ["token": other]).status == 201)
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }

    /// Plain HTTP is for a proxy on the same machine: refused on any other address.
    @Test func plainHTTPOnlyOnALoopbackAddress() async throws {
        let root = try TemporaryDirectory("heddle-http")
        defer { root.remove() }
        let heddle = Binaries.path("heddle")
        let certs = root.file("certs")
        let made = try ManagedProcess(heddle, ["certs", "init", "--dir", certs], logs: root)
        #expect(try await made.waitForExit() == 0)
        func start(_ http: String) throws -> ManagedProcess {
            try ManagedProcess(Binaries.path("heddle-coordinator"), [
                "--listen", "127.0.0.1:0", "--data", root.file("data"), "--ca", "\(certs)/ca.pem",
                "--cert", "\(certs)/coordinator.pem", "--key", "\(certs)/coordinator.key", "--http", http, "--http-plain",
            ], logs: root)
        }
        let refused = try start("0.0.0.0:0")
        #expect(try await refused.waitForExit() != 0)
        #expect(refused.standardError.contains("--http-plain serves without TLS and is allowed only on a loopback address"),
                "\(refused.standardError)")

        let plain = try start("127.0.0.1:0")
        do {
            let line = try await plain.waitForLine(startingWith: "http listening on ")
            let url = String(line.dropFirst("http listening on ".count))
            #expect(url.hasPrefix("http://127.0.0.1:"))
            let client = try HTTPTestClient(url: url, ca: nil)
            #expect(try await client.request("GET", "/healthz").status == 200)
            #expect(try await client.request("GET", "/api/v1/projects").status == 401)
        } catch {
            Issue.record("\(error)\n\(plain.standardError)")
        }
        await plain.stop()
    }
}
