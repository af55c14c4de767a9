/// The read-only half of the mount, as a value: which names exist, what they
/// are, and which inode numbers they carry. Built from verified targets
/// metadata; the FUSE adapter only looks things up in it.
///
/// Inode numbers stay stable across rebuilds (a file keeps its number when a
/// new version is published), so the kernel's caches stay valid.
public struct BundleTree: Sendable {
    public enum Node: Sendable, Equatable {
        /// A directory; `children` maps names to inode numbers.
        case directory(children: [String: UInt64])
        /// A published file, verified against `target` before any byte is served.
        case file(path: String, target: TargetFile, mode: UInt32)
        /// A published symbolic link (target inside the bundle, checked by the server).
        case symlink(target: String)
        /// A small generated text file (`server`, `latest`, `stale`).
        case text(String)
    }

    public static let rootInode: UInt64 = 1

    public private(set) var nodes: [UInt64: Node] = [:]
    /// Newest published system version, 0 when nothing is published yet.
    public private(set) var latestVersion: Int = 0
    /// The content of `stale`: empty while the metadata on show is current, else why it is not.
    public private(set) var staleText = ""
    private var inodeOfPath: [String: UInt64] = ["": BundleTree.rootInode]
    private var nextInode: UInt64 = 2

    public init() {
        nodes[Self.rootInode] = .directory(children: [:])
    }

    public func node(_ ino: UInt64) -> Node? { nodes[ino] }

    public func child(of parent: UInt64, named name: String) -> UInt64? {
        guard case .directory(let children)? = nodes[parent] else { return nil }
        return children[name]
    }

    /// Rebuilds the tree for the given server id and targets, keeping inode
    /// numbers of paths that existed before. Targets whose path is not
    /// `VERSION/...` are ignored (they belong to no bundle).
    public mutating func rebuild(serverSource: String, targets: [String: TargetFile]) {
        var fresh: [UInt64: Node] = [:]
        var children: [String: [String: UInt64]] = ["": [:]]
        var latest = 0

        func inode(_ path: String) -> UInt64 {
            if let existing = inodeOfPath[path] { return existing }
            let ino = nextInode
            nextInode += 1
            inodeOfPath[path] = ino
            return ino
        }
        func link(_ path: String) {
            // Make sure every ancestor directory exists and names its child.
            var current = path
            while !current.isEmpty {
                let (parent, name) = Self.split(current)
                if children[parent] == nil { children[parent] = [:] }
                if children[parent]![name] != nil { return }
                children[parent]![name] = inode(current)
                current = parent
            }
        }

        for (path, target) in targets {
            let components = path.split(separator: "/", omittingEmptySubsequences: false)
            guard components.count >= 2, let version = Int(components[0]), version > 0,
                  String(version) == components[0],
                  !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." })
            else { continue }
            latest = max(latest, version)
            let mountPath = "versions/" + path
            let info = target.custom?["upgradefs"]
            let mode = UInt32(clamping: info?["mode"]?.intValue ?? 0o644) & 0o555
            if info?["symlink"]?.boolValue == true, let linkTarget = info?["target"]?.stringValue {
                fresh[inode(mountPath)] = .symlink(target: linkTarget)
            } else if info?["symlink"]?.boolValue == true {
                continue // a symlink without its target named in signed metadata is not shown
            } else {
                fresh[inode(mountPath)] = .file(path: path, target: target, mode: mode)
            }
            link(mountPath)
        }
        link("versions")
        if children["versions"] == nil { children["versions"] = [:] }
        fresh[inode("server")] = .text(serverSource + "\n")
        link("server")
        fresh[inode("latest")] = .text("\(latest)\n")
        link("latest")
        fresh[inode("stale")] = .text(staleText)
        link("stale")

        for (path, names) in children {
            fresh[inode(path)] = .directory(children: names)
        }
        nodes = fresh
        latestVersion = latest
    }

    /// Sets the content of `stale` (it exists once the tree was built); returns its inode.
    @discardableResult
    public mutating func setStale(_ text: String) -> UInt64? {
        staleText = text
        guard let ino = lookup(path: "stale") else { return nil }
        nodes[ino] = .text(text)
        return ino
    }

    /// The inode of a path relative to the mount root, if it exists.
    public func lookup(path: String) -> UInt64? {
        var ino = Self.rootInode
        for name in path.split(separator: "/") {
            guard let next = child(of: ino, named: String(name)) else { return nil }
            ino = next
        }
        return ino
    }

    static func split(_ path: String) -> (parent: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return ("", path) }
        return (String(path[..<slash]), String(path[path.index(after: slash)...]))
    }
}
