import FuseKit
import Foundation
import Logging
import Synchronization
import UpgradeCore
import UpgradeWhiteboardClient

/// The mount's file system: `server`, `latest` and `versions/N/...` from the
/// verified targets metadata. Names and attributes come from memory; file
/// contents from the verified cache, downloading and verifying on first open.
///
/// Published bundles are immutable, so their entries, attributes and pages
/// are cached by the kernel for a long time. No name ever disappears, so
/// every entry is cached long (a name not yet published is never cached as
/// missing); the attributes that change (`latest`, `server`, the root and
/// `versions/`) are cached briefly or not at all and invalidated on change.
public final class UpgradeFileSystem: FuseFileSystem, @unchecked Sendable {
    static let immutableTimeout = 86_400.0
    static let mutableTimeout = 0.0
    static let growingDirectoryTimeout = 1.0

    private let tree = Mutex(BundleTree())
    private let updater: TUFUpdater
    /// `udb/` and `self`, when the mount has a node key.
    private let whiteboard: WhiteboardFileSystem?
    private let logger: Logger
    private let sourceText: String
    private let mountTime = Int64(Date().timeIntervalSince1970)
    /// Set once the kernel mount exists, for change notifications.
    private let mount = Mutex<FuseMount?>(nil)
    /// Open bundle files, by descriptor: the identity their cache file had when it was verified, checked
    /// before each read (a file changed on disk while open gives EIO, never its new bytes).
    private let openBlobs = Mutex<[Int32: (identity: BlobIdentity, path: String)]>([:])

    public init(updater: TUFUpdater, whiteboard: WhiteboardFileSystem? = nil, logger: Logger) async {
        self.updater = updater
        self.whiteboard = whiteboard
        self.logger = logger
        self.sourceText = updater.source.description
        await rebuild()
    }

    func attach(_ fuseMount: FuseMount) {
        mount.withLock { $0 = fuseMount }
        whiteboard?.attach(fuseMount)
    }

    /// Re-reads the trusted targets and tells the kernel which names changed.
    func rebuild() async {
        let targets = await updater.targets
        let source = sourceText
        let (latestInode, versionsInode) = tree.withLock { tree in
            tree.rebuild(serverSource: source, targets: targets)
            return (tree.lookup(path: "latest"), tree.lookup(path: "versions"))
        }
        if let fuse = mount.withLock({ $0 }) {
            for ino in [latestInode, versionsInode, BundleTree.rootInode].compactMap({ $0 }) {
                fuse.invalidateInode(ino)
            }
        }
    }

    var latestVersion: Int { tree.withLock { $0.latestVersion } }

    /// Sets what `stale` says; true if that changed.
    func setStale(_ text: String) -> Bool {
        let changed: UInt64?? = tree.withLock { tree in tree.staleText == text ? .none : .some(tree.setStale(text)) }
        guard case .some(let ino) = changed else { return false }
        if let ino, let fuse = mount.withLock({ $0 }) { fuse.invalidateInode(ino) }
        return true
    }

    // MARK: FuseFileSystem

    public func lookup(parent: UInt64, name: String) throws(FuseError) -> FuseEntry {
        if let whiteboard {
            if whiteboard.owns(parent) { return try whiteboard.lookup(parent: parent, name: name) }
            if parent == BundleTree.rootInode, let entry = whiteboard.lookupRoot(name: name) { return entry }
        }
        let found: (UInt64, BundleTree.Node)? = tree.withLock { tree in
            guard let ino = tree.child(of: parent, named: name), let node = tree.node(ino) else { return nil }
            return (ino, node)
        }
        guard let (ino, node) = found else { throw FuseError.noEntry }
        return FuseEntry(attributes: attributes(ino, node), entryTimeout: Self.immutableTimeout,
                         attributeTimeout: attributeTimeout(for: ino, node))
    }

