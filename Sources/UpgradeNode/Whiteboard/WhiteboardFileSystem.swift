import FuseKit
import Foundation
import Logging
import Synchronization
import UpgradeWhiteboardClient

/// The FUSE adapter of the whiteboard's files (`udb/` and `self`): it carries each operation to `WhiteboardTree`,
/// turns the tree's answers into FUSE attributes and entries (file contents and attributes never cached by the
/// kernel: timeout 0 and direct I/O), and its errors into errnos, in one table (`errno(for:)`).
public final class WhiteboardFileSystem: FuseFileSystem {
    let tree: WhiteboardTree
    private let mountTime = Int64(Date().timeIntervalSince1970)
    /// The kernel mount, for dropping names another node deleted.
    private let fuse = Mutex<FuseMount?>(nil)

    init(tree: WhiteboardTree) {
        self.tree = tree
    }

    /// The mount's whiteboard over the node's journal, sender and lock client; `holders` is shared with the follower.
    public convenience init(node: String, journal: WhiteboardJournal, locks: WhiteboardLockClient, holders: WhiteboardHolders,
                            wakeSender: @escaping @Sendable () -> Void, logger: Logger) {
        let store = JournalWhiteboardStore(journal: journal, locks: locks, wakeSender: wakeSender)
        self.init(tree: WhiteboardTree(node: node, store: store, holders: holders, logger: logger))
    }

    /// The errno a script sees for each of the tree's errors (README.md, "The whiteboard").
    static func errno(for error: WhiteboardTreeError) -> Int32 {
        switch error {
        case .notFound, .lockNotHeld: ENOENT
        case .notADirectory, .lockConflict: ENOTDIR
        case .isADirectory: EISDIR
        case .exists, .lockAlreadyHeld: EEXIST
        case .notEmpty: ENOTEMPTY
        case .forbidden: EACCES
        case .malformed, .notALink: EINVAL
        case .attributesFixed: EPERM
        case .tooLarge: EFBIG
        case .badHandle: EBADF
        case .journal, .lockFailed: EIO
        case .crossDevice: EXDEV
        case .lockFull: EBUSY
        case .offline: EHOSTUNREACH
        }
    }

    /// Runs a tree operation, answering its error as the errno of `errno(for:)`.
    private func run<T>(_ operation: @autoclosure () throws(WhiteboardTreeError) -> T) throws(FuseError) -> T {
        do {
            return try operation()
        } catch {
            throw FuseError(Self.errno(for: error))
        }
    }

    func attach(_ fuseMount: FuseMount) { fuse.withLock { $0 = fuseMount } }

    /// Files the follower saw change on the server: the kernel forgets the names of those now gone.
    /// (Called from the follower's task, never from a FUSE request.)
    public func filesChanged(_ paths: [String]) {
        guard let fuse = fuse.withLock({ $0 }) else { return }
        for (parent, name) in tree.namesToForget(changed: paths) { fuse.invalidateEntry(parent: parent, name: name) }
    }

    // MARK: the mount's root

    /// `udb` and `self`, for the root directory's listing.
    func rootEntries() -> [FuseDirectoryEntry] {
        [FuseDirectoryEntry(name: "self", ino: WhiteboardTree.selfInode, mode: UInt32(S_IFLNK) | 0o777),
         FuseDirectoryEntry(name: "udb", ino: WhiteboardTree.rootInode, mode: UInt32(S_IFDIR) | 0o555)]
    }

    /// The entry of `udb` or `self` in the mount's root, nil for other names.
    func lookupRoot(name: String) -> FuseEntry? { tree.lookupRoot(name: name).map(fuseEntry) }

    // MARK: FuseFileSystem

    public func lookup(parent: UInt64, name: String) throws(FuseError) -> FuseEntry {
        fuseEntry(try run(try tree.lookup(parent: parent, name: name)))
    }

