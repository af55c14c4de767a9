import Foundation
import Synchronization
import UpgradeCore

/// The one `WhiteboardStore`: each call is one `WhiteboardLedger` decision run in one transaction of `storage`, at
/// the time `now` says. What an apply released on its way (expired holders) goes to the observer after the commit.
public final class LedgerWhiteboardStore<Storage: WhiteboardStorage>: WhiteboardStore {
    public let storage: Storage
    public let ledger: WhiteboardLedger
    private let now: @Sendable () -> Date
    private let expiredObserver = Mutex<(@Sendable ([WhiteboardHolder]) -> Void)?>(nil)

    public init(storage: Storage, ledger: WhiteboardLedger, now: @escaping @Sendable () -> Date = { Date() }) {
        self.storage = storage
        self.ledger = ledger
        self.now = now
    }

    @discardableResult
    public func enroll(node: String, publicKey: [UInt8]) async throws -> Bool {
        let (ledger, at) = (ledger, now())
        return try await storage.write { try ledger.enroll(node: node, publicKey: publicKey, in: &$0, now: at) }
    }

    @discardableResult
    public func remove(node: String) async throws -> Bool {
        let (ledger, at) = (ledger, now())
        return try await storage.write { try ledger.remove(node: node, in: &$0, now: at) }
    }

    public func enrolledNodes() async throws -> [EnrolledNode] {
        let ledger = ledger
        return try await storage.read { try ledger.enrolledNodes(in: $0) }
    }

    public func refusals() async throws -> [WhiteboardRefusals] {
        let ledger = ledger
        return try await storage.read { try ledger.refusals(in: $0) }
    }

    public func apply(_ signed: SignedWhiteboardRequest) async throws -> WhiteboardApplyOutcome {
        let (ledger, at) = (ledger, now())
        let applied = try await storage.write { try ledger.apply(signed, in: &$0, now: at) }
        if !applied.expired.isEmpty { expiredObserver.withLock { $0 }?(applied.expired) }
        return applied.outcome
    }

    public func applyAsOperator(_ op: WhiteboardOp, path: String, content: [UInt8]?) async throws -> WhiteboardErrorBody? {
        let (ledger, at) = (ledger, now())
        return try await storage.write { try ledger.applyAsOperator(op, path: path, content: content, in: &$0, now: at) }
    }

    public func snapshot() async throws -> WhiteboardView {
        let ledger = ledger
        return try await storage.read { try ledger.snapshot(in: $0) }
    }

    public func changes(after revision: Int64) async throws -> WhiteboardView {
        let ledger = ledger
        return try await storage.read { try ledger.changes(after: revision, in: $0) }
    }

    public func revision() async throws -> Int64 {
        try await storage.read { try $0.revision() }
    }

    @discardableResult
    public func releaseExpiredHolders() async throws -> [WhiteboardHolder] {
        let (ledger, at) = (ledger, now())
        return try await storage.write { try ledger.releaseExpired(in: &$0, now: at) }
    }

    public func observeExpiredHolders(_ observer: @escaping @Sendable ([WhiteboardHolder]) -> Void) {
        expiredObserver.withLock { $0 = observer }
    }

    @discardableResult
    public func release(lock: String, holder: String) async throws -> Bool {
        let ledger = ledger
        return try await storage.write { try ledger.release(lock: lock, holder: holder, in: &$0) }
    }

    public func registerUpgrade(_ version: Int64, class upgradeClass: String) async throws {
        let (ledger, at) = (ledger, now())
        try await storage.write { try ledger.registerUpgrade(version, class: upgradeClass, in: &$0, now: at) }
    }
}

/// The server's store: the ledger over `udb.sqlite`.
public typealias SQLiteWhiteboardStore = LedgerWhiteboardStore<SQLiteWhiteboardStorage>

extension LedgerWhiteboardStore where Storage == SQLiteWhiteboardStorage {
    public static var fileName: String { SQLiteWhiteboardStorage.fileName }

    /// Opens (creating and migrating if needed) `directory/udb.sqlite`.
    public convenience init(
        directory: String, verifier: any Ed25519Verifying, lockTTLSeconds: Double = WhiteboardLedger.defaultLockTTLSeconds,
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        self.init(
            storage: try SQLiteWhiteboardStorage(directory: directory),
            ledger: WhiteboardLedger(verifier: verifier, lockTTLSeconds: lockTTLSeconds), now: now)
    }

    public var path: String { storage.path }
}
