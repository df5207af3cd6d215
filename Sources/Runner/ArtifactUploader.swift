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

    /// Regular files under the workspace matching `patterns`, as workspace-relative names.
    static func match(_ patterns: [String], in workspace: String) -> [String] {
        var names: [String] = []
        for pattern in patterns {
            var results = glob_t()
            defer { globfree(&results) }
            guard glob("\(workspace)/\(pattern)", 0, nil, &results) == 0 else { continue }
            for index in 0..<Int(results.gl_pathc) {
                guard let raw = results.gl_pathv[index] else { continue }
                let path = String(cString: raw)
                var info = stat()
                guard lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
                let name = String(path.dropFirst(workspace.count + 1))
                if !names.contains(name) { names.append(name) }
            }
        }
        return names
    }

    /// Uploads one file; returns the artifact id.
    func upload(name: String) async throws -> UInt64 {
        let path = "\(workspace)/\(name)"
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw RunnerError("cannot read artifact \(name)")
        }
        defer { try? handle.close() }
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
        while true {
            do {
                return try await attempt(declare, handle: handle)
            } catch where CoordinatorLink.isConnectionLoss(error) {
                _ = await link.current()  // declare again on the next connection
            }
        }
    }

    private func attempt(_ declare: Heddle_V1_ArtifactDeclare, handle: FileHandle) async throws -> UInt64 {
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
