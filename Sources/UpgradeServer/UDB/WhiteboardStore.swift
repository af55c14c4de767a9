import Foundation
import UpgradeCore

/// The server's whiteboard, as the HTTP layer, status and the CLI use it (docs/DESIGN.md, "The upgrade database").
/// Every change happens in one transaction that bumps the global revision, so lock operations are linearizable.
/// Implemented once, `LedgerWhiteboardStore` (the rules of `WhiteboardLedger` over a `WhiteboardStorage`).
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

    /// The operator's put, delete or release made by the server on the operator's behalf (an action of the fleet
    /// page, `WhiteboardLedger.applyAsOperator`): nil when applied, else why it was refused.
    func applyAsOperator(_ op: WhiteboardOp, path: String, content: [UInt8]?) async throws -> WhiteboardErrorBody?

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
