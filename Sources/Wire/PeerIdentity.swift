import Foundation
import NIOCore
import NIOSSL
import X509

/// What a certificate may do. The role is the certificate subject's organizational unit
/// (OU); the name is its common name (CN). `heddle certs` writes both.
/// A certificate's role (its subject's OU). What each may do is the coordinator's
/// authorization table (`Authorization` in the Coordinator module).
public enum Role: String, Sendable, CaseIterable {
    case runner
    /// Reads only: runs, logs, the queue, runners, pipelines, projects, artifacts.
    case viewer
    case automation
    case admin
}

/// Who is on the other end of a connection, read from its verified client certificate.
public struct PeerIdentity: Sendable, Equatable, CustomStringConvertible {
    public var name: String
    public var role: Role
    /// SHA-256 of the certificate's DER, lower-case hex.
    public var fingerprint: String
    /// When the certificate became valid: a revocation by name covers certificates issued
    /// before it, not a renewed one.
    public var notBefore: Date

    /// When the certificate was issued, for Heddle's own certificates (`PKI.backdate`).
    public var issuedAt: Date { notBefore.addingTimeInterval(PKI.backdate) }

    public init(name: String, role: Role, fingerprint: String, notBefore: Date = Date(timeIntervalSince1970: 0)) {
        self.name = name
        self.role = role
        self.fingerprint = fingerprint
        self.notBefore = notBefore
    }

    public var description: String { "\(role.rawValue) \(name)" }

    /// Reads name and role from a certificate. Throws when either is missing, appears more
    /// than once in the subject (which one would count is a guess an attacker could steer),
    /// or the role is not one Heddle knows.
    public init(certificate: Certificate, derBytes: [UInt8]) throws {
        var commonNames: [String] = []
        var units: [String] = []
        for rdn in certificate.subject {
            for attribute in rdn {
                switch attribute.type {
                case .RDNAttributeType.commonName: commonNames.append(String(attribute.value) ?? "")
                case .RDNAttributeType.organizationalUnitName: units.append(String(attribute.value) ?? "")
                default: break
                }
            }
        }
        guard commonNames.count <= 1 else {
            throw WireError(.unauthenticated, "client certificate has \(commonNames.count) common names (CN); Heddle accepts exactly one")
        }
        guard units.count <= 1 else {
            throw WireError(.unauthenticated, "client certificate has \(units.count) organizational units (OU); Heddle accepts exactly one, its role")
        }
        let commonName = commonNames.first, unit = units.first
        guard let commonName, !commonName.isEmpty else {
            throw WireError(.unauthenticated, "client certificate has no common name (CN)")
        }
        guard let unit, let role = Role(rawValue: unit) else {
            throw WireError(.unauthenticated,
                            "client certificate \(commonName) has no Heddle role: its OU must be runner, viewer, automation or admin")
        }
        self.init(name: commonName, role: role, fingerprint: sha256Hex(derBytes), notBefore: certificate.notValidBefore)
    }

    /// Reads the identity of the TLS peer on `channel`. Call after the handshake.
    public static func of(channel: Channel) async throws -> PeerIdentity {
        guard let peer = try await channel.nioSSL_peerCertificate().get() else {
            throw WireError(.unauthenticated, "the peer presented no client certificate")
        }
        return try PeerIdentity(peer)
    }

    /// Reads name and role from a verified TLS peer certificate.
    public init(_ peer: NIOSSLCertificate) throws {
        let der = try peer.toDERBytes()
        try self.init(certificate: Certificate(derEncoded: der), derBytes: der)
    }
}
