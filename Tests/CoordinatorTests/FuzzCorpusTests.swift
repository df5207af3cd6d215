import Foundation
import Testing
import Wire
@testable import Coordinator

/// A short, deterministic fuzz run in the suite: valid frames of every kind, then thousands of
/// mutations of them (bit flips, cuts, splices, forged lengths), through the frame decoder and
/// message dispatch. The coverage-guided libFuzzer run is `scripts/fuzz` (Fuzz/).
@Suite struct FuzzCorpusTests {
    /// A small deterministic generator (SplitMix64), so a failure can be replayed.
    struct Generator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func frame(_ envelope: Envelope) -> [UInt8] {
        let payload: [UInt8] = (try? envelope.serializedBytes()) ?? []
        return [0] + withUnsafeBytes(of: UInt32(payload.count).bigEndian, Array.init) + payload
    }

    static var seeds: [[UInt8]] {
        var ref = Heddle_V1_JobRef()
        ref.jobID = 1
        ref.epoch = 1
        var log = Heddle_V1_LogAppend()
        log.job = ref
        log.node = "n"
        log.data = Data("hello\u{1B}[31m".utf8)
        var declare = Heddle_V1_ArtifactDeclare()
        declare.job = ref
        declare.name = "out/a.txt"
        declare.size = 3
        declare.sha256 = Data(repeating: 1, count: 32)
        var push = Heddle_V1_PipelinePush()
        push.project = "p"
        push.source = "name: ci\njobs:\n  j:\n    nodes:\n      n: { run: 'true', needs: [] }\n"
        var trigger = Heddle_V1_TriggerRequest()
        trigger.project = "p"
        trigger.pipeline = "ci"
        var move = Heddle_V1_QueueMoveRequest()
        move.jobID = 1
        move.target = .top(true)
        var watch = Heddle_V1_WatchRequest()
        watch.runID = 1
        watch.logs = true
        var hello = Heddle_V1_Hello()
        hello.protocolVersion = 1
        hello.labels = ["linux"]
        let bodies: [Envelope.OneOf_Body] = [
            .hello(hello), .heartbeat(.init()), .logAppend(log), .artifactDeclare(declare), .pipelinePush(push),
            .trigger(trigger), .queueMove(move), .watch(watch), .queue(.init()), .runners(.init()),
            .cancel(.init()), .bulkCancel(.init()), .rerun(.init()), .runList(.init()), .runGet(.init()),
            .artifactRead(.init()), .jobFinish(.init()), .nodeUpdate(.init()), .revoke(.init()), .drainSelf(.init()),
        ]
        return bodies.enumerated().map { frame(Envelope(id: UInt64($0.offset + 1), $0.element)) }
    }

    static func mutate(_ input: [UInt8], _ random: inout Generator, corpus: [[UInt8]]) -> [UInt8] {
        var bytes = input
        switch random.next() % 5 {
        case 0 where !bytes.isEmpty:
            for _ in 0..<(1 + random.next() % 4) {
                let index = Int(random.next() % UInt64(bytes.count))
                bytes[index] ^= UInt8(1 << (random.next() % 8))
            }
        case 1 where !bytes.isEmpty:
            bytes = Array(bytes.prefix(Int(random.next() % UInt64(bytes.count))))
        case 2:
            bytes += corpus[Int(random.next() % UInt64(corpus.count))]
        case 3 where bytes.count >= 5:
            let length = UInt32(truncatingIfNeeded: random.next())
            bytes.replaceSubrange(1..<5, with: withUnsafeBytes(of: length.bigEndian, Array.init))
        default:
            let index = bytes.isEmpty ? 0 : Int(random.next() % UInt64(bytes.count))
            bytes.insert(UInt8(truncatingIfNeeded: random.next()), at: index)
        }
        return bytes
    }

    @Test func mutatedFramesNeverCrashTheDecoderOrDispatch() async throws {
        let fuzzer = try DispatchFuzzer()
        let corpus = Self.seeds
        var random = Generator(state: 0x4845_4444_4C45)
        var dispatched = 0
        for seed in corpus { dispatched += await fuzzer.run(seed) }
        #expect(dispatched == corpus.count, "every seed is a valid frame and must reach dispatch")
        var current = corpus
        for _ in 0..<20_000 {
            let base = current[Int(random.next() % UInt64(current.count))]
            let input = Self.mutate(base, &random, corpus: corpus)
            dispatched += await fuzzer.run(input)
            if current.count < 200 { current.append(input) }
        }
        #expect(dispatched > corpus.count, "some mutations must still decode and be dispatched")
        // The core is still consistent and answering.
        _ = try await fuzzer.core.catalog.runs(RunQuery(limit: 10), as: admin)
        _ = try await fuzzer.core.queue(as: admin)
    }
}
