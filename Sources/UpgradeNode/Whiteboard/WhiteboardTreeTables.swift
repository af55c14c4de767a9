// The tables a `WhiteboardTree` keeps in memory: inode numbers and open descriptors (pure).

/// Stable inode numbers for whiteboard paths (never reused while the mount lives).
struct InodeTable {
    private var inodeOfPath: [String: UInt64] = ["": WhiteboardTree.rootInode]
    private var pathOfInode: [UInt64: String] = [WhiteboardTree.rootInode: ""]
    private var next = WhiteboardTree.rootInode + 1

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
