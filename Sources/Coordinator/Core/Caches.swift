import Foundation
import Logging
import Wire

/// The cache a job restores, as the runner is told.
public struct CacheHit: Sendable, Equatable {
    public var entry: CacheEntryRecord
    /// Its key is the one asked for: the runner saves nothing after the job.
    public var exact: Bool
}

/// Jobs' caches (`cache:`): found and read by the runner of a job, saved by it through an
/// upload, listed and deleted by people. A job sees the caches of its project saved on its
/// run's branch, then those of `defaultBranch`. A part of the core (`CoordinatorCore.caches`)
/// over the store, the blobs and the job lifecycle (for the leases it checks).
public struct Caches: Sendable {
    let store: any CoordinatorStore
    let jobs: JobLifecycle
    let uploads: ArtifactUploads
    let artifactStore: any ArtifactStore
    let maximumBytes: Int64
    let maximumChunk: Int
    let logger: Logger

    /// The branch whose caches every branch's jobs may restore.
    public static let defaultBranch = "main"

    /// Where a run's job saves its cache: its branch, or for a pull request from a fork
    /// `fork:BRANCH` (a fork's branch may be called `main` too, and must not write the
    /// default branch's caches; no branch name has a `:`).
    static func scope(of run: RunRecord) -> String {
        run.fork ? "fork:\(run.branch)" : run.branch
    }

    /// Where a run's job finds caches: its own scope, then the default branch's.
    static func branches(of run: RunRecord) -> [String] {
        let own = scope(of: run)
        return own == defaultBranch ? [own] : [own, defaultBranch]
    }

