import Foundation
import Logging
import Wire

/// A project's secrets as a list shows them: names and dates, and whether forks get them.
public struct SecretList: Sendable, Equatable {
    public var project: String
    public var secrets: [SecretRecord]
    public var forksAllowed: Bool
}

/// Projects' secrets: admins set and delete them, every role lists their names (never their
/// values). Values are sealed (`SecretBox`) before they reach the store and opened only for
/// an assignment (`JobAssignment.open`).
public struct Secrets: Sendable {
    let store: any CoordinatorStore
    let box: SecretBox?
    let logger: Logger

    /// Stores a secret, new or replacing one of that name (value: UTF-8 text without NUL, 4 to
    /// 65,536 bytes: it becomes an environment variable).
    public func set(project: String, name: String, value: String, as principal: Principal) async throws -> SecretList {
        try Authorization.check(principal, .manageSecrets)
        try Catalog.validateProjectName(project)
        if let problem = Names.secretProblem(name) { throw CoordinatorError.invalid(problem) }
        if let problem = Names.secretValueProblem([UInt8](value.utf8)) { throw CoordinatorError.invalid(problem) }
        guard !value.utf8.contains(0) else { throw CoordinatorError.invalid("a secret's value may not contain a NUL byte (it becomes an environment variable)") }
        guard let box else {
            throw CoordinatorError(.failedPrecondition, "this coordinator has no --secrets-key-file, so it cannot store secrets")
        }
        let sealed = try box.seal(value, project: project, name: name)
        guard try await store.setSecret(project: project, name: name, sealed: sealed, now: Date.nowMilliseconds) else {
            throw CoordinatorError.notFound("project \(project) does not exist")
        }
        logger.info("secret set", metadata: ["project": "\(project)", "secret": "\(name)", "by": "\(principal)"])
        return try await list(project)
    }

    public func list(project: String, as principal: Principal) async throws -> SecretList {
        try Authorization.check(principal, .listSecrets)
        try Catalog.validateProjectName(project)
        return try await list(project)
    }

    public func delete(project: String, name: String, as principal: Principal) async throws -> SecretList {
        try Authorization.check(principal, .manageSecrets)
        try Catalog.validateProjectName(project)
        if let problem = Names.secretProblem(name) { throw CoordinatorError.invalid(problem) }
        guard try await store.deleteSecret(project: project, name: name) else {
            guard try await store.project(name: project) != nil else { throw CoordinatorError.notFound("project \(project) does not exist") }
            throw CoordinatorError.notFound("project \(project) has no secret \(name)")
        }
        logger.info("secret deleted", metadata: ["project": "\(project)", "secret": "\(name)", "by": "\(principal)"])
        return try await list(project)
    }

    /// Whether runs of pull requests from another repository get the project's secrets.
    public func setForks(project: String, allowed: Bool, as principal: Principal) async throws -> SecretList {
        try Authorization.check(principal, .manageSecrets)
        try Catalog.validateProjectName(project)
        guard try await store.setForkSecrets(project: project, allowed: allowed) else {
            throw CoordinatorError.notFound("project \(project) does not exist")
        }
        logger.info("secrets for forks", metadata: ["project": "\(project)", "allowed": "\(allowed)", "by": "\(principal)"])
        return try await list(project)
    }

    private func list(_ project: String) async throws -> SecretList {
        guard let record = try await store.project(name: project) else {
            throw CoordinatorError.notFound("project \(project) does not exist")
        }
        return SecretList(project: project, secrets: try await store.secrets(project: project), forksAllowed: record.forkSecrets)
    }

    /// At start: the stored secrets open with this key (one is tried); throws, saying so, when
    /// they were sealed with another.
    public func checkKey() async throws {
        guard let sealed = try await store.anySealedSecret() else { return }
        guard let box else {
            logger.warning("the store holds secrets and this coordinator has no --secrets-key-file: jobs whose nodes name secrets fail")
            return
        }
        do {
            _ = try box.open(sealed.sealed, project: sealed.project, name: sealed.name)
        } catch {
            throw SecretKeyError("--secrets-key-file is not the key the stored secrets were sealed with (secret \(sealed.name) of project \(sealed.project) does not open)")
        }
    }
}

extension JobAssignment {
    /// Why a claimed job's nodes cannot be given the secrets they name: the job fails for it.
    struct SecretProblem: Error {
        var reason: String
    }

    /// The values of the secrets each node names, opened, by node.
    static func openSecrets(_ claimed: ClaimedJob, box: SecretBox?) throws(SecretProblem) -> [String: [String: String]] {
        var opened: [String: [String: String]] = [:]
        let project = claimed.run.project
        for node in claimed.nodes where !node.secrets.isEmpty {
            let names = node.secrets.joined(separator: ", ")
            if claimed.run.fork && !claimed.forkSecrets {
                throw SecretProblem(reason: "node '\(node.name)' is given secrets (\(names)), and this run is of a pull request from another repository, which project \(project) does not give its secrets to (`heddle secrets forks \(project) allow`)")
            }
            guard let box else {
                throw SecretProblem(reason: "node '\(node.name)' is given secrets (\(names)), and the coordinator has no --secrets-key-file")
            }
            for name in node.secrets {
                guard let sealed = claimed.sealedSecrets[name] else {
                    throw SecretProblem(reason: "node '\(node.name)' is given secret \(name), which project \(project) does not have (`heddle secrets set \(project) \(name)`)")
                }
                do {
                    opened[node.name, default: [:]][name] = try box.open(sealed, project: project, name: name)
                } catch {
                    throw SecretProblem(reason: "secret \(name) of project \(project) does not open with the coordinator's --secrets-key-file")
                }
            }
        }
        return opened
    }
}
