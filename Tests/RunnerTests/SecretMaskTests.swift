import Foundation
import Testing
@testable import Runner

/// A job's secret values become *** in its logs however the output is cut into reads.
@Suite struct SecretMaskTests {
    func masked(_ values: [String], _ reads: [String]) -> String {
        guard var mask = SecretMask(values) else { return reads.joined() }
        var out = Data()
        for read in reads { out.append(mask.feed(Data(read.utf8))) }
        out.append(mask.finish())
        return String(decoding: out, as: UTF8.self)
    }

    @Test func valuesAreMaskedWholeAndAcrossReads() {
        #expect(masked(["hunter22"], ["pw=hunter22\n"]) == "pw=***\n")
        #expect(masked(["hunter22"], ["pw=hun", "ter22\n"]) == "pw=***\n")
        #expect(masked(["hunter22"], ["pw=h", "u", "n", "t", "e", "r", "2", "2", "!"]) == "pw=***!")
        #expect(masked(["hunter22"], ["hunter22hunter22"]) == "******")
        // A start that turns out not to be the value goes out as it was.
        #expect(masked(["hunter22"], ["hunt", "ing\n"]) == "hunting\n")
        #expect(masked(["hunter22"], ["ends with hunte"]) == "ends with hunte")
        // Overlapping and nested values: the longest wins where both start.
        #expect(masked(["abcd", "abcdef"], ["xabcdefy abcdz"]) == "x***y ***z")
        #expect(masked(["aaab"], ["aa", "aaab"]) == "aa***")
        #expect(masked([], ["nothing"]) == "nothing")
        #expect(SecretMask([String]()) == nil && SecretMask([""]) == nil)
    }

    /// What a read ends with is held back only while it may be a value's start.
    @Test func onlyAPossibleStartIsHeldBack() {
        var mask = SecretMask(["secret-value"])!
        #expect(mask.feed(Data("line one\nsec".utf8)) == Data("line one\n".utf8))
        #expect(mask.feed(Data("ond\n".utf8)) == Data("second\n".utf8))
        #expect(mask.feed(Data("tail".utf8)) == Data("tail".utf8))
        #expect(mask.finish().isEmpty)
    }

    @Test func aLargeOutputWithoutSecretsGoesThroughUnchanged() {
        var mask = SecretMask(["zq-secret"])!
        let block = Data((0..<1_000_000).map { UInt8(truncatingIfNeeded: $0 % 251) })
        var out = Data()
        for start in stride(from: 0, to: block.count, by: 65_536) {
            out.append(mask.feed(block[start..<min(block.count, start + 65_536)]))
        }
        out.append(mask.finish())
        #expect(out == block)
    }
}
