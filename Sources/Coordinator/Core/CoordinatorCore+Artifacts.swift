import Foundation
import Wire

/// Artifacts: uploads from runners in chunks, resumable, checked by size and SHA-256; listing
/// and reading them back.
extension CoordinatorCore {
    /// Opens an upload (or resumes the one open for the same job, name, size and hash).
    public func declareArtifact(session: UInt64, _ declare: ArtifactDeclaration) async throws -> UploadGrant {
        _ = try lease(declare.job, session: session)
        try Self.validateArtifactName(declare.name)
        guard declare.sha256.count == 32 else {
            throw CoordinatorError.invalid("artifact '\(declare.name)': sha256 must be 32 bytes, got \(declare.sha256.count)")
        }
        guard Int64(clamping: declare.size) <= limits.maximumArtifactSize else {
            throw CoordinatorError(.resourceExhausted,
                                   "artifact '\(declare.name)' is \(declare.size) bytes; the limit is \(limits.maximumArtifactSize)")
        }
        let jobID = declare.job.jobID
        let sha = hex(declare.sha256)
        // The same artifact again (after a reconnect or a coordinator restart): resume it.
        if let (id, pending) = uploads.first(where: { $0.value.jobID == jobID && $0.value.name == declare.name }) {
            // Resumed from what is written, once the chunks still on their way are.
            if pending.size == Int64(declare.size) && pending.sha256 == sha, (try? await pending.upload.settle()) != nil,
               uploads[id] != nil {
                logger.info("upload resumed", metadata: ["job.id": "\(jobID)", "name": "\(declare.name)",
                                                         "offset": "\(pending.upload.accepted)"])
                return UploadGrant(uploadID: id, committedOffset: UInt64(pending.upload.accepted))
            }
            uploads[id] = nil
            artifactStore.discard(pending.upload)
        }
        let record = try await store.saveUpload(jobID: jobID, name: declare.name, size: Int64(declare.size),
                                                sha256: sha, now: Date.nowMilliseconds)
        let id = UInt64(record.id)
        let upload = try await artifactStore.beginUpload(id: id)
        uploads[id] = PendingUpload(jobID: jobID, name: declare.name, size: Int64(declare.size), sha256: sha, upload: upload)
        return UploadGrant(uploadID: id, committedOffset: 0)
    }

