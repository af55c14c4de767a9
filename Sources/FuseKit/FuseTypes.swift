/// Inode numbers follow libfuse: the root directory is always inode 1.
public let fuseRootInode: UInt64 = 1

/// What `stat(2)` shows for a node.
public struct FuseAttributes: Sendable, Equatable {
    public var ino: UInt64
    /// File type and permission bits, e.g. `S_IFREG | 0o644`.
    public var mode: UInt32
    public var nlink: UInt32
    public var size: UInt64
    public var mtimeSeconds: Int64
    public var uid: UInt32
    public var gid: UInt32

    public init(ino: UInt64, mode: UInt32, nlink: UInt32 = 1, size: UInt64 = 0,
                mtimeSeconds: Int64 = 0, uid: UInt32 = 0, gid: UInt32 = 0) {
        self.ino = ino
        self.mode = mode
        self.nlink = nlink
        self.size = size
        self.mtimeSeconds = mtimeSeconds
        self.uid = uid
        self.gid = gid
    }
}

/// The answer to a lookup (or create/mkdir): the node and how long the kernel
/// may cache the name → node binding and the attributes, in seconds.
/// Immutable content can use long timeouts; mutable paths short ones or
/// explicit invalidation (`FuseMount.invalidateEntry`).
public struct FuseEntry: Sendable, Equatable {
    public var attributes: FuseAttributes
    public var entryTimeout: Double
    public var attributeTimeout: Double

    public init(attributes: FuseAttributes, entryTimeout: Double, attributeTimeout: Double) {
        self.attributes = attributes
        self.entryTimeout = entryTimeout
        self.attributeTimeout = attributeTimeout
    }
}

/// One name in a directory listing. `mode` needs only the file type bits.
public struct FuseDirectoryEntry: Sendable, Equatable {
    public var name: String
    public var ino: UInt64
    public var mode: UInt32

    public init(name: String, ino: UInt64, mode: UInt32) {
        self.name = name
        self.ino = ino
        self.mode = mode
    }
}

/// The answer to open/create.
public struct FuseOpenResult: Sendable, Equatable {
    /// Any value; handed back in read/write/flush/fsync/release.
    public var fileHandle: UInt64
    /// Keep the kernel page cache of the file across opens (immutable content).
    public var keepCache: Bool
    /// Bypass the page cache (content that changes under the reader).
    public var directIO: Bool

    public init(fileHandle: UInt64, keepCache: Bool = false, directIO: Bool = false) {
        self.fileHandle = fileHandle
        self.keepCache = keepCache
        self.directIO = directIO
    }
}

/// The answer to a read.
public enum FuseReadResult: Sendable {
    /// The bytes themselves (at most the requested size; fewer at end of file).
    case bytes([UInt8])
    /// `count` bytes of an open descriptor from `offset`, moved to the kernel
    /// with splice (zero copy). FuseKit does not close the descriptor: it
    /// stays owned by the file system (typically opened in `open`, closed in
    /// `release`). A short file gives a short read.
    case fileDescriptor(Int32, offset: Int64, count: Int)
}

/// A time to set in `setattr`.
public enum FuseTimeChange: Sendable, Equatable {
    case now
    case seconds(Int64)
}

/// What a `setattr` asks to change; `nil` means unchanged.
public struct FuseAttributeChanges: Sendable, Equatable {
    /// Truncate or extend to this size.
    public var size: UInt64?
    /// Permission bits (no file type bits).
    public var mode: UInt32?
    public var uid: UInt32?
    public var gid: UInt32?
    public var modificationTime: FuseTimeChange?
    public var accessTime: FuseTimeChange?

    public init(size: UInt64? = nil, mode: UInt32? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
                modificationTime: FuseTimeChange? = nil, accessTime: FuseTimeChange? = nil) {
        self.size = size
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.modificationTime = modificationTime
        self.accessTime = accessTime
    }
}

/// What `statfs(2)`/`df` shows. Counts are in `blockSize` units.
public struct FuseFileSystemStatistics: Sendable, Equatable {
    public var blockSize: UInt64
    public var blocks: UInt64
    public var freeBlocks: UInt64
    public var availableBlocks: UInt64
    public var files: UInt64
    public var freeFiles: UInt64
    public var maxNameLength: UInt64

    public init(blockSize: UInt64 = 4096, blocks: UInt64 = 0, freeBlocks: UInt64 = 0,
                availableBlocks: UInt64 = 0, files: UInt64 = 0, freeFiles: UInt64 = 0,
                maxNameLength: UInt64 = 255) {
        self.blockSize = blockSize
        self.blocks = blocks
        self.freeBlocks = freeBlocks
        self.availableBlocks = availableBlocks
        self.files = files
        self.freeFiles = freeFiles
        self.maxNameLength = maxNameLength
    }
}
