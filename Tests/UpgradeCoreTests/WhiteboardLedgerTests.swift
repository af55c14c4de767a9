import Foundation
import Sodium
import Testing
import UpgradeCore

/// The ledger's decisions, over tables in memory: no server, no disk, no network, the time passed in. What every
/// store must do with them is `WhiteboardStoreConformanceTests` (UpgradeServerTests).
@Suite struct WhiteboardLedgerTests {
    let ledger = WhiteboardLedger(verifier: SodiumVerifier(), lockTTLSeconds: 60)
    let start = Date(timeIntervalSince1970: 1_700_000_000)
    let n1 = Ed25519KeyPair.generate()
    let n2 = Ed25519KeyPair.generate()
    let operatorKey = Ed25519KeyPair.generate()

    /// Tables with n1, n2 and the operator enrolled.
    func enrolledTables() throws -> InMemoryWhiteboardTables {
        var tables = InMemoryWhiteboardTables()
        for (name, key) in [("n1", n1), ("n2", n2), ("operator", operatorKey)] {
            #expect(try ledger.enroll(node: name, publicKey: key.publicKey, in: &tables, now: start))
            tables.commit()
        }
        return tables
    }

    func request(
        _ node: String, _ op: WhiteboardOp, _ path: String, _ content: String? = nil, seq: Int64, key: Ed25519KeyPair
    ) -> SignedWhiteboardRequest {
        let channel: WhiteboardChannel = (op == .put || op == .delete) ? .outbox : .direct
        return WhiteboardRequest(
            node: node, channel: channel, seq: seq, op: op, path: path, content: content.map { Array($0.utf8) },
            nonce: Array(repeating: UInt8(seq & 0xFF), count: 16)
        ).signed(by: key)
    }

    /// Applies one request as one transaction.
    func apply(_ signed: SignedWhiteboardRequest, _ tables: inout InMemoryWhiteboardTables, at now: Date? = nil) throws
        -> WhiteboardLedger.Applied
    {
        defer { tables.commit() }
        return try ledger.apply(signed, in: &tables, now: now ?? start)
    }

    @Test func enrollingANameOutsideTheGrammarOrAKeyOfTheWrongLengthIsRefusedAndAdmitsNothing() throws {
        var tables = InMemoryWhiteboardTables()
        for (name, key) in [("../n1", n1.publicKey), ("N1", n1.publicKey), ("", n1.publicKey),
                            ("n1", Array(n1.publicKey.prefix(31))), ("n1", n1.publicKey + [0])] {
            #expect(throws: WhiteboardDenial.self) { try ledger.enroll(node: name, publicKey: key, in: &tables, now: start) }
        }
        #expect(try ledger.enrolledNodes(in: tables).isEmpty)
    }

    @Test func anUnknownNameIsRefusedAndCountedButAForgeryIsNotCountedAgainstTheNode() throws {
        var tables = try enrolledTables()
        let stranger = Ed25519KeyPair.generate()
        let unknown = try apply(request("n9", .put, "nodes/n9/state", "idle", seq: 1, key: stranger), &tables)
        #expect(unknown.outcome == .refused(WhiteboardErrorBody(error: "unknown node n9 (not enrolled)", code: .unauthenticated)))
        let forged = try apply(request("n1", .put, "nodes/n1/state", "idle", seq: 1, key: stranger), &tables)
        guard case .refused(let refusal) = forged.outcome else { Issue.record("a forgery applied"); return }
        #expect(refusal.code == .unauthenticated)
        #expect(try ledger.refusals(in: tables).map(\.node) == ["n9"])
        #expect(tables.replay(node: "n1", stream: "outbox") == nil)
    }

    @Test func unknownWritersAreRememberedUpToTheLimitTheLeastRecentMakingRoom() throws {
        var tables = try enrolledTables()
        let stranger = Ed25519KeyPair.generate()
        for index in 0...WhiteboardLedger.maxUnknownWriters {
            let at = start.addingTimeInterval(Double(index))
            _ = try apply(request("x\(index)", .put, "nodes/x\(index)/state", "idle", seq: 1, key: stranger), &tables, at: at)
        }
        let names = Set(try ledger.refusals(in: tables).map(\.node))
        #expect(names.count == WhiteboardLedger.maxUnknownWriters)
        #expect(!names.contains("x0") && names.contains("x\(WhiteboardLedger.maxUnknownWriters)"))
        // Enrolling a remembered name forgets its refusals as a stranger.
        #expect(try ledger.enroll(node: "x1", publicKey: stranger.publicKey, in: &tables, now: start))
        #expect(try ledger.refusals(in: tables).contains { $0.node == "x1" } == false)
        // Enrolling again with the same key changes nothing.
        #expect(try !ledger.enroll(node: "x1", publicKey: stranger.publicKey, in: &tables, now: start))
    }

