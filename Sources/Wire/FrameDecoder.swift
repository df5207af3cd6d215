import NIOCore

/// The frame layout shared by both directions: 1 flags byte (0), a 4-byte big-endian length,
/// then the payload.
public enum Frame {
    public static let headerLength = 5
    public static let defaultMaximumLength = 4 * 1024 * 1024
}

/// Splits a byte stream into frame payloads. The length is checked against the maximum
/// before a single payload byte is buffered, so a peer cannot make us hold more than
/// `maximumFrameLength` plus one read.
public struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = ByteBuffer

    public let maximumFrameLength: Int

    public init(maximumFrameLength: Int = Frame.defaultMaximumLength) {
        self.maximumFrameLength = maximumFrameLength
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> ByteBuffer? {
        guard buffer.readableBytes >= Frame.headerLength,
              let flags = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
              let length = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt32.self)
        else { return nil }
        guard flags == 0 else {
            throw WireError.badFrame("frame flags must be 0 (no compression exists yet), got \(flags)")
        }
        guard Int(length) <= maximumFrameLength else {
            throw WireError(.resourceExhausted,
                            "frame of \(length) bytes is over the maximum of \(maximumFrameLength) bytes")
        }
        guard buffer.readableBytes >= Frame.headerLength + Int(length) else { return nil }
        buffer.moveReaderIndex(forwardBy: Frame.headerLength)
        return buffer.readSlice(length: Int(length))
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> ByteBuffer? {
        if let frame = try decode(buffer: &buffer) { return frame }
        if seenEOF && buffer.readableBytes > 0 {
            let pending = buffer.readableBytes
            buffer.moveReaderIndex(forwardBy: pending)
            throw WireError.badFrame("connection closed inside a frame (\(pending) bytes of an unfinished frame)")
        }
        return nil
    }
}
