import Foundation
import Wire

/// Who calls the core: made by a front from a client certificate or from an API token
/// (`CoordinatorCore.principal(token:)`). The core decides what it may do (`Authorization`).
public struct Principal: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var role: Role
    /// The client certificate the caller presented, if that is how it was identified: a
    /// revocation by name or fingerprint covers it.
    public var certificate: Certificate?

    public struct Certificate: Sendable, Equatable {
        /// SHA-256 of the certificate's DER, lower-case hex.
        public var fingerprint: String
        public var issuedAt: Date

        public init(fingerprint: String, issuedAt: Date) {
            self.fingerprint = fingerprint
            self.issuedAt = issuedAt
        }
    }

    public init(name: String, role: Role, certificate: Certificate? = nil) {
        self.name = name
        self.role = role
        self.certificate = certificate
    }

    public var description: String { "\(name) (\(role.rawValue))" }
}

/// Everything a caller can ask of the coordinator, for the one authorization table.
public enum Action: String, Sendable, CaseIterable, CustomStringConvertible {
    /// A runner's own work: its session, the jobs assigned to it (starts, node updates, logs,
    /// artifacts, results) and its own drain.
    case runJobs = "a runner's own work"
    case listPipelines = "pipeline list"
    case listProjects = "project list"
    case listRuns = "runs"
    case showRun = "runs show"
    case watchRun = "logs and watch"
    case listQueue = "queue"
    case watchQueue = "queue watch"
    case listRunners = "runners"
    case listArtifacts = "artifacts"
    case readArtifact = "artifact download"
    case trigger = "trigger"
    case rerun = "rerun"
    case cancel = "cancel"
    case pushPipeline = "pipeline push"
    case createProject = "project create"
    case moveInQueue = "queue move"
    case bulkCancel = "bulk cancel"
    case revoke = "certs revoke"
    case drainRunner = "runners drain"
    case manageTokens = "tokens"
    case listSecrets = "secrets list"
    case manageSecrets = "secrets set, delete and forks"
    case listCaches = "caches"
    case deleteCache = "caches delete"

    public var description: String { rawValue }
}

/// Which role may do what: the one table every front consults.
///
/// - `runner`: its own session and the jobs assigned to it, nothing else;
/// - `viewer`: reads only (runs, logs, queue, runners, pipelines, projects, artifacts);
/// - `automation`: what a viewer may, plus trigger, re-run and cancel;
/// - `admin`: everything.
public enum Authorization {
    public static func roles(for action: Action) -> Set<Role> {
        switch action {
        case .runJobs:
            [.runner]
        case .listPipelines, .listProjects, .listRuns, .showRun, .watchRun, .listQueue, .watchQueue, .listRunners,
             .listArtifacts, .readArtifact, .listSecrets, .listCaches:
            [.viewer, .automation, .admin]
        case .trigger, .rerun, .cancel:
            [.automation, .admin]
        case .pushPipeline, .createProject, .moveInQueue, .bulkCancel, .revoke, .drainRunner, .manageTokens, .manageSecrets,
             .deleteCache:
            [.admin]
        }
    }

    public static func allows(_ principal: Principal, _ action: Action) -> Bool {
        roles(for: action).contains(principal.role)
    }

    /// Throws `permissionDenied`, naming the roles that may, unless `principal` may.
    public static func check(_ principal: Principal, _ action: Action) throws(CoordinatorError) {
        guard !allows(principal, action) else { return }
        let allowed = Role.allCases.filter { roles(for: action).contains($0) }.map(\.rawValue)
        let needed = allowed.count == 1 ? "the \(allowed[0]) role" : "one of the roles \(allowed.joined(separator: ", "))"
        let credential = principal.certificate == nil ? "this caller" : "this certificate"
        throw CoordinatorError.denied("\(action) needs \(needed); \(credential) (\(principal.name)) has the \(principal.role.rawValue) role")
    }
}
