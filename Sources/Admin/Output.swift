import APITypes
import Foundation
import Wire

enum Output {
    /// Colour only on a terminal, and never when NO_COLOR is set.
    static let colour: Bool = isatty(1) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
        && ProcessInfo.processInfo.environment["TERM"] != "dumb"

    static func paint(_ text: String, _ code: String) -> String {
        colour ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    static func status(_ status: Heddle_V1_Status) -> String {
        let name = statusName(status)
        switch status {
        case .succeeded: return paint(name, "32")
        case .failed: return paint(name, "31")
        case .running: return paint(name, "36")
        case .cancelled, .skipped: return paint(name, "33")
        default: return name
        }
    }

    static func statusName(_ status: Heddle_V1_Status) -> String {
        switch status {
        case .queued: "queued"
        case .pending: "pending"
        case .running: "running"
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .cancelled: "cancelled"
        case .skipped: "skipped"
        default: "unknown"
        }
    }

    /// A table with a header row; columns padded to their widest cell (ANSI codes not counted).
    static func table(_ header: [String], _ rows: [[String]]) -> String {
        let all = [header] + rows
        var widths = [Int](repeating: 0, count: header.count)
        for row in all {
            for (index, cell) in row.enumerated() where index < widths.count {
                widths[index] = max(widths[index], visibleLength(cell))
            }
        }
        return all.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - visibleLength(cell))
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }

    static func visibleLength(_ text: String) -> Int {
        var count = 0
        var inEscape = false
        for scalar in text.unicodeScalars {
            if inEscape {
                if scalar == "m" { inEscape = false }
            } else if scalar == "\u{1B}" {
                inEscape = true
            } else {
                count += 1
            }
        }
        return count
    }

    static func time(_ ms: Int64) -> String {
        guard ms > 0 else { return "-" }
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter.string(from: Date(milliseconds: ms))
    }

    static func duration(from start: Int64, to end: Int64) -> String {
        guard start > 0 else { return "-" }
        let finish = end > 0 ? end : Date.nowMilliseconds
        let seconds = Double(finish - start) / 1000
        if seconds < 1 { return "\(finish - start)ms" }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        let minutes = Int(seconds) / 60
        return "\(minutes)m\(Int(seconds) % 60)s"
    }

    static func bytes(_ count: UInt64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    /// A REST schema as JSON (`APIJSON`): indented, or one line.
    static func json(_ value: some Encodable, pretty: Bool = true) -> String {
        guard let data = try? (pretty ? APIJSON.prettyEncoder : APIJSON.encoder).encode(value) else { return "null" }
        return String(decoding: data, as: UTF8.self)
    }
}
