import Foundation
import NIOCore
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// Broken input over a real mTLS connection: an Error frame, the connection closed, and the
/// coordinator still serving everyone else.
@Suite struct BrokenInputTests {
    func frame(_ payload: [UInt8], flags: UInt8 = 0, length: UInt32? = nil) -> [UInt8] {
        let count = length ?? UInt32(payload.count)
        return [flags] + withUnsafeBytes(of: count.bigEndian, Array.init) + payload
    }

    func hello() throws -> [UInt8] {
        var hello = Heddle_V1_Hello()
        hello.protocolVersion = 1
        return try Envelope(id: 1, .hello(hello)).serializedBytes()
    }

    @Test(arguments: [
        ("garbage protobuf", [0x00, 0xff, 0xff, 0xff] as [UInt8], UInt8(0), UInt32?.none, Heddle_V1_ErrorCode.badFrame),
        ("non-zero flags", [0x08, 0x01], UInt8(1), nil, .badFrame),
        ("frame over the maximum", [], UInt8(0), UInt32(64 * 1024 * 1024), .resourceExhausted),
    ])
    func aBrokenFrameAfterHelloGetsAnErrorAndTheConnectionCloses(
        name: String, payload: [UInt8], flags: UInt8, length: UInt32?, code: Heddle_V1_ErrorCode
    ) async throws {
        try await TestCoordinator.with { coordinator in
            let bytes = frame(try hello()) + frame(payload, flags: flags, length: length)
            let received = try await RawClient.exchange(bytes, with: coordinator.endpoint, tls: coordinator.pki.tls("admin"))
            let frames = try received.frames().filter { if case .heartbeat = $0.body { false } else { true } }
            #expect(frames.count == 2, "\(name): \(frames)")
            guard case .welcome = frames.first?.body else {
                Issue.record("\(name): no Welcome first")
                return
            }
            guard case .error(let error) = frames.last?.body else {
                Issue.record("\(name): no Error frame")
                return
            }
            #expect(error.code == code, "\(name): \(error.message)")
            let admin = try await coordinator.client("admin")
            #expect(try await admin.runners().isEmpty)
            await admin.connection.close()
        }
    }

    /// A secret's value that is not UTF-8 (it becomes an environment variable) is refused as
    /// an invalid argument before anything is stored, and the session goes on.
    @Test func aSecretThatIsNotUTF8IsRefused() async throws {
        try await TestCoordinator.with { coordinator in
            let admin = try await coordinator.client("admin")
            do {
                _ = try await admin.setSecret(project: "shop", name: "TOKEN", value: Data([0xff, 0xfe, 0x41, 0x42]))
                Issue.record("a value that is not UTF-8 was taken")
            } catch let error as WireError {
                #expect(error.code == .invalidArgument && error.message.contains("UTF-8"), "\(error.message)")
            }
            #expect(try await admin.runners().isEmpty)
            await admin.connection.close()
        }
    }

    /// A message this coordinator does not know (an Envelope field from a newer revision) is
    /// answered UNIMPLEMENTED with the request's id, and the session goes on.
    @Test func anUnknownMessageIsAnsweredUnimplementedAndTheSessionGoesOn() async throws {
        try await TestCoordinator.with { coordinator in
            // Envelope{id: 5, field 999 (length-delimited): [0x00]}
            let unknown: [UInt8] = [0x08, 0x05, 0xBA, 0x3E, 0x01, 0x00]
            let runners = try Envelope(id: 6, .runners(Heddle_V1_RunnersRequest())).serializedBytes() as [UInt8]
            // Garbage at the end makes the coordinator close, so the exchange ends.
            let bytes = frame(try hello()) + frame(unknown) + frame(runners) + frame([0x00, 0xff, 0xff, 0xff])
            let received = try await RawClient.exchange(bytes, with: coordinator.endpoint, tls: coordinator.pki.tls("admin"))
            let frames = try received.frames().filter { if case .heartbeat = $0.body { false } else { true } }
            #expect(frames.map(\.id) == [1, 5, 6, 0])
            guard frames.count == 4 else { return }
            guard case .error(let error) = frames[1].body else {
                Issue.record("no Error for the unknown message: \(frames[1])")
                return
            }
            #expect(error.code == .unimplemented)
            guard case .runnerList = frames[2].body else {
                Issue.record("the session did not go on: \(frames[2])")
                return
            }
            guard case .error(let closing) = frames[3].body else { return }
            #expect(closing.code == .badFrame)
        }
    }

