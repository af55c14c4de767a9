import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeWhiteboardClient

/// The node's durable journal: what a write that returned must survive, and what reads see meanwhile.
struct WhiteboardJournalTests {
    let key = Ed25519KeyPair.generate()

    func open(_ dir: TemporaryDirectory, firstSeq: Int64? = 1) throws -> WhiteboardJournal {
        try WhiteboardJournal(path: dir.path + "/udb.sqlite", node: "n1", key: key, firstSeq: firstSeq)
    }

    /// Issue 8, item 13: a write the server refused is moved aside (kept, with the verdict), the writes behind it stay
    /// in order, and the node's log gets a line after its current content; a refused log write adds no log line (no
    /// loop of refused log lines). The instance id survives reopening (a remount is the same mount session).
    @Test func aRefusedWriteIsSetAsideWithALogLineAndTheRestStaysInOrder() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var journal = try open(dir)
        try journal.enqueue(op: .put, path: "nodes/n1/log", content: Array("started\n".utf8))
        let refused = try journal.enqueue(op: .put, path: "shared/a/b", content: Array("x".utf8))
        let behind = try journal.enqueue(op: .put, path: "nodes/n1/heartbeat", content: Array("1".utf8))
        try journal.setAside(seq: refused, status: 409, reason: "shared/a is a file, so shared/a/b cannot be created")
        #expect(try journal.refused().map(\.seq) == [refused])
        #expect(try journal.refused().first?.reason.contains("shared/a is a file") == true)
        let pending = try journal.pending()
        #expect(pending.map(\.path) == ["nodes/n1/log", "nodes/n1/heartbeat", "nodes/n1/log"])
        #expect(pending[1].seq == behind && pending[2].seq > behind)
        let log = String(decoding: try journal.view(path: "nodes/n1/log") ?? [], as: UTF8.self)
        #expect(log.hasPrefix("started\nupgradefs mount: the server refused the write of shared/a/b"), "\(log)")
        #expect(try journal.view(path: "shared/a/b") == nil)

