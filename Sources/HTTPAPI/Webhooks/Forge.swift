import Coordinator
import Crypto
import Foundation

/// The forges Heddle understands: how each names its events and deliveries, how it signs a
/// delivery, and what its events say. The HTTP front turns a signed request into a
/// `ForgeDelivery` for the core, which records it and starts what it asks for.
enum Forge: String, Sendable {
    case github, gitea, gitlab

    /// Which forge sent the request (Gitea and Forgejo also send GitHub's headers, so they are
    /// looked for first), its event name and delivery id.
    static func identify(_ headers: [String: String]) -> (forge: Forge, event: String, delivery: String)? {
        if let event = headers["x-gitea-event"] ?? headers["x-forgejo-event"] {
            return (.gitea, event, headers["x-gitea-delivery"] ?? headers["x-forgejo-delivery"] ?? "")
        }
        if let event = headers["x-github-event"] {
            return (.github, event, headers["x-github-delivery"] ?? "")
        }
        if let event = headers["x-gitlab-event"] {
            return (.gitlab, event, headers["idempotency-key"] ?? headers["x-gitlab-event-uuid"] ?? "")
        }
        return nil
    }

    /// How a delivery proves it comes from the forge, read from its headers alone (before
    /// any body byte): the HMAC-SHA256 of the raw body it claims (GitHub
    /// `X-Hub-Signature-256: sha256=HEX`; Gitea and Forgejo bare hex), or for GitLab whether
    /// `X-Gitlab-Token` is the secret itself (compared in constant time). Nil when the
    /// header is missing or malformed.
    enum Proof {
        case mac(Data)
        case token(matches: Bool)
    }

    func proof(_ headers: [String: String], secret: String) -> Proof? {
        let key = SymmetricKey(data: Data(secret.utf8))
        switch self {
        case .github:
            guard let header = headers["x-hub-signature-256"], header.hasPrefix("sha256="),
                  let mac = Data(hexString: String(header.dropFirst(7)).lowercased()), mac.count == 32 else { return nil }
            return .mac(mac)
        case .gitea:
            guard let header = headers["x-gitea-signature"] ?? headers["x-forgejo-signature"],
                  let mac = Data(hexString: header.lowercased()), mac.count == 32 else { return nil }
            return .mac(mac)
        case .gitlab:
            guard let token = headers["x-gitlab-token"] else { return nil }
            // Both sides through one HMAC, so lengths and contents compare in constant time.
            let expected = HMAC<SHA256>.authenticationCode(for: Data(secret.utf8), using: key)
            return .token(matches: HMAC<SHA256>.isValidAuthenticationCode(Data(expected), authenticating: Data(token.utf8), using: key))
        }
    }

    /// Whether the request carries this project's secret, given its whole body.
    func verify(_ headers: [String: String], body: Data, secret: String) -> Bool {
        switch proof(headers, secret: secret) {
        case .mac(let mac)?:
            return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: SymmetricKey(data: Data(secret.utf8)))
        case .token(let matches)?:
            return matches
        case nil:
            return false
        }
    }

    /// What a delivery's body says, for the core: a push or a pull request with its branch
    /// and commit, or why it starts nothing (`ignored`) or cannot be used (`refused`).
    func event(_ name: String, body: Data) -> ForgeEvent {
        let decoder = JSONDecoder()
        guard (try? decoder.decode(JSONObject.self, from: body)) != nil else { return .refused("the body is not a JSON object") }
        let lacking = ForgeEvent.refused("the \(name) payload lacks its branch or commit")
        let zero = String(repeating: "0", count: 40)
        switch (self, name) {
        case (.github, "push"), (.gitea, "push"), (.gitlab, "Push Hook"):
            guard let push = try? decoder.decode(Push.self, from: body), let ref = push.ref, let after = push.after else { return lacking }
            guard ref.hasPrefix("refs/heads/") else { return .ignored("\(ref) is not a branch") }
            let branch = String(ref.dropFirst("refs/heads/".count))
            if push.deleted == true || after == zero || after.isEmpty {
                return .ignored("branch \(branch) was deleted")
            }
            return .push(branch: branch, commit: after.lowercased())
        case (.github, "pull_request"), (.gitea, "pull_request"):
            guard let pull = try? decoder.decode(PullRequest.self, from: body), let action = pull.action,
                  let target = pull.pull_request?.base?.ref, let branch = pull.pull_request?.head?.ref,
                  let sha = pull.pull_request?.head?.sha else { return lacking }
            guard ["opened", "synchronize", "synchronized", "reopened"].contains(action) else {
                return .ignored("pull request action '\(action)' starts nothing")
            }
            // From another repository (a fork) unless head and base name the same one; a head
            // whose repository is gone (a deleted fork) counts as another.
            let head = pull.pull_request?.head?.repo?.full_name
            let fork = head == nil || head != pull.pull_request?.base?.repo?.full_name
            return .pullRequest(target: target, branch: branch, commit: sha.lowercased(), fork: fork)
        case (.gitlab, "Merge Request Hook"):
            guard let merge = try? decoder.decode(MergeRequest.self, from: body), let attributes = merge.object_attributes,
                  let action = attributes.action, let target = attributes.target_branch,
                  let branch = attributes.source_branch, let sha = attributes.last_commit?.id else { return lacking }
            guard ["open", "update", "reopen"].contains(action) else {
                return .ignored("merge request action '\(action)' starts nothing")
            }
            let fork = attributes.source_project_id == nil || attributes.source_project_id != attributes.target_project_id
            return .pullRequest(target: target, branch: branch, commit: sha.lowercased(), fork: fork)
        case (.github, "ping"):
            return .ignored("ping: the webhook works; nothing to start")
        default:
            return .ignored("event '\(name)' starts nothing (push and pull requests do)")
        }
    }

    // The parts of the forges' payloads Heddle reads (GitHub's field names; Gitea's and
    // GitLab's pushes use the same).

    /// Any JSON object (and nothing else: an array, a string or a number fails).
    private struct JSONObject: Decodable {
        private struct NoKey: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
        init(from decoder: any Decoder) throws {
            _ = try decoder.container(keyedBy: NoKey.self)
        }
    }

    private struct Push: Decodable {
        var ref: String?
        var after: String?
        var deleted: Bool?
    }

    private struct PullRequest: Decodable {
        struct Pull: Decodable {
            struct Ref: Decodable {
                struct Repository: Decodable { var full_name: String? }
                var ref: String?
                var sha: String?
                var repo: Repository?
            }
            var head: Ref?
            var base: Ref?
        }
        var action: String?
        var pull_request: Pull?
    }

    private struct MergeRequest: Decodable {
        struct Attributes: Decodable {
            struct Commit: Decodable { var id: String? }
            var action: String?
            var target_branch: String?
            var source_branch: String?
            var last_commit: Commit?
            var source_project_id: Int64?
            var target_project_id: Int64?
        }
        var object_attributes: Attributes?
    }
}
