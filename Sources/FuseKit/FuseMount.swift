import CFuse
import Dispatch
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One mounted FUSE file system (a libfuse low-level session).
///
/// Life cycle: `init` creates the session and mounts it; `run()` serves
/// requests on up to `threads` worker threads and returns once the file system
/// is unmounted — by `exit()`, or from outside (`fusermount3 -u`, `umount`) —
/// and the mount point released. `exit()` may be called from any thread or
/// task, also before `run()`. Releasing the object unmounts if `run()` never ran.
///
/// Signals: FuseKit installs no signal handlers. (libfuse's own handlers only
/// set a flag, on whichever thread the kernel picks; in a process with many
/// threads that does not wake the loop.) The caller catches SIGINT/SIGTERM —
/// e.g. with a `DispatchSourceSignal` after `signal(SIGTERM, SIG_IGN)`, or
/// swift-service-lifecycle — and calls `exit()`; `run()` then returns.
public final class FuseMount: @unchecked Sendable {
    // @unchecked: `session` is only used through libfuse calls that are
    // thread-safe (notify, exit) or while `state` says the session exists.

    /// The mount point, as an absolute path without symbolic links.
    public let mountpoint: String
    private let session: OpaquePointer
    private let context: FuseSessionContext
    private let threads: Int
    private let logger: Logger
    private let state = Mutex<State>(State())

    private struct State {
        var running = false
        var exitRequested = false
        var mounted = true
    }

    /// Creates the session and mounts it on `mountpoint` (an existing directory).
    ///
    /// - Parameters:
    ///   - fsName: the source shown in /proc/mounts and by `df` (e.g. `host:7420,ID`).
    ///   - subtype: the type is shown as `fuse.SUBTYPE`.
    ///   - options: extra mount options (e.g. `ro`), one per element; commas inside
    ///     an element are escaped. Always set: `default_permissions`, `fsname`,
    ///     `subtype`, and `allow_other` when running as root.
    ///   - threads: the most FUSE worker threads at once. An `open` answered later
    ///     does not hold a thread.
    ///   - readAheadKiB: raise the mount's read-ahead (root only, through sysfs)
    ///     once the kernel finished INIT, which caps it at 128 KiB; nil leaves it.
    public init(fileSystem: any FuseFileSystem, mountpoint: String, fsName: String, subtype: String,
                options: [String] = [], threads: Int = 8, readAheadKiB: Int? = 1024,
                logger: Logger) throws(FuseMountError) {
        let path = try Self.checkMountpoint(mountpoint)
        try Self.checkDevice()
        self.mountpoint = path
        self.threads = max(1, threads)
        self.logger = logger

        let optionString = Self.optionString(fsName: fsName, subtype: subtype, extra: options)
        let context = FuseSessionContext(fileSystem: fileSystem, logger: logger)
        var ops = FuseOperations.make()
        FuseLibraryLog.install(logger)
        // libfuse keeps an unretained pointer to the context; this object keeps it alive.
        guard let session = cfuse_session_new("upgradefs", optionString, &ops,
                                              Unmanaged.passUnretained(context).toOpaque()) else {
            throw FuseMountError(errno: EINVAL, message: "libfuse refused the mount options \"\(optionString)\""
                                 + FuseLibraryLog.takeLastMessage())
        }
        guard fuse_session_mount(session, path) == 0 else {
            fuse_session_destroy(session)
            throw FuseMountError(errno: EIO, message: "cannot mount FUSE on \(path)" + FuseLibraryLog.takeLastMessage())
        }
        self.session = session
        self.context = context
        if let readAheadKiB, readAheadKiB > 0, geteuid() == 0,
           let device = Self.mountDevice(path, type: "fuse.\(subtype)") {
            context.raiseReadAhead(path: "/sys/class/bdi/\(device)/read_ahead_kb", kib: readAheadKiB)
        }
        logger.debug("mounted", metadata: ["fuse.mountpoint": "\(path)", "fuse.options": "\(optionString)"])
    }

    deinit {
        let mounted = state.withLock { state in
            defer { state.mounted = false }
            return state.mounted
        }
        if mounted {
            fuse_session_unmount(session)
        }
        context.markDead()
        fuse_session_destroy(session)
    }

