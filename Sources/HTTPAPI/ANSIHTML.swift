import Foundation
import Synchronization
/// Renders terminal output (bytes as a program wrote them) as HTML, as a terminal would show
/// it: SGR colours (16, 256 and 24-bit, foreground and background), bold, dim, italic,
/// underline, inverse; a carriage return moves back to the start of the line, so what follows
/// overwrites it; a backspace moves back one; a tab moves to the next multiple of 8 columns;
/// `ESC [ K` erases (to the end, to the start or the whole line) and `ESC [ n G` moves to
/// column n. Other escape sequences and control characters are dropped; invalid UTF-8 becomes
/// U+FFFD.
///
/// The dashboard's renderer (`Web/ansi.js`) follows the same rules and writes the same
/// styles: both are held to one table of cases, `Tests/Shared/ansi-cases.json`.
///
/// It works as bytes arrive: `feed` returns the HTML of the lines completed so far, and
/// holds only the current line (at most `maximumLineCells` characters; a longer one is cut
/// into lines of that length), so memory is bounded whatever the log's size.
struct ANSIHTMLRenderer {
    static let maximumLineCells = 16_384

    struct Style: Equatable {
        var foreground: String?
        var background: String?
        var bold = false
        var dim = false
        var italic = false
        var underline = false
        var inverse = false

        /// The page's own colours, which an inverse without colours of its own swaps.
        static let defaultForeground = "#e5e5e5"
        static let defaultBackground = "#1e1e1e"

        var css: String {
            var parts: [String] = []
            let (color, backgroundColor) = inverse
                ? (background ?? Self.defaultBackground, foreground ?? Self.defaultForeground)
                : (foreground.map { ANSIHTMLRenderer.readable($0) }, background)
            if let color { parts.append("color:\(color)") }
            if let backgroundColor { parts.append("background-color:\(backgroundColor)") }
            if bold { parts.append("font-weight:bold") }
            if dim { parts.append("opacity:0.7") }
            if italic { parts.append("font-style:italic") }
            if underline { parts.append("text-decoration:underline") }
            return parts.joined(separator: ";")
        }
    }

    private enum State {
        case text
        case escape
        /// `ESC [` and the parameter bytes so far.
        case csi([UInt8])
        /// `ESC ]` (an operating system command) until BEL or `ESC \`.
        case osc(sawEscape: Bool)
    }

    private var state = State.text
    private var style = Style()
    private var line: [(Unicode.Scalar, Style)] = []
    private var cursor = 0
    private var utf8: [UInt8] = []

    /// The HTML of the lines the bytes completed.
    mutating func feed(_ bytes: some Sequence<UInt8>) -> String {
        var out = ""
        for byte in bytes { take(byte, into: &out) }
        return out
    }

    /// The HTML of what is left (a last line without a newline).
    mutating func finish() -> String {
        var out = ""
        if !utf8.isEmpty {
            utf8 = []
            put("\u{FFFD}", into: &out)
        }
        if !line.isEmpty { emitLine(into: &out, newline: false) }
        return out
    }

    private mutating func take(_ byte: UInt8, into out: inout String) {
        switch state {
        case .escape:
            switch byte {
            case UInt8(ascii: "["): state = .csi([])
            case UInt8(ascii: "]"): state = .osc(sawEscape: false)
            case 0x20...0x2F: state = .escape  // an intermediate byte (ESC ( B): its final byte follows
            default: state = .text  // the sequence's final byte: dropped
            }
            return
        case .csi(var parameters):
            if (0x40...0x7E).contains(byte) {
                state = .text
                control(final: byte, parameters: parameters)
            } else if parameters.count < 64 {
                parameters.append(byte)
                state = .csi(parameters)
            } else {
                state = .csi(parameters)  // overlong: ignored to its final byte
            }
            return
        case .osc(let sawEscape):
            if byte == 0x07 || (sawEscape && byte == UInt8(ascii: "\\")) {
                state = .text
            } else {
                state = .osc(sawEscape: byte == 0x1B)
            }
            return
        case .text:
            break
        }
        if !utf8.isEmpty || byte >= 0x80 {
            decode(byte, into: &out)
            return
        }
        switch byte {
        case 0x1B: state = .escape
        case UInt8(ascii: "\n"): emitLine(into: &out, newline: true)
        case UInt8(ascii: "\r"): cursor = 0
        case 0x08: cursor = max(0, cursor - 1)
        case UInt8(ascii: "\t"):
            let next = (cursor / 8 + 1) * 8
            while cursor < next { put(" ", into: &out) }
        case 0..<0x20, 0x7F: break
        default: put(Unicode.Scalar(byte), into: &out)
        }
    }

