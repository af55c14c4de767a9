import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
import UpgradeNode
import UpgradeServer

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
}
