import Crypto
import Foundation
import Wire

/// A webhook request as a front received it: the project in its path, its headers (names in
/// lower case) and its raw body.
public struct WebhookDelivery: Sendable {
    public var project: String
    public var headers: [String: String]
    public var body: Data

    public init(project: String, headers: [String: String], body: Data) {
        self.project = project
        self.headers = headers
        self.body = body
    }
}

/// What a delivery came to, for the forge.
public struct WebhookAnswer: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// Runs were created (`runIDs`).
        case triggered
        /// Understood; nothing to start (`detail` says why).
        case ignored
        /// A delivery id seen before: nothing started again (`runIDs` are the first time's).
        case duplicate
        /// No valid signature (or token) for this project: nothing more is said.
        case unauthenticated
        /// Signed, but not a delivery this coordinator can use.
        case refused
    }

    public var kind: Kind
    public var detail: String
    public var deliveryID: String
    public var runIDs: [Int64]
}

/// The forges Heddle understands, how each signs a delivery and what its events say.
enum Forge: String, Sendable {
    case github, gitea, gitlab

    /// A forge event, reduced to what starts a run.
    enum Event: Equatable {
        case push(branch: String, commit: String)
        /// A push that deleted a branch, or pushed a tag.
        case pushWithoutCommit(String)
        case pullRequest(target: String, branch: String, commit: String)
        /// Understood and starts nothing (ping, a closed pull request, another event).
        case other(String)
    }

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

    /// Whether the request carries this project's secret: an HMAC-SHA256 of the raw body
    /// (GitHub `X-Hub-Signature-256: sha256=HEX`; Gitea and Forgejo bare hex) or, for
    /// GitLab, the secret itself in `X-Gitlab-Token`; compared in constant time.
    func verify(_ headers: [String: String], body: Data, secret: String) -> Bool {
        let key = SymmetricKey(data: Data(secret.utf8))
        switch self {
        case .github:
            guard let header = headers["x-hub-signature-256"], header.hasPrefix("sha256="),
                  let mac = Data(hexString: String(header.dropFirst(7)).lowercased()) else { return false }
            return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: key)
        case .gitea:
            guard let header = headers["x-gitea-signature"] ?? headers["x-forgejo-signature"],
                  let mac = Data(hexString: header.lowercased()) else { return false }
            return HMAC<SHA256>.isValidAuthenticationCode(mac, authenticating: body, using: key)
        case .gitlab:
            guard let token = headers["x-gitlab-token"] else { return false }
            // Both sides through one HMAC, so lengths and contents compare in constant time.
            let expected = HMAC<SHA256>.authenticationCode(for: Data(secret.utf8), using: key)
            return HMAC<SHA256>.isValidAuthenticationCode(Data(expected), authenticating: Data(token.utf8), using: key)
        }
    }

    /// The event a payload describes; nil when a push or pull request payload lacks what it
    /// needs (then the delivery is refused).
    func event(_ name: String, payload: [String: Any]) -> Event? {
        let zero = String(repeating: "0", count: 40)
        switch (self, name) {
        case (.github, "push"), (.gitea, "push"), (.gitlab, "Push Hook"):
            guard let ref = payload["ref"] as? String, let after = payload["after"] as? String else { return nil }
            guard ref.hasPrefix("refs/heads/") else { return .pushWithoutCommit("\(ref) is not a branch") }
            let branch = String(ref.dropFirst("refs/heads/".count))
            if payload["deleted"] as? Bool == true || after == zero || after.isEmpty {
                return .pushWithoutCommit("branch \(branch) was deleted")
            }
            return .push(branch: branch, commit: after.lowercased())
        case (.github, "pull_request"), (.gitea, "pull_request"):
            guard let action = payload["action"] as? String, let pull = payload["pull_request"] as? [String: Any],
                  let head = pull["head"] as? [String: Any], let base = pull["base"] as? [String: Any],
                  let target = base["ref"] as? String, let branch = head["ref"] as? String, let sha = head["sha"] as? String
            else { return nil }
            guard ["opened", "synchronize", "synchronized", "reopened"].contains(action) else {
                return .other("pull request action '\(action)' starts nothing")
            }
            return .pullRequest(target: target, branch: branch, commit: sha.lowercased())
        case (.gitlab, "Merge Request Hook"):
            guard let attributes = payload["object_attributes"] as? [String: Any], let action = attributes["action"] as? String,
                  let target = attributes["target_branch"] as? String, let branch = attributes["source_branch"] as? String,
                  let sha = (attributes["last_commit"] as? [String: Any])?["id"] as? String
            else { return nil }
            guard ["open", "update", "reopen"].contains(action) else {
                return .other("merge request action '\(action)' starts nothing")
            }
            return .pullRequest(target: target, branch: branch, commit: sha.lowercased())
        case (.github, "ping"):
            return .other("ping: the webhook works; nothing to start")
        default:
            return .other("event '\(name)' starts nothing (push and pull requests do)")
        }
    }
}

extension CoordinatorCore {
    /// Where the HTTP front is reached, for webhook URLs.
    public func setHTTPURL(_ url: String?) {
        httpURL = url
    }

    /// The URL a forge sends the project's deliveries to, or nil without an HTTP front.
    public func webhookURL(project: String) -> String? {
        httpURL.map { "\($0)/hooks/\(project)" }
    }

