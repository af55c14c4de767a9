import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
import UpgradeNode
import UpgradeServer
import UpgradeWhiteboardClient

/// What every live whiteboard test stands on: a server key, a server running in this process on a free
/// port over an empty state directory, and its whiteboard database opened beside it, where nodes are
/// enrolled the way `upgradefs enroll` does it (directly, while the server runs).
struct WhiteboardFixture {
    static let logger: Logger = {
        var logger = Logger(label: "upgradefs-whiteboard-test")
        logger.logLevel = .error
        return logger
    }()

    let directory: URL
    let keys: ServerKeyFile
    let configuration: ServerConfiguration
    let store: SQLiteWhiteboardStore
    private(set) var server: InProcessServer

    var path: String { directory.path }
    var baseURL: String { "http://127.0.0.1:\(configuration.port)" }
    /// The key that signs the server's whiteboard answers (the TUF root's timestamp key).
    var serverKey: [UInt8] { keys.timestamp.publicKey }

    /// - Parameter changesTimeoutMilliseconds: how long `GET /v1/udb/changes` waits before answering empty.
    static func start(_ label: String, changesTimeoutMilliseconds: Int = 1000) async throws -> WhiteboardFixture {
        let directory = try Harness.temporaryDirectory(label)
        let keys = ServerKeyFile.generate()
        try keys.write(to: directory.path + "/server.key")
        try FileManager.default.createDirectory(atPath: directory.path + "/publish", withIntermediateDirectories: true)
        let configuration = ServerConfiguration(
            stateDirectory: directory.path + "/state", publishDirectory: directory.path + "/publish",
            keyFile: directory.path + "/server.key", host: "127.0.0.1", port: Harness.freePort(),
            settleMilliseconds: 0, scanIntervalMilliseconds: 50, changesTimeoutMilliseconds: changesTimeoutMilliseconds)
        let server = try await InProcessServer.start(configuration, logger: WhiteboardFixture.logger)
        let store = try SQLiteWhiteboardStore(directory: configuration.stateDirectory, verifier: SodiumVerifier())
        return WhiteboardFixture(directory: directory, keys: keys, configuration: configuration, store: store, server: server)
    }

    /// A fresh key for `name`, enrolled.
    func enrolledNode(_ name: String) async throws -> NodeKeyFile {
        let key = try NodeKeyFile.generate(node: name)
        try await enroll(key)
        return key
    }

    func enroll(_ key: NodeKeyFile) async throws {
        _ = try await store.enroll(node: key.node, publicKey: key.key.publicKey)
    }

    /// A sender delivering `journal` to this server, checking answers against the server's key.
    func sender(
        for journal: WhiteboardJournal, http: HTTPClient = .shared, backoff: WhiteboardBackoff = WhiteboardBackoff(),
        requestTimeoutSeconds: Int64 = 10
    ) -> WhiteboardSender {
        WhiteboardSender(journal: journal, baseURL: baseURL, http: http, serverKey: serverKey, backoff: backoff,
                         requestTimeout: .seconds(requestTimeoutSeconds), logger: Self.logger)
    }

    /// A follower of this server's change feed into `journal`; `serverKey` is who it believes.
    func follower(for journal: WhiteboardJournal, serverKey: [UInt8]? = nil) -> WhiteboardFollower {
        WhiteboardFollower(journal: journal, baseURL: baseURL, http: HTTPClient.shared,
                           serverKey: serverKey ?? self.serverKey, logger: Self.logger)
    }

    /// Stops the server and waits until it has; the state directory stays for `restartServer()`.
    func stopServer() async { await server.stop() }

    /// Starts the server again over the same state directory and port.
    mutating func restartServer() async throws {
        server = try await InProcessServer.start(configuration, logger: WhiteboardFixture.logger)
    }

    /// Tells the server to stop (without waiting) and removes the directory: for `defer`, so that a
    /// failing test cleans up too. A test that ends normally awaits `stopServer()` first.
    func remove() {
        server.task.cancel()
        try? FileManager.default.removeItem(at: directory)
    }

    /// An HTTP client that reports a refused connection at once instead of retrying it until the
    /// request's deadline (what the mount should use too).
    static func makeHTTPClient() -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Polls `condition` every 20 ms until it holds, at most `seconds`.
    static func waitFor(_ seconds: Double, _ condition: () async throws -> Bool) async rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }
}
