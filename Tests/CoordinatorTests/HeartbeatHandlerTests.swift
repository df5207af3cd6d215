import NIOCore
import NIOEmbedded
import Testing
import Wire
@testable import Coordinator

/// The coordinator's heartbeat handler on an embedded channel, in the event loop's time: the
/// peer is blamed for silence only while the pipeline waits for it (a read asked for, or a
/// write it has not taken), never for the time the session itself stops reading.
@Suite struct HeartbeatHandlerTests {
    /// At the socket's end of the pipeline: holds writes, as a socket whose peer does not read.
    final class Socket: ChannelOutboundHandler {
        typealias OutboundIn = Envelope
        var holding = false
        private(set) var held: [EventLoopPromise<Void>] = []

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            guard holding, let promise else {
                context.write(data, promise: promise)
                return
            }
            held.append(promise)
            context.write(data, promise: nil)
        }

        func takeAll() {
            holding = false
            for promise in held { promise.succeed() }
            held = []
        }
    }

    let interval = TimeAmount.seconds(1)
    let channel = EmbeddedChannel()
    let socket = Socket()

    init() throws {
        try channel.pipeline.syncOperations.addHandler(socket)
        try channel.pipeline.syncOperations.addHandler(HeartbeatHandler(interval: interval))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    /// A frame from the peer, after which the pipeline asks for the next (as auto-read does).
    func peerSends() throws {
        try channel.writeInbound(Envelope(.heartbeat(Heddle_V1_Heartbeat())))
        channel.read()
    }

    func heartbeatsSent() throws -> Int {
        var count = 0
        while let envelope = try channel.readOutbound(as: Envelope.self) {
            if case .heartbeat = envelope.body { count += 1 }
        }
        return count
    }

    func closed() -> Bool { !channel.isActive }

    @Test func aPeerSilentWhileAReadWaitsIsClosedAfterThreeIntervals() throws {
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(3_500))
        #expect(!closed(), "three intervals are allowed")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(closed())
        #expect(throws: WireError.self) { try channel.throwIfErrorCaught() }
    }

    @Test func aPeersFramesKeepItOpen() throws {
        channel.read()
        for _ in 0..<10 {
            channel.embeddedEventLoop.advanceTime(by: .seconds(2))
            try peerSends()
        }
        #expect(!closed())
        #expect(try heartbeatsSent() == 20)
    }

    /// The session stops reading (its frame loop waits on the store): however long that
    /// lasts, the peer is not blamed; once the session reads again, silence counts anew.
    @Test func theSessionsOwnPauseIsNotThePeers() throws {
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        try channel.writeInbound(Envelope(.heartbeat(Heddle_V1_Heartbeat())))  // no read asked for after it
        channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(!closed(), "the peer was blamed for the session's own pause")
        #expect(try heartbeatsSent() == 32, "heartbeats go on during the pause")
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(3_500))
        #expect(!closed())
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(closed())
    }

    /// Silence is counted across pauses: time waited for the peer before a pause adds to the
    /// time after it, until a frame comes.
    @Test func silenceAddsUpAcrossPauses() throws {
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        channel.pipeline.fireChannelReadComplete()  // bytes came, no whole frame; no read asked for
        channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(!closed())
        channel.read()
        channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(closed(), "2 s before the pause and 2 s after make four")
    }

    /// A peer that does not take what it is sent is blamed even though the session, waiting
    /// for it, stops reading it.
    @Test func aPeerThatTakesNothingIsClosedThoughTheSessionStoppedReading() throws {
        socket.holding = true
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(4_500))
        #expect(!closed(), "the first heartbeat, held since 1 s, waited three intervals")
        channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(closed(), "heartbeats it did not take for more than three intervals")
    }

    @Test func writesTakenInTimeBlameNothing() throws {
        socket.holding = true
        channel.embeddedEventLoop.advanceTime(by: .milliseconds(2_500))
        socket.takeAll()
        channel.embeddedEventLoop.advanceTime(by: .seconds(20))
        #expect(!closed())
    }
}
