#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import UpgradeCore
import UpgradeFiles

/// The node's generations under `root` (docs/DESIGN.md, "Node layout"):
/// `gen/N/{release,state}`, staged as `gen/N.staging`, and `current -> gen/N`, the one commit point.
public struct Installer: Sendable {
    public let root: String
    /// How many generations `prune` keeps (the newest ones).
    public static let keptGenerations = 2

    public init(root: String) { self.root = root }

    public var generations: String { root + "/gen" }
    public var currentLink: String { root + "/current" }
    public func generation(_ version: Int64) -> String { generations + "/\(version)" }
    public func staging(_ version: Int64) -> String { generations + "/\(version).staging" }
    public func release(_ version: Int64) -> String { generation(version) + "/release" }
    public func state(_ version: Int64) -> String { generation(version) + "/state" }

    /// The generation `current` points at; `nil` when nothing is installed.
    public func currentGeneration() throws(FileError) -> Int64? {
        guard POSIXFiles.exists(currentLink) else { return nil }
        let target = String(decoding: try POSIXFiles.readLink(currentLink), as: UTF8.self)
        guard target.hasPrefix("gen/"), let version = Int64(target.dropFirst(4)) else {
            throw FileError("readlink (unexpected target \"\(target)\")", currentLink, errno: EINVAL)
        }
        return version
    }

    /// The `stage` action: `gen/N.staging/release/` from the payload, `gen/N.staging/state/` from generation `from`
    /// (empty when 0). A leftover staging directory of an earlier attempt is removed first.
    public func stage(version: Int64, payload: String, from: Int64) throws(FileError) {
        try POSIXFiles.makeDirectories(generations)
        let staged = staging(version)
        try removeTree(staged)
        try POSIXFiles.makeDirectories(staged)
        try copyTree(from: payload, to: staged + "/release", modeMask: Self.releaseModeMask)
        if from > 0 {
            try copyTree(from: state(from), to: staged + "/state", modeMask: Self.stateModeMask)
        } else if mkdir(staged + "/state", 0o755) != 0 {
            throw FileError("mkdir", staged + "/state")
        }
    }

    /// The staged release's symbolic links that leave it (`ReleaseLinks`), one line each; empty when all stay.
    public func stagedLinkProblems(version: Int64) throws(FileError) -> [String] {
        var links: [ReleaseLinks.Link] = []
        try collectLinks(staging(version) + "/release", relative: "", into: &links)
        return ReleaseLinks.problems(links)
    }

    private func collectLinks(_ path: String, relative: String, into links: inout [ReleaseLinks.Link]) throws(FileError) {
        guard let st = try POSIXFiles.lstatOrNil(path) else { return }
        if st.st_mode & S_IFMT == S_IFLNK {
            links.append(.init(path: relative, target: String(decoding: try POSIXFiles.readLink(path), as: UTF8.self)))
        } else if POSIXFiles.isDirectory(st) {
            for name in try POSIXFiles.listDirectory(path).sorted() {
                try collectLinks(path + "/" + name, relative: relative.isEmpty ? name : relative + "/" + name, into: &links)
            }
        }
    }

    /// The seal of the `transform` action: everything staged made durable, then `gen/N.staging` renamed to `gen/N`.
    public func seal(version: Int64) throws(FileError) {
        let staged = staging(version)
        try fsyncTree(staged)
        try removeTree(generation(version))
        guard rename(staged, generation(version)) == 0 else { throw FileError("rename to \(generation(version))", staged) }
        try POSIXFiles.fsyncPath(generations, directory: true)
    }

    /// The `switchCurrent` action (and its undo): `current` names generation `version`, or is removed for 0. A symlink
    /// `current.tmp` renamed over `current`, then `root` fsynced: release and state switch together.
    public func switchCurrent(to version: Int64) throws(FileError) {
        let temporary = root + "/current.tmp"
        if version == 0 {
            if unlink(currentLink) != 0 && errno != ENOENT { throw FileError("unlink", currentLink) }
        } else {
            if unlink(temporary) != 0 && errno != ENOENT { throw FileError("unlink", temporary) }
            guard symlink("gen/\(version)", temporary) == 0 else { throw FileError("symlink", temporary) }
            guard rename(temporary, currentLink) == 0 else { throw FileError("rename to \(currentLink)", temporary) }
        }
        try POSIXFiles.fsyncPath(root, directory: true)
    }

