import Foundation
import Logging
import Wire

/// Artifact uploads from runners: open ones, by id, with their bytes in the artifact store
/// and their record in the store, resumable (after a reconnect, a coordinator restart, or a
/// job taken over from another coordinator), checked by size and SHA-256 before they become
/// artifacts. It owns the open uploads; the core checks a runner's lease before each call and
/// records the artifact (fenced by the job's epoch) once its bytes are stored.
actor ArtifactUploads {
    struct Upload {
        var jobID: Int64
        var name: String
        var size: Int64
        var sha256: String
        var upload: any ArtifactUpload
        /// Its bytes are stored under their SHA-256; only the artifact's record is missing (the
        /// store failed to take it, a database restarting say): a commit sent again records it.
        var bytesStored = false
    }

    private var open: [UInt64: Upload] = [:]
    private let store: any CoordinatorStore
    private let artifactStore: any ArtifactStore
    private let logger: Logger

    init(store: any CoordinatorStore, artifactStore: any ArtifactStore, logger: Logger) {
        self.store = store
        self.artifactStore = artifactStore
        self.logger = logger
    }

    /// Opens again the uploads of the jobs `keep` says, from the store (at start); the others
    /// are forgotten, their files removed.
    func recover(keep: (Int64) -> Bool) async throws {
        for record in try await store.uploads() {
            guard keep(record.jobID), let upload = try? await artifactStore.resumeUpload(id: UInt64(record.id)) else {
                try await store.deleteUploads(ids: [record.id])
                continue
            }
            open[UInt64(record.id)] = Upload(record, upload)
        }
        artifactStore.removeUploads(except: Set(open.keys))
    }

    /// Opens again the uploads of a job taken over, for its runner to resume them here.
    func load(jobID: Int64) async {
        do {
            for record in try await store.uploads() where record.jobID == jobID && open[UInt64(record.id)] == nil {
                let upload = try await artifactStore.resumeUpload(id: UInt64(record.id))
                open[UInt64(record.id)] = Upload(record, upload)
            }
        } catch {
            logger.warning("cannot open the uploads of a job taken over", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
    }

    /// Opens an upload (or resumes the one open for the same job, name, size and hash).
    func declare(jobID: Int64, _ declare: ArtifactDeclaration, maximumSize: Int64) async throws -> UploadGrant {
        try Self.validateName(declare.name)
        guard declare.sha256.count == 32 else {
            throw CoordinatorError.invalid("artifact '\(declare.name)': sha256 must be 32 bytes, got \(declare.sha256.count)")
        }
        guard Int64(clamping: declare.size) <= maximumSize else {
            throw CoordinatorError(.resourceExhausted, "artifact '\(declare.name)' is \(declare.size) bytes; the limit is \(maximumSize)")
        }
        let sha = hex(declare.sha256)
        // The same artifact again (after a reconnect or a coordinator restart): resume it.
        if let (id, pending) = open.first(where: { $0.value.jobID == jobID && $0.value.name == declare.name }) {
            // Resumed from what is written, once the chunks still on their way are.
            if pending.size == Int64(declare.size) && pending.sha256 == sha, (try? await pending.upload.settle()) != nil,
               open[id] != nil {
                logger.info("upload resumed", metadata: ["job.id": "\(jobID)", "name": "\(declare.name)",
                                                         "offset": "\(pending.upload.accepted)"])
                return UploadGrant(uploadID: id, committedOffset: UInt64(pending.upload.accepted))
            }
            open[id] = nil
            artifactStore.discard(pending.upload)
        }
        let record = try await store.saveUpload(jobID: jobID, name: declare.name, size: Int64(declare.size),
                                                sha256: sha, now: Date.nowMilliseconds)
        let id = UInt64(record.id)
        let upload = try await artifactStore.beginUpload(id: id)
        open[id] = Upload(jobID: jobID, name: declare.name, size: Int64(declare.size), sha256: sha, upload: upload)
        return UploadGrant(uploadID: id, committedOffset: 0)
    }

    /// Names are relative paths: no "..", no leading "/", no NUL, not empty.
    static func validateName(_ name: String) throws(CoordinatorError) {
        guard !name.isEmpty, name.utf8.count <= 1024 else {
            throw CoordinatorError.invalid("artifact name must be 1 to 1024 bytes")
        }
        guard !name.contains("\0") else { throw CoordinatorError.invalid("artifact name contains NUL") }
        guard !name.hasPrefix("/") else { throw CoordinatorError.invalid("artifact name '\(name)' is an absolute path") }
        guard !name.split(separator: "/", omittingEmptySubsequences: false).contains(where: { $0 == ".." || $0 == "." || $0.isEmpty }) else {
            throw CoordinatorError.invalid("artifact name '\(name)' must be a plain relative path (no '..', '.' or empty parts)")
        }
    }

    /// The next bytes of an upload, at exactly the offset taken so far. Bytes past the
    /// declared size discard the upload.
    func append(_ chunk: ArtifactBytes) async throws {
        guard let pending = open[chunk.uploadID], pending.jobID == chunk.job.jobID else {
            throw CoordinatorError.notFound("upload \(chunk.uploadID) is not open for job \(chunk.job.jobID)")
        }
        guard !pending.bytesStored else {
            throw CoordinatorError.invalid("upload \(chunk.uploadID) is complete: commit it again")
        }
        guard Int64(chunk.offset) == pending.upload.accepted else {
            throw CoordinatorError.invalid("upload \(chunk.uploadID): chunk at \(chunk.offset), expected \(pending.upload.accepted)")
        }
        guard pending.upload.accepted + Int64(chunk.data.count) <= pending.size else {
            open[chunk.uploadID] = nil
            artifactStore.discard(pending.upload)
            try? await store.deleteUploads(ids: [Int64(chunk.uploadID)])
            throw CoordinatorError.invalid("artifact '\(pending.name)' is larger than the \(pending.size) bytes declared; upload discarded")
        }
        try await pending.upload.append(chunk.data)
    }

    /// Checks an upload against its declaration and stores its bytes under their SHA-256
    /// (once); returns it, for the caller to record the artifact. It stays open until
    /// `recorded`: should the record fail, the commit sent again records it without its bytes
    /// sent again.
    func storeBytes(uploadID: UInt64, jobID: Int64) async throws -> Upload {
        guard let pending = open[uploadID], pending.jobID == jobID else {
            throw CoordinatorError.notFound("upload \(uploadID) is not open for job \(jobID)")
        }
        if pending.bytesStored { return pending }
        open[uploadID] = nil
        do {
            try await artifactStore.commit(pending.upload, size: pending.size, sha256: pending.sha256)
        } catch {
            try? await store.deleteUploads(ids: [Int64(uploadID)])
            throw error
        }
        var stored = pending
        stored.bytesStored = true
        open[uploadID] = stored
        return stored
    }

    /// The artifact of an upload is recorded: the upload is closed.
    func recorded(uploadID: UInt64) async {
        open[uploadID] = nil
        do {
            try await store.deleteUploads(ids: [Int64(uploadID)])
        } catch {
            // The artifact is recorded; the upload's record goes with its job's.
            logger.warning("cannot delete an upload's record", metadata: ["upload.id": "\(uploadID)", "error": "\(error)"])
        }
    }

    /// A job's lease ended: its open uploads are discarded.
    func discard(jobID: Int64) async {
        let ids = open.filter { $0.value.jobID == jobID }.map(\.key)
        guard !ids.isEmpty else { return }
        for id in ids {
            if let pending = open.removeValue(forKey: id) { artifactStore.discard(pending.upload) }
        }
        do {
            try await store.deleteUploads(ids: ids.map { Int64($0) })
        } catch {
            logger.error("cannot forget uploads", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
    }

    /// Waits until the chunks of every open upload are stored (or failed).
    func settle() async throws {
        for pending in open.values { try await pending.upload.settle() }
    }
}

extension ArtifactUploads.Upload {
    /// An upload opened again from its record (after a restart, or a job taken over).
    init(_ record: UploadRecord, _ upload: any ArtifactUpload) {
        self.init(jobID: record.jobID, name: record.name, size: record.size, sha256: record.sha256, upload: upload)
    }
}
