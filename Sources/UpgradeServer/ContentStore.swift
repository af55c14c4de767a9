#if canImport(Glibc)
import Glibc
#endif
import Crypto
import UpgradeCore
import UpgradeFiles

/// The content store `STATE/blobs/sha256/<first 2 hex>/<64 hex>`: every
/// published file and link text, named by its SHA-256. Blobs are written once
/// (temporary file in `STATE/tmp`, fsync, rename) and never changed.
struct ContentStore: Sendable {
    let blobsDirectory: String
    let temporaryDirectory: String
    static let readChunkBytes = 1 << 20

    init(stateDirectory: String) {
        blobsDirectory = stateDirectory + "/blobs/sha256"
        temporaryDirectory = stateDirectory + "/tmp"
    }

    /// Where the blob with this hash lives (whether or not it exists).
    func path(sha256 hex: String) -> String {
        let prefix = hex.prefix(2)
        return "\(blobsDirectory)/\(prefix)/\(hex)"
    }

    /// `true` for exactly 64 lowercase hex digits.
    static func isValidHash(_ text: some StringProtocol) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    struct Ingested: Sendable {
        let sha256: String
        let length: Int64
        /// Directory whose entry changed (to fsync before metadata refers to it), if any.
        let changedDirectory: String?
    }

    /// Copies the regular file open on `source` (named `sourcePath` in errors) into the store while
    /// hashing it. Fails, as "changed while publishing" (EAGAIN), unless it is still the file the scan
    /// saw (`expected`), a regular file with one link and `expectedSize` bytes.
    func ingest(_ source: Int32, path sourcePath: String, expected: FileIdentity, expectedSize: Int64) throws(FileError) -> Ingested {
        var st = stat()
        guard fstat(source, &st) == 0 else { throw FileError("fstat", sourcePath) }
        guard POSIXFiles.isRegular(st), FileIdentity(st) == expected, st.st_nlink == 1, Int64(st.st_size) == expectedSize else {
            throw FileError("copy (file changed while publishing)", sourcePath, errno: EAGAIN)
        }
        let temporary = temporaryDirectory + "/" + POSIXFiles.temporaryName("blob")
        let destination = try POSIXFiles.open(temporary, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        var hasher = SHA256()
        var copied: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.readChunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        do throws(FileError) {
            while true {
                let n = read(source, buffer.baseAddress, buffer.count)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw FileError("read", sourcePath)
                }
                if n == 0 { break }
                let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<n])
                hasher.update(bufferPointer: chunk)
                try POSIXFiles.writeAll(destination, chunk, path: temporary)
                copied += Int64(n)
                if copied > expectedSize { break }
            }
            guard copied == expectedSize else {
                throw FileError("copy (file changed while publishing)", sourcePath, errno: EAGAIN)
            }
            guard fsync(destination) == 0 else { throw FileError("fsync", temporary) }
            guard close(destination) == 0 else { throw FileError("close", temporary) }
        } catch {
            close(destination)
            unlink(temporary)
            throw error
        }
        let hex = Hex.encode(hasher.finalize())
        return try commit(temporary: temporary, sha256: hex, length: copied)
    }

    /// Stores a small byte string (a link text).
    func ingest(bytes: [UInt8]) throws(FileError) -> Ingested {
        let hex = Hex.encode(SHA256.hash(data: bytes))
        let temporary = try POSIXFiles.writeTemporary(bytes, in: temporaryDirectory, mode: 0o644, hint: "blob")
        return try commit(temporary: temporary, sha256: hex, length: Int64(bytes.count))
    }

    private func commit(temporary: String, sha256 hex: String, length: Int64) throws(FileError) -> Ingested {
        let final = path(sha256: hex)
        if let st = try POSIXFiles.lstatOrNil(final), POSIXFiles.isRegular(st), Int64(st.st_size) == length {
            unlink(temporary)
            return Ingested(sha256: hex, length: length, changedDirectory: nil)
        }
        let directory = POSIXFiles.parentDirectory(of: final)
        try POSIXFiles.makeDirectories(directory)
        try POSIXFiles.moveIntoPlace(temporary, at: final, replace: true)
        return Ingested(sha256: hex, length: length, changedDirectory: directory)
    }

    /// Removes leftovers of interrupted copies.
    func cleanTemporaryFiles() {
        for name in (try? POSIXFiles.listDirectory(temporaryDirectory)) ?? [] where name.hasPrefix(".tmp-") {
            unlink(temporaryDirectory + "/" + name)
        }
    }
}
