import Dispatch
import Foundation
import FuseKit

/// A small in-memory file system to mount in tests.
final class MemoryFileSystem: FuseFileSystem, @unchecked Sendable {
    // @unchecked: all state is behind `lock`.

    enum Content {
        case bytes([UInt8])
        /// Served with `.fileDescriptor` (splice) from an open descriptor.
        case descriptor(Int32, size: Int)
        /// Opens fine, every read fails with this error.
        case failing(FuseError)
    }

    struct Node {
        var attributes: FuseAttributes
        var content: Content = .bytes([])
        var children: [String: UInt64] = [:]
        var link: String?
        /// `open` replies after this many seconds, from another thread.
        var openDelaySeconds: Double?
    }

    static let regular: UInt32 = 0o100000
    static let directory: UInt32 = 0o040000
    static let symlink: UInt32 = 0o120000
    static let timeoutSeconds = 3600.0

    private let lock = NSLock()
    private var nodes: [UInt64: Node] = [:]
    private var nextIno: UInt64 = 2
    private var descriptors: [Int32] = []
    private(set) var openedOnThreads: [String] = []

    init() {
        nodes[fuseRootInode] = Node(attributes: FuseAttributes(ino: fuseRootInode, mode: Self.directory | 0o755, nlink: 2))
    }

    deinit {
        for fd in descriptors { close(fd) }
    }

    // MARK: building

    @discardableResult
    func addDirectory(_ name: String, in parent: UInt64 = fuseRootInode) -> UInt64 {
        add(name, in: parent, Node(attributes: FuseAttributes(ino: 0, mode: Self.directory | 0o755, nlink: 2)))
    }

    @discardableResult
    func addFile(_ name: String, in parent: UInt64 = fuseRootInode, bytes: [UInt8], openDelaySeconds: Double? = nil) -> UInt64 {
        var node = Node(attributes: FuseAttributes(ino: 0, mode: Self.regular | 0o644, size: UInt64(bytes.count),
                                                   mtimeSeconds: 1_700_000_000))
        node.content = .bytes(bytes)
        node.openDelaySeconds = openDelaySeconds
        return add(name, in: parent, node)
    }

    /// Takes ownership of `fd`.
    @discardableResult
    func addDescriptorFile(_ name: String, in parent: UInt64 = fuseRootInode, fd: Int32, size: Int) -> UInt64 {
        var node = Node(attributes: FuseAttributes(ino: 0, mode: Self.regular | 0o644, size: UInt64(size)))
        node.content = .descriptor(fd, size: size)
        lock.withLock { descriptors.append(fd) }
        return add(name, in: parent, node)
    }

    @discardableResult
    func addFailingFile(_ name: String, in parent: UInt64 = fuseRootInode, size: Int, error: FuseError) -> UInt64 {
        var node = Node(attributes: FuseAttributes(ino: 0, mode: Self.regular | 0o644, size: UInt64(size)))
        node.content = .failing(error)
        return add(name, in: parent, node)
    }

    @discardableResult
    func addSymlink(_ name: String, in parent: UInt64 = fuseRootInode, target: String) -> UInt64 {
        var node = Node(attributes: FuseAttributes(ino: 0, mode: Self.symlink | 0o777, size: UInt64(target.utf8.count)))
        node.link = target
        return add(name, in: parent, node)
    }

    /// Points `name` at a new node with `bytes` (the old node stays, as an unlinked file would).
    func replaceFile(_ name: String, in parent: UInt64 = fuseRootInode, bytes: [UInt8]) {
        lock.withLock { _ = nodes[parent]?.children.removeValue(forKey: name) }
        addFile(name, in: parent, bytes: bytes)
    }

    private func add(_ name: String, in parent: UInt64, _ node: Node) -> UInt64 {
        lock.withLock {
            let ino = nextIno
            nextIno += 1
            var node = node
            node.attributes.ino = ino
            nodes[ino] = node
            nodes[parent]!.children[name] = ino
            return ino
        }
    }

    private func node(_ ino: UInt64) throws(FuseError) -> Node {
        guard let node = lock.withLock({ nodes[ino] }) else { throw FuseError.noEntry }
        return node
    }

    // MARK: FuseFileSystem

    func lookup(parent: UInt64, name: String) throws(FuseError) -> FuseEntry {
        let directory = try node(parent)
        guard directory.attributes.mode & 0o170000 == Self.directory else { throw FuseError.notDirectory }
        guard let ino = directory.children[name] else { throw FuseError.noEntry }
        return FuseEntry(attributes: try node(ino).attributes, entryTimeout: Self.timeoutSeconds,
                         attributeTimeout: Self.timeoutSeconds)
    }

    func getattr(ino: UInt64) throws(FuseError) -> (FuseAttributes, timeout: Double) {
        (try node(ino).attributes, Self.timeoutSeconds)
    }

    func readdir(ino: UInt64) throws(FuseError) -> [FuseDirectoryEntry] {
        let directory = try node(ino)
        guard directory.attributes.mode & 0o170000 == Self.directory else { throw FuseError.notDirectory }
        return lock.withLock {
            directory.children.sorted { $0.key < $1.key }.map { name, ino in
                FuseDirectoryEntry(name: name, ino: ino, mode: nodes[ino]!.attributes.mode)
            }
        }
    }

    func readlink(ino: UInt64) throws(FuseError) -> String {
        guard let target = try node(ino).link else { throw FuseError.invalid }
        return target
    }

    func open(ino: UInt64, flags: Int32, reply: @escaping @Sendable (Result<FuseOpenResult, FuseError>) -> Void) {
        let node: Node
        do {
            node = try self.node(ino)
        } catch {
            return reply(.failure(error))
        }
        if flags & O_ACCMODE != O_RDONLY {
            return reply(.failure(.readOnly))
        }
        let result = FuseOpenResult(fileHandle: ino * 10, keepCache: true)
        if let delay = node.openDelaySeconds {
            DispatchQueue.global().asyncAfter(deadline: .now() + delay) { [self] in
                lock.withLock { openedOnThreads.append(Thread.current.description) }
                reply(.success(result))
            }
        } else {
            reply(.success(result))
        }
    }

    func read(ino: UInt64, fileHandle: UInt64, offset: Int64, size: Int) throws(FuseError) -> FuseReadResult {
        guard fileHandle == ino * 10 else { throw FuseError.badFileHandle }
        switch try node(ino).content {
        case .bytes(let bytes):
            let start = min(Int(offset), bytes.count)
            let end = min(start + size, bytes.count)
            return .bytes(Array(bytes[start..<end]))
        case .descriptor(let fd, let fileSize):
            let count = max(0, min(size, fileSize - Int(offset)))
            return .fileDescriptor(fd, offset: offset, count: count)
        case .failing(let error):
            throw error
        }
    }
}