    /// Removes generation `version` and its staging directory (after a rollback).
    public func discard(version: Int64) throws(FileError) {
        try removeTree(staging(version))
        try removeTree(generation(version))
        if POSIXFiles.exists(generations) { try POSIXFiles.fsyncPath(generations, directory: true) }
    }

    /// After a commit: keeps the newest `keptGenerations` generations (and never `current`), removes the rest.
    public func prune(current: Int64) throws(FileError) {
        let names = try POSIXFiles.listDirectory(generations)
        let versions = names.compactMap { Int64($0) }.sorted(by: >)
        for version in versions.dropFirst(Self.keptGenerations) where version != current {
            try removeTree(generation(version))
        }
        for name in names where name.hasSuffix(".staging") {
            try removeTree(generations + "/" + name)
        }
    }

    // MARK: Trees

    /// The permission bits a release keeps: no set-uid, set-gid or sticky bit, nothing writable but by its
    /// owner (the manager). Whoever owned the payload's files, the copy is the manager's.
    public static let releaseModeMask: mode_t = 0o755
    /// The bits a state keeps: the app's own modes, but never set-uid or set-gid (the manager, often root,
    /// copies it: a file the app made set-uid must not become the manager's).
    public static let stateModeMask: mode_t = 0o1777

    /// Copies a directory tree: directories, regular files (permission bits kept, as far as `modeMask` lets
    /// them) and symlinks (as links, never followed). Anything else (a FIFO, a device, a socket) is refused.
    /// The source is walked by descriptors (`openat` with O_NOFOLLOW at every level): the old state belongs to
    /// the app's user, who cannot swap one of its directories for a link and have the manager copy what the
    /// link points at.
    public func copyTree(from source: String, to destination: String, modeMask: mode_t) throws(FileError) {
        guard let st = try POSIXFiles.lstatOrNil(source) else { throw FileError("copy", source, errno: ENOENT) }
        guard POSIXFiles.isDirectory(st) else { throw FileError("copy (not a directory)", source, errno: ENOTDIR) }
        let fd = open(source, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw FileError("open", source) }
        try copyDirectory(fd, from: source, to: destination, modeMask: modeMask)
    }

    /// Copies the directory open as `fd` (closed here) to `destination`, which is made.
    private func copyDirectory(_ fd: Int32, from source: String, to destination: String, modeMask: mode_t) throws(FileError) {
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError("stat", source) }
        guard mkdir(destination, 0o700) == 0 else { throw FileError("mkdir", destination) }
        for name in try POSIXFiles.listDirectoryBytes(fd, path: source).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let from = source + "/" + String(decoding: name, as: UTF8.self)
            let to = destination + "/" + String(decoding: name, as: UTF8.self)
            let cName = name.map { CChar(bitPattern: $0) } + [0]
            var entry = stat()
            guard fstatat(fd, cName, &entry, AT_SYMLINK_NOFOLLOW) == 0 else { throw FileError("stat", from) }
            switch entry.st_mode & S_IFMT {
            case S_IFDIR:
                let child = openat(fd, cName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard child >= 0 else { throw FileError("open (changed while copied)", from) }
                try copyDirectory(child, from: from, to: to, modeMask: modeMask)
            case S_IFREG:
                // O_NONBLOCK: a FIFO swapped in after the stat must not hang the open; it is refused below.
                let input = openat(fd, cName, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                guard input >= 0 else { throw FileError("open", from) }
                try copyFile(input, from: from, to: to, modeMask: modeMask)
            case S_IFLNK:
                let target = try POSIXFiles.readLink(at: fd, name, path: from).map { CChar(bitPattern: $0) } + [0]
                guard symlink(target, to) == 0 else { throw FileError("symlink", to) }
            default:
                throw FileError("copy (not a file, directory or symlink)", from, errno: EINVAL)
            }
        }
        guard chmod(destination, st.st_mode & modeMask) == 0 else { throw FileError("chmod", destination) }
    }

