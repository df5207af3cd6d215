import Foundation
import TestSupport
import Testing
import Crypto
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

    /// `OU=runner, OU=admin` must not be an admin, nor `CN=evil, CN=r2` runner r2: a subject
    /// with more than one OU or CN is refused, whatever their order.
    @Test(arguments: [
        ["OU": ["runner", "admin"], "CN": ["r1"]],
        ["OU": ["admin", "runner"], "CN": ["r1"]],
        ["OU": ["runner"], "CN": ["evil", "r2"]],
    ])
    func aSubjectWithSeveralRolesOrNamesIsRefused(fields: [String: [String]]) throws {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName("heddle")
            for unit in fields["OU"] ?? [] { OrganizationalUnitName(unit) }
            for name in fields["CN"] ?? [] { CommonName(name) }
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: Date(), notValidAfter: Date().addingTimeInterval(3600), issuer: subject, subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256, extensions: Certificate.Extensions(), issuerPrivateKey: .init(key))
        #expect {
            try PeerIdentity(certificate: certificate, derBytes: [])
        } throws: { error in
            let wire = try #require(error as? WireError)
            return wire.code == .unauthenticated && wire.message.contains("Heddle accepts exactly one")
        }
    }

    /// A certificate outside its validity period is refused before connecting, saying which
    /// way (the coordinator's TLS alert says "expired" for one not valid yet).
    @Test func aCertificateOutsideItsValidityIsRefusedSayingWhich() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let ca = try PKI.makeCA()
        try PEMFiles.write(ca, directory: directory.path, name: "ca")
        let day: TimeInterval = 86400
        try PEMFiles.write(try PKI.issueClient(role: .admin, name: "early", ca: ca, notBefore: Date().addingTimeInterval(day)),
                           directory: directory.path, name: "early")
        try PEMFiles.write(try PKI.issueClient(role: .admin, name: "late", ca: ca, notBefore: Date().addingTimeInterval(-10 * day),
                                               validFor: day), directory: directory.path, name: "late")
        func message(_ name: String) -> String {
            let files = TLSFiles(ca: directory.file("ca.pem"), certificate: directory.file("\(name).pem"), key: directory.file("\(name).key"))
            do {
                _ = try files.clientConfiguration()
                return "accepted"
            } catch {
                return (error as? WireError)?.message ?? "\(error)"
            }
        }
        #expect(message("early").hasPrefix("the certificate \(directory.file("early.pem")) is not valid until "), "\(message("early"))")
        #expect(message("late").hasPrefix("the certificate \(directory.file("late.pem")) expired at "), "\(message("late"))")
    }

    @Test func endpointsParse() throws {
        #expect(try Endpoint(parsing: "127.0.0.1:7443") == Endpoint(host: "127.0.0.1", port: 7443))
        #expect(try Endpoint(parsing: "[::1]:0") == Endpoint(host: "::1", port: 0))
        #expect(throws: WireError.self) { try Endpoint(parsing: "nohost") }
        #expect(throws: WireError.self) { try Endpoint(parsing: "host:99999") }
    }
}
