import Foundation
import Crypto
import UpgradeCore
import UpgradeFiles

/// The node's local, verified copy of what one server published:
///
///     DIR/server-id                                          the id this cache was filled for
///     DIR/metadata/{root,timestamp,snapshot,targets}.json   last trusted metadata
///     DIR/blobs/<sha256 hex>                                 verified content (mode 0444)
///     DIR/tmp/                                               downloads in progress
///
/// (the whiteboard's journal, `DIR/udb.sqlite`, lives here too, and is bound with the rest).
/// `metadata/`, `blobs/` and `tmp/` are mode 0700. Metadata is written atomically (temp file, fsync, rename,
/// fsync dir). Content is verified when downloaded and again, by hashing, the first time this process opens
/// it; its file identity (`BlobIdentity`) is recorded then, and a file whose identity changed afterwards is
/// hashed again before it is served — so neither a cache damaged by a crash nor a file changed on disk
/// while mounted is served.
public struct NodeCache: Sendable {
    public let directory: URL
    public static let markerName = "server-id"

    /// Opens (creating if needed) the cache of the server named `serverID`. A cache filled for another
    /// server is refused: its metadata would be trusted as this server's, and `server` would name an id
    /// whose content it does not show.
    public init(directory: URL, serverID: String) throws(MountError) {
        self.directory = directory
        do {
            try POSIXFiles.makeDirectories(directory.path, mode: 0o700)
        } catch {
            throw MountError.cache("cannot create \(directory.path): \(error)")
        }
        try bind(to: serverID)
        for sub in ["metadata", "blobs", "tmp"] {
            let path = directory.appending(path: sub).path
            do {
                try POSIXFiles.makeDirectories(path, mode: 0o700)
            } catch {
                throw MountError.cache("cannot create \(path): \(error)")
            }
            // Only the mount reads its cache; other users read through the mount.
            chmod(path, 0o700)
        }
        // Downloads interrupted by a crash are garbage.
        if let leftovers = try? FileManager.default.contentsOfDirectory(atPath: tmpDirectory.path) {
            for name in leftovers { try? FileManager.default.removeItem(at: tmpDirectory.appending(path: name)) }
        }
    }

    // MARK: Binding to one server

    /// What a cache directory says about the server it belongs to.
    enum Binding: Equatable {
        /// Nothing cached yet: record the id.
        case fresh
        /// Filled for this id.
        case bound
        /// Filled before caches recorded their id, for this id (its trusted root is this id's initial root).
        case adopt
        /// Filled for another server (the id recorded, or the marker's text).
        case otherServer(String)
        /// Filled before caches recorded their id; its trusted root cannot be tied to this id.
        case unknownServer
    }

    /// The rule, without I/O: `marker` is the content of `server-id`, `cachedRoot` the trusted root kept.
    static func binding(marker: String?, cachedRoot: [UInt8]?, serverID: String) -> Binding {
        if let marker {
            let recorded = marker.trimmingCharacters(in: .whitespacesAndNewlines)
            return recorded == serverID ? .bound : .otherServer(recorded)
        }
        guard let cachedRoot else { return .fresh }
        return ServerID.of(initialRoot: cachedRoot) == serverID ? .adopt : .unknownServer
    }

    private func bind(to serverID: String) throws(MountError) {
        let markerPath = directory.appending(path: Self.markerName).path
        let marker = (try? POSIXFiles.readFile(markerPath, limit: 4096)).map { String(decoding: $0, as: UTF8.self) }
        switch Self.binding(marker: marker, cachedRoot: metadata("root"), serverID: serverID) {
        case .bound:
            return
        case .fresh, .adopt:
            do {
                try POSIXFiles.writeAtomically(Array("\(serverID)\n".utf8), to: markerPath)
            } catch {
                throw MountError.cache("cannot write \(markerPath): \(error)")
            }
        case .otherServer(let other):
            throw MountError.cacheOfAnotherServer(directory: directory.path, cachedID: other, sourceID: serverID)
        case .unknownServer:
            throw MountError.cacheOfAnotherServer(directory: directory.path, cachedID: nil, sourceID: serverID)
        }
    }

    // MARK: Metadata

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

    // MARK: Content

    /// A fresh temporary file for a download, opened for writing (read-only once closed).
    func makeTemporaryFile() throws -> (path: String, fd: Int32) {
        let path = tmpDirectory.appending(path: UUID().uuidString).path
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o444)
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        return (path, fd)
    }

    /// Moves a verified download into place; returns the identity it has there.
    func install(temporary path: String, fd: Int32, sha256: String) throws -> BlobIdentity {
        guard rename(path, blobPath(sha256: sha256)) == 0, let identity = BlobIdentity(fd: fd) else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        return identity
    }

    /// Opens a cached blob for reading, with its identity now.
    func openBlob(sha256: String) -> (fd: Int32, identity: BlobIdentity)? {
        let fd = open(blobPath(sha256: sha256), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        guard let identity = BlobIdentity(fd: fd) else {
            close(fd)
            return nil
        }
        return (fd, identity)
    }

    /// Hashes a cached blob and checks it against its expected length and hash; returns its identity if it
    /// matches and did not change while being hashed.
    func verifiedIdentity(sha256 expected: String, length: Int64) -> BlobIdentity? {
        let fd = open(blobPath(sha256: expected), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0, st.st_mode & 0o222 != 0 { fchmod(fd, 0o444) }  // a blob cached by an older release
        guard let before = BlobIdentity(fd: fd), before.size == length else { return nil }
        var hasher = SHA256()
        var total: Int64 = 0
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = read(fd, buffer.baseAddress, chunk)
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { break }
            total += Int64(n)
            if total > length { return nil }
            hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        guard total == length, Hex.encode(Array(hasher.finalize())) == expected, BlobIdentity(fd: fd) == before else {
            return nil
        }
        return before
    }
}

/// A cached file as the kernel identifies it: device, inode, size, and modification and change times.
/// Writing, truncating, replacing or re-moding the file changes it (the change time moves on every such
/// operation and cannot be set back by a program), so a file whose identity still matches the one recorded
/// when it was hashed still holds the bytes that were hashed.
public struct BlobIdentity: Equatable, Sendable {
    let device: UInt64
    let inode: UInt64
    let size: Int64
    let modified: [Int]
    let changed: [Int]

    /// The identity of an open file (`fstat`); nil if it cannot be had.
    public init?(fd: Int32) {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
        size = Int64(st.st_size)
        modified = [st.st_mtim.tv_sec, st.st_mtim.tv_nsec]
        changed = [st.st_ctim.tv_sec, st.st_ctim.tv_nsec]
    }
}
