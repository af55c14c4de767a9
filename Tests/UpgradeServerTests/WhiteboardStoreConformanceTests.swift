import Foundation
import Sodium
import Synchronization
import Testing
import UpgradeCore
@testable import UpgradeServer
import UpgradeServerPostgres
import Logging

/// The storages every whiteboard store runs over. A new storage is added here and must pass
/// `WhiteboardStoreConformanceTests` as they do.
enum StorageKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory
    case sqlite
    /// A fresh database of `PostgresCluster.shared` per test.
    case postgres

    var testDescription: String { rawValue }

    /// The kinds the conformance tests run over: PostgreSQL only where it is installed or CI=true (then it must
    /// run); `postgresStorageIsTested` carries the reason when it is left out.
    static let tested: [StorageKind] = allCases.filter { $0 != .postgres || PostgresCluster.installed || PostgresCluster.required }
}

/// What the server's whiteboard store must do, whatever its storage: one suite, run over each `StorageKind`
/// (`swift test --filter UpgradeServerTests.WhiteboardStoreConformanceTests`). The rules themselves are
/// `WhiteboardLedger`'s; these tests hold the ledger and a storage together to them.
@Suite struct WhiteboardStoreConformanceTests {
    let directory = TemporaryDirectory()
    let clock = ManualClock()
    let n1 = WhiteboardWriter("n1")
    let n2 = WhiteboardWriter("n2")
    let op = WhiteboardWriter("operator")

    /// Closes each PostgreSQL storage when the test is over.
    let opened = OpenedStorages()

    func open(_ kind: StorageKind, ttl: Double = 60) async throws -> any WhiteboardStore {
        let clock = self.clock
        let ledger = WhiteboardLedger(verifier: SodiumVerifier(), lockTTLSeconds: ttl)
        switch kind {
        case .memory:
            return LedgerWhiteboardStore(storage: InMemoryWhiteboardStorage(), ledger: ledger, now: { clock.now })
        case .sqlite:
            return LedgerWhiteboardStore(storage: try SQLiteWhiteboardStorage(directory: directory.path), ledger: ledger, now: { clock.now })
        case .postgres:
            let url = try PostgresWhiteboard.ConnectionURL(try PostgresCluster.shared.get().createDatabase())
            let storage = try await PostgresWhiteboardStorage.connect(url: url, logger: Logger(label: "test.udb"))
            opened.add(storage)
            return LedgerWhiteboardStore(storage: storage, ledger: ledger, now: { clock.now })
        }
    }

    func enrolled(_ kind: StorageKind, ttl: Double = 60) async throws -> any WhiteboardStore {
        let store = try await open(kind, ttl: ttl)
        for writer in [n1, n2, op] { try await store.enroll(node: writer.name, publicKey: writer.key.publicKey) }
        return store
    }

    /// Where PostgreSQL is missing (and CI is unset) the suite runs without `.postgres`: this test says why.
    @Test(.postgres) func postgresStorageIsTested() throws {
        #expect(StorageKind.tested.contains(.postgres))
        _ = try PostgresCluster.shared.get()
    }

