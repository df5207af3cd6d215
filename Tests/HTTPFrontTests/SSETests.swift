import APITypes
@testable import Coordinator
import Foundation
@testable import HTTPAPI
import Testing

/// The `log` event, written by hand on the hot path, is the `LogEvent` schema encoded as any
/// other event is: JSON fields in sorted order, the id the offset after its bytes.
@Suite struct SSETests {
    @Test(arguments: [(Data(), UInt64(0), UInt64(0)), (Data([0xFF, 0x1B, 0x5B, 0x33, 0x31, 0x6D, 0x0A, 0x3E, 0x3F]), 7, 0),
                      (Data((0..<100_000).map { UInt8($0 % 251) }), 1 << 33, 4096)])
    func logEventMatchesTheGeneralEncoding(data: Data, offset: UInt64, dropped: UInt64) throws {
        var chunk = LogChunk(jobID: 1, job: "j", node: "n", offset: offset, data: data)
        chunk.dropped = dropped
        let event = Components.Schemas.LogEvent(offset: Int64(offset), bytes: data.base64EncodedString(),
                                                dropped: dropped > 0 ? Int64(dropped) : nil)
        let general = SSE.event("log", id: String(offset + UInt64(data.count)), event)
        #expect(SSE.log(chunk) == general)
        // And it parses back to the bytes.
        let line = try #require(SSE.log(chunk).split(separator: "\n").first { $0.hasPrefix("data: ") })
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.dropFirst(6).utf8)) as? [String: Any])
        #expect(Data(base64Encoded: object["bytes"] as? String ?? "") == data)
    }
}
