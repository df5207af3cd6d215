import Foundation
import Testing
import Wire

@Suite struct ProtoChecksumTests {
    @Test func generatedCodeMatchesTheProtos() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let protoDirectory = root.appendingPathComponent("proto/heddle/v1")
        let files = try FileManager.default.contentsOfDirectory(atPath: protoDirectory.path)
            .filter { $0.hasSuffix(".proto") }.sorted()
        #expect(!files.isEmpty)
        var all = Data()
        for file in files { all.append(try Data(contentsOf: protoDirectory.appendingPathComponent(file))) }
        #expect(sha256Hex(all) == ProtoChecksum.sha256,
                "proto/heddle/v1 changed without regenerating: run scripts/generate-proto")
    }
}
