import Crypto
import Foundation
import Wire

/// Finds the files a node's artifact globs match and uploads each: declare (name, size,
/// SHA-256), send chunks without waiting for each (several in flight), commit. The
/// coordinator verifies size and hash before the artifact becomes visible. When the
/// connection drops, the upload is declared again on the next one and goes on from the
/// offset the coordinator holds.
struct ArtifactUploader {
    let link: CoordinatorLink
    let job: Heddle_V1_JobRef
    let workspace: String
    let chunkSize: Int

    /// What a node's artifact globs matched.
    struct Matches: Equatable {
        /// Regular files inside the workspace, as workspace-relative names, in glob order.
        var names: [String] = []
        /// Matches whose location, every symbolic link resolved, is outside the workspace:
        /// name and where it leads. Never uploaded.
        var outside: [(name: String, resolved: String)] = []

        static func == (a: Matches, b: Matches) -> Bool {
            a.names == b.names && a.outside.map(\.name) == b.outside.map(\.name)
                && a.outside.map(\.resolved) == b.outside.map(\.resolved)
        }
    }

    /// The files `patterns` match under the workspace. A match counts where it really is,
    /// with every symbolic link resolved (in the directories leading to it too): outside the
    /// workspace it is skipped, inside it is taken when it is a regular file.
    static func match(_ patterns: [String], in workspace: String) -> Matches {
        let root = resolved(workspace) ?? workspace
        var matches = Matches()
        var seen = Set<String>()
        for pattern in patterns {
            var results = glob_t()
            defer { globfree(&results) }
            guard glob("\(workspace)/\(pattern)", 0, nil, &results) == 0 else { continue }
            for index in 0..<Int(results.gl_pathc) {
                guard let raw = results.gl_pathv[index] else { continue }
                let path = String(cString: raw)
                let name = String(path.dropFirst(workspace.count + 1))
                guard seen.insert(name).inserted, let real = resolved(path) else { continue }
                guard isInside(real, root: root) else {
                    matches.outside.append((name, real))
                    continue
                }
                var info = stat()
                guard stat(real, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
                matches.names.append(name)
            }
        }
        return matches
    }

    static func resolved(_ path: String) -> String? {
        guard let real = realpath(path, nil) else { return nil }
        defer { free(real) }
        return String(cString: real)
    }

    static func isInside(_ path: String, root: String) -> Bool {
        path.hasPrefix(root.hasSuffix("/") ? root : root + "/")
    }

    /// Uploads one file; returns the artifact id.
    func upload(name: String) async throws -> UInt64 {
        let path = "\(workspace)/\(name)"
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw RunnerError("cannot read artifact \(name)")
        }
        defer { try? handle.close() }
        // What was opened, not what the name led to when matched: a link swapped in between
        // cannot take the upload out of the workspace.
        guard let opened = Self.resolved("/proc/self/fd/\(handle.fileDescriptor)"),
              Self.isInside(opened, root: Self.resolved(workspace) ?? workspace) else {
            throw RunnerError("artifact \(name) now leads outside the workspace")
        }
        var hasher = SHA256()
        var size: UInt64 = 0
        while let data = try handle.read(upToCount: chunkSize), !data.isEmpty {
            hasher.update(data: data)
            size += UInt64(data.count)
        }
        var declare = Heddle_V1_ArtifactDeclare()
        declare.job = job
        declare.name = name
        declare.size = size
        declare.sha256 = Data(hasher.finalize())
        var pause = Duration.seconds(1)
        while true {
            do {
                return try await attempt(declare, handle: handle)
            } catch where CoordinatorLink.isConnectionLoss(error) {
                _ = await link.current()  // declare again on the next connection
            } catch let error as WireError where error.code == .unavailable {
                // The coordinator's storage is full: declare again (it says from where) later.
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(30))
            }
        }
    }

    /// Uploads a job's cache archive (a file outside the workspace) as the cache of `key`;
    /// returns the cache's id (0: the coordinator had one of that key already).
    func uploadCache(archive path: String, key: String) async throws -> UInt64 {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw RunnerError("cannot read the cache archive \(path)") }
        defer { try? handle.close() }
        var hasher = SHA256()
        var size: UInt64 = 0
        while let data = try handle.read(upToCount: chunkSize), !data.isEmpty {
            hasher.update(data: data)
            size += UInt64(data.count)
        }
        var declare = Heddle_V1_ArtifactDeclare()
        declare.job = job
        declare.name = Self.cacheUploadName
        declare.size = size
        declare.sha256 = Data(hasher.finalize())
        while true {
            do {
                return try await attempt(declare, handle: handle, cacheKey: key)
            } catch where CoordinatorLink.isConnectionLoss(error) {
                _ = await link.current()
            }
        }
    }

    /// The name a cache's upload is declared under (its commit carries the key).
    static let cacheUploadName = ".heddle-cache.tar"

    private func attempt(_ declare: Heddle_V1_ArtifactDeclare, handle: FileHandle, cacheKey: String = "") async throws -> UInt64 {
        guard case .artifactDeclared(let declared) = try await link.request(.artifactDeclare(declare)).body else {
            throw RunnerError("the coordinator did not accept artifact \(declare.name)")
        }
        let connection = await link.current()
        try handle.seek(toOffset: declared.committedOffset)
        var offset = declared.committedOffset
        while offset < declare.size, let data = try handle.read(upToCount: chunkSize), !data.isEmpty {
            var chunk = Heddle_V1_ArtifactChunk()
            chunk.job = job
            chunk.uploadID = declared.uploadID
            chunk.offset = offset
            chunk.data = data.count + Int(offset) > Int(declare.size) ? data.prefix(Int(declare.size - offset)) : data
            try await connection.send(.artifactChunk(chunk))
            offset += UInt64(chunk.data.count)
        }
        var commit = Heddle_V1_ArtifactCommit()
        commit.job = job
        commit.uploadID = declared.uploadID
        commit.cacheKey = cacheKey
        let response: Envelope
        do {
            response = try await connection.request(.artifactCommit(commit))
        } catch where CoordinatorLink.isConnectionLoss(error) {
            await link.detach(connection)
            throw error
        }
        guard case .artifactCommitted(let committed) = response.body else {
            throw RunnerError("the coordinator did not commit artifact \(declare.name)")
        }
        return committed.artifactID
    }
}
