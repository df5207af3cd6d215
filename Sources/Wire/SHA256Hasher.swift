import Crypto
import Foundation

/// Incremental SHA-256 for callers that do not import Crypto.
public struct SHA256Hasher: Sendable {
    private var hasher = SHA256()

    public init() {}

    public mutating func update(_ data: Data) {
        hasher.update(data: data)
    }

    public mutating func finalize() -> Data {
        Data(hasher.finalize())
    }
}
