import Foundation
import TestSupport
import Testing

/// What pipelines people write, through the real binaries: inputs set by the CLI and the REST
/// trigger, reaching the nodes, shown by the run, and bad ones refused before anything is
/// queued.
@Suite(.serialized) struct PipelineFeaturesEndToEndTests {
    static let deploy = """
        name: deploy
        inputs:
          target: { default: staging, options: [staging, prod], description: Where to deploy }
          version:
          dry_run: { default: "yes" }
        jobs:
          ship:
            labels: [linux]
            nodes:
              go: { run: 'echo "to=$HEDDLE_INPUT_TARGET version=$HEDDLE_INPUT_VERSION dry=$HEDDLE_INPUT_DRY_RUN"' }
        """

    @Test func inputsReachTheNodesAndBadOnesAreRefusedBeforeAnythingIsQueued() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            try await fabric.push("deploy.act", Self.deploy)

            // The CLI: `--input` sets them, the defaults fill the rest; the node sees them all.
            let triggered = try await fabric.json(["trigger", "shop/deploy", "--input", "target=prod", "--input", "version=1.2.3"])
            let id = try #require((triggered as? [String: Any])?["run"] as? Int)
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            #expect(summary(run)["inputs"] as? [String: String] == ["target": "prod", "version": "1.2.3", "dry_run": "yes"])
            let log = try await fabric.heddle(["logs", String(id), "--job", "ship", "--node", "go"])
            #expect(log.output.contains("to=prod version=1.2.3 dry=yes"), "\(log.output) \(log.error)")
            let shown = try await fabric.heddle(["runs", "show", String(id)])
            #expect(shown.output.contains("inputs dry_run=yes  target=prod  version=1.2.3"), "\(shown.output)")
            let pipelines = try await fabric.heddle(["pipeline", "list"])
            #expect(pipelines.output.contains("target=staging,version (required),dry_run=yes"), "\(pipelines.output)")

            // A re-run keeps the run's inputs.
            let rerun = try await fabric.heddle(["rerun", String(id)])
            #expect(rerun.status == 0, "\(rerun.error)")
            _ = try await fabric.waitForRun(id, ["succeeded", "failed"])
            let second = try await fabric.heddle(["logs", String(id), "--job", "ship", "--node", "go", "--attempt", "2"])
            #expect(second.output.contains("to=prod version=1.2.3 dry=yes"), "\(second.output) \(second.error)")

            // Refused, each with its reason, and nothing queued.
            let before = try await fabric.json(["runs", "--json"])
            let refusals: [([String], String)] = [
                (["--input", "target=moon", "--input", "version=1"], "input 'target' is 'moon'; it must be one of: staging, prod"),
                (["--input", "version=1", "--input", "colour=red"], "pipeline 'deploy' has no input 'colour' (its inputs: target, version, dry_run)"),
                ([], "input 'version' of pipeline 'deploy' is required: set it (--input version=VALUE)"),
                (["--input", "version"], "--input 'version' is not NAME=VALUE"),
                (["--input", "version=1", "--input", "version=2"], "--input version is given twice"),
            ]
            for (arguments, message) in refusals {
                let refused = try await fabric.heddle(["trigger", "shop/deploy"] + arguments)
                #expect(refused.status != 0, "\(arguments)")
                #expect(refused.error.contains(message), "\(arguments): \(refused.error)")
            }
            #expect(try await fabric.json(["runs", "--json"]) as? NSDictionary == before as? NSDictionary, "a refused trigger queues nothing")

