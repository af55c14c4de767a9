#if canImport(Glibc)
import Glibc
#endif
import UpgradeCore
import UpgradeFiles

/// What `fstatat` says about a bundle tree, in a form that can be compared
/// between two scans: paths, kinds, sizes, modes, times, link texts, and which
/// file each name is (device, inode, link count), so a name swapped for another
/// file is seen even when its size and mtime were made to match.
struct TreeSignature: Equatable, Sendable {
    struct Item: Equatable, Sendable {
        var path: [UInt8]
        var type: UInt32
        var mode: UInt32
        var size: Int64
        var mtimeSeconds: Int
        var mtimeNanoseconds: Int
        /// ctime cannot be set back by `touch`: any rename, chmod or link changes it.
        var ctimeSeconds: Int
        var ctimeNanoseconds: Int
        var identity: FileIdentity
        var linkCount: UInt64
        var link: [UInt8]
    }
    var items: [Item]
}

/// One scan of a bundle directory: the entries the bundle rules need, the tree
/// signature the settle logic compares, the manifest bytes and any problem that
/// the scan itself found (a name that is not UTF-8, an unreadable directory, a
/// manifest too large to read).
struct ScannedBundle: Sendable {
    var entries: [BundleEntry]
    var signature: TreeSignature
    /// Contents of `upgrade.toml` when it is a regular file.
    var manifestBytes: [UInt8]?
    var problem: BundleRejection?
    /// The bundle directory itself: what the copy must open again (nil when it could not be opened).
    var root: FileIdentity?
    /// The file the scan saw at each bundle-relative path (what the copy must find there).
    var identities: [String: FileIdentity] = [:]

    func identity(of path: String) -> FileIdentity? { identities[path] }
}

/// Walks a bundle directory with `openat`/`fstatat` from a descriptor of the
/// bundle directory, never following a symbolic link (every directory is
/// entered with `O_NOFOLLOW` and checked to be the one just listed), so path
/// length does not matter and no link can lead the walk out of the bundle.
enum BundleScanner {
    static let maxManifestBytes = 64 << 10

    /// Errors after which a later scan may well succeed (the bundle changed under the walk, or the
    /// process is short of descriptors or memory): thrown, so the bundle is looked at again. Any
    /// other error is the bundle's problem and rejects it.
    static func isTransient(_ errno: Int32) -> Bool {
        [EMFILE, ENFILE, ENOMEM, ENOBUFS, EAGAIN, EINTR, ENOENT, ENOTDIR, ELOOP].contains(errno)
    }

    static func scan(_ root: String, limits: BundleLimits) throws(FileError) -> ScannedBundle {
        let rootFD: Int32
        do {
            rootFD = try POSIXFiles.open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
        } catch where !isTransient(error.errno) {
            return ScannedBundle(
                entries: [], signature: TreeSignature(items: []), manifestBytes: nil,
                problem: BundleRejection(path: nil, reason: "cannot open the bundle directory: \(String(cString: strerror(error.errno)))"),
                root: nil)
        }
        defer { close(rootFD) }
        var st = stat()
        guard fstat(rootFD, &st) == 0 else { throw FileError("fstat", root) }
        var result = ScannedBundle(
            entries: [], signature: TreeSignature(items: []), manifestBytes: nil, problem: nil, root: FileIdentity(st))
        // Enough entries to prove "too many files" without listing a million.
        let maxEntries = limits.maxFiles * 2 + 1000
        try walk(directory: rootFD, root: root, relative: [], into: &result, maxEntries: maxEntries)
        result.signature.items.sort { $0.path.lexicographicallyPrecedes($1.path) }
        let manifestIsFile = result.entries.contains { entry in
            guard entry.path == UpgradeManifest.fileName, case .file = entry.kind else { return false }
            return true
        }
        if result.problem == nil, manifestIsFile {
            try readManifest(rootFD: rootFD, root: root, into: &result)
        }
        return result
    }

