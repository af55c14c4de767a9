import Foundation
import UpgradeCore

/// What the server knows of a published upgrade besides the whiteboard: from its signed manifest, and when the
/// server took it in.
public struct PublishedUpgrade: Sendable, Equatable {
    public var version: Int64
    public var `class`: String
    /// The bundle's scheduling function (nil: none, every node upgrades at once).
    public var sf: String?
    /// When its manifest was stored (nil: unknown).
    public var publishedAt: Date?
    /// The manifest's `description`.
    public var description: String?

    public init(version: Int64, class upgradeClass: String, sf: String?, publishedAt: Date?, description: String? = nil) {
        self.version = version
        self.class = upgradeClass
        self.sf = sf
        self.publishedAt = publishedAt
        self.description = description
    }
}

/// The fleet page's data (docs/DESIGN.md, "The fleet page"): the whiteboard status (`WhiteboardStatus`, which reads
/// the files) and the published upgrades, arranged for the templates. Pure: the time is given.
struct FleetPage: Sendable, Equatable {
    struct NodeRow: Sendable, Equatable {
        var name: String
        var `class`: String
        var state: String
        var version: String
        /// "12 s ago", or "never".
        var heartbeat: String
        /// No heartbeat for longer than the lock TTL (its holders are released), or never one.
        var stale: Bool
        /// The last refusal while its writes are being refused.
        var refusing: String?
    }

    /// How many nodes are in one state at one version.
    struct Group: Sendable, Hashable {
        var state: String
        var version: String
        var count: Int
    }

    struct Count: Sendable, Equatable {
        var state: String
        var count: Int64
    }

    struct UpgradeRow: Sendable, Equatable {
        var version: Int64
        var `class`: String
        var sf: String
        var description: String?
        /// The operator's word (missing: `go`).
        var control: String
        var done: Int64
        var waiting: Int64
        var upgrading: Int64
        var failed: Int64
        var total: Int64
        var percentDone: Int64
        /// Every state of the summary, sorted.
        var counts: [Count]
        /// "3 min ago", or "unknown".
        var published: String
        var paused: Bool
    }

    struct HolderRow: Sendable, Equatable {
        var lock: String
        var holder: String
        var node: String
        var held: String
    }

    struct LockRow: Sendable, Equatable {
        var name: String
        var capacity: Int64
        var held: Int
        var full: Bool
        var holders: [HolderRow]
    }

    var revision: Int64
    var nodeCount: Int
    var staleCount: Int
    var groups: [Group]
    var nodes: [NodeRow]
    var upgrades: [UpgradeRow]
    var locks: [LockRow]

    /// Summary states counted as waiting (a node not yet upgrading) and as failed.
    static let waitingStates: Set<String> = ["waiting", "paused", "pending"]
    static let failedStates: Set<String> = ["failed", "aborted"]

    init(status: WhiteboardStatus, published: [PublishedUpgrade], staleAfterSeconds: Int64, now: Date) {
        let nowSeconds = Int64(now.timeIntervalSince1970.rounded(.down))
        revision = status.revision
        nodeCount = status.nodes.count
        nodes = status.nodes.map { Self.row($0, staleAfterSeconds: staleAfterSeconds) }
        staleCount = nodes.filter(\.stale).count
        var grouped: [Group: Int] = [:]
        for node in nodes { grouped[Group(state: node.state, version: node.version, count: 0), default: 0] += 1 }
        groups = grouped.map { Group(state: $0.key.state, version: $0.key.version, count: $0.value) }
            .sorted { ($0.state, Int64($0.version) ?? -1) < ($1.state, Int64($1.version) ?? -1) }
        let byVersion = Dictionary(published.map { ($0.version, $0) }, uniquingKeysWith: { $1 })
        upgrades = status.upgrades.reversed().map { upgrade in
            let info = byVersion[upgrade.version]
            func sum(_ states: Set<String>) -> Int64 { states.reduce(0) { $0 + (upgrade.summary[$1] ?? 0) } }
            let total = upgrade.summary.values.reduce(0, +)
            let done = upgrade.summary["done"] ?? 0
            let control = ControlWord.parse(upgrade.control)?.rawValue ?? (upgrade.control ?? "go")
            return UpgradeRow(
                version: upgrade.version, class: info?.class ?? "-", sf: info?.sf ?? "none", description: info?.description,
                control: control,
                done: done, waiting: sum(Self.waitingStates), upgrading: upgrade.summary["upgrading"] ?? 0, failed: sum(Self.failedStates),
                total: total, percentDone: total == 0 ? 0 : done * 100 / total,
                counts: upgrade.summary.keys.sorted().map { Count(state: $0, count: upgrade.summary[$0]!) },
                published: info?.publishedAt.map { Self.age(nowSeconds - Int64($0.timeIntervalSince1970.rounded(.down))) + " ago" }
                    ?? "unknown",
                paused: control == ControlWord.pause.rawValue)
        }
        locks = status.locks.map { lock in
            LockRow(
                name: lock.name, capacity: lock.capacity, held: lock.holders.count, full: Int64(lock.holders.count) >= lock.capacity,
                holders: lock.holders.map {
                    HolderRow(lock: $0.lock, holder: $0.holder, node: $0.node, held: Self.age(nowSeconds - $0.acquiredAt))
                })
        }
    }