    /// Names are relative paths: no "..", no leading "/", no NUL, not empty.
    static func validateArtifactName(_ name: String) throws(CoordinatorError) {
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
    public func artifactChunk(session: UInt64, _ chunk: ArtifactBytes) async throws {
        _ = try lease(chunk.job, session: session)
        guard let pending = uploads[chunk.uploadID], pending.jobID == chunk.job.jobID else {
            throw CoordinatorError.notFound("upload \(chunk.uploadID) is not open for job \(chunk.job.jobID)")
        }
        guard !pending.bytesStored else {
            throw CoordinatorError.invalid("upload \(chunk.uploadID) is complete: commit it again")
        }
        guard Int64(chunk.offset) == pending.upload.accepted else {
            throw CoordinatorError.invalid("upload \(chunk.uploadID): chunk at \(chunk.offset), expected \(pending.upload.accepted)")
        }
        guard pending.upload.accepted + Int64(chunk.data.count) <= pending.size else {
            uploads[chunk.uploadID] = nil
            artifactStore.discard(pending.upload)
            try? await store.deleteUploads(ids: [Int64(chunk.uploadID)])
            throw CoordinatorError.invalid("artifact '\(pending.name)' is larger than the \(pending.size) bytes declared; upload discarded")
        }
        try await pending.upload.append(chunk.data)
    }

    /// Waits until the chunks of every open upload are stored (or failed).
    func settleUploads() async throws {
        for pending in uploads.values { try await pending.upload.settle() }
    }

    /// Checks the upload against its declaration and stores the artifact; returns its id.
    public func commitArtifact(session: UInt64, job ref: LeaseRef, uploadID: UInt64) async throws -> Int64 {
        let job = try lease(ref, session: session)
        guard let pending = uploads[uploadID], pending.jobID == ref.jobID else {
            throw CoordinatorError.notFound("upload \(uploadID) is not open for job \(ref.jobID)")
        }
        if !pending.bytesStored {
            uploads[uploadID] = nil
            do {
                try await artifactStore.commit(pending.upload, size: pending.size, sha256: pending.sha256)
            } catch {
                try? await store.deleteUploads(ids: [Int64(uploadID)])
                throw error
            }
            // Open again until the artifact is recorded: should the store fail to record it,
            // the runner's commit sent again records it without its bytes sent again.
            var stored = pending
            stored.bytesStored = true
            uploads[uploadID] = stored
        }
        let record = try await heldHere(ref) {
            try await store.insertArtifact(jobID: pending.jobID, epoch: job.epoch, name: pending.name, size: pending.size,
                                           sha256: pending.sha256, now: Date.nowMilliseconds)
        }
        uploads[uploadID] = nil
        do {
            try await store.deleteUploads(ids: [Int64(uploadID)])
        } catch {
            // The artifact is recorded; the upload's record goes with its job's.
            logger.warning("cannot delete an upload's record", metadata: ["upload.id": "\(uploadID)", "error": "\(error)"])
        }
        CoreMetrics.artifactBytes.increment(by: Int(pending.size))
        CoreMetrics.artifactsStored.increment()
        logger.info("artifact stored", metadata: ["job.id": "\(pending.jobID)", "name": "\(pending.name)",
                                                  "size": "\(pending.size)", "run.id": "\(job.runID)"])
        return record.id
    }

    func discardUploads(jobID: Int64) async {
        let ids = uploads.filter { $0.value.jobID == jobID }.map(\.key)
        guard !ids.isEmpty else { return }
        for id in ids {
            if let pending = uploads.removeValue(forKey: id) { artifactStore.discard(pending.upload) }
        }
        do {
            try await store.deleteUploads(ids: ids.map { Int64($0) })
        } catch {
            logger.error("cannot forget uploads", metadata: ["job.id": "\(jobID)", "error": "\(error)"])
        }
    }

    /// A run's artifacts, or (nil) the latest 1,000 of every run, oldest first.
    public func artifacts(runID: Int64?, as principal: Principal) async throws -> [ArtifactRecord] {
        try Authorization.check(principal, .listArtifacts)
        if let runID, try await store.run(id: runID) == nil { throw CoordinatorError.notFound("run \(runID) does not exist") }
        return try await store.artifacts(runID: runID)
    }

    /// A piece of an artifact's bytes (at most `limits.maximumArtifactChunk`); empty at its end.
    public func readArtifact(_ request: ArtifactRead, as principal: Principal) async throws -> ArtifactSlice {
        try Authorization.check(principal, .readArtifact)
        guard let artifact = try await store.artifact(id: request.artifactID) else {
            throw CoordinatorError.notFound("artifact \(request.artifactID) does not exist")
        }
        let length = min(request.length.flatMap { $0 > 0 ? $0 : nil } ?? limits.maximumArtifactChunk, limits.maximumArtifactChunk)
        let offset = min(max(0, request.offset), artifact.size)
        let bytes = try await artifactStore.read(sha256: artifact.sha256, offset: offset,
                                                 length: min(length, Int(artifact.size - offset)))
        return ArtifactSlice(artifact: artifact, offset: offset, data: Data(bytes))
    }
}

extension CoordinatorCore {
    /// Most artifacts one page of a search holds.
    public static let maximumArtifactsPerPage = 500

    /// One page of artifacts of every run matching the query (viewer), and whether more follow.
    public func searchArtifacts(_ query: ArtifactQuery, as principal: Principal) async throws -> (artifacts: [ArtifactRecord], more: Bool) {
        try Authorization.check(principal, .listArtifacts)
        var query = query
        guard (1...Self.maximumArtifactsPerPage).contains(query.limit) else {
            throw CoordinatorError.invalid("a page holds 1 to \(Self.maximumArtifactsPerPage) artifacts, not \(query.limit)")
        }
        guard query.offset >= 0 else { throw CoordinatorError.invalid("a search's offset is 0 or more") }
        if let name = query.name {
            guard !name.isEmpty, name.utf8.count <= 255 else { throw CoordinatorError.invalid("a name to search for has 1 to 255 bytes") }
        }
        if let prefix = query.sha256Prefix {
            let lowered = prefix.lowercased()
            guard (1...64).contains(lowered.count), lowered.allSatisfy({ $0.isHexDigit && $0.isASCII }) else {
                throw CoordinatorError.invalid("a SHA-256 prefix is 1 to 64 hex digits, not '\(prefix.prefix(70))'")
            }
            query.sha256Prefix = lowered
        }
        if let minimum = query.minimumSize, let maximum = query.maximumSize, minimum > maximum {
            throw CoordinatorError.invalid("the smallest size (\(minimum)) is larger than the largest (\(maximum))")
        }
        if (query.minimumSize ?? 0) < 0 || (query.maximumSize ?? 0) < 0 { throw CoordinatorError.invalid("sizes are 0 or more") }
        // One more than asked tells whether another page follows.
        query.limit += 1
        let found = try await store.searchArtifacts(query)
        return (Array(found.prefix(query.limit - 1)), found.count == query.limit)
    }
}

extension CoordinatorCore {
    /// One artifact (viewer).
    public func artifact(id: Int64, as principal: Principal) async throws -> ArtifactRecord {
        try Authorization.check(principal, .listArtifacts)
        guard let artifact = try await store.artifact(id: id) else { throw CoordinatorError.notFound("artifact \(id) does not exist") }
        return artifact
    }
}