    /// The server's operator writes (the fleet page's actions) go through the ledger's rules, as the operator's
    /// signed ones do.
    @Test(arguments: StorageKind.tested) func operatorActionIsCheckedByTheLedgersRules(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.applyAsOperator(.put, path: "upgrades/3/control", content: Array("approve\n".utf8)) == nil)
        #expect(try await store.snapshot().content("upgrades/3/control") == "approve\n")
        let badWord = try await store.applyAsOperator(.put, path: "upgrades/3/control", content: Array("reboot".utf8))
        #expect(badWord?.code == .malformed && badWord?.error.hasPrefix("upgrades/3/control must hold one of:") == true)
        #expect(try await store.applyAsOperator(.put, path: "nodes/n1/log", content: Array("x".utf8))?.code == .forbidden)
        #expect(try await store.applyAsOperator(.release, path: "locks/roll/n1", content: nil)?.error == "lock roll has no holder n1")
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).result == .ok)
        #expect(try await store.applyAsOperator(.release, path: "locks/roll/n1", content: nil) == nil)
        #expect(try await store.snapshot().holders.isEmpty)
        #expect(try await store.applyAsOperator(.acquire, path: "locks/roll/op", content: nil)?.code == .malformed)
    }

    @Test(arguments: StorageKind.tested) func signedWriteIsAppliedAndVisible(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let outcome = try await store.apply(n1.request(.put, "nodes/n1/state", "running\n"))
        #expect(outcome.result == .ok)
        let snapshot = try await store.snapshot()
        #expect(snapshot.content("nodes/n1/state") == "running\n")
        #expect(snapshot.revision >= 1)
    }

    @Test(arguments: StorageKind.tested) func forbiddenWriteChangesNothing(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let before = try await store.revision()
        let outcome = try await store.apply(n1.request(.put, "nodes/n2/state", "failed"))
        #expect(outcome.code == .forbidden)
        #expect(outcome.message == "n1 may not write nodes/n2/state")
        #expect(try await store.apply(n1.request(.put, "upgrades/3/control", "go")).code == .forbidden)
        #expect(try await store.apply(n1.request(.put, "locks/roll/capacity", "9")).code == .forbidden)
        #expect(try await store.revision() == before)
        #expect(try await store.snapshot().files.isEmpty)
    }

    @Test(arguments: StorageKind.tested) func unknownNodeAndBadSignatureAreUnauthenticated(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(WhiteboardWriter("n3").request(.put, "nodes/n3/state", "idle")).code == .unauthenticated)
        var forged = n1.request(.put, "nodes/n1/state", "idle")
        forged.request.content = Array("failed".utf8)
        #expect(try await store.apply(forged).code == .unauthenticated)
        #expect(try await store.snapshot().files.isEmpty)
    }

    @Test(arguments: StorageKind.tested) func retryOfLastRequestIsDuplicateAndOlderIsReplayed(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let first = n1.request(.put, "nodes/n1/version", "1")
        let second = n1.request(.put, "nodes/n1/version", "2")
        #expect(try await store.apply(first).result == .ok)
        #expect(try await store.apply(second).result == .ok)
        let revision = try await store.revision()
        #expect(try await store.apply(second).result == .duplicate)
        #expect(try await store.revision() == revision)
        #expect(try await store.apply(first).code == .replayed)
        #expect(try await store.snapshot().content("nodes/n1/version") == "2")
        // Same seq, other content: not a retry.
        #expect(try await store.apply(n1.request(.put, "nodes/n1/version", "3", seq: second.request.seq)).code == .replayed)
        // Gaps are allowed.
        #expect(try await store.apply(n1.request(.put, "nodes/n1/version", "4", seq: 10)).result == .ok)
    }

    @Test(arguments: StorageKind.tested) func lockCapacityFullAndRelease(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(op.request(.put, "locks/roll/capacity", "1")).result == .ok)
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).result == .ok)
        let full = try await store.apply(n2.request(.acquire, "locks/roll/n2"))
        #expect(full.code == .full)
        #expect(full.message == "lock roll is full (1 of 1)")
        #expect(try await store.apply(n2.request(.release, "locks/roll/n1")).code == .forbidden)
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).code == .exists)
        #expect(try await store.apply(n1.request(.release, "locks/roll/n1")).result == .ok)
        #expect(try await store.apply(n1.request(.release, "locks/roll/n1")).code == .notFound)
        #expect(try await store.apply(n2.request(.acquire, "locks/roll/n2")).result == .ok)
        #expect(try await store.snapshot().holders.map(\.holder) == ["n2"])
        // The operator may release anyone's holder.
        #expect(try await store.apply(op.request(.release, "locks/roll/n2")).result == .ok)
    }

    /// Acquires racing from many nodes at once: the capacity holds (a storage whose transactions are not serializable
    /// lets two acquires both see a free slot), and every write has a revision of its own, in the change feed once.
    @Test(arguments: StorageKind.tested) func concurrentAcquiresNeverExceedTheCapacity(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let racers = (1...12).map { WhiteboardWriter("r\($0)") }
        for racer in racers { try await store.enroll(node: racer.name, publicKey: racer.key.publicKey) }
        #expect(try await store.apply(op.request(.put, "locks/roll/capacity", "3")).result == .ok)
        let before = try await store.revision()
        let outcomes = try await withThrowingTaskGroup(of: WhiteboardApplyOutcome.self) { group in
            for racer in racers {
                group.addTask { try await store.apply(racer.request(.acquire, "locks/roll/\(racer.name)")) }
                group.addTask { try await store.apply(racer.request(.put, "nodes/\(racer.name)/state", "waiting")) }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(outcomes.filter { $0.result == .ok }.count == 12 + 3)
        #expect(outcomes.filter { $0.code == .full }.count == 12 - 3)
        #expect(try await store.snapshot().holders.count == 3)
        let changes = try await store.changes(after: before)
        #expect(changes.holders.count == 3)
        #expect(changes.files.filter { $0.path.hasSuffix("/state") }.count == 12)
        let revisions = changes.files.filter { $0.path.hasSuffix("/state") }.map(\.revision) + changes.holders.map(\.revision)
        #expect(Set(revisions).count == revisions.count, "each applied write has a revision of its own")
    }

    @Test(arguments: StorageKind.tested) func missingCapacityMeansOneAndZeroMeansClosed(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(n1.request(.acquire, "locks/a/x")).result == .ok)
        #expect(try await store.apply(n2.request(.acquire, "locks/a/y")).code == .full)
        #expect(try await store.apply(op.request(.put, "locks/b/capacity", "0")).result == .ok)
        #expect(try await store.apply(n1.request(.acquire, "locks/b/x")).code == .full)
    }

    @Test(arguments: StorageKind.tested) func holderOfANodeWithAStaleHeartbeatIsReleased(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind, ttl: 60)
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/heartbeat", "1")).result == .ok)
        clock.advance(50)
        #expect(try await store.apply(n2.request(.put, "nodes/n2/heartbeat", "1")).result == .ok)
        #expect(try await store.apply(n2.request(.acquire, "locks/roll/n2")).code == .full)
        clock.advance(20)  // n1's heartbeat is 70 s old, over the TTL
        #expect(try await store.apply(n2.request(.acquire, "locks/roll/n2")).result == .ok)
        let changes = try await store.changes(after: 0)
        #expect(changes.holders.contains { $0.holder == "n1" && $0.released })
        // A live holder is kept by the periodic check.
        clock.advance(30)
        #expect(try await store.releaseExpiredHolders().isEmpty)
        clock.advance(40)
        #expect(try await store.releaseExpiredHolders().map(\.holder) == ["n2"])
    }

    @Test(arguments: StorageKind.tested) func summaryCountsEnrolledNodesByState(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        _ = try await store.apply(n1.request(.put, "nodes/n1/class", "app\n"))
        _ = try await store.apply(n2.request(.put, "nodes/n2/class", "app\n"))
        try await store.registerUpgrade(2, class: "app")
        #expect(try await store.snapshot().content("upgrades/2/summary") == "unknown 2\n")
        _ = try await store.apply(n1.request(.put, "nodes/n1/state", "upgrading\n"))
        _ = try await store.apply(n2.request(.put, "nodes/n2/state", "waiting"))
        _ = try await store.apply(n2.request(.put, "nodes/n2/version", "2"))
        #expect(try await store.snapshot().content("upgrades/2/summary") == "done 1\nupgrading 1\n")
        #expect(try await store.apply(op.request(.put, "upgrades/2/summary", "x")).code == .forbidden)
    }

    @Test(arguments: StorageKind.tested) func deletionsAreReportedAsTombstones(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        _ = try await store.apply(n1.request(.put, "shared/plan", "a"))
        let revision = try await store.revision()
        #expect(try await store.apply(n1.request(.delete, "shared/plan")).result == .ok)
        let changes = try await store.changes(after: revision)
        #expect(changes.files.count == 1)
        #expect(changes.files.first?.content == nil)
        #expect(try await store.snapshot().files.isEmpty)
        #expect(try await store.changes(after: changes.revision).files.isEmpty)
    }

    @Test(arguments: StorageKind.tested) func fileAndDirectoryCannotShareAPath(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(n1.request(.put, "shared/a", "x")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "shared/a/b", "x")).code == .conflict)
        #expect(try await store.apply(n1.request(.put, "shared/c/d", "x")).result == .ok)
        #expect(try await store.apply(n1.request(.put, "shared/c", "x")).code == .conflict)
    }

    @Test(arguments: StorageKind.tested) func removedNodeCanNoLongerWriteAndLosesItsHolders(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).result == .ok)
        #expect(try await store.remove(node: "n1"))
        #expect(try await store.snapshot().holders.isEmpty)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/state", "idle")).code == .unauthenticated)
        #expect(try await !store.remove(node: "n1"))
    }

    /// Issue 8, item 12: a signed write captured before `enroll --remove` (seq 100, state running) must stay a replay
    /// after the same key is enrolled again (or after another key came and went), and not turn `failed` back into `running`.
    @Test(arguments: StorageKind.tested) func replayOfAWriteCapturedBeforeRemovalAndReEnrolmentIsRefused(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let captured = n1.request(.put, "nodes/n1/state", "running", seq: 100)
        #expect(try await store.apply(captured).result == .ok)
        #expect(try await store.apply(n1.request(.put, "nodes/n1/state", "failed", seq: 101)).result == .ok)
        #expect(try await store.remove(node: "n1"))
        #expect(try await store.enroll(node: "n1", publicKey: n1.key.publicKey))
        #expect(try await store.apply(captured).code == .replayed)
        // Another key in between does not reset the counters either.
        #expect(try await store.enroll(node: "n1", publicKey: Ed25519KeyPair.generate().publicKey))
        #expect(try await store.enroll(node: "n1", publicKey: n1.key.publicKey))
        #expect(try await store.apply(captured).code == .replayed)
        #expect(try await store.snapshot().content("nodes/n1/state") == "failed")
        // The re-enrolled node's journal goes on above the old seqs.
        #expect(try await store.apply(n1.request(.put, "nodes/n1/state", "idle", seq: 102)).result == .ok)
    }

    /// Issue 8, item 13: the server keeps a refused write's verdict with its seq, so the node's retry (its answer was
    /// lost, or the mount restarted) hears the same verdict instead of "replayed", and the node's next write applies.
    @Test(arguments: StorageKind.tested) func aRetryOfARefusedWriteHearsTheSameVerdictNotReplayed(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        #expect(try await store.apply(n1.request(.put, "shared/a", "file")).result == .ok)
        let blocked = n2.request(.put, "shared/a/b", "x")
        #expect(try await store.apply(blocked).code == .conflict)
        #expect(try await store.apply(blocked).code == .conflict)
        let refusals = try await store.refusals()
        #expect(refusals.map(\.node) == ["n2"] && refusals.first?.refusing == true && refusals.first?.enrolled == true)
        #expect(try await store.apply(n2.request(.put, "nodes/n2/heartbeat", "1")).result == .ok)
        #expect(try await store.refusals().first?.refusing == false)
        #expect(try await store.refusals().first?.total == 2)
        // Writes of a name nobody enrolled are counted too (a mount started before `enroll`).
        _ = try await store.apply(WhiteboardWriter("n9").request(.put, "nodes/n9/state", "idle"))
        #expect(try await store.refusals().first { $0.node == "n9" }?.enrolled == false)
    }

    /// Anyone can send a request in an enrolled node's name: one that fails the signature check is refused, and
    /// it must not make the real node show as refusing in `status` and `/metrics`.
    @Test(arguments: StorageKind.tested) func forgedRequestsInAnEnrolledNodesNameDoNotMarkItRefusing(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let impostor = WhiteboardWriter("n1")
        #expect(try await store.apply(impostor.request(.put, "nodes/n1/state", "failed")).code == .unauthenticated)
        #expect(try await store.refusals().contains { $0.node == "n1" } == false)
        #expect(try await store.snapshot().content("nodes/n1/state") == nil)
    }

    /// Issue 8, item 23: an upgrade's summary counts only nodes of its class, by what they report; nodes that never
    /// reported a class count nowhere, and a control file for an upgrade never published adds no summary.
    @Test(arguments: StorageKind.tested) func summariesCountOnlyNodesOfTheUpgradesClass(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        let n3 = WhiteboardWriter("n3")
        try await store.enroll(node: "n3", publicKey: n3.key.publicKey)
        try await store.registerUpgrade(1, class: "counter")
        try await store.registerUpgrade(2, class: "web")
        _ = try await store.apply(n1.request(.put, "nodes/n1/class", "counter\n"))
        _ = try await store.apply(n1.request(.put, "nodes/n1/state", "failed\n"))
        _ = try await store.apply(n1.request(.put, "nodes/n1/version", "0"))
        _ = try await store.apply(n1.request(.put, "nodes/n1/upgrade", "1\n"))
        _ = try await store.apply(n2.request(.put, "nodes/n2/class", "web"))
        _ = try await store.apply(n2.request(.put, "nodes/n2/state", "running"))
        _ = try await store.apply(n2.request(.put, "nodes/n2/version", "2"))
        // n3 has no manager: it wrote a state but never a class.
        _ = try await store.apply(n3.request(.put, "nodes/n3/state", "running"))
        var snapshot = try await store.snapshot()
        #expect(snapshot.content("upgrades/1/summary") == "failed 1\n")
        #expect(snapshot.content("upgrades/2/summary") == "done 1\n")
        // n1's failure of upgrade 1 is not a failure of the next upgrade of its class.
        try await store.registerUpgrade(3, class: "counter")
        #expect(try await store.snapshot().content("upgrades/3/summary") == "pending 1\n")
        _ = try await store.apply(n1.request(.put, "nodes/n1/upgrade", "3\n"))
        _ = try await store.apply(n1.request(.put, "nodes/n1/state", "waiting\n"))
        #expect(try await store.snapshot().content("upgrades/1/summary") == "pending 1\n")
        #expect(try await store.snapshot().content("upgrades/3/summary") == "waiting 1\n")
        #expect(try await store.apply(op.request(.put, "upgrades/7/control", "go")).result == .ok)
        snapshot = try await store.snapshot()
        #expect(snapshot.content("upgrades/7/summary") == nil)
        let status = WhiteboardStatus(enrolled: try await store.enrolledNodes(), view: snapshot)
        #expect(status.upgrades.map(\.version) == [1, 2, 3])
        #expect(status.nodes.first { $0.name == "n3" }?.class == nil)
        #expect(status.text().contains("unclassified"))
    }

    /// Issue 8, item 18: the same node key mounted twice (two caches, two journals) would interleave two seq
    /// streams, and the first mount's writes would be refused as replays. The second live mount's claim of the
    /// node's session is refused; a restart of the same mount (same instance) is not; a lapsed or ended session frees it.
    @Test(arguments: StorageKind.tested) func aSecondLiveMountOfOneNodeKeyIsRefusedTheSession(_ kind: StorageKind) async throws {
        defer { directory.remove() }
        let store = try await enrolled(kind)
        func claim(_ instance: String) -> SignedWhiteboardRequest {
            n1.request(.session, "nodes/n1/session", String(decoding: WhiteboardSession.content(.claim(instance: instance)), as: UTF8.self))
        }
        let revision = try await store.revision()
        #expect(try await store.apply(claim("a1")).result == .ok)
        #expect(try await store.revision() == revision)
        // The second mount's journal is newer, so its seqs are higher: its refused claim must not use up the live
        // mount's direct seqs (its next lock operation still applies).
        let second = n1.request(.session, "nodes/n1/session", "claim b2", seq: 1_000_000)
        #expect(try await store.apply(second).code == .inUse)
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).result == .ok)
        #expect(try await store.apply(claim("a1")).result == .ok)
        clock.advance(WhiteboardSession.leaseSeconds + 1)
        #expect(try await store.apply(claim("b2")).result == .ok)
        #expect(try await store.apply(claim("a1")).code == .inUse)
        let end = n1.request(.session, "nodes/n1/session", "end b2")
        #expect(try await store.apply(end).result == .ok)
        #expect(try await store.apply(claim("a1")).result == .ok)
        // Only the node itself claims its session.
        #expect(try await store.apply(n2.request(.session, "nodes/n1/session", "claim a1")).code == .malformed)
        #expect(try await store.apply(n1.request(.session, "nodes/n1/session", "take it")).code == .malformed)
    }
}

/// The PostgreSQL storages a test opened, closed when it is over (the suite's instance goes away).
final class OpenedStorages: Sendable {
    private let storages = Mutex<[PostgresWhiteboardStorage]>([])
    func add(_ storage: PostgresWhiteboardStorage) { storages.withLock { $0.append(storage) } }
    deinit { for storage in storages.withLock({ $0 }) { storage.close() } }
}
