#if canImport(Glibc)
import Glibc
#endif
import UpgradeCore
import UpgradeFiles

/// What `lstat` says about a bundle tree, in a form that can be compared
/// between two scans: paths, kinds, sizes, modes, mtimes and link texts.
struct TreeSignature: Equatable, Sendable {
    struct Item: Equatable, Sendable {
        var path: [UInt8]
        var type: UInt32
        var mode: UInt32
        var size: Int64
        var mtimeSeconds: Int
        var mtimeNanoseconds: Int
        var link: [UInt8]
    }
    var items: [Item]
}

/// One scan of a bundle directory: the entries the bundle rules need, the tree
/// signature the settle logic compares, the manifest bytes and any problem that
/// the scan itself found (a name that is not UTF-8, an unreadable directory).
struct ScannedBundle: Sendable {
    var entries: [BundleEntry]
    var signature: TreeSignature
    /// Contents of `upgrade.toml` when it is a regular file.
    var manifestBytes: [UInt8]?
    var problem: BundleRejection?
}

/// Walks a bundle directory with `lstat`, never following symbolic links.
enum BundleScanner {
    /// Deepest relative path the scanner descends into; longer paths are
    /// listed (and then rejected by the rules) but not entered.
    static let maxScanPathBytes = 4096
    static let maxManifestBytes = 64 << 10

    static func scan(_ root: String, limits: BundleLimits) throws(FileError) -> ScannedBundle {
        var result = ScannedBundle(entries: [], signature: TreeSignature(items: []), manifestBytes: nil, problem: nil)
        // Enough entries to prove "too many files" without listing a million.
        let maxEntries = limits.maxFiles * 2 + 1000
        try walk(root: root, relative: [], into: &result, maxEntries: maxEntries)
        result.signature.items.sort { $0.path.lexicographicallyPrecedes($1.path) }
        let manifestIsFile = result.entries.contains { entry in
            guard entry.path == UpgradeManifest.fileName, case .file = entry.kind else { return false }
            return true
        }
        if result.problem == nil, manifestIsFile {
            do {
                result.manifestBytes = try POSIXFiles.readFile(root + "/" + UpgradeManifest.fileName, limit: maxManifestBytes)
            } catch {
                result.problem = BundleRejection(
                    path: UpgradeManifest.fileName,
                    reason: error.errno == EFBIG
                        ? "the manifest is larger than \(maxManifestBytes) bytes" : "cannot read the manifest: \(error)")
            }
        }
        return result
    }

    private static func walk(
        root: String, relative: [UInt8], into result: inout ScannedBundle, maxEntries: Int
    ) throws(FileError) {
        let directory = relative.isEmpty ? root : root + "/" + String(decoding: relative, as: UTF8.self)
        let names: [[UInt8]]
        do {
            names = try POSIXFiles.listDirectoryBytes(directory)
        } catch {
            if result.problem == nil {
                result.problem = BundleRejection(
                    path: relative.isEmpty ? nil : String(decoding: relative, as: UTF8.self),
                    reason: "cannot read directory: \(String(cString: strerror(error.errno)))")
            }
            return
        }
        for name in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            if result.entries.count >= maxEntries {
                if result.problem == nil {
                    result.problem = BundleRejection(path: nil, reason: "bundle has more than \(maxEntries) entries")
                }
                return
            }
            let relativePath = relative.isEmpty ? name : relative + [UInt8(ascii: "/")] + name
            guard String(validating: name, as: UTF8.self) != nil else {
                // Not even lstat-able through a Swift String: record it and refuse the bundle.
                result.signature.items.append(TreeSignature.Item(
                    path: relativePath, type: 0, mode: 0, size: 0, mtimeSeconds: 0, mtimeNanoseconds: 0, link: []))
                if result.problem == nil {
                    result.problem = BundleRejection(
                        path: String(decoding: relativePath, as: UTF8.self), reason: "file name is not valid UTF-8")
                }
                continue
            }
            let fullPath = root + "/" + String(decoding: relativePath, as: UTF8.self)
            guard let st = try POSIXFiles.lstatOrNil(fullPath) else { continue }  // vanished: the settle check catches it
            var item = TreeSignature.Item(
                path: relativePath, type: UInt32(st.st_mode & S_IFMT), mode: UInt32(st.st_mode & 0o7777),
                size: Int64(st.st_size), mtimeSeconds: st.st_mtim.tv_sec, mtimeNanoseconds: st.st_mtim.tv_nsec, link: [])
            let kind: BundleEntry.Kind
            switch st.st_mode & S_IFMT {
            case S_IFREG: kind = .file(size: Int64(st.st_size), mode: UInt32(st.st_mode & 0o7777))
            case S_IFDIR: kind = .directory(mode: UInt32(st.st_mode & 0o7777))
            case S_IFLNK:
                let link = (try? POSIXFiles.readLink(fullPath)) ?? []
                item.link = link
                guard let text = String(validating: link, as: UTF8.self) else {
                    result.signature.items.append(item)
                    if result.problem == nil {
                        result.problem = BundleRejection(
                            path: String(decoding: relativePath, as: UTF8.self), reason: "symlink target is not valid UTF-8")
                    }
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
                if result.problem == nil {
                    result.problem = BundleRejection(
                        path: String(decoding: relativePath, as: UTF8.self), reason: "file name is not valid UTF-8")
                }
                continue
            }
            result.entries.append(BundleEntry(path: path, kind: kind))
            if case .directory = kind, relativePath.count <= maxScanPathBytes {
                try walk(root: root, relative: relativePath, into: &result, maxEntries: maxEntries)
            }
        }
    }

    /// The tree signature alone (cheaper to compare than a full scan when nothing changed).
    static func signature(_ root: String, limits: BundleLimits) throws(FileError) -> TreeSignature {
        try scan(root, limits: limits).signature
    }
}
