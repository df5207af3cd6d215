import Foundation
import Logging
import NIOCore
import Wire

/// Feeds arbitrary bytes through what a peer's bytes meet in the coordinator: the frame
/// decoder, Envelope decoding, and the dispatch of every decoded message to a core, as each
/// role. Used by the libFuzzer target (Fuzz/) and by a randomized test in the suite. Any
/// crash, trap or hang here is a bug; errors are the expected answer to garbage.
public final class DispatchFuzzer: Sendable {
    let core: CoordinatorCore
    let directory: String
    let identities = [
        PeerIdentity(name: "fuzz-runner", role: .runner, fingerprint: String(repeating: "a", count: 64)),
        PeerIdentity(name: "fuzz-bot", role: .automation, fingerprint: String(repeating: "b", count: 64)),
        PeerIdentity(name: "fuzz-admin", role: .admin, fingerprint: String(repeating: "c", count: 64)),
    ]

    public init() throws {
        directory = NSTemporaryDirectory() + "heddle-fuzz-\(UUID().uuidString)"
        core = try CoordinatorCore(store: try SQLiteStore.inMemory(), directory: directory,
                                   logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Returns the number of messages that decoded and were dispatched.
    @discardableResult
    public func run(_ bytes: [UInt8]) async -> Int {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = FrameDecoder(maximumFrameLength: 1 << 20)
        var dispatched = 0
        let quiet = Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() })
        // One session per role for the whole input, as one connection each would be; what the
        // core pushes is kept 8 frames deep and dropped.
        var sessions: [(id: UInt64, principal: Principal, outbox: Outbox, end: AsyncStream<Envelope>.Continuation)] = []
        for identity in identities {
            let (_, continuation) = AsyncStream.makeStream(of: Envelope.self, bufferingPolicy: .bufferingNewest(8))
            let outbox = Outbox(continuation)
            let principal = Principal(identity)
            guard let id = try? await core.openSession(principal, sink: outbox, close: {}) else { continue }
            sessions.append((id, principal, outbox, continuation))
        }
        defer { for session in sessions { session.end.finish() } }
        while true {
            let frame: ByteBuffer?
            do {
                frame = try decoder.decode(buffer: &buffer)
            } catch {
                break  // a broken frame: the connection would close here
            }
            guard let frame else { break }
            guard let envelope = try? Envelope(serializedBytes: Array(frame.readableBytesView)), envelope.body != nil else {
                break
            }
            for session in sessions {
                if case .hello(let hello) = envelope.body {
                    await core.hello(session: session.id, RunnerHello(hello))
                } else {
                    await Session(core: core, logger: quiet, heartbeatInterval: .seconds(5))
                        .handle(envelope, session: session.id, principal: session.principal, outbox: session.outbox, logger: quiet)
                }
            }
            dispatched += 1
        }
        for session in sessions { await core.sessionClosed(session: session.id) }
        return dispatched
    }
}
