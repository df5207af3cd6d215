import Foundation

extension Date {
    /// Milliseconds since the Unix epoch, as the protocol carries times.
    public static var nowMilliseconds: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    public init(milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }
}