    /// Collects a multi-byte UTF-8 sequence.
    private mutating func decode(_ byte: UInt8, into out: inout String) {
        if utf8.isEmpty {
            guard (0xC2...0xF4).contains(byte) else {
                put("\u{FFFD}", into: &out)
                return
            }
            utf8 = [byte]
            return
        }
        guard byte & 0xC0 == 0x80 else {
            utf8 = []
            put("\u{FFFD}", into: &out)
            take(byte, into: &out)
            return
        }
        utf8.append(byte)
        let needed = utf8[0] >= 0xF0 ? 4 : utf8[0] >= 0xE0 ? 3 : 2
        guard utf8.count == needed else { return }
        var iterator = utf8.makeIterator()
        var decoder = UTF8()
        utf8 = []
        if case .scalarValue(let scalar) = decoder.decode(&iterator) {
            put(scalar, into: &out)
        } else {
            put("\u{FFFD}", into: &out)
        }
    }

    private mutating func put(_ scalar: Unicode.Scalar, into out: inout String) {
        // Past the line's end (a column move, an erase): blanks up to the cursor.
        while line.count < cursor { line.append((" ", Style())) }
        if cursor < line.count {
            line[cursor] = (scalar, style)
        } else {
            line.append((scalar, style))
        }
        cursor += 1
        if line.count >= Self.maximumLineCells { emitLine(into: &out, newline: true) }
    }

    private mutating func control(final: UInt8, parameters: [UInt8]) {
        let numbers = String(decoding: parameters, as: UTF8.self)
            .split(omittingEmptySubsequences: false, whereSeparator: { $0 == ";" || $0 == ":" })
            .map { Int($0) ?? 0 }
        switch final {
        case UInt8(ascii: "m"): sgr(numbers.isEmpty ? [0] : numbers)
        case UInt8(ascii: "K"):
            switch numbers.first ?? 0 {
            case 0: if cursor < line.count { line.removeSubrange(cursor...) }
            case 1: for index in 0..<min(cursor + 1, line.count) { line[index] = (" ", Style()) }
            default: line = []
            }
        case UInt8(ascii: "G"): cursor = max(0, (numbers.first ?? 1) - 1)
        default: break
        }
    }

    private mutating func sgr(_ codes: [Int]) {
        var index = 0
        while index < codes.count {
            let code = codes[index]
            switch code {
            case 0: style = Style()
            case 1: style.bold = true
            case 2: style.dim = true
            case 3: style.italic = true
            case 4: style.underline = true
            case 7: style.inverse = true
            case 22: (style.bold, style.dim) = (false, false)
            case 23: style.italic = false
            case 24: style.underline = false
            case 27: style.inverse = false
            case 30...37: style.foreground = Self.palette[code - 30]
            case 90...97: style.foreground = Self.palette[code - 90 + 8]
            case 39: style.foreground = nil
            case 40...47: style.background = Self.palette[code - 40]
            case 100...107: style.background = Self.palette[code - 100 + 8]
            case 49: style.background = nil
            case 38, 48:
                var color: String?
                if index + 2 < codes.count, codes[index + 1] == 5 {
                    color = Self.color256(codes[index + 2])
                    index += 2
                } else if index + 4 < codes.count, codes[index + 1] == 2 {
                    let (r, g, b) = (codes[index + 2], codes[index + 3], codes[index + 4])
                    color = Self.hex(r, g, b)
                    index += 4
                } else {
                    index = codes.count  // malformed: the rest is ignored
                }
                if code == 38 { style.foreground = color } else { style.background = color }
            default: break
            }
            index += 1
        }
    }

