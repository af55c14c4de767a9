/// One thing found in a bundle directory (by `lstat`, links never followed).
public struct BundleEntry: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// A regular file; `mode` is the full `st_mode` permission part (may carry set-uid etc.).
        case file(size: Int64, mode: UInt32)
        case directory(mode: UInt32)
        /// A symbolic link and its link text, exactly as `readlink` returned it.
        case symlink(target: String)
        case device
        case fifo
        case socket
    }

    /// Path relative to the bundle directory, `/`-separated, e.g. `payload/bin/app`.
    public var path: String
    public var kind: Kind
    /// How many names the file has (`st_nlink`); a regular file with more than one may be reachable
    /// from outside the bundle.
    public var linkCount: UInt64

    public init(path: String, kind: Kind, linkCount: UInt64 = 1) {
        self.path = path
        self.kind = kind
        self.linkCount = linkCount
    }
}

/// Size limits for one bundle.
public struct BundleLimits: Sendable, Equatable {
    /// Most regular files and symlinks (every one becomes a target).
    public var maxFiles: Int
    public var maxFileBytes: Int64
    public var maxBundleBytes: Int64

    public static let `default` = BundleLimits()

    public init(maxFiles: Int = 10_000, maxFileBytes: Int64 = 4 << 30, maxBundleBytes: Int64 = 16 << 30) {
        self.maxFiles = maxFiles
        self.maxFileBytes = maxFileBytes
        self.maxBundleBytes = maxBundleBytes
    }
}

/// A bundle that passed every rule: what the publisher turns into targets.
public struct ValidatedBundle: Sendable, Equatable {
    public struct File: Sendable, Equatable {
        public var path: String
        public var size: Int64
        /// Permission bits only (`0o777` mask): set-uid, set-gid and sticky dropped.
        public var mode: UInt32

        public init(path: String, size: Int64, mode: UInt32) {
            self.path = path
            self.size = size
            self.mode = mode
        }
    }

    public struct Symlink: Sendable, Equatable {
        public var path: String
        public var target: String

        public init(path: String, target: String) {
            self.path = path
            self.target = target
        }
    }

    public var manifest: UpgradeManifest
    /// Regular files (including `upgrade.toml`), sorted by path.
    public var files: [File]
    /// Symbolic links, sorted by path.
    public var symlinks: [Symlink]
    /// The scheduling function, transform function and health check after
    /// applying the defaults (`sf`, `tf`, `check` when present).
    public var sf: String?
    public var tf: String?
    public var check: String?
    /// Paths whose set-uid, set-gid or sticky bit was dropped.
    public var droppedSpecialBits: [String]

    public var totalBytes: Int64 { files.reduce(0) { $0 + $1.size } }
}

/// Why a bundle was refused. `description` is the one-line, plain-text reason
/// written to `NAME.rejected`.
public struct BundleRejection: Error, CustomStringConvertible, Sendable, Equatable {
    /// The bundle-relative path at fault, if the rule concerns one path.
    public let path: String?
    public let reason: String

    public init(path: String?, reason: String) {
        self.path = path
        self.reason = reason
    }

    public var description: String {
        let text = path.map { "\(BundlePath.printable($0)): \(reason)" } ?? reason
        return String(text.map { $0.isNewline ? " " : $0 })
    }
}

/// The bundle rules of docs/DESIGN.md, as a pure function: a bundle's entries
/// and manifest text in, a verdict out.
public enum BundleRules {
    public static let maxSymlinkDepth = 40
    /// How far above the latest published version a bundle's version may be. Gaps are allowed, but a
    /// bound keeps one bundle (say `version = 9223372036854775807`) from using up every later version.
    public static let maxVersionStep: Int64 = 1000

