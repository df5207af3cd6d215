import Foundation

/// An artifact upload in progress: chunks are appended in order by one owner (the core).
public protocol ArtifactUpload: AnyObject, Sendable {
    /// Bytes taken so far (appended, perhaps not yet written).
    var accepted: Int64 { get }
    /// Takes the next chunk; may wait while too many bytes are on their way to storage. Throws
    /// a write error of an earlier chunk.
    func append(_ data: Data) async throws
    /// Waits until every accepted byte is stored; throws a write error.
    func settle() async throws
}

/// Where artifact bytes live, addressed by SHA-256. An upload becomes content only once its
/// size and hash match what was declared. `BlobStore` (files in the data directory) is the
/// implementation today.
public protocol ArtifactStore: Sendable {
    func beginUpload(id: UInt64) async throws -> any ArtifactUpload
    /// Reopens an upload left open by a restart; it continues from its stored bytes.
    func resumeUpload(id: UInt64) async throws -> any ArtifactUpload
    /// Checks size and hash and stores the content; throws (and drops the upload) when they differ.
    func commit(_ upload: any ArtifactUpload, size: Int64, sha256: String) async throws
    /// Drops an upload's bytes.
    func discard(_ upload: any ArtifactUpload)
    /// Removes uploads other than these (left by a crash).
    func removeUploads(except keep: Set<UInt64>)
    func read(sha256: String, offset: Int64, length: Int) async throws -> [UInt8]
    /// Removes the stored content of this SHA-256 (nothing when there is none).
    func remove(sha256: String) async
}
