import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
import UpgradeNode
import UpgradeServer
import UpgradeWhiteboardClient

/// A node's view of the whiteboard follows the server: other nodes' writes, deletions and lock holders
/// arrive through the signed change feed; an answer not signed by the server's key changes nothing.
@Suite(.serialized) struct WhiteboardFollowerTests {
    @Test func anotherNodesWritesReachThisNodesViewThroughTheChangeFeed() async throws {
        let fixture = try await WhiteboardFixture.start("udb-follow", changesTimeoutMilliseconds: 20_000)
        defer { fixture.remove() }
        let store = fixture.store
        let n1 = try await fixture.enrolledNode("n1")
        let n2 = try await fixture.enrolledNode("n2")

        let writer = try WhiteboardJournal(path: fixture.path + "/n1.sqlite", node: "n1", key: n1.key)
        let sender = fixture.sender(for: writer)
        let senderTask = Task { await sender.run() }
        try writer.enqueue(op: .put, path: "nodes/n1/state", content: Array("waiting\n".utf8))
        try writer.enqueue(op: .put, path: "shared/plan", content: Array("roll".utf8))
        sender.wake()
        #expect(try await WhiteboardFixture.waitFor(30) { try writer.pending().isEmpty })

        let reader = try WhiteboardJournal(path: fixture.path + "/n2.sqlite", node: "n2", key: n2.key)
        let follower = fixture.follower(for: reader)
        try await follower.poll()
        #expect(try reader.view(path: "nodes/n1/state") == Array("waiting\n".utf8))
        #expect(try reader.view(path: "shared/plan") == Array("roll".utf8))

        // A write made while n2 waits in the long poll (20 s) arrives when it is made, not at the poll's end
        // (allowing for a loaded machine: the full test suite runs in parallel on two cores).
        let polling = Task { try await follower.poll() }
        try await Task.sleep(for: .milliseconds(200))
        let started = Date()
        try writer.enqueue(op: .put, path: "nodes/n1/state", content: Array("upgrading\n".utf8))
        try writer.enqueue(op: .delete, path: "shared/plan")
        sender.wake()
        try await polling.value
        #expect(Date().timeIntervalSince(started) < 10)
        if try reader.view(path: "shared/plan") != nil { try await follower.poll() }
        #expect(try reader.view(path: "nodes/n1/state") == Array("upgrading\n".utf8))
        #expect(try reader.view(path: "shared/plan") == nil)
        #expect(try reader.serverRevision() == (try await store.revision()))

        // Lock holders come with the feed too.
        try await store.apply(try SignedWhiteboardRequest.decode(writer.signDirect(op: .acquire, path: "locks/roll/n1").body))
        try await follower.poll()
        #expect(await follower.holders.keys.sorted() == ["locks/roll/n1"])
        try await store.apply(try SignedWhiteboardRequest.decode(writer.signDirect(op: .release, path: "locks/roll/n1").body))
        try await follower.poll()
        #expect(await follower.holders.isEmpty)

        // Answers are only believed when signed by this server's timestamp key.
        let fooled = fixture.follower(for: reader, serverKey: Ed25519KeyPair.generate().publicKey)
        let before = try reader.serverRevision()
        await #expect(throws: WhiteboardProtocolError.self) { try await fooled.poll() }
        #expect(try reader.serverRevision() == before)
        senderTask.cancel()
        await senderTask.value
        await fixture.stopServer()
    }

    /// On the path, an attacker turns the node's read into `changes?after=HIGH` with the node's own nonce (the read
    /// endpoints are open): the server's signed answer is empty, at the current revision. Taken as the snapshot it
    /// would wipe the node's view, taken as the changes asked for it would make the node skip them (an `abort`).
    @Test func readAnswerToAnotherQuestionSwappedOnThePathIsRefused() async throws {
        let fixture = try await WhiteboardFixture.start("udb-swap", changesTimeoutMilliseconds: 300)
        defer { fixture.remove() }
        let n1 = try await fixture.enrolledNode("n1")
        let n2 = try await fixture.enrolledNode("n2")
        func write(_ content: String, seq: Int64) async throws {
            let request = WhiteboardRequest(
                node: "n1", channel: .outbox, seq: seq, op: .put, path: "shared/plan", content: Array(content.utf8),
                nonce: Sodium.randomBytes(16))
            #expect(try await fixture.store.apply(request.signed(by: n1.key)).isApplied)
        }
        try await write("go", seq: 1)
        let proxy = try CutProxy(to: fixture.configuration.port)
        let reader = try WhiteboardJournal(path: fixture.path + "/n2.sqlite", node: "n2", key: n2.key)
        let follower = WhiteboardFollower(
            journal: reader, baseURL: "http://127.0.0.1:\(proxy.port)", http: HTTPClient.shared, serverKey: fixture.serverKey,
            logger: WhiteboardFixture.logger)
        proxy.rewriteRequests = { request in
            request.replacing("/v1/udb/snapshot?", with: "/v1/udb/changes?after=999999&")
                .replacing(/changes\?after=[0-9]+&/, with: "changes?after=999999&")
        }
        await #expect(throws: WhiteboardProtocolError.self) { try await follower.poll() }
        #expect(try reader.serverRevision() == 0)
        proxy.rewriteRequests = nil
        try await follower.poll()
        #expect(try reader.view(path: "shared/plan") == Array("go".utf8))
        let revision = try reader.serverRevision()

        try await write("abort", seq: 2)
        proxy.rewriteRequests = { $0.replacing(/changes\?after=[0-9]+&/, with: "changes?after=999999&") }
        await #expect(throws: WhiteboardProtocolError.self) { try await follower.poll() }
        #expect(try reader.serverRevision() == revision)
        proxy.rewriteRequests = nil
        try await follower.poll()
        #expect(try reader.view(path: "shared/plan") == Array("abort".utf8))
        await fixture.stopServer()
    }
}

private extension WhiteboardApplyOutcome {
    var isApplied: Bool {
        if case .applied = self { return true }
        return false
    }
}
