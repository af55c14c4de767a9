import FuseKit
import Foundation
import Logging
import Synchronization
import UpgradeCore
import UpgradeWhiteboardClient

/// The whiteboard as files: `udb/` and `self -> udb/nodes/NODE` of the mount (docs/DESIGN.md, "Node side").
///
/// Reads come from the journal's view (the server's files as the follower last saw them, with this node's
/// pending writes on top) and the lock holders the follower reports. Every `write(2)` to a file is signed and
/// made durable in the journal before it returns (one whiteboard update per write call: the file's whole new
/// content); the sender delivers it. `mkdir`/`rmdir` of `locks/NAME/HOLDER` go to the server at once.
///
/// File contents and attributes are never cached by the kernel (timeout 0, direct I/O), so a read always shows
/// the current view; names and directory attributes are kept for a second. The follower keeps the view within
/// about a second of the server.
public final class WhiteboardFileSystem: Sendable {
    /// Inodes from here on are the whiteboard's (the bundle tree numbers from 1 upwards).
    public static let inodeBase: UInt64 = 1 << 40
    static let selfInode = inodeBase
    static let rootInode = inodeBase + 1
    static let topDirectories = ["locks", "nodes", "shared", "upgrades"]

    public let node: String
    private let journal: WhiteboardJournal
    private let locks: WhiteboardLockClient
    private let wakeSender: @Sendable () -> Void
    private let logger: Logger
    private let mountTime = Int64(Date().timeIntervalSince1970)

    private let inodes = Mutex(InodeTable())
    /// Lock holders by path `locks/NAME/HOLDER`, as the follower or this node's own lock operations reported them.
    private let holders = Mutex(HolderTable())
    /// Directories made with mkdir that hold no file yet (local to this mount, like an empty directory in git).
    private let localDirectories = Mutex<Set<String>>([])
    private let files = Mutex(OpenFiles())
    /// Serializes read-modify-write of appends, so two descriptors appending to one file both land.
    private let appendLock = Mutex(())
    /// The kernel mount, for dropping names another node deleted.
    private let fuse = Mutex<FuseMount?>(nil)

    public init(node: String, journal: WhiteboardJournal, locks: WhiteboardLockClient,
                wakeSender: @escaping @Sendable () -> Void, logger: Logger) {
        self.node = node
        self.journal = journal
        self.locks = locks
        self.wakeSender = wakeSender
        self.logger = logger
    }

    public func owns(_ ino: UInt64) -> Bool { ino >= Self.inodeBase }

    /// Holder changes from the follower (`replacingAll` after a snapshot at `revision`).
    public func holdersChanged(_ changed: [WhiteboardHolder], replacingAll: Bool, revision: Int64) {
        holders.withLock { table in
            if replacingAll { table.forgetOlder(than: revision) }
            for holder in changed { table.record(holder.path, held: !holder.released, revision: holder.revision) }
        }
    }

    func attach(_ fuseMount: FuseMount) { fuse.withLock { $0 = fuseMount } }

    /// Files the follower saw change on the server: the kernel forgets the names of those now gone, so a
    /// `stat` or a write right after another node's delete does not meet a name the kernel still keeps.
    /// (Called from the follower's task, never from a FUSE request.)
    public func filesChanged(_ paths: [String]) {
        guard let fuse = fuse.withLock({ $0 }) else { return }
        for path in paths where (try? view(path)) == nil {
            let parent = path.split(separator: "/").dropLast().joined(separator: "/")
            guard let parentIno = inodes.withLock({ $0.existingInode(for: parent) }),
                  let name = path.split(separator: "/").last else { continue }
            fuse.invalidateEntry(parent: parentIno, name: String(name))
        }
    }

    // MARK: the mount's root

    /// `udb` and `self`, for the root directory's listing.
    public func rootEntries() -> [FuseDirectoryEntry] {
        [FuseDirectoryEntry(name: "self", ino: Self.selfInode, mode: UInt32(S_IFLNK) | 0o777),
         FuseDirectoryEntry(name: "udb", ino: Self.rootInode, mode: UInt32(S_IFDIR) | 0o555)]
    }

    /// The entry of `udb` or `self` in the mount's root, nil for other names.
    public func lookupRoot(name: String) -> FuseEntry? {
        switch name {
        case "udb": entry(Self.rootInode, .directory(writable: false))
        case "self": entry(Self.selfInode, .symlink)
        default: nil
        }
    }

    // MARK: what a path is

    enum Item: Equatable {
        case directory(writable: Bool)
        case file(size: Int, writable: Bool)
        case symlink
    }

    private var ownDirectory: String { "nodes/\(node)" }

