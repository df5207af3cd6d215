import Foundation
import Testing
@testable import HTTPAPI

/// The server's renderer against the table of cases the dashboard's renderer (`Web/ansi.js`)
/// is held to as well (tests/browser/test_ansi.py): one set of rules, one set of styles.
@Suite struct ANSISharedTableTests {
    struct Case: Decodable, CustomTestStringConvertible, Sendable {
        var name: String
        var input: String
        /// Each line's runs: text and its CSS declarations ("" for none).
        var lines: [[[String]]]
        var testDescription: String { name }
    }

    static let cases: [Case] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Shared/ansi-cases.json")
        guard let data = try? Data(contentsOf: url), let cases = try? JSONDecoder().decode([Case].self, from: data) else {
            return []
        }
        return cases
    }()

    @Test func theTableIsThere() {
        #expect(Self.cases.count >= 20)
    }

    @Test(arguments: cases)
    func theServerRendersEachCaseAsTheTableSays(_ test: Case) {
        var renderer = ANSIHTMLRenderer()
        let html = renderer.feed(Array(test.input.utf8)) + renderer.finish()
        #expect(Self.runs(html) == test.lines)
    }

    /// The rendered HTML as lines of runs (text, CSS), adjacent runs of one style merged.
    static func runs(_ html: String) -> [[[String]]] {
        var lines = html.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        let pattern = /<span style="([^"]*)">(.*?)<\/span>|([^<]+)/
        return lines.map { line in
            var runs: [[String]] = []
            for match in line.matches(of: pattern) {
                let (css, text) = match.output.3.map { ("", String($0)) }
                    ?? (String(match.output.1 ?? ""), String(match.output.2 ?? ""))
                let unescaped = text.replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
                    .replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&amp;", with: "&")
                if let last = runs.last, last[1] == css {
                    runs[runs.count - 1][0] += unescaped
                } else {
                    runs.append([unescaped, css])
                }
            }
            return runs
        }
    }
}
