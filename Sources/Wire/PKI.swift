import Crypto
import Foundation
import SwiftASN1
import X509

/// A certificate with its private key, both as PEM.
public struct IssuedCertificate: Sendable {
    public var certificate: Certificate
    public var key: P256.Signing.PrivateKey

    public init(certificate: Certificate, key: P256.Signing.PrivateKey) {
        self.certificate = certificate
        self.key = key
    }

    public var certificatePEM: String {
        get throws { try certificate.serializeAsPEM().pemString + "\n" }
    }

    public var keyPEM: String { key.pemRepresentation + "\n" }

    /// Loads a certificate and key written by `write(to:name:)`.
    public init(certificatePEM: String, keyPEM: String) throws {
        self.certificate = try Certificate(pemEncoded: certificatePEM)
        self.key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM)
    }
}

/// Makes the fabric's PKI in Swift: a CA, a coordinator certificate, and client
/// certificates whose subject OU is their Heddle role and whose CN is their name.
public enum PKI {
    public static let organization = "Heddle"
    /// Certificates are valid from this long before they are issued, for clocks that differ a
    /// little; the issue time is notValidBefore plus this.
    public static let backdate: TimeInterval = 300

    /// Now, to the second (certificates carry seconds), minus `backdate`.
    public static var defaultNotBefore: Date {
        Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down) - backdate)
    }

    public static func makeCA(name: String = "Heddle CA",
                              notBefore: Date = PKI.defaultNotBefore,
                              validFor: TimeInterval = 10 * 365 * 86400) throws -> IssuedCertificate {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName(organization)
            CommonName(name)
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: Certificate.PublicKey(key.publicKey))
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: notBefore,
            notValidAfter: notBefore.addingTimeInterval(validFor),
            issuer: subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(key)
        )
        return IssuedCertificate(certificate: certificate, key: key)
    }

    /// The coordinator's server certificate, valid for localhost, 127.0.0.1, ::1 and `hosts`.
    public static func issueServer(name: String = "coordinator", hosts: [String] = [],
                                   ca: IssuedCertificate,
                                   notBefore: Date = PKI.defaultNotBefore,
                                   validFor: TimeInterval = 2 * 365 * 86400) throws -> IssuedCertificate {
        var names: [GeneralName] = [.dnsName("localhost"), ipName("127.0.0.1")!, ipName("::1")!]
        for host in hosts {
            names.append(ipName(host) ?? .dnsName(host))
        }
        return try issue(unit: "coordinator", name: name, alternativeNames: names,
                         usages: [.serverAuth], ca: ca, notBefore: notBefore, validFor: validFor)
    }

    /// A client certificate for a runner, automation or an admin.
    public static func issueClient(role: Role, name: String, ca: IssuedCertificate,
                                   notBefore: Date = PKI.defaultNotBefore,
                                   validFor: TimeInterval = 365 * 86400) throws -> IssuedCertificate {
        try issue(unit: role.rawValue, name: name, alternativeNames: [],
                  usages: [.clientAuth], ca: ca, notBefore: notBefore, validFor: validFor)
    }

    static func issue(unit: String, name: String, alternativeNames: [GeneralName],
                      usages: [ExtendedKeyUsage.Usage], ca: IssuedCertificate,
                      notBefore: Date, validFor: TimeInterval) throws -> IssuedCertificate {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            OrganizationName(organization)
            OrganizationalUnitName(unit)
            CommonName(name)
        }
        let publicKey = Certificate.PublicKey(key.publicKey)
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true))
            try ExtendedKeyUsage(usages)
            SubjectKeyIdentifier(hash: publicKey)
            if let caKeyID = try? ca.certificate.extensions.subjectKeyIdentifier?.keyIdentifier {
                AuthorityKeyIdentifier(keyIdentifier: caKeyID)
            }
            if !alternativeNames.isEmpty {
                SubjectAlternativeNames(alternativeNames)
            }
        }
        let certificate = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: publicKey,
            notValidBefore: notBefore,
            notValidAfter: notBefore.addingTimeInterval(validFor),
            issuer: ca.certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions,
            issuerPrivateKey: Certificate.PrivateKey(ca.key)
        )
        return IssuedCertificate(certificate: certificate, key: key)
    }

    static func ipName(_ text: String) -> GeneralName? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            let bytes = withUnsafeBytes(of: &v4) { Array($0) }
            return .ipAddress(ASN1OctetString(contentBytes: bytes[...]))
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            let bytes = withUnsafeBytes(of: &v6) { Array($0) }
            return .ipAddress(ASN1OctetString(contentBytes: bytes[...]))
        }
        return nil
    }
}

/// Writes PEM files: certificates 0644, private keys 0600 (created with that mode, never wider).
public enum PEMFiles {
    public static func write(_ issued: IssuedCertificate, directory: String, name: String) throws {
        try writeFile(atPath: "\(directory)/\(name).pem", contents: issued.certificatePEM, mode: 0o644)
        try writeFile(atPath: "\(directory)/\(name).key", contents: issued.keyPEM, mode: 0o600)
    }

    public static func writeFile(atPath path: String, contents: String, mode: mode_t) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw WireError(.invalidArgument, "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        fchmod(fd, mode)
        let bytes = Array(contents.utf8)
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else {
                throw WireError(.internal, "cannot write \(path): \(String(cString: strerror(errno)))")
            }
            written += n
        }
    }
}
