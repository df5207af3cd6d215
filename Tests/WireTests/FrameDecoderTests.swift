import Foundation
import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing
@testable import Wire

@Suite struct FrameDecoderTests {
    func frame(_ payload: [UInt8], flags: UInt8 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt32(payload.count))
        buffer.writeBytes(payload)
        return buffer
    }

    @Test func splitAndMergedFramesDecodeTheSame() throws {
        let payloads: [[UInt8]] = [[1, 2, 3], [], Array(repeating: 7, count: 300)]
        var all = ByteBuffer()
        for payload in payloads { all.writeImmutableBuffer(frame(payload)) }
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: [(all, payloads.map { ByteBuffer(bytes: $0) })],
            decoderFactory: { FrameDecoder(maximumFrameLength: 1024) })
    }

    @Test func aFrameOverTheMaximumIsRefusedFromItsHeader() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maximumFrameLength: 16)))
        var header = ByteBuffer()
        header.writeInteger(UInt8(0))
        header.writeInteger(UInt32(17))
        // Only the header is sent: the decoder must refuse before any payload arrives.
        do {
            try channel.writeInbound(header)
            Issue.record("an oversized frame header was accepted")
        } catch let error as WireError {
            #expect(error.code == .resourceExhausted)
            #expect(error.message.contains("over the maximum"))
        }
    }

    @Test func aNonZeroFlagIsAProtocolError() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        do {
            try channel.writeInbound(frame([1], flags: 1))
            Issue.record("a frame with flags 1 was accepted")
        } catch let error as WireError {
            #expect(error.code == .badFrame)
            #expect(error.message.contains("flags"))
        }
    }

    @Test func aConnectionClosedInsideAFrameIsReported() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var partial = frame([1, 2, 3, 4])
        partial.moveWriterIndex(to: partial.writerIndex - 2)
        try channel.writeInbound(partial)
        #expect(throws: WireError.self) { try channel.finish() }
    }

    @Test func garbageIsNotAnEnvelope() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addFrameCodec(maximumFrameLength: 1024)
        // A field number 0 tag is invalid protobuf.
        do {
            try channel.writeInbound(frame([0x00, 0xff, 0xff, 0xff]))
            Issue.record("garbage was decoded")
        } catch let error as WireError {
            #expect(error.code == .badFrame)
        }
    }

    @Test func envelopesRoundTripThroughTheCodec() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addFrameCodec(maximumFrameLength: 1024 * 1024)
        var append = Heddle_V1_LogAppend()
        append.node = "build"
        append.offset = 42
        append.data = Data([0x1b, 0x5b, 0x33, 0x32, 0x6d, 0x0a, 0x00, 0xff])
        let sent = Envelope(id: 9, .logAppend(append))
        try channel.writeOutbound(sent)
        let bytes = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(bytes.getInteger(at: 0, as: UInt8.self) == 0)
        #expect(bytes.getInteger(at: 1, as: UInt32.self) == UInt32(bytes.readableBytes - 5))
        try channel.writeInbound(bytes)
        let received = try #require(try channel.readInbound(as: Envelope.self))
        #expect(received == sent)
    }
}