    public func getattr(ino: UInt64) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        let (item, timeout) = try run(try tree.getattr(ino: ino))
        return (attributes(ino, item), timeout)
    }

    public func readlink(ino: UInt64) throws(FuseError) -> String {
        try run(try tree.readlink(ino: ino))
    }

    public func readdir(ino: UInt64) throws(FuseError) -> [FuseDirectoryEntry] {
        try run(try tree.readdir(ino: ino)).map {
            FuseDirectoryEntry(name: $0.name, ino: $0.ino, mode: $0.isFile ? UInt32(S_IFREG) | 0o444 : UInt32(S_IFDIR) | 0o555)
        }
    }

    public func open(ino: UInt64, flags: Int32, reply: @escaping @Sendable (Result<FuseOpenResult, FuseError>) -> Void) {
        let mode = WhiteboardTree.OpenMode(writing: flags & O_ACCMODE != O_RDONLY, append: flags & O_APPEND != 0,
                                           truncate: flags & O_TRUNC != 0)
        do throws(FuseError) {
            let handle = try run(try tree.open(ino: ino, mode))
            reply(.success(FuseOpenResult(fileHandle: handle, keepCache: false, directIO: true)))
        } catch {
            reply(.failure(error))
        }
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32) throws(FuseError) -> (FuseEntry, FuseOpenResult) {
        let (entry, handle) = try run(try tree.create(parent: parent, name: name, append: flags & O_APPEND != 0))
        return (fuseEntry(entry), FuseOpenResult(fileHandle: handle, keepCache: false, directIO: true))
    }

    public func read(ino: UInt64, fileHandle: UInt64, offset: Int64, size: Int) throws(FuseError) -> FuseReadResult {
        .bytes(try run(try tree.read(handle: fileHandle, offset: offset, size: size)))
    }

    public func write(ino: UInt64, fileHandle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(FuseError) -> Int {
        try run(try tree.write(handle: fileHandle, offset: offset, data: data))
    }

    public func flush(ino: UInt64, fileHandle: UInt64) throws(FuseError) {
        try run(try tree.flush(handle: fileHandle))
    }

    public func release(ino: UInt64, fileHandle: UInt64) { tree.release(handle: fileHandle) }

    public func setattr(ino: UInt64, changes: FuseAttributeChanges) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        let changesModeOrOwner = changes.mode != nil || changes.uid != nil || changes.gid != nil
        let (item, timeout) = try run(try tree.setattr(ino: ino, size: changes.size, changesModeOrOwner: changesModeOrOwner))
        return (attributes(ino, item), timeout)
    }

    public func unlink(parent: UInt64, name: String) throws(FuseError) {
        try run(try tree.unlink(parent: parent, name: name))
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32) throws(FuseError) -> FuseEntry {
        fuseEntry(try run(try tree.mkdir(parent: parent, name: name)))
    }

    public func rmdir(parent: UInt64, name: String) throws(FuseError) {
        try run(try tree.rmdir(parent: parent, name: name))
    }

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String) throws(FuseError) {
        try run(try tree.rename())
    }

    // MARK: attributes

    private func fuseEntry(_ entry: WhiteboardTree.Entry) -> FuseEntry {
        FuseEntry(attributes: attributes(entry.ino, entry.item), entryTimeout: entry.entryTimeout,
                  attributeTimeout: entry.attributeTimeout)
    }

    private func attributes(_ ino: UInt64, _ item: WhiteboardTree.Item) -> FuseAttributes {
        switch item {
        case .directory(let writable):
            FuseAttributes(ino: ino, mode: UInt32(S_IFDIR) | (writable ? 0o755 : 0o555), nlink: 2, size: 4096,
                           mtimeSeconds: mountTime, uid: 0, gid: 0)
        case .file(let size, let writable):
            FuseAttributes(ino: ino, mode: UInt32(S_IFREG) | (writable ? 0o644 : 0o444), nlink: 1, size: UInt64(size),
                           mtimeSeconds: Int64(Date().timeIntervalSince1970), uid: 0, gid: 0)
        case .symlink:
            FuseAttributes(ino: ino, mode: UInt32(S_IFLNK) | 0o777, nlink: 1, size: UInt64(tree.selfTarget.utf8.count),
                           mtimeSeconds: mountTime, uid: 0, gid: 0)
        }
    }
}