    /// Checks a bundle.
    /// - Parameters:
    ///   - manifestText: contents of `upgrade.toml`, or `nil` when the bundle has none
    ///     (the scanner reads it only when it is a regular file).
    ///   - entries: everything below the bundle directory (not the directory itself).
    ///   - latestVersion: newest published version (0 when nothing is published).
    public static func validate(
        manifestText: String?,
        entries: [BundleEntry],
        latestVersion: Int64,
        limits: BundleLimits = .default
    ) -> Result<ValidatedBundle, BundleRejection> {
        Result { () throws(BundleRejection) in
            try check(manifestText: manifestText, entries: entries, latestVersion: latestVersion, limits: limits)
        }
    }

    static func check(
        manifestText: String?,
        entries unsorted: [BundleEntry],
        latestVersion: Int64,
        limits: BundleLimits
    ) throws(BundleRejection) -> ValidatedBundle {
        let entries = unsorted.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        var byPath: [String: BundleEntry.Kind] = [:]
        for entry in entries {
            if byPath.updateValue(entry.kind, forKey: entry.path) != nil {
                throw BundleRejection(path: entry.path, reason: "appears twice in the bundle listing")
            }
        }

        // 1. The manifest.
        let manifestName = UpgradeManifest.fileName
        switch byPath[manifestName] {
        case nil:
            throw BundleRejection(path: nil, reason: "missing manifest: the bundle has no \(manifestName)")
        case .file?:
            break
        case .some:
            throw BundleRejection(path: manifestName, reason: "the manifest must be a regular file")
        }
        guard let manifestText else {
            throw BundleRejection(path: nil, reason: "missing manifest: the bundle has no \(manifestName)")
        }
        let manifest: UpgradeManifest
        do {
            manifest = try UpgradeManifest.parse(manifestText)
        } catch {
            throw BundleRejection(path: nil, reason: "invalid manifest: \(error.description)")
        }
        guard manifest.version > latestVersion else {
            throw BundleRejection(
                path: manifestName,
                reason: "version \(manifest.version) is not above the latest published version \(latestVersion)"
            )
        }
        // Both are positive here: the difference cannot overflow.
        guard manifest.version - latestVersion <= maxVersionStep else {
            throw BundleRejection(
                path: manifestName,
                reason: "version \(manifest.version) is more than \(maxVersionStep) above the latest published version "
                    + "\(latestVersion) (at most \(latestVersion + maxVersionStep))"
            )
        }

        // 2. Every entry: path, kind, symlink target, size.
        var files: [ValidatedBundle.File] = []
        var symlinks: [ValidatedBundle.Symlink] = []
        var dropped: [String] = []
        var totalBytes: Int64 = 0
        for entry in entries {
            if let problem = BundlePath.problem(with: entry.path) {
                throw BundleRejection(path: entry.path, reason: "unsafe path: \(problem)")
            }
            switch entry.kind {
            case .directory:
                break
            case .file(let size, let mode):
                guard size >= 0 else { throw BundleRejection(path: entry.path, reason: "negative size \(size)") }
                if size > limits.maxFileBytes {
                    throw BundleRejection(
                        path: entry.path,
                        reason: "file of \(size) bytes is larger than the limit of \(limits.maxFileBytes) bytes"
                    )
                }
                totalBytes += size
                if totalBytes > limits.maxBundleBytes {
                    throw BundleRejection(
                        path: nil,
                        reason: "bundle is larger than the limit of \(limits.maxBundleBytes) bytes"
                    )
                }
                if entry.linkCount > 1 {
                    throw BundleRejection(
                        path: entry.path,
                        reason: "file has \(entry.linkCount) hard links (another name may be outside the bundle); copy it instead"
                    )
                }
                if mode & 0o7000 != 0 { dropped.append(entry.path) }
                files.append(.init(path: entry.path, size: size, mode: mode & 0o777))
            case .symlink(let target):
                if let problem = symlinkProblem(path: entry.path, target: target, byPath: byPath, payload: manifest.payload) {
                    throw BundleRejection(path: entry.path, reason: problem)
                }
                symlinks.append(.init(path: entry.path, target: target))
            case .device:
                throw BundleRejection(path: entry.path, reason: "device files are not allowed")
            case .fifo:
                throw BundleRejection(path: entry.path, reason: "FIFOs (named pipes) are not allowed")
            case .socket:
                throw BundleRejection(path: entry.path, reason: "sockets are not allowed")
            }
            if files.count + symlinks.count > limits.maxFiles {
                throw BundleRejection(
                    path: nil,
                    reason: "bundle has more than \(limits.maxFiles) files (regular files and symlinks)"
                )
            }
        }

        // 3. What the manifest names must be there.
        guard case .directory? = byPath[manifest.payload] else {
            let what = byPath[manifest.payload] == nil ? "is missing" : "is not a directory"
            throw BundleRejection(path: manifest.payload, reason: "payload directory named by the manifest \(what)")
        }
        func role(_ key: String, named: String?) throws(BundleRejection) -> String? {
            let path = named ?? key
            switch byPath[path] {
            case nil:
                if named != nil {
                    throw BundleRejection(path: path, reason: "\(key) is named in the manifest but missing")
                }
                return nil
            case .file(_, let mode)?:
                guard mode & 0o111 != 0 else {
                    throw BundleRejection(path: path, reason: "\(key) is not executable")
                }
                return path
            case .some:
                throw BundleRejection(path: path, reason: "\(key) must be a regular executable file")
            }
        }
        let sf = try role("sf", named: manifest.sf)
        let tf = try role("tf", named: manifest.tf)
        let check = try role("check", named: manifest.check)

        return ValidatedBundle(
            manifest: manifest, files: files, symlinks: symlinks,
            sf: sf, tf: tf, check: check, droppedSpecialBits: dropped
        )
    }

