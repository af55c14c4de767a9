import Foundation
import Crypto
import UpgradeCore
import UpgradeFiles

/// The node's local, verified copy of what the server published:
///
///     DIR/metadata/{root,timestamp,snapshot,targets}.json   last trusted metadata
///     DIR/blobs/<sha256 hex>                                 verified content
///     DIR/tmp/                                               downloads in progress
///
/// Metadata is written atomically (temp file, fsync, rename, fsync dir).
/// Content is verified when downloaded and again, by hashing, the first time
/// this process opens it, so a cache damaged by a crash is never served.
public struct NodeCache: Sendable {
    public let directory: URL

    public init(directory: URL) throws(MountError) {
        self.directory = directory
        for sub in ["metadata", "blobs", "tmp"] {
            do {
                try FileManager.default.createDirectory(
                    at: directory.appending(path: sub), withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o700])
            } catch {
                throw MountError.cache("cannot create \(directory.appending(path: sub).path): \(error.localizedDescription)")
            }
        }
        // Downloads interrupted by a crash are garbage.
        if let leftovers = try? FileManager.default.contentsOfDirectory(atPath: tmpDirectory.path) {
            for name in leftovers { try? FileManager.default.removeItem(at: tmpDirectory.appending(path: name)) }
        }
    }

    var tmpDirectory: URL { directory.appending(path: "tmp") }

    public func blobPath(sha256: String) -> String {
        directory.appending(path: "blobs").appending(path: sha256).path
    }

    public func metadata(_ role: String) -> [UInt8]? {
        guard let data = FileManager.default.contents(atPath: metadataURL(role).path) else { return nil }
        return [UInt8](data)
    }

    public func storeMetadata(_ role: String, _ bytes: [UInt8]) throws {
        try POSIXFiles.writeAtomically(bytes, to: metadataURL(role).path)
    }

    public func removeMetadata(_ role: String) {
        try? FileManager.default.removeItem(at: metadataURL(role))
    }

    private func metadataURL(_ role: String) -> URL {
        directory.appending(path: "metadata").appending(path: "\(role).json")
    }

    /// A fresh temporary file for a download, opened for writing.
    func makeTemporaryFile() throws -> (path: String, fd: Int32) {
        let path = tmpDirectory.appending(path: UUID().uuidString).path
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return (path, fd)
    }

    /// Hashes a cached blob and checks it against its expected length and hash.
    func blobIsIntact(sha256 expected: String, length: Int64) -> Bool {
        let path = blobPath(sha256: expected)
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var hasher = SHA256()
        var total: Int64 = 0
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, chunk)
            if n < 0 { if errno == EINTR { continue }; return false }
            if n == 0 { break }
            total += Int64(n)
            if total > length { return false }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return total == length && Hex.encode(Array(hasher.finalize())) == expected
    }
}
