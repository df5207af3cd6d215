import Crypto
import Foundation
import Testing
import Coordinator
@testable import HTTPAPI

/// How forges sign deliveries and what their events say, as the HTTP front reads them.
@Suite struct ForgeTests {
    func json(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
    }

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
        #expect(Forge.github.event("push", body: json(["ref": "refs/heads/release/1.0", "after": sha])) == .push(branch: "release/1.0", commit: sha))
        #expect(Forge.github.event("push", body: json(["ref": "refs/heads/gone", "after": String(repeating: "0", count: 40), "deleted": true]))
                == .ignored("branch gone was deleted"))
        #expect(Forge.gitlab.event("Push Hook", body: json(["ref": "refs/tags/v1", "after": sha])) == .ignored("refs/tags/v1 is not a branch"))
        // A pull request is a fork's unless head and base name the same repository.
        #expect(Forge.github.event("pull_request", body: json(["action": "opened", "pull_request": [
            "head": ["ref": "feature", "sha": sha, "repo": ["full_name": "acme/app"]],
            "base": ["ref": "main", "repo": ["full_name": "acme/app"]]]])) == .pullRequest(target: "main", branch: "feature", commit: sha, fork: false))
        #expect(Forge.gitea.event("pull_request", body: json(["action": "opened", "pull_request": [
            "head": ["ref": "feature", "sha": sha, "repo": ["full_name": "mallory/app"]],
            "base": ["ref": "main", "repo": ["full_name": "acme/app"]]]])) == .pullRequest(target: "main", branch: "feature", commit: sha, fork: true))
        #expect(Forge.github.event("pull_request", body: json(["action": "opened", "pull_request": [
            "head": ["ref": "feature", "sha": sha], "base": ["ref": "main"]]])) == .pullRequest(target: "main", branch: "feature", commit: sha, fork: true))
        #expect(Forge.gitlab.event("Merge Request Hook", body: json(["object_attributes": [
            "action": "update", "target_branch": "main", "source_branch": "fix", "last_commit": ["id": sha],
            "source_project_id": 7, "target_project_id": 7]]))
                == .pullRequest(target: "main", branch: "fix", commit: sha, fork: false))
        #expect(Forge.gitlab.event("Merge Request Hook", body: json(["object_attributes": [
            "action": "update", "target_branch": "main", "source_branch": "fix", "last_commit": ["id": sha],
            "source_project_id": 8, "target_project_id": 7]]))
                == .pullRequest(target: "main", branch: "fix", commit: sha, fork: true))
        #expect(Forge.github.event("pull_request", body: json(["action": "closed", "pull_request": [
            "head": ["ref": "f", "sha": sha], "base": ["ref": "main"]]])) == .ignored("pull request action 'closed' starts nothing"))
        #expect(Forge.github.event("ping", body: json([:])) == .ignored("ping: the webhook works; nothing to start"))
        #expect(Forge.github.event("push", body: json(["ref": "refs/heads/main"])) == .refused("the push payload lacks its branch or commit"))
    }

    @Test func aBodyThatIsNoJSONObjectIsRefused() {
        #expect(Forge.github.event("push", body: Data("[1]".utf8)) == .refused("the body is not a JSON object"))
        #expect(Forge.gitea.event("push", body: Data("not json".utf8)) == .refused("the body is not a JSON object"))
    }
}
