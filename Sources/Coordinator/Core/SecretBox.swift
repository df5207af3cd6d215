import Crypto
import Foundation
import Wire

/// Seals and opens projects' secrets with the key the coordinator is given
/// (`--secrets-key-file`): AES-256-GCM, a fresh nonce each time, the project and the secret's
/// name as authenticated data (a sealed value copied to another name or project does not
/// open). What the store keeps is `1 | nonce (12) | ciphertext | tag (16)`.
public struct SecretBox: Sendable {
    let key: SymmetricKey

    public init(key: [UInt8]) throws(SecretKeyError) {
        guard key.count == 32 else { throw SecretKeyError("a secrets key is 32 bytes; this one is \(key.count)") }
        self.key = SymmetricKey(data: key)
    }

    /// The key in a file: 64 hexadecimal digits (`openssl rand -hex 32`), 44 characters of
    /// base64, or 32 raw bytes. The file must not be readable by group or others.
    public init(keyFile path: String) throws(SecretKeyError) {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw SecretKeyError("--secrets-key-file \(path) cannot be read: \(String(cString: strerror(errno)))")
        }
        guard info.st_mode & 0o077 == 0 else {
            throw SecretKeyError("--secrets-key-file \(path) is readable by others (mode \(String(info.st_mode & 0o777, radix: 8))); chmod 600 it")
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SecretKeyError("--secrets-key-file \(path) cannot be read")
        }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        if text.count == 64, let bytes = Data(hexString: text) {
            try self.init(key: [UInt8](bytes))
        } else if text.count == 44, let bytes = Data(base64Encoded: text), bytes.count == 32 {
            try self.init(key: [UInt8](bytes))
        } else if data.count == 32 {
            try self.init(key: [UInt8](data))
        } else {
            throw SecretKeyError("--secrets-key-file \(path) holds no key: write 64 hexadecimal digits (openssl rand -hex 32 > FILE)")
        }
    }

    static func context(project: String, name: String) -> Data {
        Data("heddle secret\0\(project)\0\(name)".utf8)
    }

    public func seal(_ value: String, project: String, name: String) throws -> [UInt8] {
        let box = try AES.GCM.seal(Data(value.utf8), using: key, authenticating: Self.context(project: project, name: name))
        guard let combined = box.combined else { throw SecretKeyError("the sealed secret has no combined form") }
        return [1] + [UInt8](combined)
    }

    /// The value; throws when it was sealed with another key, for another name, or changed.
    public func open(_ sealed: [UInt8], project: String, name: String) throws -> String {
        guard sealed.first == 1 else { throw SecretKeyError("secret \(name) of \(project) is sealed in an unknown format") }
        let box = try AES.GCM.SealedBox(combined: Data(sealed.dropFirst()))
        let value = try AES.GCM.open(box, using: key, authenticating: Self.context(project: project, name: name))
        return String(decoding: value, as: UTF8.self)
    }
}

public struct SecretKeyError: Error, CustomStringConvertible, Sendable {
    public var description: String
    init(_ description: String) { self.description = description }
}
