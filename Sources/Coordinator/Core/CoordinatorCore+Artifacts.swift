import Foundation

/// Artifacts: uploads from runners in chunks, resumable, checked by size and SHA-256; listing
/// and reading them back.
extension CoordinatorCore {
    /// Opens an upload (or resumes the one open for the same job, name, size and hash).
    public func declareArtifact(session: UInt64, _ declare: ArtifactDeclaration) async throws -> UploadGrant {
        _ = try lease(declare.job, session: session)
        return try await uploads.declare(jobID: declare.job.jobID, declare, maximumSize: limits.maximumArtifactSize)
    }

    /// The next bytes of an upload, at exactly the offset taken so far.
    public func artifactChunk(session: UInt64, _ chunk: ArtifactBytes) async throws {
        _ = try lease(chunk.job, session: session)
        try await uploads.append(chunk)
    }

    /// Checks the upload against its declaration and stores the artifact; returns its id.
    public func commitArtifact(session: UInt64, job ref: LeaseRef, uploadID: UInt64) async throws -> Int64 {
        _ = try lease(ref, session: session)
        let pending = try await uploads.storeBytes(uploadID: uploadID, jobID: ref.jobID)
        // Checked again after the await: the lease may have gone meanwhile.
        let job = try lease(ref, session: session)
        let record = try await heldHere(ref) {
            try await store.insertArtifact(jobID: pending.jobID, epoch: job.epoch, name: pending.name, size: pending.size,
                                           sha256: pending.sha256, now: Date.nowMilliseconds)
        }
        await uploads.recorded(uploadID: uploadID)
        CoreMetrics.artifactBytes.increment(by: Int(pending.size))
        CoreMetrics.artifactsStored.increment()
        logger.info("artifact stored", metadata: ["job.id": "\(pending.jobID)", "name": "\(pending.name)",
                                                  "size": "\(pending.size)", "run.id": "\(job.runID)"])
        return record.id
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
