import Crypto
import Foundation
import NIOPosix
import Synchronization
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
        let pool = self.pool
        return try await pool.runIfActive {
            let upload = try Upload(path: path, pool: pool, truncate: false)
            let reader = open(path, O_RDONLY | O_CLOEXEC)
            guard reader >= 0 else { throw WireError(.internal, "cannot reopen upload \(id)") }
            defer { close(reader) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var length: Int64 = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(reader, $0.baseAddress, $0.count) }
                if n < 0 { throw WireError(.internal, "cannot read upload \(id): \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                upload.hasher.withLock { $0.update(data: buffer[0..<n]) }
                length += Int64(n)
            }
            upload.resume(at: length)
            return upload
        }
    }

    func path(sha256: String) -> String {
        "\(directory)/blobs/\(sha256.prefix(2))/\(sha256)"
    }

    /// An upload in progress. Chunks are accepted in order by one owner (the core) and
    /// processed in the background: written by one chain of thread-pool work and hashed by
    /// another, so hashing, writing and receiving the next chunks overlap. At most `window`
    /// bytes wait; past that `append` waits for the oldest chunk. A write error is kept and
    /// reported by the next `append` or by `settle`.
    final class Upload: @unchecked Sendable {
        let path: String
        let fd: Int32
        let pool: NIOThreadPool
        let hasher = Mutex(SHA256())
        private let failure = Mutex<WireError?>(nil)
        /// Bytes accepted (queued or written). Only the owner touches it and `chunks`.
        private(set) var accepted: Int64 = 0
        private var chunks: [(write: Task<Void, Never>, hash: Task<Void, Never>, size: Int)] = []
        private var waiting = 0
        static let window = 16 << 20

        init(path: String, pool: NIOThreadPool, truncate: Bool = true) throws {
            self.path = path
            self.pool = pool
            fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o644)
            guard fd >= 0 else { throw WireError(.internal, "cannot create \(path): \(String(cString: strerror(errno)))") }
        }

        deinit { close(fd) }

        func resume(at length: Int64) { accepted = length }

        func append(_ data: Data) async throws {
            if let failure = failure.withLock({ $0 }) { throw failure }
            let offset = accepted
            accepted += Int64(data.count)
            let previous = chunks.last
            let fd = self.fd
            let write = Task {
                await previous?.write.value
                do {
                    try await self.pool.runIfActive {
                        var written = 0
                        while written < data.count {
                            let n = data.withUnsafeBytes {
                                pwrite(fd, $0.baseAddress! + written, data.count - written, off_t(offset) + off_t(written))
                            }
                            guard n > 0 else {
                                throw WireError(.internal, "cannot write an upload: \(String(cString: strerror(errno)))")
                            }
                            written += n
                        }
                        // Start writing it back now, so the fsync at commit has little left to do.
                        startWriteback(fd, offset: Int64(offset), length: Int64(data.count))
                    }
                } catch {
                    self.failure.withLock { $0 = $0 ?? (error as? WireError ?? WireError(.internal, "cannot write an upload: \(error)")) }
                }
            }
            let hash = Task {
                await previous?.hash.value
                _ = try? await self.pool.runIfActive { self.hasher.withLock { $0.update(data: data) } }
            }
            chunks.append((write, hash, data.count))
            waiting += data.count
            while waiting > Self.window, !chunks.isEmpty {
                let oldest = chunks.removeFirst()
                await oldest.write.value
                await oldest.hash.value
                waiting -= oldest.size
            }
        }

        /// Waits until every accepted byte is written and hashed; throws a write error.
        func settle() async throws {
            let pending = chunks
            chunks = []
            waiting = 0
            for chunk in pending {
                await chunk.write.value
                await chunk.hash.value
            }
            if let failure = failure.withLock({ $0 }) { throw failure }
        }
    }

    func beginUpload(id: UInt64) async throws -> Upload {
        try Upload(path: "\(directory)/uploads/\(id)", pool: pool)
    }

    /// Verifies and stores the upload; returns its SHA-256 hex. Throws (and deletes the
    /// upload) when size or hash differ from what was declared.
    func commit(_ upload: Upload, size: Int64, sha256: String) async throws {
        let target = path(sha256: sha256)
        let directory = self.directory
        do {
            try await upload.settle()
        } catch {
            unlink(upload.path)
            throw error
        }
        try await pool.runIfActive {
            defer { unlink(upload.path) }
            guard upload.accepted == size else {
                throw WireError.invalid("artifact has \(upload.accepted) bytes but \(size) were declared")
            }
            let actual = hex(upload.hasher.withLock { $0.finalize() })
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

/// Asks the kernel to start writing a range of a file back to disk without waiting for it
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so a later fsync has little left to do and
/// the disk works while more bytes arrive. Glibc's module does not export it (it needs
/// `_GNU_SOURCE`), so it is looked up once; where it is missing this does nothing.
func startWriteback(_ fd: Int32, offset: Int64, length: Int64) {
    syncFileRange?(fd, offset, length, 2 /* SYNC_FILE_RANGE_WRITE */)
}

private let syncFileRange: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32)? = {
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sync_file_range") else { return nil }
    return unsafeBitCast(symbol, to: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32).self)
}()