    /// Copies the regular file open as `input` (closed here) to `destination`, which is made.
    private func copyFile(_ input: Int32, from source: String, to destination: String, modeMask: mode_t) throws(FileError) {
        defer { close(input) }
        var st = stat()
        guard fstat(input, &st) == 0, POSIXFiles.isRegular(st) else {
            throw FileError("copy (not a regular file any more)", source, errno: EINVAL)
        }
        let mode = st.st_mode & modeMask
        let output = try POSIXFiles.open(destination, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        defer { close(output) }
        var buffer = [UInt8](repeating: 0, count: 1 << 17)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(input, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError("read", source)
            }
            if n == 0 { break }
            let failure = buffer.withUnsafeBytes { raw -> FileError? in
                do throws(FileError) {
                    try POSIXFiles.writeAll(output, UnsafeRawBufferPointer(rebasing: raw[0..<n]), path: destination)
                    return nil
                } catch {
                    return error
                }
            }
            if let failure { throw failure }
        }
        guard fchmod(output, mode) == 0 else { throw FileError("chmod", destination) }
    }

    /// fsync of every file and directory in a tree (symlinks are made durable by their directory's fsync).
    /// Walked by descriptor like `removeTree`: no link followed, and O_NONBLOCK so that a FIFO the state's user
    /// swapped in for a file cannot hang the open (FIFOs, sockets and devices are not synced).
    public func fsyncTree(_ path: String) throws(FileError) {
        guard POSIXFiles.exists(path) else { throw FileError("fsync", path, errno: ENOENT) }
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw FileError("open", path) }
        try fsyncEntry(fd, path: path)
    }

    /// fsync of what `fd` is open on (closed here), and of everything under it when it is a directory.
    private func fsyncEntry(_ fd: Int32, path: String) throws(FileError) {
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError("stat", path) }
        if POSIXFiles.isDirectory(st) {
            for name in try POSIXFiles.listDirectoryBytes(fd, path: path) {
                let child = openat(fd, name.map { CChar(bitPattern: $0) } + [0], O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                if child < 0 {
                    if errno == ELOOP || errno == ENOENT || errno == ENXIO { continue } // a link; gone; a socket
                    throw FileError("open", path + "/" + String(decoding: name, as: UTF8.self))
                }
                try fsyncEntry(child, path: path + "/" + String(decoding: name, as: UTF8.self))
            }
        } else if !POSIXFiles.isRegular(st) {
            return
        }
        guard fsync(fd) == 0 else { throw FileError("fsync", path) }
    }

    /// `rm -rf`; nothing to do when the path does not exist. Never follows a link: each directory is opened
    /// relative to its parent with O_NOFOLLOW and its entries removed with `unlinkat`, so the app's user, who
    /// owns a generation's state, cannot swap a directory for a link and have the manager remove (or chmod)
    /// what lies outside.
    public func removeTree(_ path: String) throws(FileError) {
        guard let st = try POSIXFiles.lstatOrNil(path) else { return }
        if POSIXFiles.isDirectory(st) {
            let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if fd >= 0 {
                try removeContents(fd, path: path)
                guard rmdir(path) == 0 else { throw FileError("rmdir", path) }
                return
            }
            guard errno == ENOTDIR || errno == ELOOP else { throw FileError("open", path) }
        }
        guard unlink(path) == 0 || errno == ENOENT else { throw FileError("unlink", path) }
    }

    /// Empties the directory open as `fd` (closed here).
    private func removeContents(_ fd: Int32, path: String) throws(FileError) {
        defer { close(fd) }
        // The TF or the app may have left a directory without write permission.
        _ = fchmod(fd, 0o700)
        for name in try POSIXFiles.listDirectoryBytes(fd, path: path) {
            let child = path + "/" + String(decoding: name, as: UTF8.self)
            let cName = name.map { CChar(bitPattern: $0) } + [0]
            let sub = openat(fd, cName, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            if sub >= 0 {
                try removeContents(sub, path: child)
                guard unlinkat(fd, cName, AT_REMOVEDIR) == 0 else { throw FileError("rmdir", child) }
            } else if errno == ENOTDIR || errno == ELOOP {
                guard unlinkat(fd, cName, 0) == 0 || errno == ENOENT else { throw FileError("unlink", child) }
            } else if errno != ENOENT {
                throw FileError("open", child)
            }
        }
    }
}
