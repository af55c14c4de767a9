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
    /// Admits `node` with `publicKey` (replacing its key if it had another;
    /// a new key also resets its replay state). Returns false if nothing changed.
    @discardableResult func enroll(node: String, publicKey: [UInt8]) async throws -> Bool
    /// Revokes `node`; its files stay, its lock holders are released. False if it was not enrolled.
    @discardableResult func remove(node: String) async throws -> Bool
    func enrolledNodes() async throws -> [EnrolledNode]

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
    /// Makes `upgrades/N/summary` exist (it is recomputed on every status change from then on).
    func registerUpgrade(_ version: Int64) async throws
}
