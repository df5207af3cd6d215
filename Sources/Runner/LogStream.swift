import Foundation
import Wire

/// One node's log on its way to the coordinator. Bytes are kept from the last offset the
/// coordinator acknowledged as durable until it does: in memory up to `memoryLimit`, then in
/// a spool file, up to `diskLimit`, past which `append` waits (and so does the node, whose
/// pipe fills). On each new connection everything unacknowledged is sent again; the coordinator
/// drops what it already has. A node's end goes after its last byte on the same connection
/// (`flush(to:)`), so a follower sees the end after the node's last output.
actor LogStream {
    let job: Heddle_V1_JobRef
    let node: String
    let link: CoordinatorLink
    private var spool: SpoolBuffer
    private var acked: UInt64 = 0
    private var end: UInt64 = 0
    /// When the bytes from each offset on were read (Unix milliseconds): one mark per read
    /// that comes 100 ms or more after the last, kept from the last one at or before `acked`.
    private var marks: [Heddle_V1_LogTime] = []
    private var sent: UInt64 = 0
    /// The connection `sent` counts bytes written to: on another one, sending starts again
    /// from `acked`. (A reference, not an `ObjectIdentifier`: a new connection may take the
    /// address of the one it replaces.)
    private var sentOn: HeddleConnection?
    /// `flush(to:)` callers waiting for a pump to end.
    private var flushWaiters: [CheckedContinuation<Void, Never>] = []
    private var pumping = false
    private var abandoned = false
    private var ackWaiters: [(UInt64, CheckedContinuation<Void, Never>)] = []
    /// While the coordinator cannot store bytes (its storage is full): nothing is sent before
    /// this, and the pause doubles at each refusal, up to 30 s.
    private var pausedUntil: ContinuousClock.Instant?
    private var pause = Duration.seconds(1)
    /// Pumps again when the pause ends.
    private var resume: Task<Void, any Error>?

    /// The largest chunk sent: what is waiting goes in one frame, up to this, or half the
    /// coordinator's frame limit when that is smaller. Big chunks when a node writes fast
    /// keep the per-frame cost small; a slow writer's bytes still go out as they come.
    static let chunkSize = 1 << 20

    init(job: Heddle_V1_JobRef, node: String, link: CoordinatorLink, spoolPath: String,
         memoryLimit: Int = 4 << 20, diskLimit: Int64 = 256 << 20) {
        self.job = job
        self.node = node
        self.link = link
        self.spool = SpoolBuffer(path: spoolPath, memoryLimit: memoryLimit, diskLimit: diskLimit)
    }

    func append(_ data: Data) async {
        guard !abandoned else { return }
        while spool.isFull && !abandoned {
            await waitAcked(upTo: acked + 1)
        }
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        if marks.last.map({ now >= $0.atMs + 100 }) ?? true {
            var mark = Heddle_V1_LogTime()
            mark.offset = end
            mark.atMs = now
            marks.append(mark)
        }
        spool.append(data)
        end += UInt64(data.count)
        await pump()
    }

    private var paused: Bool {
        if let pausedUntil, ContinuousClock.now < pausedUntil { return true }
        return false
    }

    /// Sends what was not sent on the current connection yet.
    private func pump() async {
        guard !pumping, !paused else { return }
        pumping = true
        defer {
            pumping = false
            let waiting = flushWaiters
            flushWaiters = []
            for waiter in waiting { waiter.resume() }
        }
        while !abandoned {
            guard let connection = await link.live else { return }
            if sentOn !== connection {
                sentOn = connection
                sent = acked
            }
            guard sent < end else { return }
            let from = sent
            let limit = min(Self.chunkSize, max(4096, Int(connection.welcome.maxFrameBytes) / 2))
            let bytes = spool.read(from: from - acked, count: Int(min(UInt64(limit), end - from)))
            var append = Heddle_V1_LogAppend()
            append.job = job
            append.node = node
            append.offset = from
            append.data = bytes
            // The marks in the chunk, the one in force at its start first.
            let upTo = from + UInt64(bytes.count)
            if let current = marks.last(where: { $0.offset <= from }) {
                var first = current
                first.offset = from
                append.times = [first] + marks.filter { $0.offset > from && $0.offset < upTo }
            }
            sent = from + UInt64(bytes.count)
            do {
                try await connection.send(.logAppend(append))
            } catch {
                sent = acked  // sent again on the next connection
                sentOn = nil
                return
            }
        }
    }

    /// Returns once every byte appended so far was handed to `connection` (or acknowledged),
    /// so that what is sent on it next comes after them; false when they cannot go on it (it
    /// closed, or the runner moved to another connection).
    func flush(to connection: HeddleConnection) async -> Bool {
        while !abandoned && acked < end {
            if connection.isClosed { return false }
            if !pumping && sentOn === connection && sent == end { return true }
            if pumping || paused {
                await withCheckedContinuation { flushWaiters.append($0) }
                continue
            }
            await pump()
            if sentOn !== connection { return false }
        }
        return true
    }

    /// The coordinator stored the bytes up to `offset`; with `resend`, the ones after it were
    /// not stored: they go again from `offset` after a pause.
    func acknowledged(_ offset: UInt64, resend: Bool = false) {
        if resend {
            if offset > acked && offset <= end { advance(to: offset) }
            sent = acked
            let wait = pause
            pause = min(pause * 2, .seconds(30))
            pausedUntil = ContinuousClock.now.advanced(by: wait)
            // The stream's one timer: sending resumes when the pause ends (or never, once
            // the stream is abandoned).
            resume?.cancel()
            resume = Task {
                try await Task.sleep(for: wait)
                await self.pump()
            }
            return
        }
        pause = .seconds(1)
        guard offset > acked, offset <= end else { return }
        advance(to: offset)
    }

    private func advance(to offset: UInt64) {
        spool.drop(Int(offset - acked))
        acked = offset
        if let keep = marks.lastIndex(where: { $0.offset <= offset }), keep > 0 { marks.removeFirst(keep) }
        let ready = ackWaiters.filter { $0.0 <= acked }
        ackWaiters.removeAll { $0.0 <= acked }
        for (_, waiter) in ready { waiter.resume() }
    }

    /// After a reconnect: sends again from the acknowledged offset on the new connection.
    func replay() async {
        await pump()
    }

    /// Returns once every byte appended so far is durable at the coordinator.
    func waitDurable() async {
        await waitAcked(upTo: end)
    }

    /// Sends nothing more and releases whoever waits for acknowledgements.
    func abandon() {
        abandoned = true
        resume?.cancel()
        let waiting = ackWaiters
        ackWaiters = []
        for (_, waiter) in waiting { waiter.resume() }
        let flushing = flushWaiters
        flushWaiters = []
        for waiter in flushing { waiter.resume() }
        spool.remove()
    }

    private func waitAcked(upTo offset: UInt64) async {
        guard acked < offset && !abandoned else { return }
        await withCheckedContinuation { ackWaiters.append((offset, $0)) }
    }

    func close() {
        spool.remove()
    }
}