    /// Serves requests until the file system is unmounted or `exit()` is
    /// called, then unmounts (lazily: processes that still have files open get
    /// ENOTCONN) and returns 0, or a negative errno if the loop failed.
    /// Blocks the calling thread; call it once.
    public func run() -> Int32 {
        let start = state.withLock { state -> Bool in
            guard state.mounted, !state.running else { return false }
            state.running = true
            return !state.exitRequested
        }
        var result: Int32 = 0
        if start {
            result = cfuse_session_loop_mt(session, UInt32(threads))
            if result != 0 {
                logger.error("FUSE loop ended with an error", metadata: ["fuse.result": "\(result)"])
            }
        }
        state.withLock { state in
            if state.mounted {
                // Closes the device and unmounts (libfuse skips it if already unmounted).
                fuse_session_unmount(session)
                state.mounted = false
            }
            state.running = false
        }
        logger.debug("unmounted", metadata: ["fuse.mountpoint": "\(mountpoint)"])
        return result
    }

    /// Asks `run()` to return. Does not block; safe from any thread or task,
    /// repeatedly, and before `run()` (which then returns at once).
    public func exit() {
        let wake = state.withLock { state -> Bool in
            let first = !state.exitRequested
            state.exitRequested = true
            return first && state.running
        }
        guard wake else { return }
        fuse_session_exit(session)
        // The flag alone wakes nobody: the workers sleep reading /dev/fuse. A
        // statfs(2) on the mount makes the kernel send a request; the worker that
        // answers it sees the flag and ends the loop. From another thread, as
        // the caller may itself be a FUSE worker.
        let path = mountpoint
        DispatchQueue.global().async {
            _ = cfuse_statvfs_path(path)
        }
    }

    /// Drops the kernel's cached lookup of `name` in `parent` (and, if nothing
    /// uses it, its dentry), so the next access looks it up again. Must not be
    /// called from inside a file system callback for the same directory
    /// (the kernel may hold its lock). Harmless if the name is not cached.
    public func invalidateEntry(parent: UInt64, name: String) {
        let result: Int32? = whileMounted {
            name.withCString { fuse_lowlevel_notify_inval_entry(session, parent, $0, strlen($0)) }
        }
        report(result, "invalidate entry", ["fuse.parent": "\(parent)", "fuse.name": "\(name)"])
    }

    /// Drops the kernel's cached attributes and page cache of `ino`.
    public func invalidateInode(_ ino: UInt64) {
        let result: Int32? = whileMounted {
            fuse_lowlevel_notify_inval_inode(session, ino, 0, 0)
        }
        report(result, "invalidate inode", ["fuse.ino": "\(ino)"])
    }

    /// The /dev/fuse descriptor of the session, -1 once unmounted (for tests).
    var deviceFileDescriptor: Int32 {
        whileMounted { fuse_session_fd(session) } ?? -1
    }

    private func whileMounted<T>(_ body: () -> T) -> T? {
        state.withLock { state in state.mounted ? body() : nil }
    }

    private func report(_ result: Int32?, _ what: String, _ metadata: Logger.Metadata) {
        guard let result else { return }
        // ENOENT: not cached (nothing to do). ENOSYS: before INIT. ENOTCONN/ENODEV: unmounting.
        switch -result {
        case 0, ENOENT, ENOSYS, ENOTCONN, ENODEV, EBADF:
            return
        default:
            var metadata = metadata
            metadata["fuse.errno"] = "\(-result)"
            logger.warning("\(what) failed", metadata: metadata)
        }
    }

    // MARK: checks before mounting

    /// The canonical path of a usable mount point, or a message saying what is wrong.
    static func checkMountpoint(_ mountpoint: String) throws(FuseMountError) -> String {
        var info = stat()
        if stat(mountpoint, &info) != 0 {
            let code = errno
            switch code {
            case ENOENT:
                throw FuseMountError(errno: code, message: "mount point \(mountpoint) does not exist; create it first")
            case ENOTCONN:
                throw FuseMountError(errno: code, message: "mount point \(mountpoint) is a FUSE mount whose server "
                                     + "is gone; release it with `fusermount3 -u \(mountpoint)`")
            default:
                throw FuseMountError(errno: code, message: "cannot use mount point \(mountpoint): \(FuseError(code))")
            }
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw FuseMountError(errno: ENOTDIR, message: "mount point \(mountpoint) is not a directory")
        }
        guard let resolved = realpath(mountpoint, nil) else {
            let code = errno
            throw FuseMountError(errno: code, message: "cannot resolve mount point \(mountpoint): \(FuseError(code))")
        }
        let path = String(cString: resolved)
        free(resolved)
        if path != "/" {
            var parent = stat()
            if stat(path + "/..", &parent) == 0, parent.st_dev != info.st_dev {
                throw FuseMountError(errno: EBUSY, message: "\(path) is already a mount point; unmount it first")
            }
        }
        return path
    }

