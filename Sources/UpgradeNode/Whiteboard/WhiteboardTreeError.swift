import UpgradeWhiteboardClient

/// What went wrong in a `WhiteboardTree` operation, in the tree's terms. The FUSE adapter turns each case into the
/// errno scripts see, in one table (`WhiteboardFileSystem.errno(for:)`; README.md, "The whiteboard", lists them).
enum WhiteboardTreeError: Error, Equatable, Sendable {
    /// No such name (or inode) on this node now.
    case notFound
    case notADirectory
    case isADirectory
    /// The name exists already (create, mkdir).
    case exists
    /// rmdir of a directory that still has children.
    case notEmpty
    /// A write, delete, mkdir or rmdir this node may not make: the rules refuse it, or nothing may be made there.
    case forbidden
    /// Content or a path that breaks the file's format (a state that is not one word, …).
    case malformed
    /// readlink of something that is not `self`.
    case notALink
    /// chmod or chown: a file's mode and owner are fixed.
    case attributesFixed
    /// Content over the file's size limit.
    case tooLarge
    /// A handle that is not open, or not open for writing.
    case badHandle
    /// The node's journal cannot be read or written.
    case journal
    /// rename: not supported (`mv` copies and deletes instead).
    case crossDevice
    /// `mkdir locks/NAME/HOLDER`: the lock has as many holders as its capacity.
    case lockFull
    /// `mkdir locks/NAME/HOLDER`: HOLDER holds it already.
    case lockAlreadyHeld
    /// `rmdir locks/NAME/HOLDER`: HOLDER does not hold it.
    case lockNotHeld
    /// A lock operation whose path the server has as something else.
    case lockConflict
    /// A lock operation while the server cannot be reached.
    case offline
    /// The server refused a lock operation for another reason, or its answer could not be trusted.
    case lockFailed

    /// The error of a lock operation that failed.
    init(_ failure: WhiteboardLockClient.Failure.Reason) {
        self = switch failure {
        case .full: .lockFull
        case .alreadyHeld: .lockAlreadyHeld
        case .notHeld: .lockNotHeld
        case .forbidden: .forbidden
        case .conflict: .lockConflict
        case .unreachable: .offline
        case .failed: .lockFailed
        }
    }
}
