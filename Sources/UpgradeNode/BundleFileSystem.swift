import FuseKit
import Foundation
import Logging
import Synchronization
import UpgradeCore
import UpgradeWhiteboardClient

/// The mount's bundle subtree: `server`, `latest`, `stale` and `versions/N/...` from the
/// verified targets metadata (read-only: every write answers EROFS). Names and attributes come from memory; file
/// contents from the verified cache, downloading and verifying on first open.
///
/// Published bundles are immutable, so their entries, attributes and pages
/// are cached by the kernel for a long time. No name ever disappears, so
/// every entry is cached long (a name not yet published is never cached as
/// missing); the attributes that change (`latest`, `server`, the root and
/// `versions/`) are cached briefly or not at all and invalidated on change.
public final class BundleFileSystem: FuseFileSystem, @unchecked Sendable {
    static let immutableTimeout = 86_400.0
    static let mutableTimeout = 0.0
    static let growingDirectoryTimeout = 1.0

    private let tree = Mutex(BundleTree())
    private let updater: TUFUpdater
    private let logger: Logger
    private let sourceText: String
    private let mountTime = Int64(Date().timeIntervalSince1970)
    /// Set once the kernel mount exists, for change notifications.
    private let mount = Mutex<FuseMount?>(nil)
    /// Open bundle files, by descriptor: the identity their cache file had when it was verified, checked
    /// before each read (a file changed on disk while open gives EIO, never its new bytes).
    private let openBlobs = Mutex<[Int32: (identity: BlobIdentity, path: String)]>([:])

    public init(updater: TUFUpdater, logger: Logger) async {
        self.updater = updater
        self.logger = logger
        self.sourceText = updater.source.description
        await rebuild()
    }

    func attach(_ fuseMount: FuseMount) {
        mount.withLock { $0 = fuseMount }
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
        let found: (UInt64, BundleTree.Node)? = tree.withLock { tree in
            guard let ino = tree.child(of: parent, named: name), let node = tree.node(ino) else { return nil }
            return (ino, node)
        }
        guard let (ino, node) = found else { throw FuseError.noEntry }
        return FuseEntry(attributes: attributes(ino, node), entryTimeout: Self.immutableTimeout,
                         attributeTimeout: attributeTimeout(for: ino, node))
    }

    public func getattr(ino: UInt64) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        guard let node = tree.withLock({ $0.node(ino) }) else { throw FuseError.noEntry }
        return (attributes(ino, node), attributeTimeout(for: ino, node))
    }

    public func readdir(ino: UInt64) throws(FuseError) -> [FuseDirectoryEntry] {
        let listing: [FuseDirectoryEntry]? = tree.withLock { tree in
            guard case .directory(let children)? = tree.node(ino) else { return nil }
            return children.sorted { $0.key < $1.key }.compactMap { name, child in
                tree.node(child).map { FuseDirectoryEntry(name: name, ino: child, mode: Self.mode(of: $0)) }
            }
        }
        guard let listing else { throw FuseError.notDirectory }
        return listing
    }

    public func readlink(ino: UInt64) throws(FuseError) -> String {
        guard case .symlink(let target)? = tree.withLock({ $0.node(ino) }) else { throw FuseError.invalid }
        return target
    }

    public func open(ino: UInt64, flags: Int32, reply: @escaping @Sendable (Result<FuseOpenResult, FuseError>) -> Void) {
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
        if case .file? = tree.withLock({ $0.node(ino) }) {
            let fd = Int32(truncatingIfNeeded: fileHandle)
            openBlobs.withLock { _ = $0.removeValue(forKey: fd) }
            close(fd)
        }
    }

    public func forget(ino: UInt64, lookups: UInt64) {}

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
