import UpgradeCore

/// Which subtree of the mount answers for an inode or a name (pure): the bundles (`server`, `latest`, `stale`,
/// `versions/`, numbered from the root, 1, upwards) or the whiteboard (`udb/` and `self`, from
/// `WhiteboardTree.inodeBase` on, when the mount has a node key).
struct MountRoutes: Equatable {
    enum Subtree: Equatable {
        case bundles
        case whiteboard
    }

    /// Whether the mount shows the whiteboard.
    let hasWhiteboard: Bool

    /// The subtree that owns `ino`.
    func subtree(of ino: UInt64) -> Subtree {
        hasWhiteboard && ino >= WhiteboardTree.inodeBase ? .whiteboard : .bundles
    }

    /// The subtree that owns the name `name` in directory `parent` (in the root, `udb` and `self` are the whiteboard's).
    func subtree(of name: String, in parent: UInt64) -> Subtree {
        if hasWhiteboard && parent == BundleTree.rootInode && WhiteboardTree.rootNames.contains(name) { return .whiteboard }
        return subtree(of: parent)
    }
}
