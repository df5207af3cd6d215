/// The software and protocol versions, and which peers a coordinator accepts.
///
/// The protocol has a major and a minor version. A minor version only adds (fields, messages,
/// values a peer may ignore); a major version may change what exists. A coordinator accepts
/// peers of its own major version whose minor version is at most its own: an older runner or
/// CLI keeps working with a newer coordinator, so a fleet is upgraded coordinators first, then
/// runners, one machine at a time (PROTOCOL.md, "Versions").
public enum HeddleVersion {
    public static let protocolVersion: UInt32 = 1
    public static let protocolMinor: UInt32 = 1
    /// The oldest minor version of `protocolVersion` a coordinator accepts.
    public static let oldestAcceptedMinor: UInt32 = 0
    public static let software = "0.2.0"

    /// "0.2.0 (protocol 1.1)", what every binary's `--version` prints.
    public static var description: String { "\(software) (protocol \(protocolVersion).\(protocolMinor))" }

    /// The versions a coordinator accepts, for its refusal messages: "1.0 to 1.1".
    public static var accepted: String {
        "\(protocolVersion).\(oldestAcceptedMinor) to \(protocolVersion).\(protocolMinor)"
    }

    /// Why a peer speaking `major.minor` is refused (nil: accepted).
    public static func refusal(major: UInt32, minor: UInt32, software peer: String) -> String? {
        guard major != protocolVersion || minor > protocolMinor || minor < oldestAcceptedMinor else { return nil }
        let who = peer.isEmpty ? "" : " (Heddle \(peer))"
        return "protocol version \(major).\(minor)\(who) is not supported: this coordinator (Heddle \(software)) speaks protocol \(protocolVersion).\(protocolMinor) and accepts peers of protocol \(accepted); upgrade the coordinators first, then the runners"
    }
}
