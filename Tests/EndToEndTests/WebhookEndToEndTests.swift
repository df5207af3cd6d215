import Crypto
import Foundation
import TestSupport
import Testing
import Wire

/// Forge deliveries to the real coordinator over HTTPS: signed pushes from GitHub, Gitea and
/// GitLab start the matching pipelines at the pushed commit, which the runner checks out.
@Suite(.serialized) struct WebhookEndToEndTests {
    func hmac(_ body: [UInt8], _ secret: String) -> String {
        HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8))).map { String(format: "%02x", $0) }.joined()
    }

    @Test func signedPushesStartMatchingPipelinesAtTheirCommit() async throws {
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--http", "127.0.0.1:0"])
        do {
            // A repository with two commits on main (the run is of the older one) and a release branch.
            let repository = try TestRepository(fabric.root.file("repo"), logs: fabric.root)
            let repo = repository.path
            try await repository.git(["init", "-q", "-b", "main"])
            let pushed = try await repository.commit("VERSION", "first\n", message: "first")
            let release = try await repository.commit("VERSION", "second\n", message: "second")
            try await repository.git(["branch", "release/2.0"])

            // The project with a webhook secret, and pipelines saying which events start them.
            let created = try await fabric.heddle(["project", "create", "app", "--repo", repo, "--webhook-secret"])
            #expect(created.status == 0, "\(created.error)")
            let secret = try #require(created.output.split(separator: "\n").first { $0.hasPrefix("secret:") }
                .map { String($0.dropFirst("secret:".count)).trimmingCharacters(in: .whitespaces) })
            let url = try #require(created.output.split(separator: "\n").first { $0.hasPrefix("webhook URL: ") }
                .map { String($0.dropFirst("webhook URL: ".count)) })
            #expect(url == "\(fabric.httpURL ?? "")/hooks/app")
            let show = "{ run: 'cat VERSION; git rev-parse HEAD' }"
            try await fabric.push("ci.act", """
                name: ci
                on: { push: { branches: [main, "release/*"] }, pull_request: { branches: [main] } }
                jobs:
                  build:
                    labels: [linux]
                    nodes:
                      show: \(show)
                """, project: "app")
            try await fabric.push("nightly.act", """
                name: nightly
                on: { push: { branches: [release/**] } }
                jobs:
                  build:
                    labels: [linux]
                    nodes:
                      show: \(show)
                """, project: "app")
            try await fabric.push("manual.act", """
                name: manual
                jobs:
                  build:
                    labels: [linux]
                    nodes:
                      show: \(show)
                """, project: "app")

            let client = try fabric.http()
            func deliver(_ headers: [(String, String)], _ payload: [String: Any]) async throws -> HTTPTestClient.Response {
                let body = Array(try JSONSerialization.data(withJSONObject: payload))
                return try await client.request("POST", "/hooks/app", headers: headers + [("Content-Type", "application/json")], body: body)
            }
            func github(_ event: String, _ id: String, _ payload: [String: Any], secret: String) async throws -> HTTPTestClient.Response {
                let body = Array(try JSONSerialization.data(withJSONObject: payload))
                return try await client.request("POST", "/hooks/app", headers: [
                    ("X-GitHub-Event", event), ("X-GitHub-Delivery", id), ("Content-Type", "application/json"),
                    ("X-Hub-Signature-256", "sha256=" + hmac(body, secret)),
                ], body: body)
            }

            // GitHub: a push to main starts `ci` (not `nightly`, not `manual`) at the pushed commit.
            let push = try await github("push", "gh-1", ["ref": "refs/heads/main", "after": pushed], secret: secret)
            #expect(push.status == 202, "\(push.text)")
            let runs = push.object?["runs"] as? [Int] ?? []
            #expect(runs.count == 1 && push.object?["outcome"] as? String == "triggered")
            let run = try await fabric.waitForRun(runs.first ?? 0, ["succeeded", "failed"])
            #expect(summary(run)["status"] as? String == "succeeded", "\(run)\n\(fabric.logs)")
            #expect(summary(run)["pipeline"] as? String == "ci" && summary(run)["trigger"] as? String == "webhook")
            let shown = try await fabric.http(as: "admin").request("GET", "/api/v1/runs/\(runs.first ?? 0)")
            #expect((shown.object?["run"] as? [String: Any])?["triggeredBy"] as? String == "github delivery gh-1", "\(shown.text)")
            let log = try await fabric.heddle(["logs", String(runs.first ?? 0), "--job", "build", "--node", "show"])
            #expect(log.output == "first\n\(pushed)\n", "the run checks out the pushed commit, not main's head")

            // The same delivery again: a duplicate, nothing started.
            let again = try await github("push", "gh-1", ["ref": "refs/heads/main", "after": pushed], secret: secret)
            #expect(again.status == 200 && again.object?["outcome"] as? String == "duplicate" && again.object?["runs"] as? [Int] == runs)

            // A bad signature: 401 and nothing more; an unknown project the same.
            let forged = try await github("push", "gh-2", ["ref": "refs/heads/main", "after": pushed], secret: "wrong")
            #expect(forged.status == 401 && forged.object?["detail"] as? String == "the signature does not match")
            let unsigned = try await deliver([("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "gh-3")], ["ref": "refs/heads/main"])
            #expect(unsigned.status == 401)

            // Gitea: a push to release/2.0 starts ci and nightly.
            let giteaPayload: [String: Any] = ["ref": "refs/heads/release/2.0", "after": release]
            let giteaBody = Array(try JSONSerialization.data(withJSONObject: giteaPayload))
            let gitea = try await client.request("POST", "/hooks/app", headers: [
                ("X-Gitea-Event", "push"), ("X-Gitea-Delivery", "gt-1"), ("X-Gitea-Signature", hmac(giteaBody, secret)),
                ("X-GitHub-Event", "push"), ("Content-Type", "application/json"),
            ], body: giteaBody)
            #expect(gitea.status == 202, "\(gitea.text)")
            let giteaRuns = gitea.object?["runs"] as? [Int] ?? []
            #expect(giteaRuns.count == 2)
            for id in giteaRuns {
                let finished = try await fabric.waitForRun(id, ["succeeded", "failed"])
                #expect(summary(finished)["status"] as? String == "succeeded" && summary(finished)["branch"] as? String == "release/2.0")
            }

            // GitLab: its token; a push to a branch nothing listens to starts nothing, and says why.
            let gitlab = try await deliver([("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", secret), ("Idempotency-Key", "gl-1")],
                                           ["object_kind": "push", "ref": "refs/heads/experiment", "after": release])
            #expect(gitlab.status == 200 && gitlab.object?["outcome"] as? String == "ignored")
            #expect(gitlab.object?["detail"] as? String == "no pipeline of app starts on a push to experiment")
            let wrongToken = try await deliver([("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope"), ("Idempotency-Key", "gl-2")],
                                               ["ref": "refs/heads/main", "after": release])
            #expect(wrongToken.status == 401)

            // A deleted branch and a ping start nothing; a pull request into main starts ci.
            let deleted = try await github("push", "gh-4", ["ref": "refs/heads/main", "after": String(repeating: "0", count: 40),
                                                              "deleted": true], secret: secret)
            #expect(deleted.status == 200 && deleted.object?["detail"] as? String == "branch main was deleted")
            let ping = try await github("ping", "gh-5", ["zen": "Keep it logically awesome."], secret: secret)
            #expect(ping.status == 200 && ping.object?["outcome"] as? String == "ignored")
            let pull = try await github("pull_request", "gh-6", ["action": "opened", "pull_request": [
                "head": ["ref": "release/2.0", "sha": release], "base": ["ref": "main"]]], secret: secret)
            #expect(pull.status == 202 && (pull.object?["runs"] as? [Int])?.count == 1, "\(pull.text)")

            // An oversized body: 413 before anything is read past the limit.
            let huge = try await client.request("POST", "/hooks/app", headers: [("X-GitHub-Event", "push"), ("Content-Type", "application/json")],
                                                body: [UInt8](repeating: 0x20, count: (8 << 20) + 1))
            #expect(huge.status == 413)

            // Every delivery is listed with its outcome, from the CLI and the API.
            let listed = try await fabric.list(["project", "deliveries", "app"], "deliveries") ?? []
            #expect(listed.map { $0["delivery"] as? String } == ["gh-6", "gh-5", "gh-4", "gl-1", "gt-1", "gh-1"], "\(listed)")
            #expect(listed.map { $0["outcome"] as? String } == ["triggered", "ignored", "ignored", "ignored", "triggered", "triggered"])
            let api = try await fabric.http(as: "admin").request("GET", "/api/v1/projects/app/deliveries?limit=2")
            #expect((api.object?["deliveries"] as? [[String: Any]])?.map { $0["delivery"] as? String } == ["gh-6", "gh-5"])

            // A new secret: the old one no longer works.
            let rotated = try await fabric.heddle(["project", "webhook", "app", "--rotate"])
            #expect(rotated.status == 0 && rotated.output.contains("secret:"))
            let stale = try await github("push", "gh-7", ["ref": "refs/heads/main", "after": pushed], secret: secret)
            #expect(stale.status == 401)
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }
}
