import Foundation
import UpgradeCore

/// An identity admitted to write on the whiteboard.
public struct EnrolledNode: Sendable, Hashable {
    public var name: String
    public var publicKey: [UInt8]
    /// Unix seconds.
    public var enrolledAt: Double

    public init(name: String, publicKey: [UInt8], enrolledAt: Double) {
        self.name = name
        self.publicKey = publicKey
        self.enrolledAt = enrolledAt
    }
}

/// Writes the server refused from one name: an enrolled node's refused file writes (a bad signature on its name
/// included), or writes from a name that is not enrolled.
public struct WhiteboardRefusals: Sendable, Hashable {
    public var node: String
    /// False: the name was not enrolled when its last write was refused.
    public var enrolled: Bool
    /// Refused requests, counted since the name's first refusal (kept across restarts).
    public var total: Int64
    /// The name's latest write was refused (an applied file write clears it).
    public var refusing: Bool
    /// Unix seconds of the latest refusal.
    public var lastAt: Int64
    public var lastCode: String
    public var lastError: String

    public init(node: String, enrolled: Bool, total: Int64, refusing: Bool, lastAt: Int64, lastCode: String, lastError: String) {
        self.node = node
        self.enrolled = enrolled
        self.total = total
        self.refusing = refusing
        self.lastAt = lastAt
        self.lastCode = lastCode
        self.lastError = lastError
    }
}

/// What `apply` did: applied (or recognised a retry), or refused with the
/// error body the HTTP layer sends (its `code` decides the status).
public enum WhiteboardApplyOutcome: Sendable, Hashable {
    case applied(WhiteboardResponse)
    case refused(WhiteboardErrorBody)
}

/// The server's whiteboard storage (docs/DESIGN.md, "The upgrade database").
/// Every change happens in one transaction that bumps the global revision, so
/// lock operations are linearizable. SQLite implements it
/// (`SQLiteWhiteboardStore`); a PostgreSQL store can later.
public protocol WhiteboardStore: Sendable {
    /// Admits `node` with `publicKey` (replacing its key if it had another). Its replay state is kept, also across
    /// `remove`: an old signed write stays a replay. Returns false if nothing changed.
    @discardableResult func enroll(node: String, publicKey: [UInt8]) async throws -> Bool
    /// Revokes `node`; its files stay, its lock holders are released. False if it was not enrolled.
    @discardableResult func remove(node: String) async throws -> Bool
    func enrolledNodes() async throws -> [EnrolledNode]
    /// Refused writes by name (`WhiteboardRefusals`), for status and metrics.
    func refusals() async throws -> [WhiteboardRefusals]

    /// Authenticates, checks replay state and the rules, and applies one signed request.
    func apply(_ signed: SignedWhiteboardRequest) async throws -> WhiteboardApplyOutcome

    /// Every live file (summaries included) and every current holder.
    func snapshot() async throws -> WhiteboardView
    /// What changed after `revision`: files (deleted ones with nil content) and holders (released ones flagged).
    func changes(after revision: Int64) async throws -> WhiteboardView
    func revision() async throws -> Int64

    /// Releases every holder whose node's last heartbeat (or, if later, the
    /// acquisition) is older than the lock TTL. Returns what was released.
    @discardableResult func releaseExpiredHolders() async throws -> [WhiteboardHolder]
    /// Registers what to call (after the commit) with the holders an acquire released on its way because their TTL
    /// had run out, so they are logged and counted like the periodic check's.
    func observeExpiredHolders(_ observer: @escaping @Sendable ([WhiteboardHolder]) -> Void)
    /// The operator's `unlock LOCK HOLDER`. False if there was no such holder.
    @discardableResult func release(lock: String, holder: String) async throws -> Bool
    /// Records that upgrade N of `class` is published and makes `upgrades/N/summary` exist: it counts the nodes
    /// whose `class` file names that class, recomputed on every change of their state, version or class. An upgrade
    /// not registered (a control file for a version never published) has no summary.
    func registerUpgrade(_ version: Int64, class: String) async throws
}
