import Foundation

/// Artifacts from runners: uploads in chunks, resumable, checked by size and SHA-256, each
/// fenced by its job's lease (reading them back is the `Catalog`'s).
extension CoordinatorCore {
    /// Opens an upload (or resumes the one open for the same job, name, size and hash).
    public func declareArtifact(session: UInt64, _ declare: ArtifactDeclaration) async throws -> UploadGrant {
        try await jobs.checkLease(declare.job, session: session)
        return try await uploads.declare(jobID: declare.job.jobID, declare, maximumSize: limits.maximumArtifactSize)
    }

    /// The next bytes of an upload, at exactly the offset taken so far.
    public func artifactChunk(session: UInt64, _ chunk: ArtifactBytes) async throws {
        try await jobs.checkLease(chunk.job, session: session)
        try await uploads.append(chunk)
    }

    /// Checks the upload against its declaration and stores the artifact; returns its id.
    public func commitArtifact(session: UInt64, job ref: LeaseRef, uploadID: UInt64) async throws -> Int64 {
        try await jobs.checkLease(ref, session: session)
        let pending = try await uploads.storeBytes(uploadID: uploadID, jobID: ref.jobID)
        let (record, runID) = try await jobs.insertArtifact(pending, ref: ref, session: session)
        await uploads.recorded(uploadID: uploadID)
        CoreMetrics.artifactBytes.increment(by: Int(pending.size))
        CoreMetrics.artifactsStored.increment()
        logger.info("artifact stored", metadata: ["job.id": "\(pending.jobID)", "name": "\(pending.name)",
                                                  "size": "\(pending.size)", "run.id": "\(runID)"])
        return record.id
    }
}
