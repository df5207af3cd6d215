import Foundation
import Testing
@testable import Coordinator

/// A job's `cache:` in `.act` files.
@Suite struct CacheTests {
    @Test func aJobsCacheParsesWithMatrixValuesInItsKey() throws {
        let parsed = try ActParser(file: "ci.act").parse("""
            name: ci
            jobs:
              test:
                matrix: { node: ["18", "20"] }
                cache:
                  key: "deps-${matrix.node}-${hash:package-lock.json,sub/*.lock}"
                  paths: [node_modules/, .cache/npm]
                  restore_keys: ["deps-${matrix.node}-", deps-]
                nodes:
                  install: { run: npm ci }
              lint:
                nodes:
                  check: { run: "true" }
            """)
        #expect(parsed.jobs.map(\.cache) == [
            CacheDefinition(key: "deps-18-${hash:package-lock.json,sub/*.lock}", paths: ["node_modules/", ".cache/npm"],
                            restoreKeys: ["deps-18-", "deps-"]),
            CacheDefinition(key: "deps-20-${hash:package-lock.json,sub/*.lock}", paths: ["node_modules/", ".cache/npm"],
                            restoreKeys: ["deps-20-", "deps-"]),
            nil,
        ])
    }

    @Test func aBadCacheIsRefusedAtItsLine() {
        let cases: [(String, Int, String)] = [
            ("    cache: { paths: [a] }\n", 4, "has no `key`"),
            ("    cache: { key: k }\n", 4, "has no `paths`"),
            ("    cache: { key: \"a b\", paths: [a] }\n", 4, "may have only letters, digits, . _ - / and ${hash:FILES}, not ' '"),
            ("    cache: { key: \"k-${env:HOME}\", paths: [a] }\n", 4, "has `${env:HOME}`; a key may use ${hash:FILES}"),
            ("    cache: { key: \"k-${hash:../x}\", paths: [a] }\n", 4, "the file '../x' in ${hash:...} must be a relative path"),
            ("    cache: { key: \"k-${hash:x\", paths: [a] }\n", 4, "`${` without its closing `}`"),
            ("    cache: { key: k, paths: [/etc] }\n", 4, "the path '/etc' in `paths`"),
            ("    cache: { key: k, paths: [] }\n", 4, "lists 1 to 16 paths"),
            ("    cache: { key: k, paths: [a], restore_keys: [\"a b\"] }\n", 4, "a prefix in `restore_keys`"),
            ("    cache: { key: k, paths: [a], tag: x }\n", 4, "tag"),
            ("    cache: { key: \"\(String(repeating: "k", count: 201))\", paths: [a] }\n", 4, "has 1 to 200 bytes"),
        ]
        for (cache, line, says) in cases {
            let source = "name: ci\njobs:\n  t:\n" + cache + "    nodes:\n      n: { run: 'true' }\n"
            do {
                _ = try ActParser(file: "ci.act").parse(source)
                Issue.record("accepted: \(cache)")
            } catch {
                #expect(error.line == line && error.message.contains(says), "\(cache): \(error)")
            }
        }
    }
}
