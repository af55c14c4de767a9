import Foundation
import UpgradeCore

/// The fleet at a glance, from the server's whiteboard (`upgradefs status`, `/metrics`).
public struct WhiteboardStatus: Sendable, Equatable {
    public struct Node: Sendable, Equatable {
        public var name: String
        public var state: String?
        public var version: Int64?
        /// What its `class` file says (the manager writes it); nil: unclassified, counted under no upgrade.
        public var `class`: String?
        /// Seconds since the last heartbeat arrived at the server; nil if none ever did.
        public var heartbeatAgeSeconds: Int64?
        /// Its refused writes (nil: none ever), `refusing` while the latest was refused.
        public var refusals: WhiteboardRefusals?
    }

    public struct Lock: Sendable, Equatable {
        public var name: String
        public var capacity: Int64
        public var holders: [WhiteboardHolder]
    }

    public struct Upgrade: Sendable, Equatable {
        public var version: Int64
        public var control: String?
        /// State → count, from `upgrades/N/summary`.
        public var summary: [String: Int64]
    }

    public var revision: Int64
    public var nodes: [Node]
    public var locks: [Lock]
    public var upgrades: [Upgrade]
    /// Names not enrolled whose writes were refused (a node mounted with a key nobody enrolled yet).
    public var unenrolledWriters: [WhiteboardRefusals]

    public init(enrolled: [EnrolledNode], view: WhiteboardView, refusals: [WhiteboardRefusals] = [], now: Date = Date()) {
        var files: [String: WhiteboardFile] = [:]
        for file in view.files where file.content != nil { files[file.path] = file }
        func text(_ path: String) -> String? {
            guard let content = files[path]?.content else { return nil }
            var value = String(decoding: content, as: UTF8.self)
            if value.hasSuffix("\n") { value.removeLast() }
            return value
        }
        let nowSeconds = Int64(now.timeIntervalSince1970.rounded(.down))
        revision = view.revision
        let enrolledNames = Set(enrolled.map(\.name))
        let refusalsByName = Dictionary(refusals.map { ($0.node, $0) }, uniquingKeysWith: { $1 })
        nodes = enrolled.filter { $0.name != WhiteboardRules.operatorName }.map { node in
            Node(
                name: node.name, state: text(WhiteboardPath.node(node.name, "state")),
                version: files[WhiteboardPath.node(node.name, "version")]?.content.flatMap(WhiteboardRules.parseCount),
                class: text(WhiteboardPath.node(node.name, "class")),
                heartbeatAgeSeconds: files[WhiteboardPath.node(node.name, "heartbeat")].map { max(0, nowSeconds - $0.modifiedAt) },
                refusals: refusalsByName[node.name])
        }
        unenrolledWriters = refusals.filter { !enrolledNames.contains($0.node) }
        var lockNames = Set(view.holders.map(\.lock))
        var upgradeVersions = Set<Int64>()
        for path in files.keys {
            guard let parsed = try? WhiteboardPath(path) else { continue }
            switch parsed.kind {
            case .lockCapacity(let lock): lockNames.insert(lock)
            // Only published upgrades have a summary; a control file for another number stays a file, not a row.
            case .upgradeSummary(let version): upgradeVersions.insert(version)
            default: break
            }
        }
        locks = lockNames.sorted().map { name in
            Lock(
                name: name,
                capacity: files["locks/\(name)/capacity"]?.content.flatMap(WhiteboardRules.parseCount)
                    ?? WhiteboardLedger.defaultCapacity,
                holders: view.holders.filter { $0.lock == name && !$0.released })
        }
        upgrades = upgradeVersions.sorted().map { version in
            var summary: [String: Int64] = [:]
            for line in (text("upgrades/\(version)/summary") ?? "").split(separator: "\n") {
                let parts = line.split(separator: " ")
                if parts.count == 2, let count = Int64(parts[1]) { summary[String(parts[0])] = count }
            }
            return Upgrade(version: version, control: text("upgrades/\(version)/control"), summary: summary)
        }
    }