    @Test func aRefusedWriteUsesUpItsSeqAndKeepsItsVerdictForARetry() throws {
        var tables = try enrolledTables()
        let refused = request("n1", .put, "nodes/n2/state", "failed", seq: 7, key: n1)
        let first = try apply(refused, &tables)
        #expect(first.outcome == .refused(WhiteboardErrorBody(error: "n1 may not write nodes/n2/state", code: .forbidden)))
        #expect(tables.replay(node: "n1", stream: "outbox")?.lastSeq == 7)
        #expect(try apply(refused, &tables).outcome == first.outcome)
        #expect(try ledger.refusals(in: tables).first?.total == 2)
        let replayed = try apply(request("n1", .put, "nodes/n1/state", "idle", seq: 7, key: n1), &tables)
        guard case .refused(let replay) = replayed.outcome else { Issue.record("a replay applied"); return }
        #expect(replay.code == .replayed)
        #expect(try apply(request("n1", .put, "nodes/n1/state", "idle", seq: 8, key: n1), &tables).outcome.isApplied)
        #expect(try ledger.refusals(in: tables).first?.refusing == false)
    }

    @Test func oneTransactionHasOneRevisionAndADeleteOfNothingStillTakesOne() throws {
        var tables = try enrolledTables()
        _ = try apply(request("n1", .put, "nodes/n1/class", "app", seq: 1, key: n1), &tables)
        try ledger.registerUpgrade(1, class: "app", in: &tables, now: start)
        try ledger.registerUpgrade(2, class: "app", in: &tables, now: start)
        tables.commit()
        let before = tables.revision()
        _ = try apply(request("n1", .put, "nodes/n1/state", "running", seq: 2, key: n1), &tables)
        // The state file and both summaries changed in one transaction: one revision.
        #expect(tables.revision() == before + 1)
        #expect(Set(try ledger.changes(after: before, in: tables).files.map(\.revision)) == [before + 1])
        #expect(try ledger.changes(after: before, in: tables).files.map(\.path)
            == ["nodes/n1/state", "upgrades/1/summary", "upgrades/2/summary"])
        let applied = try apply(request("n1", .delete, "shared/never", seq: 3, key: n1), &tables)
        guard case .applied(let response) = applied.outcome else { Issue.record("refused"); return }
        #expect(response.revision == before + 2)
    }

    @Test func aHolderExpiresOnlyOnceItsNodesHeartbeatAndItsAcquisitionAreOlderThanTheTTL() {
        let now = start.timeIntervalSince1970
        #expect(!ledger.isExpired(acquiredAt: now - 60, heartbeat: nil, now: start))
        #expect(ledger.isExpired(acquiredAt: now - 60.5, heartbeat: nil, now: start))
        #expect(!ledger.isExpired(acquiredAt: now - 600, heartbeat: now - 10, now: start))
        #expect(!ledger.isExpired(acquiredAt: now - 10, heartbeat: now - 600, now: start))
        #expect(ledger.isExpired(acquiredAt: now - 61, heartbeat: now - 61, now: start))
    }

    @Test func anAcquireReleasesExpiredHoldersOfItsLockAndReportsThem() throws {
        var tables = try enrolledTables()
        #expect(try apply(request("n1", .acquire, "locks/roll/n1", seq: 1, key: n1), &tables).outcome.isApplied)
        let later = start.addingTimeInterval(61)
        let applied = try apply(request("n2", .acquire, "locks/roll/n2", seq: 1, key: n2), &tables, at: later)
        #expect(applied.outcome.isApplied)
        #expect(applied.expired.map(\.holder) == ["n1"] && applied.expired.allSatisfy(\.released))
        #expect(try ledger.releaseExpired(in: &tables, now: later).isEmpty)
    }

    @Test func onlyTheOwnerOrTheOperatorReleasesAHolder() throws {
        var tables = try enrolledTables()
        _ = try apply(request("operator", .put, "locks/roll/capacity", "2", seq: 1, key: operatorKey), &tables)
        _ = try apply(request("n1", .acquire, "locks/roll/slot", seq: 1, key: n1), &tables)
        let refused = try apply(request("n2", .release, "locks/roll/slot", seq: 1, key: n2), &tables)
        #expect(refused.outcome
            == .refused(WhiteboardErrorBody(error: "n2 may not release locks/roll/slot (held by n1)", code: .forbidden)))
        #expect(try apply(request("operator", .release, "locks/roll/slot", seq: 1, key: operatorKey), &tables).outcome.isApplied)
        #expect(try !ledger.release(lock: "roll", holder: "slot", in: &tables))
    }

    @Test func aSessionEndOfAnotherInstanceLeavesTheLiveOneAlone() throws {
        var tables = try enrolledTables()
        _ = try apply(request("n1", .session, "nodes/n1/session", "claim a1", seq: 1, key: n1), &tables)
        _ = try apply(request("n1", .session, "nodes/n1/session", "end b2", seq: 2, key: n1), &tables)
        #expect(tables.session(node: "n1")?.instance == "a1")
        let claim = try apply(request("n1", .session, "nodes/n1/session", "claim b2", seq: 3, key: n1), &tables, at: start.addingTimeInterval(59))
        guard case .refused(let refusal) = claim.outcome else { Issue.record("a second mount got the session"); return }
        #expect(refusal.code == .inUse)
        #expect(refusal.error.hasSuffix("renewed its session 59 s ago); stop that mount, or wait 1 s if it has stopped"))
    }

    @Test func aSummaryCountsNodesOfItsClassButNeverTheOperator() {
        let reports: [String: [String: [UInt8]]] = [
            "n1": ["class": Array("app\n".utf8), "state": Array("running".utf8)],
            "n2": ["class": Array("app".utf8), "version": Array("3".utf8)],
            "n3": ["class": Array("web".utf8), "state": Array("failed".utf8)],
            "n4": ["state": Array("failed".utf8)],
            "operator": ["class": Array("app".utf8), "state": Array("failed".utf8)],
        ]
        #expect(WhiteboardLedger.summary(version: 3, class: "app", reports: reports) == Array("done 1\nrunning 1\n".utf8))
        #expect(WhiteboardLedger.summary(version: 3, class: "db", reports: reports) == [])
    }

    @Test func theReadsAreSortedWhateverOrderTheStorageGivesRowsIn() throws {
        var tables = try enrolledTables()
        for (seq, path) in ["shared/b", "shared/a", "nodes/n1/x"].enumerated() {
            _ = try apply(request("n1", .put, path, "x", seq: Int64(seq + 1), key: n1), &tables)
        }
        #expect(try ledger.snapshot(in: tables).files.map(\.path) == ["nodes/n1/x", "shared/a", "shared/b"])
        #expect(try ledger.changes(after: 0, in: tables).files.map(\.path) == ["shared/b", "shared/a", "nodes/n1/x"])
        #expect(try ledger.enrolledNodes(in: tables).map(\.name) == ["n1", "n2", "operator"])
    }
}

@Suite struct InMemoryWhiteboardStorageTests {
    struct Refused: Error {}

    @Test func aTransactionThatThrowsLeavesNothing() async throws {
        let storage = InMemoryWhiteboardStorage()
        await #expect(throws: Refused.self) {
            try await storage.write { tables in
                tables.putNode(EnrolledNode(name: "n1", publicKey: [1], enrolledAt: 0))
                _ = tables.changeRevision()
                throw Refused()
            }
        }
        #expect(try await storage.read { $0.nodes().isEmpty && $0.revision() == 0 })
        let revisions = try await storage.write { tables in [tables.changeRevision(), tables.changeRevision()] }
        #expect(revisions == [1, 1])
        #expect(try await storage.write { $0.changeRevision() } == 2)
    }
}

extension WhiteboardApplyOutcome {
    var isApplied: Bool {
        if case .applied = self { return true }
        return false
    }
}
