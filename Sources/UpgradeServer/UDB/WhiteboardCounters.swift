import Synchronization
import UpgradeCore

/// Counters of whiteboard traffic since the server started, for `/metrics`.
final class WhiteboardCounters: Sendable {
    private struct Counts {
        var applied: [WhiteboardOp: Int] = [:]
        var duplicates = 0
        var refused: [WhiteboardErrorBody.Code: Int] = [:]
        var ttlReleases = 0
    }

    private let counts = Mutex(Counts())

    func applied(_ op: WhiteboardOp, duplicate: Bool) {
        counts.withLock {
            if duplicate { $0.duplicates += 1 } else { $0.applied[op, default: 0] += 1 }
        }
    }

    func refused(_ code: WhiteboardErrorBody.Code) { counts.withLock { $0.refused[code, default: 0] += 1 } }
    func ttlReleased(_ count: Int) { counts.withLock { $0.ttlReleases += count } }

    /// Prometheus text exposition format (version 0.0.4).
    func render(status: WhiteboardStatus, publishedVersion: Int64, timestampVersion: Int,
                bundles: (published: Int, rejected: Int) = (0, 0)) -> String {
        let counts = self.counts.withLock { $0 }
        var out = ""
        func family(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples { out += name + (sample.labels.isEmpty ? "" : "{\(sample.labels)}") + " " + sample.value + "\n" }
        }
        func label(_ text: String) -> String {
            text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
        }
        family("upgradefs_published_version", "gauge", "Newest published bundle version.", [("", String(publishedVersion))])
        family("upgradefs_bundles_total", "counter", "Bundles published or rejected since the server started.",
               [("result=\"published\"", String(bundles.published)), ("result=\"rejected\"", String(bundles.rejected))])
        family("upgradefs_timestamp_version", "gauge", "Version of the signed timestamp metadata (grows with every publish and refresh).",
               [("", String(timestampVersion))])
        family("upgradefs_udb_revision", "gauge", "The whiteboard's revision (one per change).", [("", String(status.revision))])
        family("upgradefs_nodes", "gauge", "Enrolled nodes (the operator not counted).", [("", String(status.nodes.count))])
        var byState: [String: Int] = [:]
        var byVersion: [String: Int] = [:]
        for node in status.nodes {
            byState[node.state ?? "unknown", default: 0] += 1
            byVersion[node.version.map(String.init) ?? "unknown", default: 0] += 1
        }
        family("upgradefs_nodes_by_state", "gauge", "Enrolled nodes by the word in their state file.",
               byState.keys.sorted().map { ("state=\"\(label($0))\"", String(byState[$0]!)) })
        family("upgradefs_nodes_by_version", "gauge", "Enrolled nodes by the version in their version file.",
               byVersion.keys.sorted().map { ("version=\"\(label($0))\"", String(byVersion[$0]!)) })
        family("upgradefs_node_heartbeat_age_seconds", "gauge", "Seconds since each node's last heartbeat reached the server.",
               status.nodes.compactMap { node in node.heartbeatAgeSeconds.map { ("node=\"\(label(node.name))\"", String($0)) } })
        family("upgradefs_lock_holders", "gauge", "Current holders of each lock.",
               status.locks.map { ("lock=\"\(label($0.name))\"", String($0.holders.count)) })
        family("upgradefs_lock_capacity", "gauge", "Capacity of each lock.",
               status.locks.map { ("lock=\"\(label($0.name))\"", String($0.capacity)) })
        family("upgradefs_udb_writes_total", "counter", "Whiteboard requests applied since the server started, by operation.",
               WhiteboardOp.allCases.map { ("op=\"\($0.rawValue)\"", String(counts.applied[$0] ?? 0)) })
        family("upgradefs_udb_duplicates_total", "counter", "Retries of an already applied request, answered without applying again.",
               [("", String(counts.duplicates))])
        family("upgradefs_udb_refused_total", "counter", "Whiteboard requests refused since the server started, by reason.",
               counts.refused.keys.map(\.rawValue).sorted().map { code in
                   ("reason=\"\(code)\"", String(counts.refused[WhiteboardErrorBody.Code(rawValue: code)!]!))
               })
        family("upgradefs_udb_node_refused", "gauge", "1 while a node's latest file write was refused by the server.",
               status.nodes.map { ("node=\"\(label($0.name))\"", $0.refusals?.refusing == true ? "1" : "0") })
        family("upgradefs_udb_node_refused_total", "counter", "Refused writes of each enrolled node (kept across restarts).",
               status.nodes.map { ("node=\"\(label($0.name))\"", String($0.refusals?.total ?? 0)) })
        family("upgradefs_udb_unenrolled_writers", "gauge", "Names not enrolled whose writes were refused (see upgradefs status).",
               [("", String(status.unenrolledWriters.count))])
        family("upgradefs_udb_ttl_releases_total", "counter", "Lock holders released because their node's heartbeat stopped.",
               [("", String(counts.ttlReleases))])
        return out
    }
}
