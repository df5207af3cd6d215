import Crypto
import Foundation
import NIOPosix
import Synchronization
import Wire


/// Artifact content on disk, addressed by SHA-256: `blobs/ab/abcd…`. An upload is written to
/// `uploads/N`, hashed as it arrives, fsynced, and renamed into place only once its size
/// and SHA-256 match what was declared. Blocking file work runs on a thread pool.
public final class BlobStore: ArtifactStore {
    public let directory: String
    let pool: NIOThreadPool
    /// Chunk bytes of every upload accepted but not yet written and hashed.
    let inFlight = InFlightBytes()
    /// Past this, across all uploads, each upload waits for its own oldest chunk.
    static let maximumInFlight = 64 << 20

    public init(directory: String, pool: NIOThreadPool = .singleton) throws {
        self.directory = directory
        self.pool = pool
        for sub in ["blobs", "uploads"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
    }

    /// Removes upload files no open upload owns (left by a crash).
    public func removeUploads(except keep: Set<UInt64>) {
        for leftover in (try? FileManager.default.contentsOfDirectory(atPath: "\(directory)/uploads")) ?? [] {
            if let id = UInt64(leftover), keep.contains(id) { continue }
            try? FileManager.default.removeItem(atPath: "\(directory)/uploads/\(leftover)")
        }
    }

    /// Reopens an upload that was in progress before a restart: its bytes so far are hashed
    /// again, and it continues from where it ended.
    public func resumeUpload(id: UInt64) async throws -> any ArtifactUpload {
        let path = "\(directory)/uploads/\(id)"
        let pool = self.pool
        return try await pool.runIfActive {
            let reader = open(path, O_RDONLY | O_CLOEXEC)
            guard reader >= 0 else { throw CoordinatorError(.internal, "cannot reopen upload \(id)") }
            defer { close(reader) }
            var hasher = SHA256()
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var length: Int64 = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { Glibc.read(reader, $0.baseAddress, $0.count) }
                if n < 0 { throw CoordinatorError(.internal, "cannot read upload \(id): \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                hasher.update(data: buffer[0..<n])
                length += Int64(n)
            }
            return try Upload(path: path, pool: pool, inFlight: self.inFlight, length: length, hasher: hasher)
        }
    }

    func path(sha256: String) -> String {
        "\(directory)/blobs/\(sha256.prefix(2))/\(sha256)"
    }

    /// An upload in progress. Chunks are accepted in order by one owner (the core) and
    /// processed in the background: written by one chain of thread-pool work (through a
    /// `DirectFile`, which writes whole 1 MiB runs until the commit) and hashed by another,
    /// so hashing, writing and receiving the next chunks overlap. At most `window` bytes
    /// wait per upload, and `maximumInFlight` across uploads; past either `append` waits for
    /// the upload's oldest chunk (its session stops reading meanwhile). A write error is kept and
    /// reported by the next `append` or by `settle`. After a crash the file holds whole
    /// blocks only, and the upload resumes from there.
    final class Upload: ArtifactUpload, @unchecked Sendable {
        let path: String
        let file: DirectFile
        let pool: NIOThreadPool
        let inFlight: InFlightBytes
        let hasher: Mutex<SHA256>
        private let failure = Mutex<CoordinatorError?>(nil)
        /// Bytes accepted (queued or written). Only the owner touches it and `chunks`.
        private(set) var accepted: Int64
        private var chunks: [(write: Task<Void, Never>, hash: Task<Void, Never>, size: Int)] = []
        private var waiting = 0
        static let window = 16 << 20

        init(path: String, pool: NIOThreadPool, inFlight: InFlightBytes, length: Int64 = 0,
             hasher: SHA256 = SHA256()) throws {
            self.path = path
            self.pool = pool
            self.inFlight = inFlight
            self.file = try DirectFile(path: path, length: length, scratch: WriteScratch(capacity: 1 << 20))
            self.accepted = length
            self.hasher = Mutex(hasher)
        }

        public func append(_ data: Data) async throws {
            if let failure = failure.withLock({ $0 }) { throw failure }
            accepted += Int64(data.count)
            let previous = chunks.last
            inFlight.add(data.count)
            // The upload's: a chunk is written and hashed side by side on the thread pool,
            // each in order after the chunk before; at most `window` bytes of them are in
            // flight, and `settle` waits for them all before the upload is committed.
            let write = Task {
                await previous?.write.value
                do {
                    try await self.pool.runIfActive { try self.file.append(data) }
                } catch {
                    self.failure.withLock { $0 = $0 ?? (error as? CoordinatorError ?? CoordinatorError(.internal, "cannot write an upload: \(error)")) }
                }
            }
            let hash = Task {
                await previous?.hash.value
                _ = try? await self.pool.runIfActive { self.hasher.withLock { $0.update(data: data) } }
                await write.value
                self.inFlight.add(-data.count)  // written and hashed (whether or not anyone waits)
            }
            chunks.append((write, hash, data.count))
            waiting += data.count
            while waiting > Self.window || inFlight.total > BlobStore.maximumInFlight, !chunks.isEmpty {
                await settleOldest()
            }
        }

        private func settleOldest() async {
            let oldest = chunks.removeFirst()
            await oldest.write.value
            await oldest.hash.value
            waiting -= oldest.size
        }

        /// Waits until every accepted byte is written and hashed; throws a write error.
        public func settle() async throws {
            while !chunks.isEmpty { await settleOldest() }
            if let failure = failure.withLock({ $0 }) { throw failure }
        }
    }

    public func beginUpload(id: UInt64) async throws -> any ArtifactUpload {
        try Upload(path: "\(directory)/uploads/\(id)", pool: pool, inFlight: inFlight)
    }

    /// Verifies and stores the upload; returns its SHA-256 hex. Throws (and deletes the
    /// upload) when size or hash differ from what was declared.
    public func commit(_ upload: any ArtifactUpload, size: Int64, sha256: String) async throws {
        guard let upload = upload as? Upload else { throw CoordinatorError(.internal, "an upload from another store") }
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
                throw CoordinatorError.invalid("artifact has \(upload.accepted) bytes but \(size) were declared")
            }
            let actual = hex(upload.hasher.withLock { $0.finalize() })
            guard actual == sha256 else {
                throw CoordinatorError.invalid("artifact SHA-256 is \(actual) but \(sha256) was declared")
            }
            try upload.file.cut()
            try upload.file.sync()
            let parent = (target as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
            if FileManager.default.fileExists(atPath: target) { return }
            guard rename(upload.path, target) == 0 else {
                throw CoordinatorError(.internal, "cannot store an artifact: \(String(cString: strerror(errno)))")
            }
            for dir in [parent, "\(directory)/blobs"] {
                let dfd = open(dir, O_RDONLY | O_DIRECTORY)
                if dfd >= 0 { fsync(dfd); close(dfd) }
            }
        }
    }

    public func discard(_ upload: any ArtifactUpload) {
        if let upload = upload as? Upload { unlink(upload.path) }
    }

    public func remove(sha256: String) async {
        let path = self.path(sha256: sha256)
        _ = try? await pool.runIfActive { unlink(path) }
    }

    public func read(sha256: String, offset: Int64, length: Int) async throws -> [UInt8] {
        let path = self.path(sha256: sha256)
        return try await pool.runIfActive {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw CoordinatorError(.internal, "artifact content \(sha256) is missing from the data directory") }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: length)
            var got = 0
            while got < length {
                let n = buffer[got...].withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset) + off_t(got)) }
                if n < 0 { throw CoordinatorError(.internal, "cannot read artifact content: \(String(cString: strerror(errno)))") }
                if n == 0 { break }
                got += n
            }
            return Array(buffer[..<got])
        }
    }
}

/// A count of bytes shared by uploads.
final class InFlightBytes: Sendable {
    private let count = Mutex(0)

    var total: Int { count.withLock { $0 } }

    func add(_ bytes: Int) { count.withLock { $0 += bytes } }
}
