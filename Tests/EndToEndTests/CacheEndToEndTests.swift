import Foundation
import TestSupport
import Testing

/// Jobs' caches through the real binaries: saved by one run, restored by the next and not
/// saved again, restored on another branch from the default one's, found by a `restore_keys`
/// prefix when the key changed, evicted least recently used first past `--cache-max-bytes`,
/// deleted by `heddle caches delete`.
@Suite struct CacheEndToEndTests {
    static func pipeline(key: String) -> String {
        """
        name: deps
        jobs:
          build:
            labels: [linux]
            cache:
              key: "\(key)"
              paths: [deps/]
              restore_keys: [deps-]
            nodes:
              install:
                run: |
                  if [ -f deps/lib.txt ]; then echo "restored: $(cat deps/lib.txt)"; else mkdir -p deps && echo "built in run $HEDDLE_RUN_ID" > deps/lib.txt && echo "built deps"; fi
        """
    }

    @Test func aCacheSavedByOneRunIsRestoredByTheNextAndNotSavedAgain() async throws {
        // Each archive here is one tar record (10,240 bytes): two do not fit in 15,000.
        let fabric = try await Fabric(runnerLabels: ["linux"], coordinatorArguments: ["--cache-max-bytes", "15000"])
        do {
            try await fabric.push("deps.act", Self.pipeline(key: "deps-v1-${hash:nothing.lock}"))
            func run(branch: String = "main") async throws -> (id: Int, log: String) {
                let triggered = try await fabric.json(["trigger", "shop/deps", "--branch", branch])
                let id = try #require((triggered as? [String: Any])?["run"] as? Int)
                let finished = try await fabric.waitForRun(id, ["succeeded", "failed"])
                #expect(summary(finished)["status"] as? String == "succeeded", "\(finished)")
                let log = try await fabric.heddle(["logs", String(id), "--job", "build", "--node", "install"])
                return (id, log.output)
            }
            func caches() async throws -> [[String: Any]] {
                try #require((try await fabric.json(["caches", "--json"]) as? [String: Any])?["caches"] as? [[String: Any]])
            }

            // Run 1 builds and saves.
            let first = try await run()
            #expect(first.log.contains("built deps"), "\(first.log)")
            let saved = try await caches()
            #expect(saved.count == 1 && saved.first?["branch"] as? String == "main" && saved.first?["hits"] as? Int == 0, "\(saved)")
            let key = try #require(saved.first?["key"] as? String)
            #expect(key.hasPrefix("deps-v1-") && key.count == "deps-v1-".count + 16, "\(key)")
            #expect(saved.first?["size"] as? Int == 10240)

            // Run 2 restores it (run 1's file) and saves nothing.
            let second = try await run()
            #expect(second.log.contains("restored: built in run \(first.id)"), "\(second.log)")
            var listed = try await caches()
            #expect(listed.count == 1 && listed.first?["hits"] as? Int == 1 && listed.first?["id"] as? Int == saved.first?["id"] as? Int)

            // Another branch restores the default branch's cache.
            let feature = try await run(branch: "feature")
            #expect(feature.log.contains("restored: built in run \(first.id)"), "\(feature.log)")
            listed = try await caches()
            #expect(listed.count == 1 && listed.first?["hits"] as? Int == 2, "\(listed)")

            // A new key: restored by the `deps-` prefix, then saved under the new key; the two
            // do not fit, and the older one (used least recently) goes.
            try await fabric.push("deps.act", Self.pipeline(key: "deps-v2"))
            let fourth = try await run()
            #expect(fourth.log.contains("restored: built in run \(first.id)"), "\(fourth.log)")
            listed = try await caches()
            #expect(listed.map { $0["key"] as? String } == ["deps-v2"], "\(listed)")
            let text = try await fabric.heddle(["caches"])
            #expect(text.output.contains("deps-v2") && text.output.contains("main"), "\(text.output)")

            // Deleted: the next run builds again, and saves again.
            let id = try #require(listed.first?["id"] as? Int)
            let deleted = try await fabric.heddle(["caches", "delete", String(id)])
            #expect(deleted.status == 0 && deleted.output.contains("deleted cache \(id)"), "\(deleted.output) \(deleted.error)")
            #expect(try await caches().isEmpty)
            let missing = try await fabric.heddle(["caches", "delete", String(id)])
            #expect(missing.status != 0 && missing.error.contains("cache \(id) does not exist"), "\(missing.error)")
            let fifth = try await run()
            #expect(fifth.log.contains("built deps"), "\(fifth.log)")
            #expect(try await caches().count == 1)
            // A viewer lists, and may not delete.
            let issued = try await fabric.heddle(["certs", "issue", "--dir", fabric.certs, "--role", "viewer", "--name", "watcher"])
            #expect(issued.status == 0, "\(issued.error)")
            #expect(try await fabric.heddle(["caches"], as: "watcher").status == 0)
            let refused = try await fabric.heddle(["caches", "delete", "1"], as: "watcher")
            #expect(refused.status != 0 && refused.error.contains("caches delete needs the admin role"), "\(refused.error)")
        } catch {
            Issue.record("\(error)\n\(fabric.logs)")
        }
        await fabric.stop()
    }
}
