import UpgradeCore
import UpgradeWhiteboardClient

/// The file operations of the whiteboard's tree, as the FUSE adapter calls them: each returns what the adapter needs
/// to answer, or a `WhiteboardTreeError`.
extension WhiteboardTree {
    func lookup(parent: UInt64, name: String) throws(WhiteboardTreeError) -> Entry {
        let path = try childPath(parent, name)
        guard let item = try item(at: path) else { throw .notFound }
        return entry(inodes.withLock { $0.inode(for: path) }, item)
    }

    /// The item of `ino` and how long the kernel may keep its attributes.
    func getattr(ino: UInt64) throws(WhiteboardTreeError) -> (Item, timeout: Double) {
        if ino == Self.selfInode { return (.symlink, Self.nameTimeout) }
        guard let path = inodes.withLock({ $0.path(of: ino) }), let item = try item(at: path) else { throw .notFound }
        return (item, Self.isHolderPath(path) ? 0 : Self.attributeTimeout(item))
    }

    func readlink(ino: UInt64) throws(WhiteboardTreeError) -> String {
        guard ino == Self.selfInode else { throw .notALink }
        return selfTarget
    }

    func readdir(ino: UInt64) throws(WhiteboardTreeError) -> [Child] {
        guard let path = inodes.withLock({ $0.path(of: ino) }) else { throw .notFound }
        guard case .directory? = try item(at: path) else { throw .notADirectory }
        return try childNames(of: path).map { name, isFile in
            let child = path.isEmpty ? name : path + "/" + name
            return Child(name: name, ino: inodes.withLock { $0.inode(for: child) }, isFile: isFile)
        }
    }

    /// How a file is opened (from open(2)'s flags).
    struct OpenMode: Equatable {
        var writing = false
        var append = false
        var truncate = false
    }

    /// Opens a file; returns its handle.
    func open(ino: UInt64, _ mode: OpenMode) throws(WhiteboardTreeError) -> UInt64 {
        guard let path = inodes.withLock({ $0.path(of: ino) }) else { throw .notFound }
        switch try item(at: path) {
        case .file?: break
        case nil where mode.writing:
            // Deleted by another node while the kernel still knew the name (names are kept a second): a write
            // makes the file again, as it would have through create.
            try authorize(.put, path)
            return files.withLock {
                $0.open(OpenFile(ino: ino, path: path, content: [], writable: true, append: mode.append,
                                 uncommittedTruncate: true))
            }
        case nil: throw .notFound
        default: throw .isADirectory
        }
        if mode.writing { try authorize(.put, path) }
        let truncate = mode.writing && mode.truncate
        let content = truncate ? [] : (try view(path) ?? [])
        return files.withLock {
            $0.open(OpenFile(ino: ino, path: path, content: content, writable: mode.writing, append: mode.append,
                             uncommittedTruncate: truncate))
        }
    }

    /// Creates a file and opens it for writing. Until the first write or close commits it, the new file exists only
    /// in this descriptor (so the kernel keeps neither its name nor its attributes).
    func create(parent: UInt64, name: String, append: Bool) throws(WhiteboardTreeError) -> (Entry, handle: UInt64) {
        let path = try childPath(parent, name)
        if try item(at: path) != nil { throw .exists }
        try authorize(.put, path)
        let ino = inodes.withLock { $0.inode(for: path) }
        let handle = files.withLock {
            $0.open(OpenFile(ino: ino, path: path, content: [], writable: true, append: append, uncommittedTruncate: true))
        }
        return (Entry(ino: ino, item: .file(size: 0, writable: true), entryTimeout: 0, attributeTimeout: 0), handle)
    }

    func read(handle: UInt64, offset: Int64, size: Int) throws(WhiteboardTreeError) -> [UInt8] {
        guard let content = files.withLock({ $0[handle]?.content }) else { throw .badHandle }
        guard offset < content.count else { return [] }
        let start = Int(offset)
        return Array(content[start..<min(content.count, start + size)])
    }

    /// Writes `data` at `offset` (at the end of the current view for O_APPEND) and commits the file's whole new
    /// content; returns how many bytes were written.
    func write(handle: UInt64, offset: Int64, data: UnsafeRawBufferPointer) throws(WhiteboardTreeError) -> Int {
        guard let file = files.withLock({ $0[handle] }), file.writable else { throw .badHandle }
        let limit = Self.sizeLimit(file.path)
        if file.append {
            try appendLock.withLock { _ throws(WhiteboardTreeError) in
                var content = try view(file.path) ?? []
                content.append(contentsOf: data)
                guard content.count <= limit else { throw .tooLarge }
                try commit(.put, file.path, content)
                files.withLock { $0.update(handle, content: content) }
            }
            return data.count
        }
        let end = Int(offset) + data.count
        guard offset >= 0, end <= limit else { throw .tooLarge }
        var content = file.content
        if content.count < end { content.append(contentsOf: repeatElement(0, count: end - content.count)) }
        content.replaceSubrange(Int(offset)..<end, with: data)
        try commit(.put, file.path, content)
        files.withLock { $0.update(handle, content: content) }
        return data.count
    }