/// Bytes not yet acknowledged: memory first, then a file.
struct SpoolBuffer {
    let path: String
    let memoryLimit: Int
    let diskLimit: Int64
    private var memory: [UInt8] = []
    private var memoryStart = 0
    private var file: FileHandle?
    /// Bytes in the file before the first unacknowledged one.
    private var fileSkip: Int64 = 0
    private var fileLength: Int64 = 0

    init(path: String, memoryLimit: Int, diskLimit: Int64) {
        self.path = path
        self.memoryLimit = memoryLimit
        self.diskLimit = diskLimit
    }

    var count: Int { file == nil ? memory.count - memoryStart : Int(fileLength - fileSkip) }

    var isFull: Bool { file != nil && fileLength - fileSkip >= diskLimit }

    mutating func append(_ data: Data) {
        if file == nil && memory.count - memoryStart + data.count > memoryLimit {
            FileManager.default.createFile(atPath: path, contents: nil)
            file = FileHandle(forUpdatingAtPath: path)
            if let file {
                try? file.write(contentsOf: Data(memory[memoryStart...]))
                fileSkip = 0
                fileLength = Int64(memory.count - memoryStart)
                memory = []
                memoryStart = 0
            }
        }
        if let file {
            try? file.seekToEnd()
            try? file.write(contentsOf: data)
            fileLength += Int64(data.count)
        } else {
            memory.append(contentsOf: data)
        }
    }

    /// `count` bytes starting `offset` bytes after the first unacknowledged one.
    func read(from offset: UInt64, count: Int) -> Data {
        if let file {
            try? file.seek(toOffset: UInt64(fileSkip) + offset)
            return (try? file.read(upToCount: count)) ?? Data()
        }
        let start = memoryStart + Int(offset)
        return Data(memory[start..<min(start + count, memory.count)])
    }

    /// Forgets the first `count` bytes (acknowledged).
    mutating func drop(_ count: Int) {
        if file != nil {
            fileSkip += Int64(count)
            if fileSkip >= fileLength { remove() }
            return
        }
        memoryStart += count
        if memoryStart > 1 << 20 && memoryStart * 2 > memory.count {
            memory.removeFirst(memoryStart)
            memoryStart = 0
        }
    }

    mutating func remove() {
        if let file {
            try? file.close()
            try? FileManager.default.removeItem(atPath: path)
        }
        file = nil
        fileSkip = 0
        fileLength = 0
        memory = []
        memoryStart = 0
    }
}
