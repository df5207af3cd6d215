public enum HeddleVersion {
    public static let protocolVersion: UInt32 = 1
    public static let software = "0.1.0"
}