    static func row(_ node: WhiteboardStatus.Node, staleAfterSeconds: Int64) -> NodeRow {
        NodeRow(
            name: node.name, class: node.class ?? "unclassified", state: node.state ?? "-",
            version: node.version.map(String.init) ?? "-",
            heartbeat: node.heartbeatAgeSeconds.map { age($0) + " ago" } ?? "never",
            stale: node.heartbeatAgeSeconds.map { $0 > staleAfterSeconds } ?? true,
            refusing: node.refusals.flatMap { $0.refusing ? $0.lastError : nil })
    }

    /// A duration for people: "45 s", "12 min", "5 h", "3 d" (negative ones, from clock skew, as 0 s).
    static func age(_ seconds: Int64) -> String {
        let s = max(0, seconds)
        if s < 120 { return "\(s) s" }
        if s < 7200 { return "\(s / 60) min" }
        if s < 172_800 { return "\(s / 3600) h" }
        return "\(s / 86400) d"
    }
}

/// One node's page: its row of the fleet, its files, the tail of its log and the holders it has. Pure.
struct NodePage: Sendable, Equatable {
    struct FileRow: Sendable, Equatable {
        var name: String
        var bytes: Int
        var modified: String
        /// The content when it is short UTF-8 text (not the log, shown below).
        var preview: String?
    }

    var node: FleetPage.NodeRow
    /// When its `version` file last changed ("since 3 min ago"); the whiteboard keeps each file's latest content only.
    var versionSince: String?
    var files: [FileRow]
    var logTail: String
    var logLinesShown: Int
    var holders: [FleetPage.HolderRow]
    var revision: Int64

    static let logTailLines = 100
    static let previewBytes = 200

    /// nil when `name` is not an enrolled node of `status`.
    init?(name: String, status: WhiteboardStatus, view: WhiteboardView, staleAfterSeconds: Int64, now: Date) {
        guard let found = status.nodes.first(where: { $0.name == name }) else { return nil }
        let row = FleetPage.row(found, staleAfterSeconds: staleAfterSeconds)
        let nowSeconds = Int64(now.timeIntervalSince1970.rounded(.down))
        let prefix = "nodes/\(name)/"
        node = row
        revision = status.revision
        var files: [FileRow] = []
        var log: [UInt8] = []
        var versionSince: String?
        for file in view.files where file.path.hasPrefix(prefix) {
            guard let content = file.content else { continue }
            let fileName = String(file.path.dropFirst(prefix.count))
            let modified = FleetPage.age(nowSeconds - file.modifiedAt) + " ago"
            if fileName == "log" { log = content }
            if fileName == "version" { versionSince = modified }
            let text = String(validating: content, as: UTF8.self)
            let preview = fileName == "log" || content.count > Self.previewBytes ? nil : text
            files.append(FileRow(name: fileName, bytes: content.count, modified: modified, preview: preview))
        }
        self.files = files.sorted { $0.name < $1.name }
        self.versionSince = versionSince
        let lines = String(decoding: log, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        let tail = lines.last == "" ? lines.dropLast() : lines[...]
        logTail = tail.suffix(Self.logTailLines).joined(separator: "\n")
        logLinesShown = min(tail.count, Self.logTailLines)
        holders = status.locks.flatMap(\.holders).filter { $0.node == name }.map {
            FleetPage.HolderRow(lock: $0.lock, holder: $0.holder, node: $0.node, held: FleetPage.age(nowSeconds - $0.acquiredAt))
        }
    }
}
