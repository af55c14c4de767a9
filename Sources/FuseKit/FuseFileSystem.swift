#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A file system served by `FuseMount`, in terms of inode numbers (the root is
/// `fuseRootInode`, 1). Every method may be called concurrently from several
/// FUSE worker threads; none is called on the main actor.
///
/// Errors are thrown as `FuseError` (an errno). The kernel counts lookups: every
/// successful `lookup`, `create` and `mkdir` adds one reference to the returned
/// inode, and `forget` gives them back.
public protocol FuseFileSystem: AnyObject, Sendable {
    func lookup(parent: UInt64, name: String) throws(FuseError) -> FuseEntry
    func getattr(ino: UInt64) throws(FuseError) -> (FuseAttributes, timeout: Double)
    /// The whole listing, without "." and "..": FuseKit takes it at opendir,
    /// adds "." and "..", and pages through that snapshot until releasedir.
    func readdir(ino: UInt64) throws(FuseError) -> [FuseDirectoryEntry]
    func readlink(ino: UInt64) throws(FuseError) -> String
    /// Opens a file. `reply` must be called exactly once, now or later from any
    /// thread (e.g. once a download finished); the opening process waits until then.
    func open(ino: UInt64, flags: Int32, reply: @escaping @Sendable (Result<FuseOpenResult, FuseError>) -> Void)
    func read(ino: UInt64, fileHandle: UInt64, offset: Int64, size: Int) throws(FuseError) -> FuseReadResult
    func release(ino: UInt64, fileHandle: UInt64)
    func forget(ino: UInt64, lookups: UInt64)

    // Writable operations. The defaults answer EROFS (read-only file system).
    /// Returns how many bytes were written. `data` is only valid during the call.
    func write(ino: UInt64, fileHandle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(FuseError) -> Int
    func create(parent: UInt64, name: String, mode: UInt32, flags: Int32) throws(FuseError) -> (FuseEntry, FuseOpenResult)
    func mkdir(parent: UInt64, name: String, mode: UInt32) throws(FuseError) -> FuseEntry
    func rmdir(parent: UInt64, name: String) throws(FuseError)
    func unlink(parent: UInt64, name: String) throws(FuseError)
    func rename(parent: UInt64, name: String, newParent: UInt64, newName: String) throws(FuseError)
    /// Truncate (`changes.size`), chmod, chown, utimes. Returns the new attributes.
    func setattr(ino: UInt64, changes: FuseAttributeChanges) throws(FuseError) -> (FuseAttributes, timeout: Double)
    /// Called on every close(2) of a descriptor (there may be several per open).
    func flush(ino: UInt64, fileHandle: UInt64) throws(FuseError)
    func fsync(ino: UInt64, fileHandle: UInt64) throws(FuseError)
    func statfs() -> FuseFileSystemStatistics
}

extension FuseFileSystem {
    public func release(ino: UInt64, fileHandle: UInt64) {}
    public func forget(ino: UInt64, lookups: UInt64) {}

    public func readlink(ino: UInt64) throws(FuseError) -> String {
        throw FuseError.invalid
    }

    public func write(ino: UInt64, fileHandle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(FuseError) -> Int {
        throw FuseError.readOnly
    }

    public func create(parent: UInt64, name: String, mode: UInt32, flags: Int32) throws(FuseError) -> (FuseEntry, FuseOpenResult) {
        throw FuseError.readOnly
    }

    public func mkdir(parent: UInt64, name: String, mode: UInt32) throws(FuseError) -> FuseEntry {
        throw FuseError.readOnly
    }

    public func rmdir(parent: UInt64, name: String) throws(FuseError) {
        throw FuseError.readOnly
    }

    public func unlink(parent: UInt64, name: String) throws(FuseError) {
        throw FuseError.readOnly
    }

    public func rename(parent: UInt64, name: String, newParent: UInt64, newName: String) throws(FuseError) {
        throw FuseError.readOnly
    }

    public func setattr(ino: UInt64, changes: FuseAttributeChanges) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        throw FuseError.readOnly
    }

    public func flush(ino: UInt64, fileHandle: UInt64) throws(FuseError) {}

    public func fsync(ino: UInt64, fileHandle: UInt64) throws(FuseError) {}

    public func statfs() -> FuseFileSystemStatistics {
        FuseFileSystemStatistics()
    }
}
