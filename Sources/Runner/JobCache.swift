import Crypto
import Foundation
import Logging
import Wire

/// A job's cache on the runner (`cache:` of its job): the key expanded in the workspace after
/// the checkout, the cache restored before the first node (a tar archive fetched in chunks,
/// its SHA-256 checked, unpacked into the workspace), and saved after every node succeeded
/// when no cache had the exact key. A cache that cannot be restored or saved is logged and
/// skipped: the job runs on without it.
struct JobCache {
    let spec: Heddle_V1_CacheSpec
    let link: CoordinatorLink
    let job: Heddle_V1_JobRef
    let workspace: String
    /// The archive's file, outside the workspace.
    let archive: String
    let chunkSize: Int
    let logger: Logger

    /// What the restore found.
    struct Restored {
        /// The expanded key.
        var key: String
        /// A cache with exactly that key was restored: nothing to save.
        var exact: Bool
    }

    /// `${hash:GLOB,...}` becomes the first 16 hex digits of the SHA-256 of every file the
    /// globs match in the workspace (by name, in name order: each name, a NUL, its bytes, a
    /// NUL); a glob matching nothing adds nothing.
    static func expand(_ template: String, in workspace: String) -> String {
        var out = ""
        var rest = Substring(template)
        while let start = rest.range(of: "${hash:") {
            out += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { return out + rest }
            let globs = rest[start.upperBound..<end].split(separator: ",").map(String.init)
            var hasher = SHA256()
            for name in ArtifactUploader.match(globs, in: workspace).names.sorted() {
                hasher.update(data: Data(name.utf8) + [0])
                if let handle = FileHandle(forReadingAtPath: "\(workspace)/\(name)") {
                    while let data = try? handle.read(upToCount: 1 << 20), !data.isEmpty { hasher.update(data: data) }
                    try? handle.close()
                }
                hasher.update(data: Data([0]))
            }
            out += hex(hasher.finalize()).prefix(16)
            rest = rest[rest.index(after: end)...]
        }
        return out + rest
    }

    func restore() async -> Restored {
        let key = Self.expand(spec.key, in: workspace)
        var request = Heddle_V1_CacheFindRequest()
        request.job = job
        request.key = key
        request.restoreKeys = spec.restoreKeys.map { Self.expand($0, in: workspace) }
        defer { try? FileManager.default.removeItem(atPath: archive) }
        do {
            guard case .cacheFound(let found) = try await link.request(.cacheFind(request)).body else {
                throw RunnerError("the coordinator did not answer the cache request")
            }
            guard found.found else {
                logger.info("no cache", metadata: ["key": "\(key)"])
                return Restored(key: key, exact: false)
            }
            let start = ContinuousClock.now
            try await fetch(found)
            _ = try await Checkout.tool("tar", ["-x", "-f", archive, "-C", workspace], in: workspace)
            logger.info("cache restored", metadata: ["key": "\(found.key)", "exact": "\(found.exact)", "bytes": "\(found.size)",
                                                     "seconds": "\(ContinuousClock.now - start)"])
            return Restored(key: key, exact: found.exact)
        } catch {
            logger.warning("cache not restored", metadata: ["key": "\(key)", "error": "\(error)"])
            return Restored(key: key, exact: false)
        }
    }

    /// The archive of `found`, in chunks, into `archive`; its size and SHA-256 checked.
    private func fetch(_ found: Heddle_V1_CacheFound) async throws {
        FileManager.default.createFile(atPath: archive, contents: nil)
        guard let handle = FileHandle(forWritingAtPath: archive) else { throw RunnerError("cannot write \(archive)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        var offset: UInt64 = 0
        while offset < found.size {
            var read = Heddle_V1_CacheReadRequest()
            read.job = job
            read.cacheID = found.cacheID
            read.offset = offset
            read.length = UInt32(min(UInt64(chunkSize), found.size - offset))
            guard case .cacheData(let data) = try await link.request(.cacheRead(read)).body, !data.data.isEmpty else {
                throw RunnerError("the cache ended at \(offset) of \(found.size) bytes")
            }
            hasher.update(data: data.data)
            try handle.write(contentsOf: data.data)
            offset += UInt64(data.data.count)
        }
        let sha = hex(hasher.finalize())
        guard sha == found.sha256 else { throw RunnerError("the cache's SHA-256 is \(sha), not \(found.sha256)") }
    }

    /// Archives the paths that exist and uploads them as the cache of `key`.
    func save(key: String) async {
        defer { try? FileManager.default.removeItem(atPath: archive) }
        let present = spec.paths.filter { FileManager.default.fileExists(atPath: "\(workspace)/\($0)") }
        guard !present.isEmpty else {
            logger.info("cache not saved: none of its paths exists", metadata: ["key": "\(key)"])
            return
        }
        do {
            _ = try await Checkout.tool("tar", ["-c", "-f", archive, "-C", workspace, "--"] + present, in: workspace)
            let uploader = ArtifactUploader(link: link, job: job, workspace: workspace, chunkSize: chunkSize)
            let id = try await uploader.uploadCache(archive: archive, key: key)
            logger.info("cache saved", metadata: ["key": "\(key)", "cache.id": "\(id)"])
        } catch {
            logger.warning("cache not saved", metadata: ["key": "\(key)", "error": "\(error)"])
        }
    }
}
