import Foundation
import Logging
import TestSupport
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

    /// A fork's pull request saves under `fork:BRANCH`, never the default branch's caches, even
    /// from a branch called `main`; every run reads `main`'s.
    @Test func aForksRunNeverWritesTheDefaultBranchsCaches() {
        var run = RunRecord(id: 1, project: "p", pipeline: "ci", pipelineVersionID: 1, branch: "main", status: .queued, attempt: 1,
                            trigger: "webhook", createdAt: 0)
        #expect(Caches.scope(of: run) == "main" && Caches.branches(of: run) == ["main"])
        run.fork = true
        #expect(Caches.scope(of: run) == "fork:main" && Caches.branches(of: run) == ["fork:main", "main"])
        run.branch = "feature"
        run.fork = false
        #expect(Caches.branches(of: run) == ["feature", "main"])
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

    /// Caches as the store keeps them: one per key and branch of a project, found by key then
    /// by prefix, in the run's branch then the default one; evicted least recently used first.
    @Test(arguments: StoreKind.allCases)
    func cachesAreFoundByKeyThenPrefixAndEvictedLeastRecentlyUsedFirst(kind: StoreKind) async throws {
        try await TestDatabase.with(kind) { database in
            let store = try await database.open()
            let a = try #require(try await store.saveCache(project: "shop", branch: "main", key: "deps-aaa", sha256: "a1", size: 100, now: 10))
            #expect(try await store.saveCache(project: "shop", branch: "main", key: "deps-aaa", sha256: "a2", size: 100, now: 11) == nil,
                    "one cache per key and branch")
            let b = try #require(try await store.saveCache(project: "shop", branch: "main", key: "deps-bbb", sha256: "b1", size: 100, now: 12))
            let f = try #require(try await store.saveCache(project: "shop", branch: "feature", key: "deps-fff", sha256: "f1", size: 100, now: 13))
            _ = try await store.saveCache(project: "other", branch: "main", key: "deps-zzz", sha256: "z1", size: 100, now: 14)

            // The exact key first, in the run's branch, then the default branch's.
            // The run's branch is searched whole (key, then prefixes) before the default one.
            #expect(try await store.findCache(project: "shop", branches: ["feature", "main"], key: "deps-aaa", prefixes: ["deps-"], now: 20)?.id == f.id)
            let exact = try await store.findCache(project: "shop", branches: ["main"], key: "deps-bbb", prefixes: [], now: 21)
            #expect(exact?.id == b.id && exact?.hits == 1 && exact?.lastUsedAt == 21)
            // A prefix: the most recently used of the branch's.
            let byPrefix = try await store.findCache(project: "shop", branches: ["main"], key: "deps-ccc", prefixes: ["nothing-", "deps-"], now: 22)
            #expect(byPrefix?.id == b.id, "deps-bbb was used last")
            // The run's branch before the default one; another project's never.
            #expect(try await store.findCache(project: "shop", branches: ["feature", "main"], key: "deps-ccc", prefixes: ["deps-"], now: 23)?.id == f.id)
            #expect(try await store.findCache(project: "shop", branches: ["fix", "main"], key: "deps-zzz", prefixes: [], now: 24) == nil)
            #expect(try await store.findCache(project: "shop", branches: ["fix", "main"], key: "deps-aaa", prefixes: [], now: 25)?.id == a.id)
            #expect(try await store.findCache(project: "shop", branches: ["main"], key: "none", prefixes: ["x"], now: 26) == nil)
            // A prefix is a prefix, not a pattern.
            #expect(try await store.findCache(project: "shop", branches: ["main"], key: "none", prefixes: ["deps_"], now: 27) == nil)

            #expect(try await store.caches(project: "shop").map(\.key) == ["deps-aaa", "deps-fff", "deps-bbb"])
            #expect(try await store.caches(project: nil).count == 4)
            let used = try await store.blobInUse(sha256: "b1"), unused = try await store.blobInUse(sha256: "nothing")
            #expect(used && !unused)

            // 400 bytes, at most 250 kept: the two least recently used go (deps-zzz, deps-bbb).
            let evicted = try await store.evictCaches(maximumBytes: 250)
            #expect(evicted.map(\.key).sorted() == ["deps-bbb", "deps-zzz"], "\(evicted.map(\.key))")
            #expect(try await store.caches(project: nil).map(\.key) == ["deps-aaa", "deps-fff"])
            #expect(try await store.evictCaches(maximumBytes: 250).isEmpty)
            #expect(try await store.deleteCache(id: f.id)?.key == "deps-fff")
            #expect(try await store.deleteCache(id: f.id) == nil)
            #expect(try await store.cache(id: a.id)?.key == "deps-aaa")

            // A job's cache definition is stored with it and comes back with the job.
            let source = "name: ci\njobs:\n  t:\n    cache: { key: \"k-${hash:a.lock}\", paths: [a], restore_keys: [k-] }\n    nodes:\n      n: { run: 'true' }\n  u:\n    nodes:\n      n: { run: 'true' }\n"
            let definition = try ActParser(file: "ci.act").parse(source)
            let version = try await store.savePipeline(project: "shop", definition: definition, source: source, now: 30)
            let (run, jobs) = try await store.createRun(version: version, definition: definition, branch: "main", commit: "",
                                                        trigger: "api", triggeredBy: "t", now: 31)
            #expect(jobs.map(\.cache) == [CacheDefinition(key: "k-${hash:a.lock}", paths: ["a"], restoreKeys: ["k-"]), nil])
            #expect(try await store.jobs(runID: run.id, attempt: 1).map(\.cache) == jobs.map(\.cache))
            let claimed = try await store.claimJobs([JobClaim(jobID: jobs[0].id, runner: "r", epoch: 1)], now: 32)
            #expect(claimed.first??.job.cache == jobs[0].cache)
        }
    }
}

