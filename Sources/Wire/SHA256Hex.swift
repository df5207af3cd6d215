import Crypto

/// Lower-case hex of the SHA-256 of `bytes`.
public func sha256Hex(_ bytes: some Sequence<UInt8>) -> String {
    hex(SHA256.hash(data: Array(bytes)))
}

/// Lower-case hex of any byte sequence.
public func hex(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}
