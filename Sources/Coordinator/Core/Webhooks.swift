import Foundation
import Synchronization
import Wire

/// A forge's delivery as a front read it from a request whose signature it verified with the
/// project's secret (`webhookSecret(project:)`): which forge, its delivery id and event name,
/// and what the event asks for.
public struct ForgeDelivery: Sendable, Equatable {
    public var project: String
    public var forge: String
    public var deliveryID: String
    public var eventName: String
    public var event: ForgeEvent

    public init(project: String, forge: String, deliveryID: String, eventName: String, event: ForgeEvent) {
        self.project = project
        self.forge = forge
        self.deliveryID = deliveryID
        self.eventName = eventName
        self.event = event
    }
}

/// What a forge event asks for.
public enum ForgeEvent: Sendable, Equatable {
    /// A push to a branch, at a commit.
    case push(branch: String, commit: String)
    /// A pull (merge) request from `branch` at `commit`, into `target`, opened or updated;
    /// `fork`: from another repository than the target's.
    case pullRequest(target: String, branch: String, commit: String, fork: Bool)
    /// Understood, and starts nothing (a ping, a tag, a deleted branch, a closed pull
    /// request, another event): why.
    case ignored(String)
    /// Not usable (a body that is no JSON object, a payload without its branch or commit): why.
    case refused(String)
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
        /// Signed, but not a delivery this coordinator can use.
        case refused
    }

    public var kind: Kind
    public var detail: String
    public var deliveryID: String
    public var runIDs: [Int64]
}

/// Forge deliveries: each recorded once per delivery id, and each of the project's pipelines
/// whose `on:` matches started at the pushed commit. The HTTP front verifies a delivery's
/// signature and parses it (`Forge`); this keeps the rules: what starts what, duplicates, the
/// record a project's deliveries list shows.
public struct Webhooks: Sendable {
    let core: CoordinatorCore
    let catalog: Catalog
    let base: HTTPBase

    /// Where the HTTP front is reached (`https://HOST:PORT`), for webhook URLs; nil without one.
    public func setHTTPURL(_ url: String?) {
        base.url.withLock { $0 = url }
    }

    /// The URL a forge sends the project's deliveries to, or nil without an HTTP front.
    public func url(project: String) -> String? {
        base.url.withLock { $0 }.map { "\($0)/hooks/\(project)" }
    }

    /// A forge's delivery, its signature verified by the front: recorded once per delivery
    /// id, and each of the project's pipelines whose `on:` matches is started at the pushed
    /// commit.
    public func receive(_ delivery: ForgeDelivery) async throws -> WebhookAnswer {
        let store = catalog.store
        let deliveryID = delivery.deliveryID
        guard !deliveryID.isEmpty, deliveryID.utf8.count <= 200 else {
            return WebhookAnswer(kind: .refused, detail: "the delivery has no id (\(delivery.forge) sends one in a header)",
                                 deliveryID: "", runIDs: [])
        }
        var record = DeliveryRecord(project: delivery.project, forge: delivery.forge, deliveryID: deliveryID,
                                    event: String(delivery.eventName.prefix(100)), receivedAt: Date.nowMilliseconds,
                                    outcome: .ignored, detail: "being handled", runIDs: [])
        // Recorded first: a second delivery with this id, even at the same moment, is a duplicate.
        if let seen = try await store.recordDelivery(record) {
            return WebhookAnswer(kind: .duplicate, detail: "delivery \(deliveryID) was received before (\(seen.outcome.rawValue): \(seen.detail)); nothing started",
                                 deliveryID: deliveryID, runIDs: seen.runIDs)
        }
        let answer = try await handle(delivery)
        record.outcome = switch answer.kind {
        case .triggered: .triggered
        case .refused: .refused
        default: .ignored
        }
        record.detail = answer.detail
        record.runIDs = answer.runIDs
        try await store.updateDelivery(record)
        catalog.logger.info("webhook delivery", metadata: ["project": "\(delivery.project)", "forge": "\(delivery.forge)",
                                                           "delivery": "\(deliveryID)", "event": "\(delivery.eventName)",
                                                           "outcome": "\(answer.kind.rawValue)", "detail": "\(answer.detail)"])
        return answer
    }

    private func handle(_ delivery: ForgeDelivery) async throws -> WebhookAnswer {
        func answer(_ kind: WebhookAnswer.Kind, _ detail: String, _ runs: [Int64] = []) -> WebhookAnswer {
            WebhookAnswer(kind: kind, detail: detail, deliveryID: delivery.deliveryID, runIDs: runs)
        }
        let branch: String, commit: String, matching: (Triggers) -> Bool
        var fork = false
        switch delivery.event {
        case .refused(let why):
            return answer(.refused, why)
        case .ignored(let why):
            return answer(.ignored, why)
        case .push(let pushed, let sha):
            (branch, commit) = (pushed, sha)
            matching = { $0.push.map { Triggers.matches(pushed, $0) } ?? false }
        case .pullRequest(let target, let head, let sha, let fromFork):
            (branch, commit, fork) = (head, sha, fromFork)
            matching = { $0.pullRequest.map { Triggers.matches(target, $0) } ?? false }
        }
        if let problem = Names.branchProblem(branch) { return answer(.refused, problem) }
        if let problem = CoordinatorCore.commitProblem(commit) { return answer(.refused, problem) }
        let versions = try await catalog.store.pipelines().filter { $0.project == delivery.project }
        var runs: [Int64] = []
        var names: [String] = []
        for version in versions.sorted(by: { $0.pipeline < $1.pipeline }) {
            guard let definition = try? catalog.definition(of: version), matching(definition.triggers) else { continue }
            let triggered = try await core.startRun(version, branch: branch, commit: commit, trigger: "webhook",
                                                    by: "\(delivery.forge) delivery \(delivery.deliveryID)", fork: fork)
            runs.append(triggered.runID)
            names.append(version.pipeline)
        }
        guard !runs.isEmpty else {
            let what = if case .push = delivery.event { "a push to \(branch)" } else { "a pull request from \(branch)" }
            return answer(.ignored, "no pipeline of \(delivery.project) starts on \(what)")
        }
        return answer(.triggered, "started \(names.joined(separator: ", ")) at \(commit.prefix(12)) on \(branch)", runs)
    }
}

/// Where the HTTP front is reached, once it listens.
final class HTTPBase: Sendable {
    let url = Mutex<String?>(nil)
}
