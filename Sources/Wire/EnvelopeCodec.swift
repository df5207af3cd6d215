import Foundation
import NIOCore
import SwiftProtobuf

public typealias Envelope = Heddle_V1_Envelope

/// Turns frame payloads into `Envelope`s. A payload that is not a valid Envelope is a
/// broken frame, and so is an Envelope with nothing in it. An Envelope whose body is a
/// message this version does not know (a field number it has not heard of, kept in
/// `unknownFields`) is passed on with no body: the receiver answers it `UNIMPLEMENTED` (a
/// request) or ignores it (a push), so a newer peer's messages do not break an older one.
public final class EnvelopeDecoder: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = Envelope

    public init() {}

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let payload = unwrapInboundIn(data)
        do {
            // Parsed in place: the decoder copies what it keeps (bytes fields) out of the buffer.
            let envelope = try payload.withUnsafeReadableBytes { raw in
                guard let base = raw.baseAddress, raw.count > 0 else { return try Envelope(serializedBytes: [UInt8]()) }
                return try Envelope(serializedBytes: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: base),
                                                          count: raw.count, deallocator: .none))
            }
            guard envelope.body != nil || !envelope.unknownFields.data.isEmpty else {
                throw WireError.badFrame("frame holds an envelope with no message")
            }
            context.fireChannelRead(wrapInboundOut(envelope))
        } catch let error as WireError {
            context.fireErrorCaught(error)
        } catch {
            context.fireErrorCaught(WireError.badFrame("frame is not a valid heddle.v1.Envelope: \(error)"))
        }
    }
}

/// Writes one `Envelope` as one frame.
public struct EnvelopeEncoder: MessageToByteEncoder {
    public typealias OutboundIn = Envelope

    public init() {}

    public func encode(data: Envelope, out: inout ByteBuffer) throws {
        let bytes: [UInt8] = try data.serializedBytes()
        out.reserveCapacity(out.writerIndex + Frame.headerLength + bytes.count)
        out.writeInteger(UInt8(0))
        out.writeInteger(UInt32(bytes.count))
        out.writeBytes(bytes)
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Adds the frame codec: frames in, envelopes out, both ways.
    public func addFrameCodec(maximumFrameLength: Int) throws {
        try addHandler(ByteToMessageHandler(FrameDecoder(maximumFrameLength: maximumFrameLength)))
        try addHandler(EnvelopeDecoder())
        try addHandler(MessageToByteHandler(EnvelopeEncoder()))
    }
}

extension Envelope {
    public init(id: UInt64 = 0, _ body: Envelope.OneOf_Body) {
        self.init()
        self.id = id
        self.body = body
    }

    public static func error(id: UInt64 = 0, _ error: WireError) -> Envelope {
        Envelope(id: id, .error(error.proto))
    }

    public static func ok(id: UInt64) -> Envelope {
        Envelope(id: id, .ok(Heddle_V1_Ok()))
    }

    /// A pushed StopJob about the job's lease `epoch`: a cancel, or with `abandon` a lease
    /// that is gone.
    public static func stopJob(_ jobID: UInt64, epoch: UInt64, reason: String, abandon: Bool = false) -> Envelope {
        var stop = Heddle_V1_StopJob()
        stop.jobID = jobID
        stop.epoch = epoch
        stop.reason = reason
        stop.abandon = abandon
        return Envelope(.stopJob(stop))
    }
}
