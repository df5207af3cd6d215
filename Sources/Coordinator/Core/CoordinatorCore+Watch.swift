import Foundation

/// Watching a run attempt (`Watches`, outside the actor) and what the core publishes to
/// watchers (`LiveEvents`).
extension CoordinatorCore {
    /// Most watches one session may have open at once.
    public static let maximumWatchesPerSession = 16

    /// Subscribes the session to a run attempt (the latest when not given): `subscribed`,
    /// stored log bytes, then live ones and job changes, then `end`. It returns when the end
    /// was sent or the session closed (`endWatches`), so a front runs it beside the session's
    /// other requests. It runs outside the actor.
    public func watch(session: UInt64, requestID: UInt64, _ request: WatchRequest) async throws {
        _ = try authorize(session: session, .watchRun)
        guard let sink = sink(of: session) else { return }
        try await watches.run(session: session, requestID: requestID, request, sink: sink)
    }

    /// The session's watches end (it is closing): their `watch` calls return.
    public func endWatches(session: UInt64) {
        live.endWatches(session: session)
    }
}
