import Foundation
import TestSupport
import Testing
import Wire
@testable import Coordinator

/// The compatibility promise (PROTOCOL.md, "Versions"): a coordinator accepts peers of its
/// major version with a minor version up to its own, and refuses the others saying which
/// versions it accepts.
@Suite struct VersionTests {
    func hello(major: UInt32, minor: UInt32, software: String) -> Heddle_V1_Hello {
        var hello = Heddle_V1_Hello()
        hello.protocolVersion = major
        hello.protocolMinor = minor
        hello.softwareVersion = software
        hello.labels = ["linux"]
        hello.capacity = 1
        return hello
    }

    /// A test double of a 0.1.0 runner: protocol 1.0 (it sends no minor version).
    @Test func aRunnerOfThePreviousMinorVersionIsAcceptedAndTakesWork() async throws {
        try await TestCoordinator.with { coordinator in
            let old = try await HeddleConnection.connect(to: coordinator.endpoint, tls: coordinator.pki.tls("runner"),
                                                        hello: hello(major: 1, minor: 0, software: "0.1.0"))
            #expect(old.welcome.role == "runner")
            #expect(old.welcome.softwareVersion == HeddleVersion.software)
            #expect(old.welcome.protocolVersion == 1 && old.welcome.protocolMinor == HeddleVersion.protocolMinor)
            let admin = try await coordinator.client("admin")
            let listed = try await admin.runners()
            #expect(listed.map(\.name) == ["test-runner"])
            // Listed with the versions it said, so an operator sees who is left to upgrade.
            #expect(listed.first?.softwareVersion == "0.1.0" && listed.first?.protocolVersion == "1.0")
            await admin.connection.close()
            await old.close()
        }
    }

    /// The version a runner says is shown in terminals and pages: only printable ASCII of it
    /// is kept, at most 64 characters.
    @Test func aRunnersSoftwareVersionIsListedAsPrintableASCIIOnly() async throws {
        try await TestCoordinator.with { coordinator in
            let said = "0.2.0\u{1B}[2J\u{7}\n\u{0}é" + String(repeating: "x", count: 100)
            let runner = try await HeddleConnection.connect(to: coordinator.endpoint, tls: coordinator.pki.tls("runner"),
                                                           hello: hello(major: 1, minor: 1, software: said))
            let admin = try await coordinator.client("admin")
            let listed = try #require(try await admin.runners().first)
            #expect(listed.softwareVersion == "0.2.0[2J" + String(repeating: "x", count: 56))
            #expect(listed.protocolVersion == "1.1")
            await admin.connection.close()
            await runner.close()
        }
    }

    @Test(arguments: [(UInt32(2), UInt32(0), "9.0.0"), (1, HeddleVersion.protocolMinor + 1, "")])
    func anUnsupportedVersionIsRefusedSayingWhichAreAccepted(major: UInt32, minor: UInt32, software: String) async throws {
        try await TestCoordinator.with { coordinator in
            // A Hello without a software version gets this one's from the connection.
            let who = " (Heddle \(software.isEmpty ? HeddleVersion.software : software))"
            do {
                let connection = try await HeddleConnection.connect(to: coordinator.endpoint, tls: coordinator.pki.tls("runner"),
                                                                   hello: hello(major: major, minor: minor, software: software))
                await connection.close()
                Issue.record("protocol \(major).\(minor) was accepted")
            } catch let error as WireError {
                #expect(error.code == .unsupportedVersion)
                #expect(error.message == "protocol version \(major).\(minor)\(who) is not supported: this coordinator (Heddle \(HeddleVersion.software)) speaks protocol 1.\(HeddleVersion.protocolMinor) and accepts peers of protocol 1.0 to 1.\(HeddleVersion.protocolMinor); upgrade the coordinators first, then the runners")
            }
            // Refusing it did not disturb anyone else.
            let admin = try await coordinator.client("admin")
            #expect(try await admin.runners().isEmpty)
            await admin.connection.close()
        }
    }

    @Test func everyVersionFlagSaysTheSameThing() {
        #expect(HeddleVersion.description == "\(HeddleVersion.software) (protocol 1.\(HeddleVersion.protocolMinor))")
        #expect(HeddleVersion.refusal(major: 1, minor: 0, software: "") == nil)
        #expect(HeddleVersion.refusal(major: 1, minor: HeddleVersion.protocolMinor, software: "") == nil)
    }
}
