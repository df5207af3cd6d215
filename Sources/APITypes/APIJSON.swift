import Foundation
import OpenAPIRuntime

/// How the schemas of `openapi.yaml` are written as JSON outside the generated operations (SSE
/// data, problems, the CLI's `--json`): as the operations write them, sorted keys and dates
/// in ISO 8601.
public enum APIJSON {
    /// One line (HTTP bodies, SSE data, a `--watch` line).
    public static let encoder = makeEncoder([.sortedKeys, .withoutEscapingSlashes])
    /// Indented, for people and programs reading the CLI's output.
    public static let prettyEncoder = makeEncoder([.sortedKeys, .withoutEscapingSlashes, .prettyPrinted])

    private static func makeEncoder(_ formatting: JSONEncoder.OutputFormatting) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = formatting
        let transcoder = OpenAPIRuntime.Configuration().dateTranscoder
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(try transcoder.encode(date))
        }
        return encoder
    }
}
