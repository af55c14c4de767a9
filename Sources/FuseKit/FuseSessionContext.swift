import CFuse
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What the C callbacks reach through `fuse_req_userdata`: the file system,
/// the logger and FuseKit's own per-session tables.
final class FuseSessionContext: Sendable {
    let fileSystem: any FuseFileSystem
    let logger: Logger
    /// Directory snapshots taken at opendir, by directory handle.
    private let directories = Mutex<DirectoryTable>(DirectoryTable())
    /// False once the session is being destroyed: late (asynchronous) replies are dropped.
    private let alive = Mutex<Bool>(true)
    /// Raised once, at the first request after INIT (see `FuseMount` readAheadKiB).
    private let readAheadPending = Atomic<Bool>(false)
    private let readAhead = Mutex<(path: String, kib: Int)?>(nil)

    init(fileSystem: any FuseFileSystem, logger: Logger) {
        self.fileSystem = fileSystem
        self.logger = logger
    }

    /// Before the loop runs: write `kib` to the sysfs file `path` at the first request after INIT.
    func raiseReadAhead(path: String, kib: Int) {
        readAhead.withLock { $0 = (path, kib) }
        readAheadPending.store(true, ordering: .releasing)
    }

    // MARK: directory snapshots

    struct DirectoryTable {
        var nextHandle: UInt64 = 1
        var snapshots: [UInt64: [DirectoryItem]] = [:]
    }

    struct DirectoryItem: Sendable {
        let name: String
        let ino: UInt64
        let mode: UInt32
    }

    func openDirectory(_ items: [DirectoryItem]) -> UInt64 {
        directories.withLock { table in
            let handle = table.nextHandle
            table.nextHandle &+= 1
            table.snapshots[handle] = items
            return handle
        }
    }

    func directory(_ handle: UInt64) -> [DirectoryItem]? {
        directories.withLock { $0.snapshots[handle] }
    }

    func closeDirectory(_ handle: UInt64) {
        directories.withLock { _ = $0.snapshots.removeValue(forKey: handle) }
    }

    // MARK: replies that may come late

    /// Runs `body` (which sends a reply) only while the session exists.
    /// Returns nil when the session is gone.
    func whileAlive<T>(_ body: () -> T) -> T? {
        alive.withLock { alive in alive ? body() : nil }
    }

    func markDead() {
        alive.withLock { $0 = false }
    }

    // MARK: read-ahead

    /// The kernel caps a FUSE mount's read-ahead at what it offered in INIT
    /// (128 KiB); the bdi's sysfs knob raises it once INIT is done. Best effort.
    func raiseReadAheadOnce() {
        guard readAheadPending.load(ordering: .relaxed),
              readAheadPending.compareExchange(expected: true, desired: false, ordering: .acquiring).exchanged,
              let (path, kib) = readAhead.withLock({ $0 }) else { return }
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else {
            logger.debug("cannot raise read-ahead", metadata: ["fuse.path": "\(path)", "fuse.errno": "\(errno)"])
            return
        }
        defer { close(fd) }
        let text = "\(kib)\n"
        let written = text.withCString { write(fd, $0, strlen($0)) }
        if written < 0 {
            logger.debug("cannot raise read-ahead", metadata: ["fuse.path": "\(path)", "fuse.errno": "\(errno)"])
        }
    }
}
