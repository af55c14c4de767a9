import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
import UpgradeNode
import UpgradeServer

/// The node's journal and sender against a live in-process server: the SPEC's "delivered to the server in
/// order, exactly once in effect, also across a server outage or a node restart".
@Suite(.serialized) struct WhiteboardDeliveryTests {
    static let logger: Logger = {
        var logger = Logger(label: "upgradefs-delivery-test")
        logger.logLevel = .error
        return logger
    }()

    /// A server running in this process until `stop()`.
    struct InProcessServer {
        let task: Task<Void, any Error>

        static func start(_ configuration: ServerConfiguration) async throws -> InProcessServer {
            let (stream, continuation) = AsyncStream<ServerReady>.makeStream()
            let task = Task {
                defer { continuation.finish() }
                try await runUpgradeServer(configuration, logger: WhiteboardDeliveryTests.logger) { continuation.yield($0) }
            }
            var iterator = stream.makeAsyncIterator()
            guard await iterator.next() != nil else {
                _ = try await task.value
                throw HarnessError("server ended before it listened")
            }
            return InProcessServer(task: task)
        }

        func stop() async {
            task.cancel()
            _ = try? await task.value
        }
    }

    /// An HTTP client that reports a refused connection at once instead of retrying it until the
    /// request's deadline (what the mount should use too).
    static func makeHTTPClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    static func waitFor(_ seconds: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }

