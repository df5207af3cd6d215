import Foundation
import Testing
import X509
@testable import Wire

@Suite struct PeerIdentityTests {
    @Test(arguments: Role.allCases)
    func roleAndNameComeFromTheCertificate(role: Role) throws {
        let ca = try PKI.makeCA()
        let issued = try PKI.issueClient(role: role, name: "build-01", ca: ca)
        let der = try issued.certificate.serializeAsPEM().derBytes
        let identity = try PeerIdentity(certificate: issued.certificate, derBytes: der)
        #expect(identity.role == role)
        #expect(identity.name == "build-01")
        #expect(identity.fingerprint.count == 64)
    }

    @Test func theCoordinatorCertificateIsNoClientRole() throws {
        let ca = try PKI.makeCA()
        let server = try PKI.issueServer(ca: ca)
        #expect(throws: WireError.self) {
            try PeerIdentity(certificate: server.certificate, derBytes: [])
        }
    }

    @Test func endpointsParse() throws {
        #expect(try Endpoint(parsing: "127.0.0.1:7443") == Endpoint(host: "127.0.0.1", port: 7443))
        #expect(try Endpoint(parsing: "[::1]:0") == Endpoint(host: "::1", port: 0))
        #expect(throws: WireError.self) { try Endpoint(parsing: "nohost") }
        #expect(throws: WireError.self) { try Endpoint(parsing: "host:99999") }
    }
}