    /// On close: a descriptor that truncated (or created) the file and wrote nothing commits the empty file now —
    /// if an empty file is valid there. A word or number file is not, and shells close a redirection's first
    /// descriptor (after dup2) before writing through the copy, so that truncation is left to the write that follows.
    func flush(handle: UInt64) throws(WhiteboardTreeError) {
        guard let file = files.withLock({ $0[handle] }), file.uncommittedTruncate else { return }
        guard (try? WhiteboardJournal.check(node: node, op: .put, path: file.path, content: file.content)) != nil else {
            return
        }
        try commit(.put, file.path, file.content)
        files.withLock { $0.update(handle, content: file.content) }
    }

    func release(handle: UInt64) {
        guard let file = files.withLock({ $0.close(handle) }) else { return }
        if file.uncommittedTruncate && !files.withLock({ $0.isOpen(path: file.path) }) {
            logger.notice("a truncation without content was not written: the file cannot be empty",
                          metadata: ["udb.path": "\(file.path)"])
        }
    }

    /// Truncation (`truncate -s`, ftruncate) to `size`; time changes are accepted and ignored (the server keeps the
    /// time of the last write), so `touch` works; mode and owner changes are refused.
    func setattr(ino: UInt64, size: UInt64?, changesModeOrOwner: Bool) throws(WhiteboardTreeError) -> (Item, timeout: Double) {
        guard !changesModeOrOwner else { throw .attributesFixed }
        guard let path = inodes.withLock({ $0.path(of: ino) }) else { throw .notFound }
        if let size {
            guard case .file? = try item(at: path) else { throw .isADirectory }
            try authorize(.put, path)
            guard size <= Self.sizeLimit(path) else { throw .tooLarge }
            let resized = { (content: [UInt8]) -> [UInt8] in
                Array(content.prefix(Int(size))) + Array(repeating: 0, count: max(0, Int(size) - content.count))
            }
            // With a descriptor open for writing (ftruncate), the next write or the close commits it.
            let truncatedOpenFile = files.withLock { $0.truncate(ino: ino, resized) }
            if !truncatedOpenFile { try commit(.put, path, resized(try view(path) ?? [])) }
        }
        return try getattr(ino: ino)
    }

    func unlink(parent: UInt64, name: String) throws(WhiteboardTreeError) {
        let path = try childPath(parent, name)
        switch try item(at: path) {
        case nil: throw .notFound
        case .directory?: throw .isADirectory
        default: break
        }
        try authorize(.delete, path)
        try commit(.delete, path, nil)
    }

    /// `mkdir locks/NAME/HOLDER` acquires; elsewhere (under `shared/` and for `locks/NAME`) it makes a local,
    /// empty directory that lets files be created in it.
    func mkdir(parent: UInt64, name: String) throws(WhiteboardTreeError) -> Entry {
        let path = try childPath(parent, name)
        if Self.isHolderPath(path) {
            let revision = try lockOperation(.acquire, path)
            holders.record(path, held: true, revision: revision)
        } else {
            if try item(at: path) != nil { throw .exists }
            guard isWritableDirectory(path) else { throw .forbidden }
            localDirectories.withLock { _ = $0.insert(path) }
        }
        return entry(inodes.withLock { $0.inode(for: path) }, .directory(writable: false))
    }

    /// `rmdir locks/NAME/HOLDER` releases (the operator may release anyone's holder); an empty local directory
    /// just goes away.
    func rmdir(parent: UInt64, name: String) throws(WhiteboardTreeError) {
        let path = try childPath(parent, name)
        if Self.isHolderPath(path) {
            let revision = try lockOperation(.release, path)
            holders.record(path, held: false, revision: revision)
            return
        }
        guard case .directory? = try item(at: path) else { throw .notFound }
        guard try childNames(of: path).isEmpty else { throw .notEmpty }
        guard localDirectories.withLock({ $0.remove(path) != nil }) else { throw .forbidden }
    }

    /// Renaming is not supported on the whiteboard.
    func rename() throws(WhiteboardTreeError) { throw .crossDevice }

    // MARK: helpers

    private func childPath(_ parent: UInt64, _ name: String) throws(WhiteboardTreeError) -> String {
        guard let parentPath = inodes.withLock({ $0.path(of: parent) }) else { throw .notFound }
        return parentPath.isEmpty ? name : parentPath + "/" + name
    }

    /// Commits a write to the store (durable before this returns).
    private func commit(_ op: WhiteboardJournal.Op, _ path: String, _ content: [UInt8]?) throws(WhiteboardTreeError) {
        do {
            try store.commit(op, path: path, content: content)
        } catch {
            logger.notice("whiteboard write refused", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            switch error.denial?.kind {
            case .forbidden?: throw .forbidden
            case nil: throw .journal
            default: throw .malformed
            }
        }
    }

    /// Runs a lock operation on the server; returns the revision it was applied at.
    private func lockOperation(_ op: WhiteboardOp, _ path: String) throws(WhiteboardTreeError) -> Int64 {
        switch store.lock(op, path: path) {
        case .success(let revision): return revision
        case .failure(let failure):
            logger.info("lock operation failed", metadata: [
                "udb.op": "\(op.rawValue)", "udb.path": "\(path)", "error": "\(failure.message)",
            ])
            throw WhiteboardTreeError(failure.reason)
        }
    }
}