    @Test func writesArriveExactlyOnceInOrderAcrossAServerOutageAndANodeRestart() async throws {
        let dir = try Harness.temporaryDirectory("udb-delivery")
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = ServerKeyFile.generate()
        try keys.write(to: dir.path + "/server.key")
        try FileManager.default.createDirectory(atPath: dir.path + "/publish", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: dir.path + "/cache", withIntermediateDirectories: true)
        let port = Harness.freePort()
        let configuration = ServerConfiguration(
            stateDirectory: dir.path + "/state", publishDirectory: dir.path + "/publish", keyFile: dir.path + "/server.key",
            host: "127.0.0.1", port: port, settleMilliseconds: 0, scanIntervalMilliseconds: 50,
            changesTimeoutMilliseconds: 1000)
        var server = try await InProcessServer.start(configuration)
        let store = try SQLiteWhiteboardStore(directory: configuration.stateDirectory, verifier: SodiumVerifier())
        let node = try NodeKeyFile.generate(node: "n1")
        try await store.enroll(node: "n1", publicKey: node.key.publicKey)
        let startRevision = try await store.revision()

        let journalPath = dir.path + "/cache/" + WhiteboardJournal.fileName
        var journal = try WhiteboardJournal(path: journalPath, node: "n1", key: node.key)
        let http = Self.makeHTTPClient()
        func makeSender(_ journal: WhiteboardJournal) -> WhiteboardSender {
            WhiteboardSender(journal: journal, baseURL: "http://127.0.0.1:\(port)", http: http,
                             serverKey: keys.timestamp.publicKey,
                             backoff: WhiteboardBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)),
                             requestTimeout: .seconds(20), logger: Self.logger)
        }
        var sender = makeSender(journal)
        var task = Task { [sender] in await sender.run() }

        // Written while the server is up.
        for i in 1...3 {
            try journal.enqueue(op: .put, path: "nodes/n1/f\(i)", content: Array("write \(i)\n".utf8))
            sender.wake()
        }
        let deliveredWhileUp = try await Self.waitFor(30) { try journal.pending().isEmpty }
        let stateWhileUp = await sender.state
        #expect(deliveredWhileUp, "sender: \(stateWhileUp)")
        #expect(try journal.view(path: "nodes/n1/f3") == Array("write 3\n".utf8))

        // The server goes away; writes still succeed at once and wait in the journal.
        await server.stop()
        for i in 4...6 {
            try journal.enqueue(op: .put, path: "nodes/n1/f\(i)", content: Array("write \(i)\n".utf8))
            sender.wake()
        }
        #expect(try journal.view(path: "nodes/n1/f6") == Array("write 6\n".utf8))
        #expect(await Self.waitFor(30) {
            if case .retrying(_, let attempt, _) = await sender.state { return attempt >= 3 }
            return false
        })
        #expect(try journal.pending().count == 3)

        // The mount process restarts with those writes pending; then the server comes back.
        task.cancel()
        await task.value
        try journal.close()
        journal = try WhiteboardJournal(path: journalPath, node: "n1", key: node.key)
        #expect(try journal.pending().map(\.path) == (4...6).map { "nodes/n1/f\($0)" })
        server = try await InProcessServer.start(configuration)
        sender = makeSender(journal)
        task = Task { [sender] in await sender.run() }
        #expect(try await Self.waitFor(30) { try journal.pending().isEmpty })

        // Exactly once: six writes, six revisions, each file applied once, in the order written.
        let view = try await store.snapshot()
        let files = (1...6).map { i in view.files.first { $0.path == "nodes/n1/f\(i)" } }
        #expect(files.map { $0?.content.map { String(decoding: $0, as: UTF8.self) } } == (1...6).map { "write \($0)\n" })
        let revisions = files.compactMap { $0?.revision }
        #expect(revisions == revisions.sorted() && Set(revisions).count == 6)
        #expect(try await store.revision() == startRevision + 6)

        task.cancel()
        await task.value
        try journal.close()
        await server.stop()
        try await http.shutdown()
    }

    @Test func aWriteTheServerAppliedButTheNodeNeverHeardOfIsAppliedOnce() async throws {
        let dir = try Harness.temporaryDirectory("udb-duplicate")
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = ServerKeyFile.generate()
        try keys.write(to: dir.path + "/server.key")
        try FileManager.default.createDirectory(atPath: dir.path + "/publish", withIntermediateDirectories: true)
        let configuration = ServerConfiguration(
            stateDirectory: dir.path + "/state", publishDirectory: dir.path + "/publish", keyFile: dir.path + "/server.key",
            host: "127.0.0.1", port: Harness.freePort(), settleMilliseconds: 0, scanIntervalMilliseconds: 50,
            changesTimeoutMilliseconds: 1000)
        let server = try await InProcessServer.start(configuration)
        let store = try SQLiteWhiteboardStore(directory: configuration.stateDirectory, verifier: SodiumVerifier())
        let node = try NodeKeyFile.generate(node: "n1")
        try await store.enroll(node: "n1", publicKey: node.key.publicKey)
        let journal = try WhiteboardJournal(path: dir.path + "/udb.sqlite", node: "n1", key: node.key)
        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("running".utf8))
        let entry = try #require(try journal.pending().first)

        // The request reaches the server, but the answer is lost (the mount died before acknowledging).
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(configuration.port)/v1/udb/apply")
        request.method = .POST
        request.body = .bytes(entry.body)
        let lost = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        #expect(lost.status == .ok)
        let applied = try await store.revision()

        let sender = WhiteboardSender(journal: journal, baseURL: "http://127.0.0.1:\(configuration.port)", http: HTTPClient.shared,
                                      serverKey: keys.timestamp.publicKey, logger: Self.logger)
        let task = Task { await sender.run() }
        #expect(try await Self.waitFor(30) { try journal.pending().isEmpty })
        #expect(await sender.deliveredCount == 1)
        #expect(try await store.revision() == applied)
        #expect(try journal.view(path: "nodes/n1/state") == Array("running".utf8))
        task.cancel()
        await task.value
        await server.stop()
    }

    @Test func aRefusedWriteIsParkedNotDroppedAndLaterWritesWait() async throws {
        let dir = try Harness.temporaryDirectory("udb-park")
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = ServerKeyFile.generate()
        try keys.write(to: dir.path + "/server.key")
        try FileManager.default.createDirectory(atPath: dir.path + "/publish", withIntermediateDirectories: true)
        let configuration = ServerConfiguration(
            stateDirectory: dir.path + "/state", publishDirectory: dir.path + "/publish", keyFile: dir.path + "/server.key",
            host: "127.0.0.1", port: Harness.freePort(), settleMilliseconds: 0, scanIntervalMilliseconds: 50,
            changesTimeoutMilliseconds: 1000)
        let server = try await InProcessServer.start(configuration)
        // n1 is not enrolled yet: the server answers 401.
        let node = try NodeKeyFile.generate(node: "n1")
        let journal = try WhiteboardJournal(path: dir.path + "/udb.sqlite", node: "n1", key: node.key)
        let sender = WhiteboardSender(journal: journal, baseURL: "http://127.0.0.1:\(configuration.port)", http: HTTPClient.shared,
                                      serverKey: keys.timestamp.publicKey, logger: Self.logger)
        let task = Task { await sender.run() }
        let first = try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("idle".utf8))
        let second = try journal.enqueue(op: .put, path: "nodes/n1/version", content: Array("1".utf8))
        sender.wake()
        #expect(await Self.waitFor(30) {
            if case .parked(first, 401, _) = await sender.state { return true }
            return false
        })
        #expect(try journal.pending().map(\.seq) == [first, second])

        // The operator enrolls the node; the parked write is resumed and everything arrives.
        let store = try SQLiteWhiteboardStore(directory: configuration.stateDirectory, verifier: SodiumVerifier())
        try await store.enroll(node: "n1", publicKey: node.key.publicKey)
        await sender.resumeParked()
        #expect(try await Self.waitFor(30) { try journal.pending().isEmpty })
        let view = try await store.snapshot()
        #expect(view.files.first { $0.path == "nodes/n1/version" }?.content == Array("1".utf8))
        task.cancel()
        await task.value
        await server.stop()
    }
}
