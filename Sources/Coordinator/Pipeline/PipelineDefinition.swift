/// A parsed, validated `.act` pipeline.
public struct PipelineDefinition: Sendable, Equatable {
    public var name: String
    public var jobs: [JobDefinition]
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
}