    public func getattr(ino: UInt64) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        if let whiteboard, whiteboard.owns(ino) { return try whiteboard.getattr(ino: ino) }
        guard let node = tree.withLock({ $0.node(ino) }) else { throw FuseError.noEntry }
        return (attributes(ino, node), attributeTimeout(for: ino, node))
    }

    public func readdir(ino: UInt64) throws(FuseError) -> [FuseDirectoryEntry] {
        if let whiteboard, whiteboard.owns(ino) { return try whiteboard.readdir(ino: ino) }
        let listing: [FuseDirectoryEntry]? = tree.withLock { tree in
            guard case .directory(let children)? = tree.node(ino) else { return nil }
            return children.sorted { $0.key < $1.key }.compactMap { name, child in
                tree.node(child).map { FuseDirectoryEntry(name: name, ino: child, mode: Self.mode(of: $0)) }
            }
        }
        guard let listing else { throw FuseError.notDirectory }
        if ino == BundleTree.rootInode, let whiteboard {
            return (listing + whiteboard.rootEntries()).sorted { $0.name < $1.name }
        }
        return listing
    }

    public func readlink(ino: UInt64) throws(FuseError) -> String {
        if let whiteboard, whiteboard.owns(ino) { return try whiteboard.readlink(ino: ino) }
        guard case .symlink(let target)? = tree.withLock({ $0.node(ino) }) else { throw FuseError.invalid }
        return target
    }

    public func open(ino: UInt64, flags: Int32, reply: @escaping @Sendable (Result<FuseOpenResult, FuseError>) -> Void) {
        if let whiteboard, whiteboard.owns(ino) {
            do throws(FuseError) {
                return reply(.success(try whiteboard.open(ino: ino, flags: flags)))
            } catch {
                return reply(.failure(error))
            }
        }
        if flags & O_ACCMODE != O_RDONLY || flags & O_TRUNC != 0 {
            return reply(.failure(FuseError.readOnly))
        }
        switch tree.withLock({ $0.node(ino) }) {
        case .text?:
            reply(.success(FuseOpenResult(fileHandle: 0, keepCache: false, directIO: true)))
        case .file(let path, let target, _)?:
            let updater = self.updater
            let logger = self.logger
            Task { [self] in
                do {
                    let (fd, identity) = try await updater.openVerifiedBlob(path: path, target: target)
                    openBlobs.withLock { $0[fd] = (identity, path) }
                    reply(.success(FuseOpenResult(fileHandle: UInt64(fd), keepCache: true, directIO: false)))
                } catch {
                    logger.error("refusing to serve a file that could not be verified", metadata: [
                        "target.path": "\(path)",
                        "error": "\(NetworkErrorText.describe(error, endpoint: updater.source.endpoint))",
                    ])
                    reply(.failure(FuseError.io))
                }
            }
        case .directory?:
            reply(.failure(FuseError.isDirectory))
        case .symlink?, nil:
            reply(.failure(FuseError.noEntry))
        }
    }

    public func read(ino: UInt64, fileHandle: UInt64, offset: Int64, size: Int) throws(FuseError) -> FuseReadResult {
        if let whiteboard, whiteboard.owns(ino) { return try whiteboard.read(fileHandle: fileHandle, offset: offset, size: size) }
        switch tree.withLock({ $0.node(ino) }) {
        case .text(let text)?:
            let bytes = Array(text.utf8)
            guard offset < bytes.count else { return .bytes([]) }
            let start = Int(offset)
            return .bytes(Array(bytes[start..<min(bytes.count, start + size)]))
        case .file?:
            let fd = Int32(truncatingIfNeeded: fileHandle)
            let opened = openBlobs.withLock { $0[fd] }
            guard let opened, BlobIdentity(fd: fd) == opened.identity else {
                logger.error("refusing to serve a file whose cached copy changed on disk after it was verified",
                             metadata: ["target.path": "\(opened?.path ?? "?")"])
                throw FuseError.io
            }
            return .fileDescriptor(fd, offset: offset, count: size)
        default:
            throw FuseError.invalid
        }
    }

    public func release(ino: UInt64, fileHandle: UInt64) {
        if let whiteboard, whiteboard.owns(ino) { return whiteboard.release(fileHandle: fileHandle) }
        if case .file? = tree.withLock({ $0.node(ino) }) {
            let fd = Int32(truncatingIfNeeded: fileHandle)
            openBlobs.withLock { _ = $0.removeValue(forKey: fd) }
            close(fd)
        }
    }

    public func forget(ino: UInt64, lookups: UInt64) {}

    // MARK: writes (only under udb/; the bundles are read-only)

    /// The whiteboard that owns `ino`, or EROFS for the read-only bundle tree.
    private func writable(_ ino: UInt64) throws(FuseError) -> WhiteboardFileSystem {
        guard let whiteboard, whiteboard.owns(ino) else { throw FuseError.readOnly }
        return whiteboard
    }

    public func write(ino: UInt64, fileHandle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(FuseError) -> Int {
        try writable(ino).write(fileHandle: fileHandle, offset: offset, data: data)
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32) throws(FuseError) -> (FuseEntry, FuseOpenResult) {
        try writable(parent).create(parent: parent, name: name, flags: flags)
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32) throws(FuseError) -> FuseEntry {
        try writable(parent).mkdir(parent: parent, name: name)
    }

    public func rmdir(parent: UInt64, name: String) throws(FuseError) {
        try writable(parent).rmdir(parent: parent, name: name)
    }

    public func unlink(parent: UInt64, name: String) throws(FuseError) {
        try writable(parent).unlink(parent: parent, name: name)
    }

    /// Not supported on the whiteboard (EXDEV makes `mv` copy and delete instead).
    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String) throws(FuseError) {
        _ = try writable(parent)
        throw FuseError(EXDEV)
    }

    public func setattr(ino: UInt64, changes: FuseAttributeChanges) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        try writable(ino).setattr(ino: ino, changes: changes)
    }

    public func flush(ino: UInt64, fileHandle: UInt64) throws(FuseError) {
        if let whiteboard, whiteboard.owns(ino) { try whiteboard.flush(fileHandle: fileHandle) }
    }

    // MARK: attributes

    /// How long the kernel may cache a node's attributes. Names never go
    /// away (entries are cached long); only the attributes of `latest`,
    /// `server`, the root and `versions/` change, and those are also
    /// invalidated when new metadata arrives.
    private func attributeTimeout(for ino: UInt64, _ node: BundleTree.Node) -> Double {
        switch node {
        case .file, .symlink: Self.immutableTimeout
        case .text: Self.mutableTimeout
        case .directory:
            ino == BundleTree.rootInode || tree.withLock({ $0.lookup(path: "versions") }) == ino
                ? Self.growingDirectoryTimeout : Self.immutableTimeout
        }
    }

    private func attributes(_ ino: UInt64, _ node: BundleTree.Node) -> FuseAttributes {
        let size: UInt64
        var nlink: UInt32 = 1
        switch node {
        case .directory(let children):
            size = 4096
            nlink = 2 + UInt32(clamping: children.count)
        case .file(_, let target, _): size = UInt64(target.length)
        case .symlink(let target): size = UInt64(target.utf8.count)
        case .text(let text): size = UInt64(text.utf8.count)
        }
        return FuseAttributes(ino: ino, mode: Self.mode(of: node), nlink: nlink, size: size,
                              mtimeSeconds: mountTime, uid: 0, gid: 0)
    }

    static func mode(of node: BundleTree.Node) -> UInt32 {
        switch node {
        case .directory: UInt32(S_IFDIR) | 0o555
        case .file(_, _, let mode): UInt32(S_IFREG) | (mode & 0o555) | 0o444
        case .symlink: UInt32(S_IFLNK) | 0o777
        case .text: UInt32(S_IFREG) | 0o444
        }
    }
}
