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
        let dir = try Harness.temporaryDirectory("udb-follow")
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = ServerKeyFile.generate()
        try keys.write(to: dir.path + "/server.key")
        try FileManager.default.createDirectory(atPath: dir.path + "/publish", withIntermediateDirectories: true)
        let configuration = ServerConfiguration(
            stateDirectory: dir.path + "/state", publishDirectory: dir.path + "/publish", keyFile: dir.path + "/server.key",
            host: "127.0.0.1", port: Harness.freePort(), settleMilliseconds: 0, scanIntervalMilliseconds: 50,
            changesTimeoutMilliseconds: 20_000)
        let server = try await WhiteboardDeliveryTests.InProcessServer.start(configuration)
        defer { Task { await server.stop() } }
        let store = try SQLiteWhiteboardStore(directory: configuration.stateDirectory, verifier: SodiumVerifier())
        let n1 = try NodeKeyFile.generate(node: "n1")
        let n2 = try NodeKeyFile.generate(node: "n2")
        try await store.enroll(node: "n1", publicKey: n1.key.publicKey)
        try await store.enroll(node: "n2", publicKey: n2.key.publicKey)
        let baseURL = "http://127.0.0.1:\(configuration.port)"
        let logger = WhiteboardDeliveryTests.logger

        let writer = try WhiteboardJournal(path: dir.path + "/n1.sqlite", node: "n1", key: n1.key)
        let sender = WhiteboardSender(journal: writer, baseURL: baseURL, http: HTTPClient.shared,
                                      serverKey: keys.timestamp.publicKey, logger: logger)
        let senderTask = Task { await sender.run() }
        defer { senderTask.cancel() }
        try writer.enqueue(op: .put, path: "nodes/n1/state", content: Array("waiting\n".utf8))
        try writer.enqueue(op: .put, path: "shared/plan", content: Array("roll".utf8))
        sender.wake()
        #expect(try await WhiteboardDeliveryTests.waitFor(30) { try writer.pending().isEmpty })

        let reader = try WhiteboardJournal(path: dir.path + "/n2.sqlite", node: "n2", key: n2.key)
        let follower = WhiteboardFollower(journal: reader, baseURL: baseURL, http: HTTPClient.shared,
                                          serverKey: keys.timestamp.publicKey, logger: logger)
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
        let fooled = WhiteboardFollower(journal: reader, baseURL: baseURL, http: HTTPClient.shared,
                                        serverKey: Ed25519KeyPair.generate().publicKey, logger: logger)
        let before = try reader.serverRevision()
        await #expect(throws: WhiteboardProtocolError.self) { try await fooled.poll() }
        #expect(try reader.serverRevision() == before)
    }
}