/// What a runner may ask of the caches, and what it is refused.
@Suite struct CacheRequestTests {
    static let pipeline = """
        name: ci
        jobs:
          build:
            labels: [linux]
            cache: { key: deps, paths: [node_modules/] }
            nodes:
              install: { run: npm ci }
        """

    /// Keys that are not expanded keys, too many restore keys, reads of no length or over a
    /// chunk, another project's or another branch's cache, and a stale lease are refused with
    /// what is wrong; nothing is read or saved.
    @Test func aRunnersBadCacheRequestsAreRefused() async throws {
        try await TestDatabase.with(.sqlite) { database in
            let core = try CoordinatorCore(store: try await database.open(), directory: database.directory.path,
                                           logger: Logger(label: "test"))
            try await core.push("shop", Self.pipeline)
            _ = try await core.trigger("shop", "ci")
            let runner = RecordingOutbox()
            let session = try await core.connectRunner(runner)
            let job = LeaseRef(try await runner.assignment().job)
            let sha = String(repeating: "a", count: 64)
            let elsewhere = try #require(try await core.store.saveCache(project: "other", branch: "main", key: "deps", sha256: sha,
                                                                        size: 10, now: 1))
            let feature = try #require(try await core.store.saveCache(project: "shop", branch: "feature", key: "deps", sha256: sha,
                                                                      size: 10, now: 1))
            func refused(_ code: CoordinatorError.Code, _ fragment: String, _ call: () async throws -> Void) async {
                do {
                    try await call()
                    Issue.record("accepted; expected \(code) with '\(fragment)'")
                } catch let error as CoordinatorError {
                    #expect(error.code == code && error.message.contains(fragment), "\(error.code): \(error.message)")
                } catch {
                    Issue.record("unexpected \(error)")
                }
            }
            let caches = core.caches
            await refused(.invalidArgument, "cache key 'deps x'") {
                _ = try await caches.find(session: session, job: job, key: "deps x", restoreKeys: [])
            }
            await refused(.invalidArgument, "cache key ''") { _ = try await caches.find(session: session, job: job, key: "", restoreKeys: []) }
            await refused(.invalidArgument, "cache key") {
                _ = try await caches.find(session: session, job: job, key: String(repeating: "k", count: 257), restoreKeys: [])
            }
            await refused(.invalidArgument, "at most \(CacheDefinition.maximumRestoreKeys) restore keys") {
                _ = try await caches.find(session: session, job: job, key: "deps",
                                          restoreKeys: (0...CacheDefinition.maximumRestoreKeys).map { "p\($0)-" })
            }
            await refused(.invalidArgument, "restore key '../x%'") {
                _ = try await caches.find(session: session, job: job, key: "deps", restoreKeys: ["../x%"])
            }
            for length in [0, core.limits.maximumArtifactChunk + 1] {
                await refused(.invalidArgument, "a cache read is 1 to") {
                    _ = try await caches.read(session: session, job: job, cacheID: feature.id, offset: 0, length: length)
                }
            }
            await refused(.notFound, "cache \(elsewhere.id) does not exist for job \(job.jobID)") {
                _ = try await caches.read(session: session, job: job, cacheID: elsewhere.id, offset: 0, length: 10)
            }
            await refused(.notFound, "cache \(feature.id) does not exist for job \(job.jobID)") {
                _ = try await caches.read(session: session, job: job, cacheID: feature.id, offset: 0, length: 10)
            }
            await refused(.invalidArgument, "cache key 'a b'") {
                _ = try await caches.commit(session: session, job: job, uploadID: 1, key: "a b")
            }
            // A lease that is not the job's: refused before anything is looked up.
            let stale = LeaseRef(jobID: job.jobID, epoch: job.epoch + 1)
            await refused(.staleLease, "lease epoch \(stale.epoch) is no longer current") {
                _ = try await caches.find(session: session, job: stale, key: "deps", restoreKeys: [])
            }
            // Nothing was saved, and the job's own branch finds no cache (feature's is not main's).
            #expect(try await caches.find(session: session, job: job, key: "deps", restoreKeys: []) == nil)
            #expect(try await core.store.caches(project: "shop").map(\.id) == [feature.id])
        }
    }
}
