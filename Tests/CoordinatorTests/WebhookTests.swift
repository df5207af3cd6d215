import Crypto
import Foundation
import Testing
import Wire
@testable import Coordinator

/// How forges sign deliveries, what their events say, and which branches `on:` matches.
@Suite struct WebhookTests {
    /// GitHub's documented test vector (docs.github.com, "Validating webhook deliveries").
    @Test func githubsTestVectorVerifies() {
        let headers = ["x-hub-signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"]
        let body = Data("Hello, World!".utf8)
        #expect(Forge.github.verify(headers, body: body, secret: "It's a Secret to Everybody"))
        #expect(!Forge.github.verify(headers, body: body, secret: "It's a Secret to Everybody!"))
        #expect(!Forge.github.verify(headers, body: Data("Hello, World?".utf8), secret: "It's a Secret to Everybody"))
        #expect(!Forge.github.verify(["x-hub-signature-256": "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"],
                                     body: body, secret: "It's a Secret to Everybody"))
        #expect(!Forge.github.verify([:], body: body, secret: "It's a Secret to Everybody"))
    }

    @Test func giteaSignsInBareHexAndGitlabSendsItsToken() {
        let body = Data(#"{"ref":"refs/heads/main"}"#.utf8)
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data("s3cret".utf8)))
        let hexMAC = mac.map { String(format: "%02x", $0) }.joined()
        #expect(Forge.gitea.verify(["x-gitea-signature": hexMAC], body: body, secret: "s3cret"))
        #expect(Forge.gitea.verify(["x-forgejo-signature": hexMAC.uppercased()], body: body, secret: "s3cret"))
        #expect(!Forge.gitea.verify(["x-gitea-signature": hexMAC], body: body, secret: "other"))
        #expect(Forge.gitlab.verify(["x-gitlab-token": "s3cret"], body: body, secret: "s3cret"))
        #expect(!Forge.gitlab.verify(["x-gitlab-token": "s3cre"], body: body, secret: "s3cret"))
        #expect(!Forge.gitlab.verify([:], body: body, secret: "s3cret"))
        // Gitea also sends GitHub's headers: it is told apart by its own.
        #expect(Forge.identify(["x-github-event": "push", "x-gitea-event": "push", "x-gitea-delivery": "d"])?.forge == .gitea)
        #expect(Forge.identify(["x-gitlab-event": "Push Hook", "idempotency-key": "k"])?.delivery == "k")
        #expect(Forge.identify(["content-type": "application/json"]) == nil)
    }

    @Test func eventsSayBranchAndCommitOrWhyNothingStarts() {
        let sha = String(repeating: "ab", count: 20)
        #expect(Forge.github.event("push", payload: ["ref": "refs/heads/release/1.0", "after": sha]) == .push(branch: "release/1.0", commit: sha))
        #expect(Forge.github.event("push", payload: ["ref": "refs/heads/gone", "after": String(repeating: "0", count: 40), "deleted": true])
                == .pushWithoutCommit("branch gone was deleted"))
        #expect(Forge.gitlab.event("Push Hook", payload: ["ref": "refs/tags/v1", "after": sha]) == .pushWithoutCommit("refs/tags/v1 is not a branch"))
        #expect(Forge.github.event("pull_request", payload: ["action": "opened", "pull_request": [
            "head": ["ref": "feature", "sha": sha], "base": ["ref": "main"]]]) == .pullRequest(target: "main", branch: "feature", commit: sha))
        #expect(Forge.gitlab.event("Merge Request Hook", payload: ["object_attributes": [
            "action": "update", "target_branch": "main", "source_branch": "fix", "last_commit": ["id": sha]]])
                == .pullRequest(target: "main", branch: "fix", commit: sha))
        #expect(Forge.github.event("pull_request", payload: ["action": "closed", "pull_request": [
            "head": ["ref": "f", "sha": sha], "base": ["ref": "main"]]]) == .other("pull request action 'closed' starts nothing"))
        #expect(Forge.github.event("ping", payload: [:]) == .other("ping: the webhook works; nothing to start"))
        #expect(Forge.github.event("push", payload: ["ref": "refs/heads/main"]) == nil)
    }

    @Test func branchGlobsMatchAsTheirSegmentsSay() {
        #expect(Triggers.matches("main", ["main"]))
        #expect(!Triggers.matches("main2", ["main"]))
        #expect(Triggers.matches("release/1.0", ["release/*"]))
        #expect(!Triggers.matches("release/1.0/hotfix", ["release/*"]))
        #expect(Triggers.matches("release/1.0/hotfix", ["release/**"]))
        #expect(Triggers.matches("anything/at/all", ["**"]))
        #expect(Triggers.matches("v1", ["v?"]) && !Triggers.matches("v/", ["v?"]))
        #expect(Triggers.matches("feature-x", ["main", "feature-*"]))
    }

    @Test func onSaysWhichEventsStartAPipeline() throws {
        let parsed = try ActParser(file: "ci.act").parse("""
            name: ci
            on:
              push: { branches: [main, "release/*"] }
              pull_request:
            jobs:
              test:
                nodes:
                  unit: { run: "true" }
            """)
        #expect(parsed.triggers == Triggers(push: ["main", "release/*"], pullRequest: ["**"]))
        let manual = try ActParser(file: "ci.act").parse("name: ci\njobs:\n  t:\n    nodes:\n      n: { run: 'true' }\n")
        #expect(manual.triggers == Triggers())
        #expect(throws: ActError.self) {
            try ActParser(file: "ci.act").parse("name: ci\non: { tag: {} }\njobs:\n  t:\n    nodes:\n      n: { run: 'true' }\n")
        }
        #expect(throws: ActError.self) {
            try ActParser(file: "ci.act").parse("name: ci\non: { push: { branches: [] } }\njobs:\n  t:\n    nodes:\n      n: { run: 'true' }\n")
        }
    }
}
