import Foundation
import NIOCore
import NIOEmbedded
import Testing
@testable import Wire

/// A message from a newer revision of the protocol (an Envelope body field this version does
/// not know) is not a broken frame: it is passed on without a body, and a client ignores such
/// a push.
@Suite struct UnknownMessageTests {
    /// Envelope{id, field 999: [0x00]}.
    func unknown(id: UInt8) -> ByteBuffer {
        ByteBuffer(bytes: (id == 0 ? [] : [0x08, id]) + [0xBA, 0x3E, 0x01, 0x00])
    }

    @Test func anUnknownBodyIsPassedOnAndAnEmptyEnvelopeIsABrokenFrame() throws {
        let channel = EmbeddedChannel(handler: EnvelopeDecoder())
        try channel.writeInbound(unknown(id: 5))
        let envelope = try #require(try channel.readInbound(as: Envelope.self))
        #expect(envelope.id == 5)
        #expect(envelope.body == nil)
        #expect(!envelope.unknownFields.data.isEmpty)
        #expect(throws: WireError.self) { try channel.writeInbound(ByteBuffer()) }
    }

    @Test func aClientIgnoresAPushItDoesNotKnow() async throws {
        let handler = ClientHandler()
        let channel = EmbeddedChannel(handlers: [EnvelopeDecoder(), handler])
        try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).get()
        try channel.writeInbound(unknown(id: 0))
        var stop = Heddle_V1_StopJob()
        stop.jobID = 7
        try channel.writeInbound(ByteBuffer(bytes: try Envelope(.stopJob(stop)).serializedBytes() as [UInt8]))
        try await channel.close()
        #expect(!channel.isActive)
        var pushes: [Envelope] = []
        for await push in handler.pushes { pushes.append(push) }  // finished when the channel closed
        #expect(pushes.map(\.body) == [.stopJob(stop)])
    }
}