        try journal.setAside(seq: pending[2].seq, status: 400, reason: "refused log")
        #expect(try journal.pending().map(\.path) == ["nodes/n1/log", "nodes/n1/heartbeat"])
        let instance = journal.instance
        try journal.close()
        journal = try open(dir)
        #expect(journal.instance == instance)
        #expect(try journal.refused().count == 2)
    }

    @Test func pendingWritesSurviveAMountRestartInOrderAndSeqsAreNeverReused() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var journal = try open(dir)
        let a = try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("waiting".utf8))
        let b = try journal.enqueue(op: .put, path: "nodes/n1/version", content: Array("3".utf8))
        let c = try journal.enqueue(op: .delete, path: "nodes/n1/extra")
        let direct = try journal.nextDirectSeq()
        let before = try journal.pending()
        // The mount process goes away with everything still pending.
        try journal.close()

        journal = try open(dir)
        let after = try journal.pending()
        #expect(after == before)
        #expect(after.map(\.seq) == [a, b, c])
        #expect(a < b && b < c)
        #expect(after.map(\.path) == ["nodes/n1/state", "nodes/n1/version", "nodes/n1/extra"])
        #expect(after[0].content == Array("waiting".utf8) && after[2].content == nil)

        // Delivered entries leave; new ones still get seqs above every seq handed out before.
        try journal.acknowledge(seq: a)
        try journal.acknowledge(seq: b)
        try journal.acknowledge(seq: c)
        try journal.close()
        journal = try open(dir)
        #expect(try journal.pending().isEmpty)
        let d = try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("running".utf8))
        #expect(d > c)
        #expect(try journal.nextDirectSeq() > direct)
        try journal.close()
    }

    @Test func acknowledgeRemovesOnlyThatEntry() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir)
        let seqs = try (1...4).map { try journal.enqueue(op: .put, path: "shared/f\($0)", content: [UInt8($0)]) }
        try journal.acknowledge(seq: seqs[1])
        #expect(try journal.pending().map(\.seq) == [seqs[0], seqs[2], seqs[3]])
        try journal.acknowledge(seq: seqs[1]) // again: a no-op
        #expect(try journal.pending().map(\.seq) == [seqs[0], seqs[2], seqs[3]])
        #expect(try journal.firstPending()?.seq == seqs[0])
    }

    @Test func readsShowTheLatestPendingWriteOverTheServerView() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir)
        try journal.applyServerChanges(revision: 7, files: [
            .init(path: "nodes/n1/state", content: Array("idle".utf8), revision: 5),
            .init(path: "nodes/n1/version", content: Array("2".utf8), revision: 6),
            .init(path: "shared/note", content: Array("hi".utf8), revision: 7),
        ], replacingAll: true)
        #expect(try journal.view(path: "nodes/n1/state") == Array("idle".utf8))
        #expect(try journal.serverRevision() == 7)

        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("waiting".utf8))
        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("upgrading".utf8))
        try journal.enqueue(op: .delete, path: "nodes/n1/version")
        try journal.enqueue(op: .put, path: "nodes/n1/log", content: Array("x".utf8))
        #expect(try journal.view(path: "nodes/n1/state") == Array("upgrading".utf8))
        #expect(try journal.view(path: "nodes/n1/version") == nil)
        #expect(try journal.view(path: "nodes/n1/log") == Array("x".utf8))
        #expect(try journal.view(path: "shared/note") == Array("hi".utf8))
        #expect(try journal.view(path: "shared/none") == nil)
        #expect(try journal.paths(withPrefix: "nodes/n1/") == ["nodes/n1/log", "nodes/n1/state"])

        // A put after a pending delete brings the file back.
        try journal.enqueue(op: .put, path: "nodes/n1/version", content: Array("3".utf8))
        #expect(try journal.view(path: "nodes/n1/version") == Array("3".utf8))

        // Once everything is delivered and the server's changes arrive, the view is the server's.
        for entry in try journal.pending() { try journal.acknowledge(seq: entry.seq) }
        #expect(try journal.view(path: "nodes/n1/log") == nil)
        try journal.applyServerChanges(revision: 12, files: [
            .init(path: "nodes/n1/state", content: Array("upgrading".utf8), revision: 9),
            .init(path: "nodes/n1/version", content: nil, revision: 10),
            .init(path: "nodes/n1/log", content: Array("x".utf8), revision: 11),
        ])
        #expect(try journal.view(path: "nodes/n1/log") == Array("x".utf8))
        #expect(try journal.view(path: "nodes/n1/version") == nil)
        #expect(try journal.serverRevision() == 12)
    }

    @Test func anAcknowledgedWriteStaysVisibleUntilTheChangeFeedCatchesUp() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir)
        try journal.applyServerChanges(revision: 3, files: [
            .init(path: "nodes/n1/state", content: Array("idle".utf8), revision: 2),
            .init(path: "nodes/n1/extra", content: Array("x".utf8), revision: 3),
        ])
        let put = try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("running".utf8))
        let delete = try journal.enqueue(op: .delete, path: "nodes/n1/extra")
        try journal.acknowledge(seq: put, revision: 4)
        try journal.acknowledge(seq: delete, revision: 5)
        #expect(try journal.pending().isEmpty)
        #expect(try journal.view(path: "nodes/n1/state") == Array("running".utf8))
        #expect(try journal.view(path: "nodes/n1/extra") == nil)
        // A newer server version of the file is not overwritten by an older acknowledgement.
        try journal.applyServerChanges(revision: 9, files: [.init(path: "nodes/n1/state", content: Array("failed".utf8), revision: 9)])
        let late = try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("old".utf8))
        try journal.acknowledge(seq: late, revision: 8)
        #expect(try journal.view(path: "nodes/n1/state") == Array("failed".utf8))
    }

    @Test func anOlderServerAnswerDoesNotRollTheViewBack() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir)
        try journal.applyServerChanges(revision: 9, files: [.init(path: "shared/x", content: [2], revision: 9)])
        try journal.applyServerChanges(revision: 8, files: [.init(path: "shared/x", content: [1], revision: 8)])
        #expect(try journal.view(path: "shared/x") == [2])
        #expect(try journal.serverRevision() == 9)
    }

    @Test func enqueuedWritesAreSignedRequestsTheServerCanVerify() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir, firstSeq: 17)
        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("idle".utf8))
        let entry = try #require(try journal.pending().first)
        let body = try JSONValue.parse(entry.body)
        let request = try #require(body["request"])
        #expect(request["node"]?.stringValue == "n1")
        #expect(request["channel"]?.stringValue == "outbox")
        #expect(request["seq"]?.intValue == 17)
        #expect(request["op"]?.stringValue == "put")
        #expect(request["content"]?.stringValue == Data("idle".utf8).base64EncodedString())
        #expect(request["nonce"]?.stringValue == Hex.encode(entry.nonce))
        let signature = try #require(body["signature"]?.stringValue.flatMap(Hex.decode))
        let signed = Array("upgradefs-udb-request-v1\n".utf8) + request.canonicalBytes()
        #expect(SodiumVerifier().isValid(signature: signature, message: signed, publicKey: key.publicKey))
        #expect(!SodiumVerifier().isValid(signature: signature, message: signed, publicKey: Ed25519KeyPair.generate().publicKey))
        // What the server decodes and checks.
        let decoded = try SignedWhiteboardRequest.decode(entry.body)
        #expect(decoded.request.seq == 17 && decoded.request.op == .put && decoded.request.path == "nodes/n1/state")
        #expect(decoded.verify(publicKey: key.publicKey, verifier: SodiumVerifier()))
    }

    @Test func theJournalIsDurableWAL() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir)
        try journal.enqueue(op: .put, path: "shared/x", content: [1])
        // WAL mode leaves its side file while open; synchronous = FULL is checked on a fresh connection.
        #expect(FileManager.default.fileExists(atPath: dir.path + "/udb.sqlite-wal"))
        #expect(try journal.pragma("journal_mode") == "wal")
        #expect(try journal.pragma("synchronous") == "2")
    }

    @Test func aPutWithoutContentIsRefused() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir)
        #expect(throws: WhiteboardJournalError.self) { try journal.enqueue(op: .put, path: "shared/x") }
        #expect(throws: WhiteboardJournalError.self) { try journal.enqueue(op: .delete, path: "shared/x", content: [1]) }
        #expect(try journal.pending().isEmpty)
    }

    @Test func aWriteTheServerWouldRefuseIsNeverJournaled() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir)
        func denial(_ op: WhiteboardJournal.Op, _ path: String, _ content: String? = nil) -> WhiteboardDenial.Kind? {
            do {
                try journal.enqueue(op: op, path: path, content: content.map { Array($0.utf8) })
                return nil
            } catch {
                return error.denial?.kind
            }
        }
        #expect(denial(.put, "nodes/n2/state", "idle") == .forbidden)
        #expect(denial(.delete, "nodes/n2/state") == .forbidden)
        #expect(denial(.put, "upgrades/3/control", "go") == .forbidden)
        #expect(denial(.put, "upgrades/3/summary", "x") == .forbidden)
        #expect(denial(.put, "locks/roll/capacity", "2") == .forbidden)
        #expect(denial(.put, "nodes/n1/state", "Not A Word") == .malformed)
        #expect(denial(.put, "nodes/n1/version", "-1") == .malformed)
        #expect(denial(.put, "nodes/n1/../n2/state", "idle") == .malformed)
        #expect(denial(.put, "shared/big", String(repeating: "x", count: 65 << 10)) == .malformed)
        #expect(try journal.pending().isEmpty)
        // What is allowed goes in; a log is kept as the server keeps it (its last 64 KiB).
        #expect(denial(.put, "nodes/n1/state", "running\n") == nil)
        #expect(denial(.put, "shared/notes/x", "anything") == nil)
        #expect(denial(.put, "nodes/n1/log", String(repeating: "a", count: 1000) + String(repeating: "b", count: 64 << 10)) == nil)
        #expect(try journal.view(path: "nodes/n1/log") == Array(repeating: UInt8(ascii: "b"), count: 64 << 10))
        #expect(try journal.pending().count == 3)
    }

    @Test func aNewJournalStartsItsSeqsAtTheClock() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try open(dir, firstSeq: nil)
        let seq = try journal.enqueue(op: .put, path: "shared/x", content: [1])
        #expect(seq > Int64(Date().timeIntervalSince1970 - 60) * 1_000_000)
    }
}