    static func checkDevice() throws(FuseMountError) {
        if access("/dev/fuse", F_OK) != 0 {
            throw FuseMountError(errno: ENODEV, message: "/dev/fuse is missing: load the fuse kernel module "
                                 + "(modprobe fuse); in a container pass --device /dev/fuse")
        }
        if geteuid() == 0, access("/dev/fuse", R_OK | W_OK) != 0 {
            let code = errno
            throw FuseMountError(errno: code, message: "cannot open /dev/fuse: \(FuseError(code))")
        }
    }

    /// `-o` option string; commas and backslashes inside values are escaped for libfuse.
    static func optionString(fsName: String, subtype: String, extra: [String]) -> String {
        var options = ["default_permissions"]
        if geteuid() == 0 { options.append("allow_other") }
        options.append("fsname=" + fsName)
        options.append("subtype=" + subtype)
        options += extra.filter { !$0.isEmpty }
        return options.map(escapeOption).joined(separator: ",")
    }

    static func escapeOption(_ option: String) -> String {
        var escaped = ""
        for character in option {
            if character == "," || character == "\\" { escaped.append("\\") }
            escaped.append(character)
        }
        return escaped
    }

    /// "MAJOR:MINOR" of the mount at `path` with file system type `type`, from /proc/self/mountinfo.
    static func mountDevice(_ path: String, type: String) -> String? {
        guard let text = readSmallFile("/proc/self/mountinfo") else { return nil }
        var device: String?
        for line in text.split(separator: "\n") {
            let halves = line.split(separator: " - ", maxSplits: 1)
            guard halves.count == 2 else { continue }
            let fields = halves[0].split(separator: " ")
            let tail = halves[1].split(separator: " ")
            guard fields.count >= 5, tail.first.map(String.init) == type,
                  unescapeMountinfo(String(fields[4])) == path else { continue }
            device = String(fields[2])  // the last match is the topmost mount
        }
        return device
    }

    static func unescapeMountinfo(_ field: String) -> String {
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.popFirst() {
            if byte == UInt8(ascii: "\\"), utf8.count >= 3,
               let value = UInt8(String(decoding: utf8.prefix(3), as: UTF8.self), radix: 8) {
                bytes.append(value)
                utf8 = utf8.dropFirst(3)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { break }
            bytes += chunk[0..<count]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// libfuse's own messages (mount errors and the like) go to the logger of the
/// most recent mount; the last one is kept for error messages.
enum FuseLibraryLog {
    private struct Sink {
        var logger: Logger?
        var lastMessage: String?
        /// libfuse writes some lines in pieces; a line is logged once complete.
        var partialLine = ""
    }

    private static let sink = Mutex<Sink>(Sink())

    static func install(_ logger: Logger) {
        sink.withLock { $0 = Sink(logger: logger, lastMessage: nil) }
        cfuse_set_log_sink { level, cMessage in
            guard let cMessage else { return }
            let piece = String(cString: cMessage)
            let (logger, line) = FuseLibraryLog.sink.withLock { sink -> (Logger?, String?) in
                sink.partialLine += piece
                guard sink.partialLine.last?.isNewline == true else { return (nil, nil) }
                var line = sink.partialLine
                sink.partialLine = ""
                while line.last?.isNewline == true { line.removeLast() }
                sink.lastMessage = line
                return (sink.logger, line)
            }
            guard let line else { return }
            let logLevel: Logger.Level = switch level {
            case 0...3: .error
            case 4: .warning
            case 5, 6: .info
            default: .debug
            }
            logger?.log(level: logLevel, "libfuse: \(line)")
        }
    }

    /// ": <last libfuse message>" or "" — and forgets it.
    static func takeLastMessage() -> String {
        let message = sink.withLock { sink -> String? in
            defer { sink.lastMessage = nil }
            return sink.lastMessage
        }
        return message.map { ": \($0)" } ?? ""
    }
}