    /// Why `key` is no expanded cache key (letters, digits, `. _ - /`, 1 to 256 bytes), or nil.
    static func expandedKeyProblem(_ key: String, _ what: String) -> String? {
        guard !key.isEmpty, key.utf8.count <= 256,
              key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-/".contains($0)) }) else {
            return "\(what) '\(key.prefix(64))' must be 1 to 256 letters, digits, . _ - or /"
        }
        return nil
    }

    /// The cache a job restores (its runner asks after the checkout), or nil.
    public func find(session: UInt64, job ref: LeaseRef, key: String, restoreKeys: [String]) async throws -> CacheHit? {
        let runID = try await jobs.leasedRun(ref, session: session)
        if let problem = Self.expandedKeyProblem(key, "cache key") { throw CoordinatorError.invalid(problem) }
        guard restoreKeys.count <= CacheDefinition.maximumRestoreKeys else {
            throw CoordinatorError.invalid("at most \(CacheDefinition.maximumRestoreKeys) restore keys")
        }
        for prefix in restoreKeys {
            if let problem = Self.expandedKeyProblem(prefix, "restore key") { throw CoordinatorError.invalid(problem) }
        }
        guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        guard let entry = try await store.findCache(project: run.project, branches: Self.branches(of: run), key: key,
                                                    prefixes: restoreKeys, now: Date.nowMilliseconds) else {
            return nil
        }
        logger.info("cache found", metadata: ["job.id": "\(ref.jobID)", "key": "\(entry.key)", "branch": "\(entry.branch)",
                                              "size": "\(entry.size)"])
        return CacheHit(entry: entry, exact: entry.key == key)
    }

    /// Bytes of a cache the job may restore (its project's, of its run's branch or the default one).
    public func read(session: UInt64, job ref: LeaseRef, cacheID: Int64, offset: UInt64, length: Int) async throws -> [UInt8] {
        let runID = try await jobs.leasedRun(ref, session: session)
        guard length >= 1, length <= maximumChunk else {
            throw CoordinatorError.invalid("a cache read is 1 to \(maximumChunk) bytes")
        }
        guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        guard let entry = try await store.cache(id: cacheID), entry.project == run.project,
              Self.branches(of: run).contains(entry.branch) else {
            throw CoordinatorError.notFound("cache \(cacheID) does not exist for job \(ref.jobID)")
        }
        guard offset <= UInt64(entry.size) else { return [] }
        return try await artifactStore.read(sha256: entry.sha256, offset: Int64(offset),
                                            length: min(length, Int(UInt64(entry.size) - offset)))
    }

    /// An upload committed as the job's cache under `key`: recorded for the run's project and
    /// branch unless a cache has that key there already; then the least recently used caches
    /// past `maximumBytes` (`--cache-max-bytes`) go. Returns the cache's id (0: one was there).
    func commit(session: UInt64, job ref: LeaseRef, uploadID: UInt64, key: String) async throws -> Int64 {
        if let problem = Self.expandedKeyProblem(key, "cache key") { throw CoordinatorError.invalid(problem) }
        let runID = try await jobs.leasedRun(ref, session: session)
        let stored = try await uploads.storeBytes(uploadID: uploadID, jobID: ref.jobID)
        let blob = CacheBlob(sha256: stored.sha256, size: stored.size)
        let id = try await recordCache(blob, key: key, runID: runID, ref: ref, session: session)
        await uploads.recorded(uploadID: uploadID)
        try await evict()
        return id
    }

    /// The bytes of a cache's upload, stored.
    struct CacheBlob: Sendable {
        var sha256: String
        var size: Int64
    }

    /// Records a cache of the run's project and scope; its id, or 0 when the key was there
    /// (then the bytes just stored go, unless something else has them).
    private func recordCache(_ blob: CacheBlob, key: String, runID: Int64, ref: LeaseRef, session: UInt64) async throws -> Int64 {
        guard let run = try await store.run(id: runID) else { throw CoordinatorError.notFound("run \(runID) does not exist") }
        try await jobs.checkLease(ref, session: session)
        let scope = Self.scope(of: run)
        let saved = try await store.saveCache(project: run.project, branch: scope, key: key, sha256: blob.sha256, size: blob.size,
                                              now: Date.nowMilliseconds)
        logger.info("cache saved", metadata: ["job.id": "\(ref.jobID)", "key": "\(key)", "branch": "\(scope)",
                                              "size": "\(blob.size)", "new": "\(saved != nil)"])
        guard let saved else {
            try await removeUnusedBlob(blob.sha256)
            return 0
        }
        return saved.id
    }

    /// The least recently used caches past `maximumBytes` (`--cache-max-bytes`) go, with their
    /// bytes (unless an artifact or another cache has the same).
    func evict() async throws {
        let evicted = try await store.evictCaches(maximumBytes: maximumBytes)
        for entry in evicted {
            try await removeUnusedBlob(entry.sha256)
            logger.info("cache evicted", metadata: ["project": "\(entry.project)", "branch": "\(entry.branch)",
                                                    "key": "\(entry.key)", "size": "\(entry.size)"])
        }
    }

    /// Removes the stored bytes of this SHA-256 unless an artifact or a cache has them.
    private func removeUnusedBlob(_ sha256: String) async throws {
        let used = try await store.blobInUse(sha256: sha256)
        if !used { await artifactStore.remove(sha256: sha256) }
    }

    /// Every cache (of `project` when given), most recently used first (viewer).
    public func list(project: String? = nil, as principal: Principal) async throws -> [CacheEntryRecord] {
        try Authorization.check(principal, .listCaches)
        if let project {
            try Catalog.validateProjectName(project)
            guard try await store.project(name: project) != nil else { throw CoordinatorError.notFound("project \(project) does not exist") }
        }
        return try await store.caches(project: project)
    }

    /// Deletes a cache and its bytes (unless an artifact or another cache has the same); admin.
    public func delete(id: Int64, as principal: Principal) async throws -> CacheEntryRecord {
        try Authorization.check(principal, .deleteCache)
        guard let entry = try await store.deleteCache(id: id) else { throw CoordinatorError.notFound("cache \(id) does not exist") }
        try await removeUnusedBlob(entry.sha256)
        logger.info("cache deleted", metadata: ["project": "\(entry.project)", "key": "\(entry.key)", "by": "\(principal.name)"])
        return entry
    }
}