            // REST: the trigger's `inputs` object; the run and the pipeline show them.
            let admin = try fabric.http(as: "admin")
            let created = try await admin.json("POST", "/api/v1/projects/shop/pipelines/deploy/runs",
                                               ["branch": "main", "inputs": ["version": "9", "dry_run": "no"]])
            #expect(created.status == 201, "\(created.text)")
            let restID = try #require(created.object?["run"] as? Int)
            let restRun = try await fabric.waitForRun(restID, ["succeeded", "failed"])
            #expect(summary(restRun)["inputs"] as? [String: String] == ["target": "staging", "version": "9", "dry_run": "no"])
            let detail = try await admin.json("GET", "/api/v1/runs/\(restID)")
            #expect((detail.object?["run"] as? [String: Any])?["inputs"] as? [String: String]
                    == ["target": "staging", "version": "9", "dry_run": "no"])
            let bad = try await admin.json("POST", "/api/v1/projects/shop/pipelines/deploy/runs", ["inputs": ["version": "1", "target": "moon"]])
            #expect(bad.status == 400 && bad.text.contains("must be one of: staging, prod"), "\(bad.text)")
            let long = try await admin.json("POST", "/api/v1/projects/shop/pipelines/deploy/runs",
                                            ["inputs": ["version": String(repeating: "x", count: 5000)]])
            #expect(long.status == 400 && long.text.contains("at most 4096 bytes"), "\(long.text)")
            let pipeline = try await admin.json("GET", "/api/v1/projects/shop/pipelines/deploy")
            let inputs = pipeline.object?["inputs"] as? [[String: Any]] ?? []
            #expect(inputs.map { $0["name"] as? String } == ["target", "version", "dry_run"], "\(pipeline.text)")
            #expect(inputs.first?["options"] as? [String] == ["staging", "prod"] && inputs.first?["default"] as? String == "staging")
            #expect(inputs[1]["default"] == nil, "a required input has no default: \(pipeline.text)")
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }
}

