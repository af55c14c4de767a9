import Logging
import Synchronization
import UpgradeCore
import UpgradeWhiteboardClient

/// The whiteboard as a tree of files, without FUSE: `udb/` and `self -> udb/nodes/NODE` of the mount (docs/DESIGN.md,
/// "Node mount and cache"). It decides what a path is on this node, who may write what (the rules themselves are
/// `WhiteboardRules`), keeps the inode, open-file and local-directory tables, and says how long the kernel may keep
/// each answer. Errors are `WhiteboardTreeError`s; `WhiteboardFileSystem` turns them into errnos. The file operations
/// are in `WhiteboardTree+Operations.swift`.
///
/// Reads come from the store's view (the server's files as the follower last saw them, with this node's pending
/// writes on top) and from the mount's one holder table. Every write is the file's whole new content, committed to
/// the store before the operation returns; `mkdir`/`rmdir` of `locks/NAME/HOLDER` go to the server at once.
final class WhiteboardTree: Sendable {
    /// Inodes from here on are the whiteboard's (the bundle tree numbers from 1 upwards).
    static let inodeBase: UInt64 = 1 << 40
    static let selfInode = inodeBase
    static let rootInode = inodeBase + 1
    static let topDirectories = ["locks", "nodes", "shared", "upgrades"]
    /// The names the whiteboard adds to the mount's root.
    static let rootNames: Set<String> = ["self", "udb"]

    let node: String
    let store: any WhiteboardTreeStore
    let logger: Logger
    /// Lock holders: the follower's reports and this node's own lock operations (shared with the follower).
    let holders: WhiteboardHolders
    let inodes = Mutex(InodeTable())
    /// Directories made with mkdir that hold no file yet (local to this mount, like an empty directory in git).
    let localDirectories = Mutex<Set<String>>([])
    let files = Mutex(OpenFiles())
    /// Serializes read-modify-write of appends, so two descriptors appending to one file both land.
    let appendLock = Mutex(())

    init(node: String, store: any WhiteboardTreeStore, holders: WhiteboardHolders, logger: Logger) {
        self.node = node
        self.store = store
        self.holders = holders
        self.logger = logger
    }

    // MARK: what a path is

    enum Item: Equatable {
        case directory(writable: Bool)
        case file(size: Int, writable: Bool)
        case symlink
    }

    /// An answer about one inode, with how long the kernel may keep its name and its attributes (seconds).
    struct Entry: Equatable {
        let ino: UInt64
        let item: Item
        let entryTimeout: Double
        let attributeTimeout: Double
    }

    /// One name in a directory listing.
    struct Child: Equatable {
        let name: String
        let ino: UInt64
        let isFile: Bool
    }

    private var ownDirectory: String { "nodes/\(node)" }

    /// Where `self` points, relative to the mount's root.
    var selfTarget: String { "udb/" + ownDirectory }

    /// What the whiteboard path (relative to `udb/`, "" for `udb` itself) is on this node now, nil if nothing.
    func item(at path: String) throws(WhiteboardTreeError) -> Item? {
        if path.isEmpty || Self.topDirectories.contains(path) {
            return .directory(writable: path == "shared" || path == "locks")
        }
        if path == ownDirectory || isImplicitDirectory(path) { return .directory(writable: true) }
        if let content = try view(path) {
            return .file(size: content.count, writable: may(.put, path))
        }
        if let created = files.withLock({ $0.uncommitted(path: path) }) {
            return .file(size: created.count, writable: true)
        }
        if holders.isHeld(path) { return .directory(writable: false) }
        let hasChildren = try !childNames(of: path).isEmpty || localDirectories.withLock { $0.contains(path) }
        return hasChildren ? .directory(writable: isWritableDirectory(path)) : nil
    }

