import Foundation
import Logging
import UpgradeServer

/// The server running in this process (`runUpgradeServer`, what `upgradefs serve` runs) until `stop()`: for tests
/// that reach into it (its publisher) or restart it often. `ServeProcess` is the real binary instead.
public final class InProcessServer: Sendable {
    /// Warnings and worse only: the tests' output stays readable.
    public static let logger: Logger = {
        var logger = Logger(label: "upgradefs-server-test")
        logger.logLevel = .warning
        return logger
    }()

    public let ready: ServerReady
    public let task: Task<Void, any Error>

    /// The port bound (the configuration's, or a free one for 0).
    public var port: Int { ready.port }
    public var publisher: Publisher { ready.publisher }

    /// Starts the server over `configuration` and returns once it listens; throws what ended it if it never did.
    public static func start(_ configuration: ServerConfiguration, logger: Logger = InProcessServer.logger) async throws -> InProcessServer {
        let (stream, continuation) = AsyncStream<ServerReady>.makeStream()
        let task = Task {
            defer { continuation.finish() }
            try await runUpgradeServer(configuration, logger: logger) { continuation.yield($0) }
        }
        var iterator = stream.makeAsyncIterator()
        guard let ready = await iterator.next() else {
            _ = try await task.value
            throw HarnessError("server ended before it listened")
        }
        return InProcessServer(ready: ready, task: task)
    }

    private init(ready: ServerReady, task: Task<Void, any Error>) {
        self.ready = ready
        self.task = task
    }

    /// Stops the server and waits until it has.
    public func stop() async {
        task.cancel()
        _ = try? await task.value
    }
}
