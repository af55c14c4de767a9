import Synchronization
import UpgradeCore

/// The lock holders a node knows of, by path `locks/NAME/HOLDER`, each with the server revision the fact is from —
/// kept once per mount: the follower records what the server reports, the mount's `mkdir`/`rmdir` what its own lock
/// operations got, and the mount's files read it. The two race; only the newer fact about a holder counts.
///
/// Holders live only in memory: they mean nothing without the server, which every lock operation needs anyway.
public final class WhiteboardHolders: Sendable {
    private let facts = Mutex<[String: (held: Bool, revision: Int64)]>([:])

    public init() {}

    /// Records that `path` is (or is no longer) held as of `revision`, unless a newer fact is known.
    public func record(_ path: String, held: Bool, revision: Int64) {
        facts.withLock { Self.record(path, held: held, revision: revision, in: &$0) }
    }

    /// Records the follower's report: every holder of a snapshot taken at `revision` (`replacingAll`: what the
    /// snapshot supersedes goes), or the holders a change brought.
    public func apply(_ changed: [WhiteboardHolder], replacingAll: Bool, revision: Int64) {
        facts.withLock { facts in
            if replacingAll { facts = facts.filter { $0.value.revision > revision } }
            for holder in changed {
                Self.record(holder.path, held: !holder.released, revision: holder.revision, in: &facts)
            }
        }
    }

    public func isHeld(_ path: String) -> Bool { facts.withLock { $0[path]?.held ?? false } }

    /// The held paths, each with the revision it is known from.
    public var held: [String: Int64] {
        facts.withLock { facts in facts.compactMapValues { $0.held ? $0.revision : nil } }
    }

    private static func record(_ path: String, held: Bool, revision: Int64,
                               in facts: inout [String: (held: Bool, revision: Int64)]) {
        if let known = facts[path], known.revision > revision { return }
        facts[path] = (held, revision)
    }
}