    /// What the whiteboard path (relative to `udb/`, "" for `udb` itself) is on this node now, nil if nothing.
    func item(at path: String) throws(FuseError) -> Item? {
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
        if holders.withLock({ $0.isHeld(path) }) { return .directory(writable: false) }
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

    private func may(_ op: WhiteboardOp, _ path: String) -> Bool {
        guard let parsed = try? WhiteboardPath(path) else { return false }
        if case .upgradeSummary = parsed.kind { return false }
        return WhiteboardRules.authorize(node: node, op: op, path: parsed) == nil
    }

    private func view(_ path: String) throws(FuseError) -> [UInt8]? {
        do {
            return try journal.view(path: path)
        } catch {
            logger.error("whiteboard journal unreadable", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            throw FuseError.io
        }
    }

    /// The names directly below `path` (files, directories, holders), sorted, with whether each is a file.
    private func childNames(of path: String) throws(FuseError) -> [(name: String, isFile: Bool)] {
        let prefix = path.isEmpty ? "" : path + "/"
        var children: [String: Bool] = [:]
        let paths: [String]
        do {
            paths = try journal.paths(withPrefix: prefix)
        } catch {
            logger.error("whiteboard journal unreadable", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            throw FuseError.io
        }
        func add(_ full: String, isFile: Bool) {
            let rest = full.dropFirst(prefix.count)
            guard let name = rest.split(separator: "/", maxSplits: 1).first else { return }
            let direct = !rest.contains("/")
            children[String(name), default: false] = children[String(name), default: false] || (direct && isFile)
        }
        for full in paths { add(full, isFile: true) }
        for full in holders.withLock({ $0.heldPaths }) where full.hasPrefix(prefix) { add(full, isFile: false) }
        for full in localDirectories.withLock({ Array($0) }) where full.hasPrefix(prefix) { add(full, isFile: false) }
        if path.isEmpty { for name in Self.topDirectories { add(name, isFile: false) } }
        if path == "nodes" { add(ownDirectory, isFile: false) }
        return children.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
    }

    // MARK: FuseFileSystem operations for whiteboard inodes

    public func lookup(parent: UInt64, name: String) throws(FuseError) -> FuseEntry {
        let path = try childPath(parent, name)
        guard let item = try item(at: path) else { throw FuseError.noEntry }
        return entry(inodes.withLock { $0.inode(for: path) }, item)
    }

    public func getattr(ino: UInt64) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        if ino == Self.selfInode { return (attributes(ino, .symlink), Self.nameTimeout) }
        guard let path = inodes.withLock({ $0.path(of: ino) }), let item = try item(at: path) else { throw FuseError.noEntry }
        return (attributes(ino, item), Self.isHolderPath(path) ? 0 : Self.attributeTimeout(item))
    }

    public func readlink(ino: UInt64) throws(FuseError) -> String {
        guard ino == Self.selfInode else { throw FuseError.invalid }
        return "udb/" + ownDirectory
    }

    public func readdir(ino: UInt64) throws(FuseError) -> [FuseDirectoryEntry] {
        guard let path = inodes.withLock({ $0.path(of: ino) }) else { throw FuseError.noEntry }
        guard case .directory? = try item(at: path) else { throw FuseError.notDirectory }
        return try childNames(of: path).map { name, isFile in
            let child = path.isEmpty ? name : path + "/" + name
            let ino = inodes.withLock { $0.inode(for: child) }
            return FuseDirectoryEntry(name: name, ino: ino, mode: isFile ? UInt32(S_IFREG) | 0o444 : UInt32(S_IFDIR) | 0o555)
        }
    }

    public func open(ino: UInt64, flags: Int32) throws(FuseError) -> FuseOpenResult {
        guard let path = inodes.withLock({ $0.path(of: ino) }) else { throw FuseError.noEntry }
        let writing = flags & O_ACCMODE != O_RDONLY
        switch try item(at: path) {
        case .file?: break
        case nil where writing:
            // Deleted by another node while the kernel still knew the name (names are kept a second): a write
            // makes the file again, as it would have through create.
            try authorize(.put, path)
            let handle = files.withLock {
                $0.open(OpenFile(ino: ino, path: path, content: [], writable: true, append: flags & O_APPEND != 0,
                                 uncommittedTruncate: true))
            }
            return FuseOpenResult(fileHandle: handle, keepCache: false, directIO: true)
        case nil: throw FuseError.noEntry
        default: throw FuseError.isDirectory
        }
        if writing { try authorize(.put, path) }
        let truncate = writing && flags & O_TRUNC != 0
        let content = truncate ? [] : (try view(path) ?? [])
        let handle = files.withLock {
            $0.open(OpenFile(ino: ino, path: path, content: content, writable: writing,
                             append: flags & O_APPEND != 0, uncommittedTruncate: truncate))
        }
        return FuseOpenResult(fileHandle: handle, keepCache: false, directIO: true)
    }

    public func create(parent: UInt64, name: String, flags: Int32) throws(FuseError) -> (FuseEntry, FuseOpenResult) {
        let path = try childPath(parent, name)
        if try item(at: path) != nil { throw FuseError.exists }
        try authorize(.put, path)
        let ino = inodes.withLock { $0.inode(for: path) }
        let handle = files.withLock {
            $0.open(OpenFile(ino: ino, path: path, content: [], writable: true, append: flags & O_APPEND != 0,
                             uncommittedTruncate: true))
        }
        // Until the first write or close commits it, the new file exists only in this descriptor.
        return (FuseEntry(attributes: attributes(ino, .file(size: 0, writable: true)), entryTimeout: 0, attributeTimeout: 0),
                FuseOpenResult(fileHandle: handle, keepCache: false, directIO: true))
    }

    public func read(fileHandle: UInt64, offset: Int64, size: Int) throws(FuseError) -> FuseReadResult {
        guard let content = files.withLock({ $0[fileHandle]?.content }) else { throw FuseError.badFileHandle }
        guard offset < content.count else { return .bytes([]) }
        let start = Int(offset)
        return .bytes(Array(content[start..<min(content.count, start + size)]))
    }

    public func write(fileHandle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(FuseError) -> Int {
        guard let file = files.withLock({ $0[fileHandle] }), file.writable else { throw FuseError.badFileHandle }
        let limit = Self.sizeLimit(file.path)
        if file.append {
            try appendLock.withLock { _ throws(FuseError) in
                var content = try view(file.path) ?? []
                content.append(contentsOf: data)
                guard content.count <= limit else { throw FuseError.fileTooLarge }
                try commit(.put, file.path, content)
                files.withLock { $0.update(fileHandle, content: content) }
            }
            return data.count
        }
        let end = Int(offset) + data.count
        guard offset >= 0, end <= limit else { throw FuseError.fileTooLarge }
        var content = file.content
        if content.count < end { content.append(contentsOf: repeatElement(0, count: end - content.count)) }
        content.replaceSubrange(Int(offset)..<end, with: data)
        try commit(.put, file.path, content)
        files.withLock { $0.update(fileHandle, content: content) }
        return data.count
    }

    /// On close: a descriptor that truncated (or created) the file and wrote nothing commits the empty file now —
    /// if an empty file is valid there. A word or number file is not, and shells close a redirection's first
    /// descriptor (after dup2) before writing through the copy, so that truncation is left to the write that follows.
    public func flush(fileHandle: UInt64) throws(FuseError) {
        guard let file = files.withLock({ $0[fileHandle] }), file.uncommittedTruncate else { return }
        guard (try? WhiteboardJournal.check(node: node, op: .put, path: file.path, content: file.content)) != nil else {
            return
        }
        try commit(.put, file.path, file.content)
        files.withLock { $0.update(fileHandle, content: file.content) }
    }

    public func release(fileHandle: UInt64) {
        guard let file = files.withLock({ $0.close(fileHandle) }) else { return }
        if file.uncommittedTruncate && !files.withLock({ $0.isOpen(path: file.path) }) {
            logger.notice("a truncation without content was not written: the file cannot be empty",
                          metadata: ["udb.path": "\(file.path)"])
        }
    }

    /// Truncation (`truncate -s`, ftruncate); time changes are accepted and ignored (the server keeps the time of
    /// the last write), so `touch` works; mode and owner changes are refused.
    public func setattr(ino: UInt64, changes: FuseAttributeChanges) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        guard changes.mode == nil, changes.uid == nil, changes.gid == nil else { throw FuseError.permission }
        guard let path = inodes.withLock({ $0.path(of: ino) }) else { throw FuseError.noEntry }
        if let size = changes.size {
            guard case .file? = try item(at: path) else { throw FuseError.isDirectory }
            try authorize(.put, path)
            guard size <= Self.sizeLimit(path) else { throw FuseError.fileTooLarge }
            let resized = { (content: [UInt8]) -> [UInt8] in
                Array(content.prefix(Int(size))) + Array(repeating: 0, count: max(0, Int(size) - content.count))
            }
            // With a descriptor open for writing (ftruncate), the next write or the close commits it.
            let truncatedOpenFile = files.withLock { $0.truncate(ino: ino, resized) }
            if !truncatedOpenFile { try commit(.put, path, resized(try view(path) ?? [])) }
        }
        return try getattr(ino: ino)
    }

    public func unlink(parent: UInt64, name: String) throws(FuseError) {
        let path = try childPath(parent, name)
        switch try item(at: path) {
        case nil: throw FuseError.noEntry
        case .directory?: throw FuseError.isDirectory
        default: break
        }
        try authorize(.delete, path)
        try commit(.delete, path, nil)
    }

    /// `mkdir locks/NAME/HOLDER` acquires; elsewhere (under `shared/` and for `locks/NAME`) it makes a local,
    /// empty directory that lets files be created in it.
    public func mkdir(parent: UInt64, name: String) throws(FuseError) -> FuseEntry {
        let path = try childPath(parent, name)
        if case .lockHolder? = (try? WhiteboardPath(path))?.kind {
            let revision = try lockOperation(.acquire, path)
            holders.withLock { $0.record(path, held: true, revision: revision) }
        } else {
            if try item(at: path) != nil { throw FuseError.exists }
            guard isWritableDirectory(path) else { throw FuseError.access }
            localDirectories.withLock { _ = $0.insert(path) }
        }
        return entry(inodes.withLock { $0.inode(for: path) }, .directory(writable: false))
    }

    /// `rmdir locks/NAME/HOLDER` releases (the operator may release anyone's holder); an empty local directory
    /// just goes away.
    public func rmdir(parent: UInt64, name: String) throws(FuseError) {
        let path = try childPath(parent, name)
        if case .lockHolder? = (try? WhiteboardPath(path))?.kind {
            let revision = try lockOperation(.release, path)
            holders.withLock { $0.record(path, held: false, revision: revision) }
            return
        }
        guard case .directory? = try item(at: path) else { throw FuseError.noEntry }
        guard try childNames(of: path).isEmpty else { throw FuseError.notEmpty }
        guard localDirectories.withLock({ $0.remove(path) != nil }) else { throw FuseError.access }
    }

    // MARK: helpers

    private func childPath(_ parent: UInt64, _ name: String) throws(FuseError) -> String {
        guard let parentPath = inodes.withLock({ $0.path(of: parent) }) else { throw FuseError.noEntry }
        return parentPath.isEmpty ? name : parentPath + "/" + name
    }

    private func authorize(_ op: WhiteboardOp, _ path: String) throws(FuseError) {
        let parsed: WhiteboardPath
        do {
            parsed = try WhiteboardPath(path)
        } catch {
            logger.notice("whiteboard write refused", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            throw FuseError.access
        }
        if case .upgradeSummary = parsed.kind { throw FuseError.access }
        if let denial = WhiteboardRules.authorize(node: node, op: op, path: parsed) {
            logger.notice("whiteboard write refused", metadata: ["udb.path": "\(path)", "error": "\(denial)"])
            throw denial.kind == .forbidden ? FuseError.access : FuseError.invalid
        }
    }

    /// Journals a write (durable before this returns) and wakes the sender.
    private func commit(_ op: WhiteboardJournal.Op, _ path: String, _ content: [UInt8]?) throws(FuseError) {
        do {
            try journal.enqueue(op: op, path: path, content: content)
        } catch {
            logger.notice("whiteboard write refused", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            switch error.denial?.kind {
            case .forbidden?: throw FuseError.access
            case nil: throw FuseError.io
            default: throw FuseError.invalid
            }
        }
        wakeSender()
    }

    /// Runs a lock operation on the server; returns the revision it was applied at.
    private func lockOperation(_ op: WhiteboardOp, _ path: String) throws(FuseError) -> Int64 {
        switch locks.perform(op, path: path) {
        case .success(let revision): return revision
        case .failure(let failure):
            logger.info("lock operation failed", metadata: [
                "udb.op": "\(op.rawValue)", "udb.path": "\(path)", "error": "\(failure.message)",
            ])
            throw FuseError(failure.errno)
        }
    }

    static func sizeLimit(_ path: String) -> Int {
        path.hasSuffix("/log") && path.hasPrefix("nodes/") ? WhiteboardRules.maxLogPutBytes : WhiteboardRules.maxFileBytes
    }

    private func entry(_ ino: UInt64, _ item: Item) -> FuseEntry {
        // A lock holder's name is never kept: after another node (or the TTL) released it, a kept name would make
        // mkdir fail with EEXIST in the kernel, and an SF would take that for "I hold it".
        let isHolder = inodes.withLock { $0.path(of: ino) }.map(Self.isHolderPath) ?? false
        return FuseEntry(attributes: attributes(ino, item), entryTimeout: isHolder ? 0 : Self.nameTimeout,
                         attributeTimeout: isHolder ? 0 : Self.attributeTimeout(item))
    }

    static func isHolderPath(_ path: String) -> Bool {
        if case .lockHolder? = (try? WhiteboardPath(path))?.kind { return true }
        return false
    }

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

    private func attributes(_ ino: UInt64, _ item: Item) -> FuseAttributes {
        switch item {
        case .directory(let writable):
            FuseAttributes(ino: ino, mode: UInt32(S_IFDIR) | (writable ? 0o755 : 0o555), nlink: 2, size: 4096,
                           mtimeSeconds: mountTime, uid: 0, gid: 0)
        case .file(let size, let writable):
            FuseAttributes(ino: ino, mode: UInt32(S_IFREG) | (writable ? 0o644 : 0o444), nlink: 1, size: UInt64(size),
                           mtimeSeconds: Int64(Date().timeIntervalSince1970), uid: 0, gid: 0)
        case .symlink:
            FuseAttributes(ino: ino, mode: UInt32(S_IFLNK) | 0o777, nlink: 1, size: UInt64(("udb/" + ownDirectory).utf8.count),
                           mtimeSeconds: mountTime, uid: 0, gid: 0)
        }
    }
}

/// Stable inode numbers for whiteboard paths (never reused while the mount lives).
struct InodeTable {
    private var inodeOfPath: [String: UInt64] = ["": WhiteboardFileSystem.rootInode]
    private var pathOfInode: [UInt64: String] = [WhiteboardFileSystem.rootInode: ""]
    private var next = WhiteboardFileSystem.rootInode + 1

    mutating func inode(for path: String) -> UInt64 {
        if let ino = inodeOfPath[path] { return ino }
        let ino = next
        next += 1
        inodeOfPath[path] = ino
        pathOfInode[ino] = path
        return ino
    }

    func path(of ino: UInt64) -> String? { pathOfInode[ino] }

    /// The inode of `path` if the kernel was ever told of it (nil: it cannot have a cached name).
    func existingInode(for path: String) -> UInt64? { inodeOfPath[path] }
}

/// Lock holders as last known, with the server revision each fact is from: this node's own lock operations and the
/// follower's reports race, and only the newer fact about a holder counts.
struct HolderTable {
    private var entries: [String: (held: Bool, revision: Int64)] = [:]

    mutating func record(_ path: String, held: Bool, revision: Int64) {
        if let known = entries[path], known.revision > revision { return }
        entries[path] = (held, revision)
    }

    /// Before a snapshot taken at `revision` is recorded: what it supersedes goes.
    mutating func forgetOlder(than revision: Int64) {
        entries = entries.filter { $0.value.revision > revision }
    }

    func isHeld(_ path: String) -> Bool { entries[path]?.held ?? false }
    var heldPaths: [String] { entries.filter(\.value.held).map(\.key) }
}

/// One open descriptor of a whiteboard file: what it reads, and for writers the content to build on.
struct OpenFile {
    let ino: UInt64
    let path: String
    var content: [UInt8]
    let writable: Bool
    let append: Bool
    /// Opened with O_TRUNC (or created, or truncated) and not yet committed by a write.
    var uncommittedTruncate: Bool
}

struct OpenFiles {
    private var files: [UInt64: OpenFile] = [:]
    private var next: UInt64 = 1

    mutating func open(_ file: OpenFile) -> UInt64 {
        let handle = next
        next += 1
        files[handle] = file
        return handle
    }

    subscript(handle: UInt64) -> OpenFile? { files[handle] }

    /// The content of a file that exists only in a descriptor so far (created, nothing committed yet).
    func uncommitted(path: String) -> [UInt8]? {
        files.values.first { $0.path == path && $0.uncommittedTruncate && $0.writable }?.content
    }

    mutating func update(_ handle: UInt64, content: [UInt8]) {
        files[handle]?.content = content
        files[handle]?.uncommittedTruncate = false
    }

    /// Resizes every writable descriptor of `ino`; false when there is none.
    mutating func truncate(ino: UInt64, _ resize: ([UInt8]) -> [UInt8]) -> Bool {
        var found = false
        for (handle, file) in files where file.ino == ino && file.writable {
            files[handle]?.content = resize(file.content)
            files[handle]?.uncommittedTruncate = true
            found = true
        }
        return found
    }

    mutating func close(_ handle: UInt64) -> OpenFile? { files.removeValue(forKey: handle) }

    func isOpen(path: String) -> Bool { files.values.contains { $0.path == path } }
}