    /// Resolves a link's text from its directory, expanding links inside the
    /// bundle met on the way (so a chain of individually harmless links cannot
    /// climb out), and says why it is unacceptable, or `nil`. A link inside the
    /// payload directory is judged against the payload, the directory a node
    /// installs as its release: it may not leave it (`payload = "a/b/c"` with
    /// `a/b/c/etc -> ../../../etc` stays in the bundle but not in the release).
    /// Any other link may not leave the bundle.
    static func symlinkProblem(
        path: String, target: String, byPath: [String: BundleEntry.Kind], payload: String
    ) -> String? {
        if target.isEmpty { return "symlink has an empty target" }
        if target.hasPrefix("/") { return "symlink target \"\(BundlePath.printable(target))\" is absolute" }
        if target.unicodeScalars.contains(where: BundlePath.isControl) {
            return "symlink target contains a control character"
        }
        if target.utf8.count > BundlePath.maxPathBytes {
            return "symlink target is longer than \(BundlePath.maxPathBytes) bytes"
        }
        let inPayload = path.hasPrefix(payload + "/")
        // The components the resolution may never climb above.
        let floor = inPayload ? payload.split(separator: "/").count : 0
        let escapes = inPayload
            ? "symlink target \"\(BundlePath.printable(target))\" leaves the payload directory \"\(BundlePath.printable(payload))\" (the installed release)"
            : "symlink target \"\(BundlePath.printable(target))\" leaves the bundle"

        var stack = path.split(separator: "/").dropLast().map(String.init)
        var pending = target.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        var expansions = 0
        while !pending.isEmpty {
            let component = pending.removeFirst()
            switch component {
            case ".":
                continue
            case "..":
                if stack.count <= floor { return escapes }
                stack.removeLast()
            default:
                stack.append(component)
                let current = stack.joined(separator: "/")
                // A link met before the last component is followed, as the kernel would.
                if !pending.isEmpty, case .symlink(let inner)? = byPath[current] {
                    expansions += 1
                    if expansions > maxSymlinkDepth { return "too many levels of symbolic links" }
                    if inner.hasPrefix("/") { return escapes }
                    stack.removeLast()
                    pending = inner.split(separator: "/", omittingEmptySubsequences: true).map(String.init) + pending
                }
            }
        }
        return nil
    }
}
