import Foundation


/// Linux's `O_DIRECT`, which Glibc's Swift module does not export (it needs `_GNU_SOURCE`).
#if arch(x86_64) || arch(i386)
let openDirect: Int32 = 0o40000
#elseif arch(arm64) || arch(arm)
let openDirect: Int32 = 0o200000
#else
let openDirect: Int32 = 0
#endif

/// An aligned buffer that `DirectFile`s gather bytes in before writing them. One writer at
/// a time: files that share one must be written by one thread at a time.
final class WriteScratch: @unchecked Sendable {
    let bytes: UnsafeMutableRawPointer
    let capacity: Int

    init(capacity: Int) {
        precondition(capacity > 0 && capacity % DirectFile.block == 0)
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, DirectFile.block, capacity) == 0, let memory else {
            fatalError("cannot allocate \(capacity) aligned bytes")
        }
        self.bytes = memory
        self.capacity = capacity
    }

    deinit { free(bytes) }
}

/// A file written front to back without the page cache (`O_DIRECT`). Appended bytes are
/// kept by reference until written, then gathered in an aligned `WriteScratch` and written
/// in large whole-block requests: storing a byte costs one copy in user space instead of a
/// copy into the page cache and its reclaim later. Where the file system refuses `O_DIRECT`
/// (tmpfs before Linux 6.6, some network file systems) the same writes go through the page
/// cache.
///
/// `flush` writes the last, partial block too, padded with zeros, so the file may be longer
/// than `length` until `cut`; the next write rewrites that block with what followed. Between
/// flushes only whole blocks reach the file. Not thread-safe: one owner at a time.
final class DirectFile {
    static let block = 4096
    let path: String
    let fd: Int32
    let direct: Bool
    let scratch: WriteScratch
    /// Bytes of the last, partial block (already on disk when flushed, padded).
    private let tail: UnsafeMutableRawPointer
    private var tailCount: Int
    /// File offset of the tail block, a multiple of `block`.
    private var tailStart: Int64
    /// Appended bytes not written yet, in order.
    private var pending: [Data] = []
    private var pendingCount = 0
    private(set) var length: Int64
    /// Whether bytes appended (or the tail) are not on disk yet.
    private var unwritten = false
    private var closed = false

    /// Opens `path` (created when missing) to append at `length`; anything past `length`
    /// is cut off. Appended bytes are written once they fill `scratch`, or on `flush`.
    /// `direct: false` writes through the page cache, as where `O_DIRECT` is refused.
    init(path: String, length: Int64 = 0, scratch: WriteScratch, direct wanted: Bool = true) throws {
        var direct = wanted && openDirect != 0
        var fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (direct ? openDirect : 0), 0o644)
        if fd < 0 && errno == EINVAL {
            fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
            direct = false
        }
        guard fd >= 0 else { throw Self.failure("open \(path)", errno) }
        var memory: UnsafeMutableRawPointer?
        guard posix_memalign(&memory, Self.block, Self.block) == 0, let memory else {
            Glibc.close(fd)
            throw CoordinatorError(.internal, "cannot allocate a write buffer for \(path)")
        }
        self.path = path
        self.fd = fd
        self.direct = direct
        self.scratch = scratch
        self.tail = memory
        self.length = length
        self.tailStart = length & ~Int64(Self.block - 1)
        self.tailCount = Int(length - tailStart)
        do {
            guard ftruncate(fd, off_t(length)) == 0 else { throw Self.failure("truncate \(path)", errno) }
            // The partial last block is read back, to be written again with what follows.
            if tailCount > 0 {
                let n = pread(fd, tail, Self.block, off_t(tailStart))
                guard n >= tailCount else { throw Self.failure("read \(path)", n < 0 ? errno : EIO) }
            }
        } catch {
            free(memory)
            Glibc.close(fd)
            throw error
        }
    }

    deinit {
        free(tail)
        if !closed { Glibc.close(fd) }
    }

    func append(_ data: Data) throws {
        guard !data.isEmpty else { return }
        pending.append(data)
        pendingCount += data.count
        unwritten = true
        length += Int64(data.count)
        if tailCount + pendingCount >= scratch.capacity { try write(padded: false) }
    }

    /// Writes every byte appended so far (the partial last block padded with zeros).
    func flush() throws {
        guard unwritten else { return }
        try write(padded: true)
    }

    func sync() throws {
        guard fdatasync(fd) == 0 else { throw Self.failure("sync \(path)", errno) }
    }

    /// Flushes and cuts the padding off; `sync` makes that durable.
    func cut() throws {
        try flush()
        guard ftruncate(fd, off_t(length)) == 0 else { throw Self.failure("truncate \(path)", errno) }
    }

    func close() {
        guard !closed else { return }
        closed = true
        Glibc.close(fd)
    }

    /// Gathers the tail block and the pending bytes in the scratch buffer and writes them in
    /// whole blocks; what is left of a partial block becomes the tail (written padded when
    /// `padded`).
    private func write(padded: Bool) throws {
        let scratch = self.scratch.bytes
        let capacity = self.scratch.capacity
        var start = tailStart
        var filled = tailCount
        scratch.copyMemory(from: tail, byteCount: tailCount)
        for data in pending {
            try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
                var offset = 0
                while offset < bytes.count {
                    let n = min(capacity - filled, bytes.count - offset)
                    (scratch + filled).copyMemory(from: bytes.baseAddress! + offset, byteCount: n)
                    filled += n
                    offset += n
                    if filled == capacity {
                        try writeOut(scratch, capacity, at: start)
                        start += Int64(capacity)
                        filled = 0
                    }
                }
            }
        }
        pending = []
        pendingCount = 0
        let whole = filled & ~(Self.block - 1)
        let rest = filled - whole
        if padded && rest > 0 {
            (scratch + filled).initializeMemory(as: UInt8.self, repeating: 0, count: Self.block - rest)
            try writeOut(scratch, whole + Self.block, at: start)
        } else if whole > 0 {
            try writeOut(scratch, whole, at: start)
        }
        tail.copyMemory(from: scratch + whole, byteCount: rest)
        tailStart = start + Int64(whole)
        tailCount = rest
        unwritten = !padded && rest > 0
    }

    private func writeOut(_ bytes: UnsafeMutableRawPointer, _ count: Int, at offset: Int64) throws {
        var written = 0
        while written < count {
            let n = pwrite(fd, bytes + written, count - written, off_t(offset) + off_t(written))
            guard n > 0 else { throw Self.failure("write \(path)", n < 0 ? errno : EIO) }
            written += n
        }
    }

    static func failure(_ what: String, _ code: Int32) -> CoordinatorError {
        if code == ENOSPC || code == EDQUOT {
            return CoordinatorError(.unavailable, "the coordinator's storage is full (cannot \(what): \(String(cString: strerror(code)))); send it again later")
        }
        return CoordinatorError(.internal, "cannot \(what): \(String(cString: strerror(code)))")
    }
}
