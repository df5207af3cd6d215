import Foundation

extension JobDefinition {
    /// Its `cache:` as the stores keep it: JSON, or empty without one.
    func cacheColumn() throws -> String {
        guard let cache else { return "" }
        return String(decoding: try JSONEncoder().encode(cache), as: UTF8.self)
    }
}

extension CacheDefinition {
    /// A job's `cache` column as both stores keep it (`JobDefinition.cacheColumn`): JSON, or
    /// empty for none.
    static func fromColumn(_ text: String) throws -> CacheDefinition? {
        text.isEmpty ? nil : try JSONDecoder().decode(CacheDefinition.self, from: Data(text.utf8))
    }
}

/// A job's `cache:`: files kept between runs under a key. The runner expands the key after the
/// checkout (`${hash:GLOB,...}` becomes the first 16 hex digits of the SHA-256 of the files the
/// globs match), restores the newest cache with that key, else with the longest-standing
/// match of a `restore_keys` prefix, before the first node, and saves `paths` under the key
/// after the job succeeded when no cache had that exact key.
public struct CacheDefinition: Sendable, Equatable, Codable {
    /// The key as written (with `${matrix.X}` already substituted), `${hash:...}` unexpanded.
    public var key: String
    /// Relative paths in the workspace (files or directories).
    public var paths: [String]
    /// Prefixes tried in order when no cache has the exact key.
    public var restoreKeys: [String]

    public init(key: String, paths: [String], restoreKeys: [String] = []) {
        self.key = key
        self.paths = paths
        self.restoreKeys = restoreKeys
    }

    public static let maximumKeyBytes = 200
    public static let maximumPaths = 16
    public static let maximumRestoreKeys = 8

    /// Why `template` is no cache key template, or nil: literal letters, digits, `.`, `_`, `-`
    /// and `/` with `${hash:GLOB[,GLOB...]}` placeholders (globs relative to the workspace), at
    /// most `maximumKeyBytes` as written.
    public static func keyProblem(_ template: String, _ what: String) -> String? {
        guard !template.isEmpty, template.utf8.count <= maximumKeyBytes else {
            return "\(what) has 1 to \(maximumKeyBytes) bytes"
        }
        var rest = Substring(template)
        while !rest.isEmpty {
            if rest.hasPrefix("${") {
                guard let end = rest.firstIndex(of: "}") else { return "\(what) has `${` without its closing `}`" }
                let inner = rest[rest.index(rest.startIndex, offsetBy: 2)..<end]
                guard inner.hasPrefix("hash:") else {
                    return "\(what) has `${\(inner)}`; a key may use ${hash:FILES} (and ${matrix.AXIS} in a matrix job)"
                }
                let globs = inner.dropFirst("hash:".count).split(separator: ",", omittingEmptySubsequences: false)
                for glob in globs {
                    if let problem = pathProblem(String(glob)) { return "\(what): the file '\(glob)' in ${hash:...} \(problem)" }
                }
                rest = rest[rest.index(after: end)...]
                continue
            }
            guard let character = rest.first, character.isASCII,
                  character.isLetter || character.isNumber || "._-/".contains(character) else {
                return "\(what) may have only letters, digits, . _ - / and ${hash:FILES}, not '\(rest.first.map(String.init) ?? "")'"
            }
            rest = rest.dropFirst()
        }
        return nil
    }

    /// Why `path` is not a relative path inside the workspace, or nil.
    public static func pathProblem(_ path: String) -> String? {
        if path.isEmpty || path.hasPrefix("/") || path.split(separator: "/").contains("..") || path.utf8.count > 255
            || path.contains("\0") || path.contains(where: \.isNewline) {
            return "must be a relative path inside the workspace (no leading /, no .., at most 255 bytes, one line)"
        }
        return nil
    }
}
