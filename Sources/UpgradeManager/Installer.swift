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

    /// Step 2: `gen/N.staging/release/` from the payload, `gen/N.staging/state/` from generation `from`
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

    /// Step 4: everything staged made durable, then `gen/N.staging` renamed to `gen/N`.
    public func seal(version: Int64) throws(FileError) {
        let staged = staging(version)
        try fsyncTree(staged)
        try removeTree(generation(version))
        guard rename(staged, generation(version)) == 0 else { throw FileError("rename to \(generation(version))", staged) }
        try POSIXFiles.fsyncPath(generations, directory: true)
    }

    /// Step 6 (and its undo): `current` names generation `version`, or is removed for 0. A symlink
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
    public func copyTree(from source: String, to destination: String, modeMask: mode_t) throws(FileError) {
        guard let st = try POSIXFiles.lstatOrNil(source) else { throw FileError("copy", source, errno: ENOENT) }
        switch st.st_mode & S_IFMT {
        case S_IFDIR:
            guard mkdir(destination, 0o700) == 0 else { throw FileError("mkdir", destination) }
            for name in try POSIXFiles.listDirectory(source).sorted() {
                try copyTree(from: source + "/" + name, to: destination + "/" + name, modeMask: modeMask)
            }
            guard chmod(destination, st.st_mode & modeMask) == 0 else { throw FileError("chmod", destination) }
        case S_IFREG:
            try copyFile(from: source, to: destination, mode: st.st_mode & modeMask)
        case S_IFLNK:
            let target = try POSIXFiles.readLink(source)
            let ok = (target + [0]).withUnsafeBufferPointer { buffer in
                buffer.withMemoryRebound(to: CChar.self) { symlink($0.baseAddress!, destination) == 0 }
            }
            guard ok else { throw FileError("symlink", destination) }
        default:
            throw FileError("copy (not a file, directory or symlink)", source, errno: EINVAL)
        }
    }

    private func copyFile(from source: String, to destination: String, mode: mode_t) throws(FileError) {
        // O_NONBLOCK: a FIFO swapped in after the lstat must not hang the open; it is then refused below.
        let input = try POSIXFiles.open(source, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
        defer { close(input) }
        var st = stat()
        guard fstat(input, &st) == 0, POSIXFiles.isRegular(st) else {
            throw FileError("copy (not a regular file any more)", source, errno: EINVAL)
        }
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
    public func fsyncTree(_ path: String) throws(FileError) {
        guard let st = try POSIXFiles.lstatOrNil(path) else { throw FileError("fsync", path, errno: ENOENT) }
        if POSIXFiles.isDirectory(st) {
            for name in try POSIXFiles.listDirectory(path) { try fsyncTree(path + "/" + name) }
            try POSIXFiles.fsyncPath(path, directory: true)
        } else if POSIXFiles.isRegular(st) {
            try POSIXFiles.fsyncPath(path)
        }
    }

    /// `rm -rf`; nothing to do when the path does not exist.
    public func removeTree(_ path: String) throws(FileError) {
        guard let st = try POSIXFiles.lstatOrNil(path) else { return }
        if POSIXFiles.isDirectory(st) {
            // The TF or the app may have left a directory without write permission.
            _ = chmod(path, 0o700)
            for name in try POSIXFiles.listDirectory(path) { try removeTree(path + "/" + name) }
            guard rmdir(path) == 0 else { throw FileError("rmdir", path) }
        } else {
            guard unlink(path) == 0 else { throw FileError("unlink", path) }
        }
    }
}