    public func toJSON() -> JSONValue {
        func optional(_ value: String?) -> JSONValue { value.map(JSONValue.string) ?? .null }
        func optional(_ value: Int64?) -> JSONValue { value.map(JSONValue.int) ?? .null }
        return .object([
            "revision": .int(revision),
            "nodes": .array(nodes.map {
                .object([
                    "name": .string($0.name), "state": optional($0.state), "version": optional($0.version),
                    "class": optional($0.class), "heartbeat_age_seconds": optional($0.heartbeatAgeSeconds),
                    "refused": .bool($0.refusals?.refusing ?? false), "refused_writes": .int($0.refusals?.total ?? 0),
                    "last_refusal": $0.refusals.map(Self.refusalJSON) ?? .null,
                ])
            }),
            "unenrolled_writers": .array(unenrolledWriters.map {
                .object(["name": .string($0.node), "refused_writes": .int($0.total), "last_refusal": Self.refusalJSON($0)])
            }),
            "locks": .array(locks.map { lock in
                .object([
                    "name": .string(lock.name), "capacity": .int(lock.capacity),
                    "holders": .array(lock.holders.map {
                        .object(["holder": .string($0.holder), "node": .string($0.node), "acquired_at": .int($0.acquiredAt)])
                    }),
                ])
            }),
            "upgrades": .array(upgrades.map {
                .object([
                    "version": .int($0.version), "control": optional($0.control),
                    "summary": .object($0.summary.mapValues(JSONValue.int)),
                ])
            }),
        ])
    }

    private static func refusalJSON(_ refusals: WhiteboardRefusals) -> JSONValue {
        .object(["at": .int(refusals.lastAtSeconds), "code": .string(refusals.lastCode), "error": .string(refusals.lastError)])
    }

    /// Plain-text tables for people.
    public func text(now: Date = Date()) -> String {
        let nowSeconds = Int64(now.timeIntervalSince1970.rounded(.down))
        func table(_ rows: [[String]]) -> String {
            guard let header = rows.first else { return "" }
            let widths = (0..<header.count).map { column in rows.map { $0[column].count }.max() ?? 0 }
            return rows.map { row in
                row.enumerated().map { index, cell in
                    index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                }.joined(separator: "  ")
            }.joined(separator: "\n") + "\n"
        }
        func refused(_ refusals: WhiteboardRefusals?) -> String {
            guard let refusals else { return "-" }
            let count = "\(refusals.total)"
            return refusals.refusing ? count + " (refusing: \(refusals.lastError))" : count
        }
        var out = table(
            [["NODE", "CLASS", "STATE", "VERSION", "HEARTBEAT", "REFUSED"]]
                + nodes.map {
                    [$0.name, $0.class ?? "unclassified", $0.state ?? "-", $0.version.map(String.init) ?? "-",
                     $0.heartbeatAgeSeconds.map { "\($0)s ago" } ?? "never", refused($0.refusals)]
                })
        if !unenrolledWriters.isEmpty {
            out += "\n" + table(
                [["NOT ENROLLED", "REFUSED", "LAST"]]
                    + unenrolledWriters.map { ["\($0.node)", "\($0.total)", "\(max(0, nowSeconds - $0.lastAtSeconds))s ago: \($0.lastError)"] })
        }
        if !locks.isEmpty {
            out += "\n" + table(
                [["LOCK", "HELD", "HOLDERS"]]
                    + locks.map { lock in
                        [lock.name, "\(lock.holders.count)/\(lock.capacity)",
                         lock.holders.map { $0.holder == $0.node ? $0.holder : "\($0.holder)(\($0.node))" }.joined(separator: " ")]
                    })
        }
        if !upgrades.isEmpty {
            out += "\n" + table(
                [["UPGRADE", "CONTROL", "SUMMARY"]]
                    + upgrades.map { upgrade in
                        [String(upgrade.version), upgrade.control ?? "-",
                         upgrade.summary.keys.sorted().map { "\($0) \(upgrade.summary[$0]!)" }.joined(separator: ", ")]
                    })
        }
        return out
    }
}
