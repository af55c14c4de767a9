import FuseKit
import UpgradeCore

/// The mount's file system: a router that sends each FUSE operation to the subtree that owns its inode
/// (`MountRoutes`): the bundles (`BundleFileSystem`, read-only) or, when the mount has a node key, the whiteboard
/// (`WhiteboardFileSystem`: `udb/` and `self`). Only the root is shared: its listing joins both, and a name in it
/// is looked up in the subtree that owns it. A write to the bundles answers EROFS (FuseKit's default).
public final class UpgradeFileSystem: FuseFileSystem {
    let bundles: BundleFileSystem
    let whiteboard: WhiteboardFileSystem?
    private let routes: MountRoutes

    public init(bundles: BundleFileSystem, whiteboard: WhiteboardFileSystem? = nil) {
        self.bundles = bundles
        self.whiteboard = whiteboard
        routes = MountRoutes(hasWhiteboard: whiteboard != nil)
    }

    func attach(_ fuseMount: FuseMount) {
        bundles.attach(fuseMount)
        whiteboard?.attach(fuseMount)
    }

    /// The subtree that owns `ino`.
    private func subtree(_ ino: UInt64) -> any FuseFileSystem {
        if let whiteboard, routes.subtree(of: ino) == .whiteboard { return whiteboard }
        return bundles
    }

    // MARK: FuseFileSystem

    public func lookup(parent: UInt64, name: String) throws(FuseError) -> FuseEntry {
        if let whiteboard, routes.subtree(of: name, in: parent) == .whiteboard {
            guard parent == BundleTree.rootInode else { return try whiteboard.lookup(parent: parent, name: name) }
            guard let entry = whiteboard.lookupRoot(name: name) else { throw FuseError.noEntry }
            return entry
        }
        return try bundles.lookup(parent: parent, name: name)
    }

    public func readdir(ino: UInt64) throws(FuseError) -> [FuseDirectoryEntry] {
        let listing = try subtree(ino).readdir(ino: ino)
        guard ino == BundleTree.rootInode, let whiteboard else { return listing }
        return (listing + whiteboard.rootEntries()).sorted { $0.name < $1.name }
    }

    public func getattr(ino: UInt64) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        try subtree(ino).getattr(ino: ino)
    }

    public func readlink(ino: UInt64) throws(FuseError) -> String { try subtree(ino).readlink(ino: ino) }

    public func open(ino: UInt64, flags: Int32, reply: @escaping @Sendable (Result<FuseOpenResult, FuseError>) -> Void) {
        subtree(ino).open(ino: ino, flags: flags, reply: reply)
    }

    public func read(ino: UInt64, fileHandle: UInt64, offset: Int64, size: Int) throws(FuseError) -> FuseReadResult {
        try subtree(ino).read(ino: ino, fileHandle: fileHandle, offset: offset, size: size)
    }

    public func release(ino: UInt64, fileHandle: UInt64) { subtree(ino).release(ino: ino, fileHandle: fileHandle) }

    public func forget(ino: UInt64, lookups: UInt64) { subtree(ino).forget(ino: ino, lookups: lookups) }

    public func write(ino: UInt64, fileHandle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(FuseError) -> Int {
        try subtree(ino).write(ino: ino, fileHandle: fileHandle, offset: offset, data: data)
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32) throws(FuseError) -> (FuseEntry, FuseOpenResult) {
        try subtree(parent).create(parent: parent, name: name, mode: mode, flags: flags)
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32) throws(FuseError) -> FuseEntry {
        try subtree(parent).mkdir(parent: parent, name: name, mode: mode)
    }

    public func rmdir(parent: UInt64, name: String) throws(FuseError) { try subtree(parent).rmdir(parent: parent, name: name) }

    public func unlink(parent: UInt64, name: String) throws(FuseError) { try subtree(parent).unlink(parent: parent, name: name) }

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String) throws(FuseError) {
        try subtree(parent).rename(parent: parent, name: name, newParent: newParent, newName: newName)
    }

    public func setattr(ino: UInt64, changes: FuseAttributeChanges) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        try subtree(ino).setattr(ino: ino, changes: changes)
    }

    public func flush(ino: UInt64, fileHandle: UInt64) throws(FuseError) {
        try subtree(ino).flush(ino: ino, fileHandle: fileHandle)
    }

    public func fsync(ino: UInt64, fileHandle: UInt64) throws(FuseError) {
        try subtree(ino).fsync(ino: ino, fileHandle: fileHandle)
    }

    public func statfs() -> FuseFileSystemStatistics { bundles.statfs() }
}
