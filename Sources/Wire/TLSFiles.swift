import Foundation
import NIOSSL

/// The three PEM files every Heddle process needs: the fabric CA, its own certificate and key.
public struct TLSFiles: Sendable {
    public var caPath: String
    public var certificatePath: String
    public var keyPath: String

    public init(ca: String, certificate: String, key: String) {
        self.caPath = ca
        self.certificatePath = certificate
        self.keyPath = key
    }

    struct Loaded {
        var ca: [NIOSSLCertificate]
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
    }

    func load() throws -> Loaded {
        func read(_ path: String, _ what: String) throws -> [UInt8] {
            guard let data = FileManager.default.contents(atPath: path) else {
                throw WireError(.invalidArgument, "cannot read the \(what) file \(path)")
            }
            return Array(data)
        }
        let caBytes = try read(caPath, "CA certificate")
        let certBytes = try read(certificatePath, "certificate")
        let keyBytes = try read(keyPath, "private key")
        do {
            let ca = try NIOSSLCertificate.fromPEMBytes(caBytes)
            let chain = try NIOSSLCertificate.fromPEMBytes(certBytes)
            guard !ca.isEmpty else { throw WireError(.invalidArgument, "\(caPath) holds no certificate") }
            guard !chain.isEmpty else { throw WireError(.invalidArgument, "\(certificatePath) holds no certificate") }
            let key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem)
            return Loaded(ca: ca, chain: chain, key: key)
        } catch let error as WireError {
            throw error
        } catch {
            throw WireError(.invalidArgument,
                            "cannot load TLS files (ca \(caPath), cert \(certificatePath), key \(keyPath)): \(error)")
        }
    }

    /// Server side: TLS 1.3 only, a client certificate required and verified against the CA alone.
    public func serverConfiguration() throws -> TLSConfiguration {
        let loaded = try load()
        var config = TLSConfiguration.makeServerConfigurationWithMTLS(
            certificateChain: loaded.chain.map { .certificate($0) },
            privateKey: .privateKey(loaded.key),
            trustRoots: .certificates(loaded.ca)
        )
        config.minimumTLSVersion = .tlsv13
        return config
    }

    /// Client side: TLS 1.3 only, the server verified against the CA alone, our certificate offered.
    /// Refuses a certificate that is not valid now, saying which way.
    public func clientConfiguration(now: Date = Date()) throws -> TLSConfiguration {
        let loaded = try load()
        try Self.checkValidity(loaded.chain[0], path: certificatePath, now: now)
        var config = TLSConfiguration.makeClientConfiguration()
        config.minimumTLSVersion = .tlsv13
        config.trustRoots = .certificates(loaded.ca)
        config.certificateChain = loaded.chain.map { .certificate($0) }
        config.privateKey = .privateKey(loaded.key)
        config.certificateVerification = .fullVerification
        return config
    }

    /// A certificate outside its validity period fails here with one sentence, rather than
    /// as the coordinator's TLS alert (which says "expired" for a certificate not valid yet).
    static func checkValidity(_ certificate: NIOSSLCertificate, path: String, now: Date) throws {
        let notBefore = Date(timeIntervalSince1970: TimeInterval(certificate.notValidBefore))
        let notAfter = Date(timeIntervalSince1970: TimeInterval(certificate.notValidAfter))
        let format = ISO8601DateFormatter()
        if now < notBefore {
            throw WireError(.invalidArgument, "the certificate \(path) is not valid until \(format.string(from: notBefore)) (this machine's clock says \(format.string(from: now))): check the clock, or issue it again with `heddle certs issue`")
        }
        if now > notAfter {
            throw WireError(.invalidArgument, "the certificate \(path) expired at \(format.string(from: notAfter)): issue a new one with `heddle certs issue`")
        }
    }
}