    /// A request with id 0 is refused, not carried out (its answer could not be told from a
    /// push), and the session goes on.
    @Test func aRequestWithIdZeroIsRefusedAndTheSessionGoesOn() async throws {
        // The session ends when the heartbeat finds it silent: late enough for a loaded machine
        // to have answered both requests.
        var limits = CoordinatorLimits()
        limits.heartbeatInterval = .seconds(2)
        try await TestCoordinator.with(limits: limits) { coordinator in
            let queue: [UInt8] = try Envelope(id: 0, .queue(.init())).serializedBytes()
            let runners: [UInt8] = try Envelope(id: 7, .runners(.init())).serializedBytes()
            let received = try await RawClient.exchange(frame(try hello()) + frame(queue) + frame(runners), with: coordinator.endpoint,
                                                        tls: coordinator.pki.tls("admin"))
            let frames = try received.frames().filter { if case .heartbeat = $0.body { false } else { true } }
            let refusal = frames.firstIndex {
                if case .error(let error) = $0.body { $0.id == 0 && error.code == .badRequest && error.message.hasPrefix("a request needs a non-zero id") } else { false }
            }
            let answer = frames.firstIndex { if case .runnerList = $0.body { $0.id == 7 } else { false } }
            #expect(refusal != nil && answer != nil && refusal! < answer!, "\(frames)")
            #expect(!frames.contains { if case .queueList = $0.body { true } else { false } })
        }
    }

    /// A runner whose labels break the naming rule is answered with an error, not Welcome,
    /// and the connection closes: it never becomes a runner the scheduler could use.
    @Test func aRunnerHelloWithABadLabelGetsNoWelcome() async throws {
        try await TestCoordinator.with { coordinator in
            var hello = Heddle_V1_Hello()
            hello.protocolVersion = 1
            hello.labels = ["linux", "has space"]
            let received = try await RawClient.exchange(frame(try Envelope(id: 1, .hello(hello)).serializedBytes()),
                                                        with: coordinator.endpoint, tls: coordinator.pki.tls("runner"))
            let frames = try received.frames()
            // Only heartbeats may come before the Error, and nothing after it.
            #expect(frames.dropLast().allSatisfy { if case .heartbeat = $0.body { true } else { false } }, "\(frames)")
            guard case .error(let error) = frames.last?.body else {
                Issue.record("no Error frame last: \(frames)")
                return
            }
            #expect(frames.last?.id == 1 && error.code == .invalidArgument)
            #expect(error.message == "this runner's label 'has space' may use only letters, digits, '.', '_' and '-'")
            let admin = try await coordinator.client("admin")
            #expect(try await admin.runners().isEmpty)
            await admin.connection.close()
        }
    }

    @Test func aFirstFrameOtherThanHelloIsRefused() async throws {
        try await TestCoordinator.with { coordinator in
            let queue: [UInt8] = try Envelope(id: 1, .queue(.init())).serializedBytes()
            let received = try await RawClient.exchange(frame(queue), with: coordinator.endpoint, tls: coordinator.pki.tls("admin"))
            let frames = try received.frames()
            // The Error is the last frame: no heartbeat follows it.
            #expect(frames.dropLast().allSatisfy { if case .heartbeat = $0.body { true } else { false } }, "\(frames)")
            guard case .error(let error) = frames.last?.body else {
                Issue.record("no Error frame last: \(frames)")
                return
            }
            #expect(error.code == .badRequest)
            #expect(error.message.contains("Hello"))
        }
    }

    @Test func aLogFromASessionThatHoldsNoJobIsRefusedAndTheSessionGoesOn() async throws {
        try await TestCoordinator.with { coordinator in
            let runner = try await coordinator.client("runner")
            var append = Heddle_V1_LogAppend()
            append.job.jobID = 12345
            append.node = "build"
            append.data = Data("sneaky".utf8)
            do {
                _ = try await runner.connection.request(.logAppend(append))
                Issue.record("a log for a job never assigned was accepted")
            } catch let error as WireError {
                #expect(error.code == .failedPrecondition)
            }
            var declare = Heddle_V1_ArtifactDeclare()
            declare.job.jobID = 12345
            declare.name = "../../etc/passwd"
            await #expect(throws: WireError.self) { _ = try await runner.connection.request(.artifactDeclare(declare)) }
            var finish = Heddle_V1_JobFinish()
            finish.job.jobID = 12345
            finish.status = .succeeded
            await #expect(throws: WireError.self) { _ = try await runner.connection.request(.jobFinish(finish)) }
            // The session is still usable.
            var update = Heddle_V1_NodeUpdate()
            update.job.jobID = 1
            await #expect(throws: WireError.self) { _ = try await runner.connection.request(.nodeUpdate(update)) }
            await runner.connection.close()
        }
    }
}
