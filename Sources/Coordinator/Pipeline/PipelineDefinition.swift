import Wire

/// A parsed, validated `.act` pipeline.
public struct PipelineDefinition: Sendable, Equatable {
    public var name: String
    public var jobs: [JobDefinition]
    /// Which forge events start it (`on:`); none: manual and API only.
    public var triggers = Triggers()

    public init(name: String, jobs: [JobDefinition], triggers: Triggers = Triggers()) {
        self.name = name
        self.jobs = jobs
        self.triggers = triggers
    }
}

/// The branches (globs) whose pushes and pull requests start a pipeline; nil: that event
/// does not.
public struct Triggers: Sendable, Equatable {
    public var push: [String]?
    /// Matched against the pull request's target branch.
    public var pullRequest: [String]?

    public init(push: [String]? = nil, pullRequest: [String]? = nil) {
        self.push = push
        self.pullRequest = pullRequest
    }

    /// Whether `branch` matches one of `patterns`: `*` matches within one path segment,
    /// `**` across segments, `?` one character (not `/`); anything else itself.
    public static func matches(_ branch: String, _ patterns: [String]) -> Bool {
        patterns.contains { glob(Array($0.unicodeScalars)[...], Array(branch.unicodeScalars)[...]) }
    }

    static func glob(_ pattern: ArraySlice<Unicode.Scalar>, _ text: ArraySlice<Unicode.Scalar>) -> Bool {
        guard let first = pattern.first else { return text.isEmpty }
        if first == "*" {
            let doubled = pattern.dropFirst().first == "*"
            let rest = doubled ? pattern.dropFirst(2) : pattern.dropFirst()
            var index = text.startIndex
            while true {
                if glob(rest, text[index...]) { return true }
                guard index < text.endIndex, doubled || text[index] != "/" else { return false }
                index += 1
            }
        }
        guard let character = text.first else { return false }
        if first == "?" ? character != "/" : first == character {
            return glob(pattern.dropFirst(), text.dropFirst())
        }
        return false
    }
}

public struct JobDefinition: Sendable, Equatable {
    public var name: String
    public var labels: [String]
    /// Times the job goes back to the queue when its runner is lost (`retry: {lost: N}`).
    public var retryLost: Int = 0
    /// In file order, which is also a valid topological order's tie-breaker.
    public var nodes: [NodeDefinition]
}

public struct NodeDefinition: Sendable, Equatable {
    public var name: String
    public var run: String
    public var needs: [String]
    public var env: [String: String]
    /// Seconds; nil means no timeout.
    public var timeout: Int?
    /// Seconds between SIGTERM and SIGKILL when the node is stopped; nil: the runner's default.
    public var grace: Int?
    public var artifacts: [String]
    /// False: the node runs with no network but loopback (`network: none`).
    public var network: Bool = true
    /// Its resource limits (`limits:`, the job's unless the node sets one); unset: the runner's.
    public var limits = ResourceLimits()
    /// The project's secrets it is given as environment variables (`secrets:`, the job's and
    /// its own), sorted.
    public var secrets: [String] = []
    /// The container image it runs in (`image:`, the job's unless the node sets one); empty:
    /// none (the runner's sandbox).
    public var image: String = ""
}

/// An upper bound of the bytes a job's nodes take in its assignment frame: each string with
/// its tag and longest length prefix, each map entry and node with its own framing. What a
/// YAML alias expands to counts once per use, as it is sent.
enum AssignmentSize {
    static func strings(_ values: [String]) -> Int {
        values.reduce(0) { $0 + $1.utf8.count + 6 }
    }

    static func node(name: String, run: String, needs: [String], env: [String: String], artifacts: [String],
                     image: String) -> Int {
        32 + strings([name, run, image]) + strings(needs) + strings(artifacts)
            + env.reduce(0) { $0 + 12 + $1.key.utf8.count + $1.value.utf8.count }
    }

    /// Room kept in a frame for what an assignment holds beside its nodes (ids, names,
    /// branch, repository, environment).
    static let reserve = 64 * 1024
}

extension JobDefinition {
    /// An upper bound of its nodes' bytes in an assignment.
    var assignmentBytes: Int {
        nodes.reduce(0) { $0 + AssignmentSize.node(name: $1.name, run: $1.run, needs: $1.needs, env: $1.env, artifacts: $1.artifacts,
                                                       image: $1.image) }
    }
}