    /// Reads `upgrade.toml` after checking, on the open file, that it is the file the walk saw and
    /// that its size is within `maxManifestBytes` (nothing is allocated for what a file claims).
    private static func readManifest(rootFD: Int32, root: String, into result: inout ScannedBundle) throws(FileError) {
        let name = UpgradeManifest.fileName
        let path = root + "/" + name
        let fd = try POSIXFiles.openBeneath(rootFD, name, O_RDONLY | O_NONBLOCK, displayPath: path)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError("fstat", path) }
        guard FileIdentity(st) == result.identity(of: name) else {
            throw FileError("open (the manifest changed while scanning)", path, errno: EAGAIN)
        }
        do {
            // readToEnd checks fstat's size against the limit before it reads or allocates anything (EFBIG).
            result.manifestBytes = try POSIXFiles.readToEnd(fd, path: path, limit: maxManifestBytes)
        } catch where error.errno == EFBIG {
            result.problem = BundleRejection(path: name, reason: "the manifest is larger than \(maxManifestBytes) bytes")
        } catch where isTransient(error.errno) {
            throw error
        } catch {
            result.problem = BundleRejection(path: name, reason: "cannot read the manifest: \(String(cString: strerror(error.errno)))")
        }
    }

    private static func walk(
        directory: Int32, root: String, relative: [UInt8], into result: inout ScannedBundle, maxEntries: Int
    ) throws(FileError) {
        let displayDirectory = relative.isEmpty ? root : root + "/" + String(decoding: relative, as: UTF8.self)
        func fail(_ path: [UInt8], _ reason: String) {
            if result.problem == nil {
                result.problem = BundleRejection(path: path.isEmpty ? nil : String(decoding: path, as: UTF8.self), reason: reason)
            }
        }
        let names: [[UInt8]]
        do {
            names = try POSIXFiles.listDirectoryBytes(directory, path: displayDirectory)
        } catch where isTransient(error.errno) {
            throw error
        } catch {
            fail(relative, "cannot read directory: \(String(cString: strerror(error.errno)))")
            return
        }
        for name in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            if result.entries.count >= maxEntries {
                fail([], "bundle has more than \(maxEntries) entries")
                return
            }
            let relativePath = relative.isEmpty ? name : relative + [UInt8(ascii: "/")] + name
            let displayPath = displayDirectory + "/" + String(decoding: name, as: UTF8.self)
            var st = stat()
            let statResult = (name + [0]).withUnsafeBufferPointer {
                $0.withMemoryRebound(to: CChar.self) { fstatat(directory, $0.baseAddress!, &st, AT_SYMLINK_NOFOLLOW) }
            }
            if statResult != 0 {
                let code = errno
                if code == ENOENT { continue }  // vanished: the settle check sees the tree changed
                if isTransient(code) { throw FileError("fstatat", displayPath, errno: code) }
                fail(relativePath, "cannot stat: \(String(cString: strerror(code)))")
                continue
            }
            var item = TreeSignature.Item(
                path: relativePath, type: UInt32(st.st_mode & S_IFMT), mode: UInt32(st.st_mode & 0o7777),
                size: Int64(st.st_size), mtimeSeconds: st.st_mtim.tv_sec, mtimeNanoseconds: st.st_mtim.tv_nsec,
                ctimeSeconds: st.st_ctim.tv_sec, ctimeNanoseconds: st.st_ctim.tv_nsec,
                identity: FileIdentity(st), linkCount: UInt64(st.st_nlink), link: [])
            let kind: BundleEntry.Kind
            switch st.st_mode & S_IFMT {
            case S_IFREG: kind = .file(size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777))
            case S_IFDIR: kind = .directory(mode: UInt32(st.st_mode & 0o7777))
            case S_IFLNK:
                let link: [UInt8]
                do {
                    link = try POSIXFiles.readLink(at: directory, name, path: displayPath)
                } catch where isTransient(error.errno) || error.errno == EINVAL {
                    // EINVAL: no longer a link.
                    throw error
                } catch {
                    fail(relativePath, "cannot read symlink: \(String(cString: strerror(error.errno)))")
                    continue
                }
                item.link = link
                guard let text = String(validating: link, as: UTF8.self) else {
                    result.signature.items.append(item)
                    fail(relativePath, "symlink target is not valid UTF-8")
                    continue
                }
                kind = .symlink(target: text)
            case S_IFCHR, S_IFBLK: kind = .device
            case S_IFIFO: kind = .fifo
            case S_IFSOCK: kind = .socket
            default: kind = .device
            }
            result.signature.items.append(item)
            guard let path = String(validating: relativePath, as: UTF8.self) else {
                fail(relativePath, "file name is not valid UTF-8")
                continue
            }
            result.entries.append(BundleEntry(path: path, kind: kind, linkCount: UInt64(st.st_nlink)))
            result.identities[path] = item.identity
            // A directory whose own path is already too long is listed (the rules reject it) but not
            // entered: the walk's depth, and the descriptors it holds, stay bounded.
            guard case .directory = kind, relativePath.count <= BundlePath.maxPathBytes, result.problem == nil else { continue }
            let child = try POSIXFiles.openBeneath(
                directory, String(decoding: name, as: UTF8.self), O_RDONLY | O_DIRECTORY, displayPath: displayPath)
            defer { close(child) }
            var childStat = stat()
            guard fstat(child, &childStat) == 0, FileIdentity(childStat) == item.identity else {
                throw FileError("open (the directory changed while scanning)", displayPath, errno: EAGAIN)
            }
            try walk(directory: child, root: root, relative: relativePath, into: &result, maxEntries: maxEntries)
        }
    }

    /// The tree signature alone.
    static func signature(_ root: String, limits: BundleLimits) throws(FileError) -> TreeSignature {
        try scan(root, limits: limits).signature
    }
}