extension PipelineFeaturesEndToEndTests {
    /// A 2×2 matrix less one combination plus one: four jobs, named by their values, each with
    /// its variables and its labels (`${matrix.os}` picks the runner).
    @Test func aMatrixRunsOneJobPerCombinationWithItsVariables() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux,debian", "linux,alpine"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            try await fabric.push("matrix.act", """
                name: matrix
                jobs:
                  test:
                    matrix:
                      os: [debian, alpine]
                      py: ["3.11", "3.12"]
                      exclude: [{ os: alpine, py: "3.11" }]
                      include: [{ os: debian, py: "3.13" }]
                    labels: [linux, "${matrix.os}"]
                    nodes:
                      show: { run: 'echo "os=$HEDDLE_MATRIX_OS py=$HEDDLE_MATRIX_PY job=$HEDDLE_JOB"' }
                  lint:
                    labels: [linux]
                    nodes:
                      check: { run: 'echo "no matrix: [$HEDDLE_MATRIX_OS]"' }
                """)
            let id = try await fabric.trigger("shop/matrix")
            let run = try await fabric.waitForRun(id, ["succeeded", "failed"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)")
            let jobs = (run["jobs"] as? [[String: Any]] ?? []).map { ($0["name"] as? String ?? "", $0["labels"] as? [String] ?? []) }
            #expect(jobs.map(\.0) == ["test (debian, 3.11)", "test (debian, 3.12)", "test (alpine, 3.12)", "test (debian, 3.13)", "lint"])
            #expect(jobs.first?.1 == ["linux", "debian"] && jobs[2].1 == ["linux", "alpine"], "\(jobs)")
            for (job, line) in [("test (debian, 3.11)", "os=debian py=3.11 job=test (debian, 3.11)"),
                                ("test (debian, 3.12)", "os=debian py=3.12"), ("test (alpine, 3.12)", "os=alpine py=3.12"),
                                ("test (debian, 3.13)", "os=debian py=3.13")] {
                let log = try await fabric.heddle(["logs", String(id), "--job", job, "--node", "show"])
                #expect(log.output.contains(line), "\(job): \(log.output) \(log.error)")
            }
            let lint = try await fabric.heddle(["logs", String(id), "--job", "lint", "--node", "check"])
            #expect(lint.output.contains("no matrix: []"), "\(lint.output)")
            // Over HTTP, the instance's name in the path, percent-encoded.
            let admin = try fabric.http(as: "admin")
            let log = try await admin.request("GET", "/api/v1/runs/\(id)/jobs/test%20(alpine%2C%203.12)/nodes/show/log")
            #expect(log.status == 200 && log.text.contains("os=alpine py=3.12"), "\(log.status) \(log.text)")
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }
}

extension PipelineFeaturesEndToEndTests {
    /// `heddle rerun RUN --failed`: the job that succeeded is carried over (its log is attempt
    /// 1's: it did not run again), only the failed one runs; a run with nothing failed is
    /// refused.
    @Test func aRerunOfTheFailedJobsRunsOnlyThem() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            try await fabric.push("flaky.act", """
                name: flaky
                jobs:
                  good:
                    labels: [linux]
                    nodes:
                      n: { run: 'echo "good ran in attempt $HEDDLE_ATTEMPT"' }
                  flaky:
                    labels: [linux]
                    nodes:
                      n: { run: 'echo "flaky ran in attempt $HEDDLE_ATTEMPT"; [ "$HEDDLE_ATTEMPT" -ge 3 ]' }
                """)
            let id = try await fabric.trigger("shop/flaky")
            #expect(summary(try await fabric.waitForRun(id, ["succeeded", "failed"]))["status"] as? String == "failed")

            // Attempt 2 fails again (flaky needs a third); attempt 3 carries `good` over from
            // attempt 2's copy, which points at attempt 1, where it ran.
            let second = try await fabric.heddle(["rerun", String(id), "--failed", "--wait"])
            #expect(second.status == 1 && second.output.contains("run \(id) attempt 2 queued (the failed jobs; the others carried over)"),
                    "\(second.output) \(second.error)")
            let rerun = try await fabric.heddle(["rerun", String(id), "--failed", "--wait"])
            #expect(rerun.status == 0, "\(rerun.output) \(rerun.error)")
            let run = try await fabric.run(id)
            #expect(summary(run)["status"] as? String == "succeeded" && summary(run)["attempt"] as? Int == 3, "\(run)")
            let jobs = run["jobs"] as? [[String: Any]] ?? []
            #expect(jobs.map { $0["name"] as? String } == ["good", "flaky"], "in the pipeline's order")
            let good = jobs.first { $0["name"] as? String == "good" } ?? [:]
            #expect(good["status"] as? String == "succeeded" && good["reason"] as? String == "carried over from attempt 1", "\(good)")
            #expect(good["carriedFromAttempt"] as? Int == 1, "\(good)")
            #expect(jobs.first { $0["name"] as? String == "flaky" }?["carriedFromAttempt"] == nil)
            func log(_ job: String, attempt: Int) async throws -> String {
                try await fabric.heddle(["logs", String(id), "--job", job, "--node", "n", "--attempt", String(attempt)]).output
            }
            for attempt in [2, 3] {
                let text = try await log("good", attempt: attempt)
                #expect(text.contains("good ran in attempt 1") && !text.contains("attempt \(attempt)"), "carried over, not run again: \(text)")
            }
            #expect(try await log("flaky", attempt: 3).contains("flaky ran in attempt 3"))
            #expect(try await log("flaky", attempt: 2).contains("flaky ran in attempt 2"))
            #expect(try await log("flaky", attempt: 1).contains("flaky ran in attempt 1"), "attempt 1 stays readable")
            // Over HTTP too: the carried job's node log in attempt 3 is attempt 1's.
            let admin = try fabric.http(as: "admin")
            let http = try await admin.request("GET", "/api/v1/runs/\(id)/jobs/good/nodes/n/log?attempt=3")
            #expect(http.status == 200 && http.text.contains("good ran in attempt 1"), "\(http.status) \(http.text)")

            // Nothing failed now: refused, no attempt added.
            let again = try await fabric.heddle(["rerun", String(id), "--failed"])
            #expect(again.status != 0 && again.error.contains("run \(id) has no failed or cancelled job in attempt 3; re-run it whole without --failed"),
                    "\(again.error)")
            let refused = try await admin.json("POST", "/api/v1/runs/\(id)/rerun?failed=true")
            #expect(refused.status == 409, "\(refused.text)")
            #expect(summary(try await fabric.run(id))["attempt"] as? Int == 3)
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }
}