    /// Directories that exist as soon as they are named: every lock `locks/NAME` (empty until someone holds it, so
    /// `mkdir locks/NAME/HOLDER` needs no setup) and, for the operator, every `upgrades/N` (to write a control file
    /// before the upgrade is published).
    func isImplicitDirectory(_ path: String) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2 else { return false }
        switch parts[0] {
        case "locks": return WhiteboardPath.isLockName(parts[1])
        case "upgrades": return node == WhiteboardRules.operatorName && (try? WhiteboardPath(path + "/control")) != nil
        default: return false
        }
    }

    /// Directories where this node may create something: `shared/…` (files), `locks/NAME` (holders), its own
    /// `nodes/NODE` and, for the operator, `upgrades/N` and any `nodes/NODE`.
    func isWritableDirectory(_ path: String) -> Bool {
        guard BundlePath.problem(with: path) == nil, path.utf8.count < WhiteboardPath.maxPathBytes else { return false }
        let parts = path.split(separator: "/").map(String.init)
        let isOperator = node == WhiteboardRules.operatorName
        switch parts.first {
        case "shared": return true
        case "locks", "upgrades": return isImplicitDirectory(path)
        case "nodes": return parts.count == 2 && (parts[1] == node || isOperator) && WhiteboardPath.isNodeName(parts[1])
        default: return false
        }
    }

    /// Whether this node may make `op` on `path` (the rules'; a summary is the server's alone).
    func may(_ op: WhiteboardOp, _ path: String) -> Bool {
        (try? authorize(op, path, log: false)) != nil
    }

    /// The size limit of a write to `path`.
    static func sizeLimit(_ path: String) -> Int {
        (try? WhiteboardPath(path)).map(WhiteboardRules.maxWriteBytes) ?? WhiteboardRules.maxFileBytes
    }

    static func isHolderPath(_ path: String) -> Bool {
        if case .lockHolder? = (try? WhiteboardPath(path))?.kind { return true }
        return false
    }

    // MARK: how long the kernel may keep an answer

    /// How long the kernel may keep a whiteboard name (dentry) or a directory's or link's attributes (lock holders
    /// excepted). A name another node deleted may stay visible to `stat` that long (reading it fails at once,
    /// writing it makes it again, listings are never cached); the path walk through `self -> udb/nodes/NODE`
    /// then costs one request instead of six.
    static let nameTimeout = 1.0

    /// Files' attributes are never cached: their size changes with every write, from any node.
    static func attributeTimeout(_ item: Item) -> Double {
        if case .file = item { return 0 }
        return nameTimeout
    }

    /// The entry of `ino`. A lock holder's name is never kept: after another node (or the TTL) released it, a kept
    /// name would make mkdir fail with EEXIST in the kernel, and an SF would take that for "I hold it".
    func entry(_ ino: UInt64, _ item: Item) -> Entry {
        let isHolder = inodes.withLock { $0.path(of: ino) }.map(Self.isHolderPath) ?? false
        return Entry(ino: ino, item: item, entryTimeout: isHolder ? 0 : Self.nameTimeout,
                     attributeTimeout: isHolder ? 0 : Self.attributeTimeout(item))
    }

    /// Names the kernel must forget now that the follower saw `paths` change on the server: those gone whose name the
    /// kernel may keep (their parent's inode and their name), so a `stat` or a write right after another node's
    /// delete does not meet a name the kernel still keeps.
    func namesToForget(changed paths: [String]) -> [(parent: UInt64, name: String)] {
        paths.compactMap { path in
            guard (try? view(path)) == nil else { return nil }
            let parent = path.split(separator: "/").dropLast().joined(separator: "/")
            guard let parentIno = inodes.withLock({ $0.existingInode(for: parent) }),
                  let name = path.split(separator: "/").last else { return nil }
            return (parentIno, String(name))
        }
    }

    // MARK: the mount's root

    /// The entry of `udb` or `self` in the mount's root, nil for other names.
    func lookupRoot(name: String) -> Entry? {
        switch name {
        case "udb": entry(Self.rootInode, .directory(writable: false))
        case "self": entry(Self.selfInode, .symlink)
        default: nil
        }
    }

    // MARK: reading the view and asking the rules

    /// The file's content in the store's view, nil when there is none (a journal that cannot be read is `.journal`).
    func view(_ path: String) throws(WhiteboardTreeError) -> [UInt8]? {
        do {
            return try store.content(at: path)
        } catch {
            logger.error("whiteboard journal unreadable", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            throw .journal
        }
    }

    /// The names directly below `path` (files, directories, holders), sorted, with whether each is a file.
    func childNames(of path: String) throws(WhiteboardTreeError) -> [(name: String, isFile: Bool)] {
        let prefix = path.isEmpty ? "" : path + "/"
        var children: [String: Bool] = [:]
        let paths: [String]
        do {
            paths = try store.paths(withPrefix: prefix)
        } catch {
            logger.error("whiteboard journal unreadable", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            throw .journal
        }
        func add(_ full: String, isFile: Bool) {
            let rest = full.dropFirst(prefix.count)
            guard let name = rest.split(separator: "/", maxSplits: 1).first else { return }
            let direct = !rest.contains("/")
            children[String(name), default: false] = children[String(name), default: false] || (direct && isFile)
        }
        for full in paths { add(full, isFile: true) }
        for full in holders.held.keys where full.hasPrefix(prefix) { add(full, isFile: false) }
        for full in localDirectories.withLock({ Array($0) }) where full.hasPrefix(prefix) { add(full, isFile: false) }
        if path.isEmpty { for name in Self.topDirectories { add(name, isFile: false) } }
        if path == "nodes" { add(ownDirectory, isFile: false) }
        return children.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    /// Refuses what the rules refuse this node before anything is journaled (logged, naming the rule).
    func authorize(_ op: WhiteboardOp, _ path: String, log: Bool = true) throws(WhiteboardTreeError) {
        let parsed: WhiteboardPath
        do {
            parsed = try WhiteboardPath(path)
        } catch {
            if log { logger.notice("whiteboard write refused", metadata: ["udb.path": "\(path)", "error": "\(error)"]) }
            throw .forbidden
        }
        if let denial = WhiteboardRules.authorize(node: node, op: op, path: parsed) {
            if log { logger.notice("whiteboard write refused", metadata: ["udb.path": "\(path)", "error": "\(denial)"]) }
            throw denial.kind == .forbidden ? .forbidden : .malformed
        }
    }
}
