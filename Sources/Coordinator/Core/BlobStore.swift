import Crypto
import Foundation
import NIOPosix
import Wire

/// Artifact content on disk, addressed by SHA-256: `blobs/ab/abcd…`. An upload is written to
/// `uploads/N`, hashed as it arrives, fsynced, and renamed into place only once its size
/// and SHA-256 match what was declared. Blocking file work runs on a thread pool.
public final class BlobStore: Sendable {
    public let directory: String
    let pool: NIOThreadPool

    public init(directory: String, pool: NIOThreadPool = .singleton) throws {
        self.directory = directory
        self.pool = pool
        for sub in ["blobs", "uploads"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
    }

    /// Removes upload files no open upload owns (left by a crash).
    func removeUploads(except keep: Set<UInt64>) {
        for leftover in (try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/uploads")) ?? [] {
            if let id = UInt64(leftover), keep.contains(id) { continue }
            try? FileManager.default.removeItem(atPath: "\(directory)/uploads/\(leftover)")
        }
    }

    /// Reopens an upload that was in progress before a restart: its bytes so far are hashed
    /// again, and it continues from where it ended.
    func resumeUpload(id: UInt64) async throws -> Upload {
        let path = "\(directory)/uploads/\(id)"
        return try await pool.runIfActive {
            let upload = try Upload(path: path, truncate: false)
            let reader = open(path, O_RDONLY | O_CLOEXEC)
            guard reader >= 0 else { throw WireError(.internal, "cannot reopen upload \(id)") }
            defer { close(reader) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(reader, $0.baseAddress, $0.count) }
                if n < 0 { throw WireError(.internal, "cannot read upload \(id): \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                upload.hasher.update(data: buffer[0..<n])
                upload.received += Int64(n)
            }
            return upload
        }
    }

    func path(sha256: String) -> String {
        "\(directory)/blobs/\(sha256.prefix(2))/\(sha256)"
    }

    /// An upload in progress. Not thread-safe: its owner feeds it one chunk at a time.
    final class Upload: @unchecked Sendable {
        let path: String
        let fd: Int32
        var hasher = SHA256()
        var received: Int64 = 0

        init(path: String, truncate: Bool = true) throws {
            self.path = path
            fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : O_APPEND), 0o644)
            guard fd >= 0 else { throw WireError(.internal, "cannot create \(path): \(String(cString: strerror(errno)))") }
        }

        deinit { close(fd) }
    }

    func beginUpload(id: UInt64) async throws -> Upload {
        try Upload(path: "\(directory)/uploads/\(id)")
    }

    func write(_ data: [UInt8], to upload: Upload) async throws {
        try await pool.runIfActive {
            var written = 0
            while written < data.count {
                let n = data[written...].withUnsafeBytes { Glibc.write(upload.fd, $0.baseAddress, $0.count) }
                guard n > 0 else {
                    throw WireError(.internal, "cannot write an upload: \(String(cString: strerror(errno)))")
                }
                written += n
            }
            upload.hasher.update(data: data)
            upload.received += Int64(data.count)
        }
    }

    /// Verifies and stores the upload; returns its SHA-256 hex. Throws (and deletes the
    /// upload) when size or hash differ from what was declared.
    func commit(_ upload: Upload, size: Int64, sha256: String) async throws {
        let target = path(sha256: sha256)
        let directory = self.directory
        try await pool.runIfActive {
            defer { unlink(upload.path) }
            guard upload.received == size else {
                throw WireError.invalid("artifact has \(upload.received) bytes but \(size) were declared")
            }
            let actual = hex(upload.hasher.finalize())
            guard actual == sha256 else {
                throw WireError.invalid("artifact SHA-256 is \(actual) but \(sha256) was declared")
            }
            guard fsync(upload.fd) == 0 else {
                throw WireError(.internal, "cannot fsync an upload: \(String(cString: strerror(errno)))")
            }
            let parent = (target as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: target) { return }
            guard rename(upload.path, target) == 0 else {
                throw WireError(.internal, "cannot store an artifact: \(String(cString: strerror(errno)))")
            }
            for dir in [parent, "\(directory)/blobs"] {
                let dfd = open(dir, O_RDONLY | O_DIRECTORY)
                if dfd >= 0 { fsync(dfd); close(dfd) }
            }
        }
    }

    func discard(_ upload: Upload) {
        unlink(upload.path)
    }

    func read(sha256: String, offset: Int64, length: Int) async throws -> [UInt8] {
        let path = self.path(sha256: sha256)
        return try await pool.runIfActive {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw WireError(.internal, "artifact content \(sha256) is missing from the data directory") }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: length)
            var got = 0
            while got < length {
                let n = buffer[got...].withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset) + off_t(got)) }
                if n < 0 { throw WireError(.internal, "cannot read artifact content: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                got += n
            }
            return Array(buffer[..<got])
        }
    }
}