    private mutating func emitLine(into out: inout String, newline: Bool) {
        var current: Style?
        for (scalar, style) in line {
            if style != current {
                if let current, !current.css.isEmpty { out += "</span>" }
                if !style.css.isEmpty { out += "<span style=\"\(style.css)\">" }
                current = style
            }
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.unicodeScalars.append(scalar)
            }
        }
        if let current, !current.css.isEmpty { out += "</span>" }
        if newline { out += "\n" }
        line = []
        cursor = 0
    }

    /// A text colour readable on the log's background: one of less than 4.5:1 contrast (WCAG
    /// AA) against it is mixed with white, a 32nd at a time, until it has that (ansi.js does
    /// the same, so both renderers agree).
    static func readable(_ colour: String) -> String {
        if let known = readableColours.withLock({ $0[colour] }) { return known }
        let shown = lighten(colour)
        readableColours.withLock { known in
            if known.count >= 4096 { known = [:] }  // 24-bit colours are many; the cache stays small
            known[colour] = shown
        }
        return shown
    }

    /// Colours already made readable: a log names the same few again and again.
    static let readableColours = Mutex<[String: String]>([:])

    private static func lighten(_ colour: String) -> String {
        let bytes = Array(colour.utf8)
        guard bytes.count == 7, let r = Int(String(colour.dropFirst().prefix(2)), radix: 16),
              let g = Int(String(colour.dropFirst(3).prefix(2)), radix: 16), let b = Int(String(colour.dropFirst(5).prefix(2)), radix: 16)
        else { return colour }
        for k in 0...32 {
            func mix(_ c: Int) -> Int { Int((Double(c) + Double(255 - c) * Double(k) / 32).rounded()) }
            if contrast(mix(r), mix(g), mix(b)) >= 4.5 { return hex(mix(r), mix(g), mix(b)) }
        }
        return "#ffffff"
    }

    static func luminance(_ r: Int, _ g: Int, _ b: Int) -> Double {
        func linear(_ c: Int) -> Double {
            let v = Double(c) / 255
            return v <= 0.04045 ? v / 12.92 : pow((v + 0.055) / 1.055, 2.4)
        }
        return 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    }

    static let backgroundLuminance = luminance(0x1e, 0x1e, 0x1e)

    /// Contrast against the log's background (`#1e1e1e`).
    static func contrast(_ r: Int, _ g: Int, _ b: Int) -> Double {
        let l = luminance(r, g, b)
        return (max(l, backgroundLuminance) + 0.05) / (min(l, backgroundLuminance) + 0.05)
    }

    /// The 16 colours of xterm's default palette.
    static let palette = [
        "#000000", "#cd0000", "#00cd00", "#cdcd00", "#0000ee", "#cd00cd", "#00cdcd", "#e5e5e5",
        "#7f7f7f", "#ff0000", "#00ff00", "#ffff00", "#5c5cff", "#ff00ff", "#00ffff", "#ffffff",
    ]

    static func color256(_ index: Int) -> String? {
        switch index {
        case 0..<16: return palette[index]
        case 16..<232:
            let value = index - 16
            let steps = [0, 95, 135, 175, 215, 255]
            return hex(steps[value / 36], steps[(value / 6) % 6], steps[value % 6])
        case 232..<256:
            let gray = 8 + (index - 232) * 10
            return hex(gray, gray, gray)
        default: return nil
        }
    }

    static func hex(_ r: Int, _ g: Int, _ b: Int) -> String {
        func two(_ value: Int) -> String {
            let clamped = max(0, min(255, value))
            return (clamped < 16 ? "0" : "") + String(clamped, radix: 16)
        }
        return "#" + two(r) + two(g) + two(b)
    }
}
