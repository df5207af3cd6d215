import Crypto
import Foundation
import Wire

/// Finds the files a node's artifact globs match and uploads each: declare (name, size,
/// SHA-256), send chunks without waiting for each (several in flight), commit. The
/// coordinator verifies size and hash before the artifact becomes visible.
struct ArtifactUploader {
    let connection: HeddleConnection
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
        guard case .artifactDeclared(let declared) = try await connection.request(.artifactDeclare(declare)).body else {
            throw RunnerError("the coordinator did not accept artifact \(name)")
        }
        try handle.seek(toOffset: declared.committedOffset)
        var offset = declared.committedOffset
        while offset < size, let data = try handle.read(upToCount: chunkSize), !data.isEmpty {
            var chunk = Heddle_V1_ArtifactChunk()
            chunk.job = job
            chunk.uploadID = declared.uploadID
            chunk.offset = offset
            chunk.data = data.count + Int(offset) > Int(size) ? data.prefix(Int(size - offset)) : data
            try await connection.send(.artifactChunk(chunk))
            offset += UInt64(chunk.data.count)
        }
        var commit = Heddle_V1_ArtifactCommit()
        commit.job = job
        commit.uploadID = declared.uploadID
        guard case .artifactCommitted(let committed) = try await connection.request(.artifactCommit(commit)).body else {
            throw RunnerError("the coordinator did not commit artifact \(name)")
        }
        return committed.artifactID
    }
}
