import Wire

/// Limits the coordinator announces and enforces.
public struct CoordinatorLimits: Sendable {
    public var maximumFrameLength = Frame.defaultMaximumLength
    public var heartbeatInterval: Duration = .seconds(5)
    public var maximumArtifactChunk = 1024 * 1024
    public var maximumArtifactSize: Int64 = 8 * 1024 * 1024 * 1024
    /// Bytes every project's caches take together at most; past it the least recently used go.
    public var maximumCacheBytes: Int64 = 10 * 1024 * 1024 * 1024
    /// Stored bytes per node log; past it the head and the most recent tail are kept.
    public var maximumLogBytes: Int64 = 64 * 1024 * 1024
    /// Frames a session may have waiting to be written before it is closed as too slow.
    public var maximumPendingFrames = 4096
    /// Connections open at once on the binary port; past it a new one is closed at once.
    public var maximumConnections = 16_384

    /// How long a job's lease outlives its runner's silence: three heartbeat intervals.
    public var lease: Duration { heartbeatInterval * 3 }

    public init() {}
}
