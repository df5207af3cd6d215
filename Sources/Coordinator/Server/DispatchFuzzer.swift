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
        core = CoordinatorCore(store: try SQLiteStore.inMemory(), blobs: try BlobStore(directory: directory),
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
            for (index, identity) in identities.enumerated() {
                let session = UInt64(index + 1)
                let (stream, continuation) = AsyncStream.makeStream(of: Envelope.self, bufferingPolicy: .bufferingNewest(8))
                let outbox = Outbox(continuation)
                if case .hello(let hello) = envelope.body, identity.role == .runner {
                    await core.runnerConnected(session: session, identity: identity, hello: hello, outbox: outbox)
                } else {
                    await Session(id: session, core: core, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }),
                                  heartbeatInterval: .seconds(5))
                        .handle(envelope, identity: identity, outbox: outbox, logger: Logger(label: "fuzz", factory: { _ in SwiftLogNoOpLogHandler() }))
                }
                continuation.finish()
                for await _ in stream {}
            }
            dispatched += 1
        }
        for index in identities.indices { await core.sessionClosed(session: UInt64(index + 1)) }
        return dispatched
    }
}