    /// A project's webhook secret, new: shown once by the caller, kept by the coordinator (it
    /// must compute the forge's HMAC with it).
    public func rotateWebhookSecret(project: String, as principal: Principal) async throws -> String {
        try Authorization.check(principal, .createProject)
        var random = SystemRandomNumberGenerator()
        let secret = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &random)) }.joined()
        guard try await store.setWebhookSecret(project: project, secret: secret) else {
            throw CoordinatorError.notFound("project \(project) does not exist")
        }
        logger.notice("webhook secret replaced", metadata: ["project": "\(project)", "by": "\(principal)"])
        return secret
    }

    /// The project's latest deliveries, newest first (viewer).
    public func deliveries(project: String, limit: Int = 100, as principal: Principal) async throws -> [DeliveryRecord] {
        try Authorization.check(principal, .listProjects)
        guard try await store.project(name: project) != nil else { throw CoordinatorError.notFound("project \(project) does not exist") }
        return try await store.deliveries(project: project, limit: max(1, min(limit, 1000)))
    }

    /// A forge's delivery: checked against the project's secret, recorded once per delivery
    /// id, and each of the project's pipelines whose `on:` matches is started at the pushed
    /// commit. Nothing is said to a request without a valid signature.
    public func receiveWebhook(_ delivery: WebhookDelivery) async throws -> WebhookAnswer {
        let refusedSignature = WebhookAnswer(kind: .unauthenticated, detail: "the signature does not match", deliveryID: "", runIDs: [])
        guard let (forge, eventName, deliveryID) = Forge.identify(delivery.headers),
              Names.problem(delivery.project, "project") == nil,
              let secret = try await store.webhookSecret(project: delivery.project),
              forge.verify(delivery.headers, body: delivery.body, secret: secret)
        else {
            logger.notice("webhook refused: bad or missing signature", metadata: ["project": "\(delivery.project.prefix(100))"])
            return refusedSignature
        }
        guard !deliveryID.isEmpty, deliveryID.utf8.count <= 200 else {
            return WebhookAnswer(kind: .refused, detail: "the delivery has no id (\(forge.rawValue) sends one in a header)",
                                 deliveryID: "", runIDs: [])
        }
        var record = DeliveryRecord(project: delivery.project, forge: forge.rawValue, deliveryID: deliveryID,
                                    event: String(eventName.prefix(100)), receivedAt: Date.nowMilliseconds, outcome: .ignored,
                                    detail: "being handled", runIDs: [])
        // Recorded first: a second delivery with this id, even at the same moment, is a duplicate.
        if let seen = try await store.recordDelivery(record) {
            return WebhookAnswer(kind: .duplicate, detail: "delivery \(deliveryID) was received before (\(seen.outcome.rawValue): \(seen.detail)); nothing started",
                                 deliveryID: deliveryID, runIDs: seen.runIDs)
        }
        let answer = try await handle(forge: forge, eventName: eventName, deliveryID: deliveryID, delivery)
        record.outcome = switch answer.kind {
        case .triggered: .triggered
        case .refused: .refused
        default: .ignored
        }
        record.detail = answer.detail
        record.runIDs = answer.runIDs
        try await store.updateDelivery(record)
        logger.info("webhook delivery", metadata: ["project": "\(delivery.project)", "forge": "\(forge.rawValue)",
                                                   "delivery": "\(deliveryID)", "event": "\(eventName)",
                                                   "outcome": "\(answer.kind.rawValue)", "detail": "\(answer.detail)"])
        return answer
    }

    private func handle(forge: Forge, eventName: String, deliveryID: String, _ delivery: WebhookDelivery) async throws -> WebhookAnswer {
        func answer(_ kind: WebhookAnswer.Kind, _ detail: String, _ runs: [Int64] = []) -> WebhookAnswer {
            WebhookAnswer(kind: kind, detail: detail, deliveryID: deliveryID, runIDs: runs)
        }
        guard let payload = (try? JSONSerialization.jsonObject(with: delivery.body)) as? [String: Any] else {
            return answer(.refused, "the body is not a JSON object")
        }
        guard let event = forge.event(eventName, payload: payload) else {
            return answer(.refused, "the \(eventName) payload lacks its branch or commit")
        }
        let branch: String, commit: String, matching: (Triggers) -> Bool
        switch event {
        case .other(let why), .pushWithoutCommit(let why):
            return answer(.ignored, why)
        case .push(let pushed, let sha):
            (branch, commit) = (pushed, sha)
            matching = { $0.push.map { Triggers.matches(pushed, $0) } ?? false }
        case .pullRequest(let target, let head, let sha):
            (branch, commit) = (head, sha)
            matching = { $0.pullRequest.map { Triggers.matches(target, $0) } ?? false }
        }
        if let problem = Names.branchProblem(branch) { return answer(.refused, problem) }
        if let problem = Self.commitProblem(commit) { return answer(.refused, problem) }
        let versions = try await store.pipelines().filter { $0.project == delivery.project }
        var runs: [Int64] = []
        var names: [String] = []
        for version in versions.sorted(by: { $0.pipeline < $1.pipeline }) {
            guard let definition = try? self.definition(of: version), matching(definition.triggers) else { continue }
            let triggered = try await startRun(version, branch: branch, commit: commit, trigger: "webhook",
                                               by: "\(forge.rawValue) delivery \(deliveryID)")
            runs.append(triggered.runID)
            names.append(version.pipeline)
        }
        guard !runs.isEmpty else {
            let what = if case .push = event { "a push to \(branch)" } else { "a pull request from \(branch)" }
            return answer(.ignored, "no pipeline of \(delivery.project) starts on \(what)")
        }
        return answer(.triggered, "started \(names.joined(separator: ", ")) at \(commit.prefix(12)) on \(branch)", runs)
    }
}
