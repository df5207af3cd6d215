import Synchronization

/// Every open session: who it is, where its events go, and how the core ends it. Behind a
/// lock, so a front's call is authorized, and a watch finds its sink, without waiting for the
/// core actor.
final class SessionRegistry: Sendable {
    struct Open: Sendable {
        var principal: Principal
        var sink: any EventSink
        var close: @Sendable () -> Void
    }

    private let state = Mutex<(last: UInt64, open: [UInt64: Open])>((0, [:]))

    /// Registers a session; returns its id.
    func open(_ session: Open) -> UInt64 {
        state.withLock { state in
            state.last += 1
            state.open[state.last] = session
            return state.last
        }
    }

    /// The session ended (its front says so, or the core closed it).
    func remove(_ id: UInt64) {
        _ = state.withLock { $0.open.removeValue(forKey: id) }
    }

    subscript(_ id: UInt64) -> Open? { state.withLock { $0.open[id] } }

    var count: Int { state.withLock { $0.open.count } }

    /// The caller of an open session, if it may do `action`.
    func authorize(_ id: UInt64, _ action: Action) throws -> Principal {
        guard let open = self[id] else { throw CoordinatorError(.unauthenticated, "session \(id) is not open") }
        try Authorization.check(open.principal, action)
        return open.principal
    }

    /// Closes the sessions whose caller `isRevoked` says is revoked; returns how many.
    func closeRevoked(_ isRevoked: (Principal) -> Bool) -> Int {
        let closing = state.withLock { state -> [Open] in
            let ids = state.open.filter { isRevoked($0.value.principal) }.map(\.key)
            return ids.compactMap { state.open.removeValue(forKey: $0) }
        }
        for open in closing { open.close() }
        return closing.count
    }
}
