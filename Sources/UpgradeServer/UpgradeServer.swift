#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import Sodium
import UpgradeCore
import UpgradeFiles

/// Everything `upgradefs serve` needs to know.
public struct ServerConfiguration: Sendable {
    /// TUF repository and content store (`--state`).
    public var stateDirectory: String
    /// Where bundles are dropped (`--publish`).
    public var publishDirectory: String
    /// The server key file (`--key`).
    public var keyFile: String
    public var host: String
    /// 0 picks a free port (see `ServerReady.port`).
    public var port: Int
    /// How long a bundle's tree must stay unchanged before it is taken.
    public var settleMilliseconds: Int
    /// Lifetime of each timestamp (`--timestamp-expiry`); re-signed when half is gone.
    public var timestampExpirySeconds: Int
    /// How often the publish directory is looked at.
    public var scanIntervalMilliseconds: Int
    public var limits: BundleLimits
    /// How long `GET /v1/notify` waits for a new version before answering anyway.
    public var notifyTimeoutMilliseconds: Int
    /// A lock holder is released when its node's heartbeat is older than this (`--lock-ttl`).
    public var lockTTLSeconds: Int
    /// How long `GET /v1/udb/changes` waits for a change before answering anyway.
    public var changesTimeoutMilliseconds: Int
    /// A connection with no request in progress (a request head not yet complete, or kept alive
    /// between requests) is closed after this long (`--idle-timeout`).
    public var idleTimeoutSeconds: Int
    /// Most connections open at once (`--max-connections`); lowered to leave
    /// `ConnectionLimiter.reservedDescriptors` of the descriptor limit to the rest of the server.
    public var maxConnections: Int
    /// The operator's token for the fleet page's actions (`--operator-token-file`); nil: actions are off and the
    /// page is open on loopback only.
    public var operatorTokenFile: String?

    public static let defaultPort = 7420
    public static let defaultSettleMilliseconds = 500
    public static let defaultTimestampExpirySeconds = 86400
    public static let defaultScanIntervalMilliseconds = 250
    public static let defaultNotifyTimeoutMilliseconds = 25_000
    public static let defaultLockTTLSeconds = Int(WhiteboardLedger.defaultLockTTLSeconds)
    public static let defaultChangesTimeoutMilliseconds = 25_000
    /// Longer than the 60 s a client's connection pool (AsyncHTTPClient's default) keeps an idle
    /// connection, so the server is not the side that closes one a client is about to reuse.
    public static let defaultIdleTimeoutSeconds = 75
    public static let defaultMaxConnections = 16_384

    public init(
        stateDirectory: String,
        publishDirectory: String,
        keyFile: String = ServerKeyFile.defaultPath,
        host: String = "0.0.0.0",
        port: Int = ServerConfiguration.defaultPort,
        settleMilliseconds: Int = ServerConfiguration.defaultSettleMilliseconds,
        timestampExpirySeconds: Int = ServerConfiguration.defaultTimestampExpirySeconds,
        scanIntervalMilliseconds: Int = ServerConfiguration.defaultScanIntervalMilliseconds,
        limits: BundleLimits = .default,
        notifyTimeoutMilliseconds: Int = ServerConfiguration.defaultNotifyTimeoutMilliseconds,
        lockTTLSeconds: Int = ServerConfiguration.defaultLockTTLSeconds,
        changesTimeoutMilliseconds: Int = ServerConfiguration.defaultChangesTimeoutMilliseconds,
        idleTimeoutSeconds: Int = ServerConfiguration.defaultIdleTimeoutSeconds,
        maxConnections: Int = ServerConfiguration.defaultMaxConnections,
        operatorTokenFile: String? = nil
    ) {
        self.stateDirectory = stateDirectory
        self.publishDirectory = publishDirectory
        self.keyFile = keyFile
        self.host = host
        self.port = port
        self.settleMilliseconds = settleMilliseconds
        self.timestampExpirySeconds = timestampExpirySeconds
        self.scanIntervalMilliseconds = scanIntervalMilliseconds
        self.limits = limits
        self.notifyTimeoutMilliseconds = notifyTimeoutMilliseconds
        self.lockTTLSeconds = lockTTLSeconds
        self.changesTimeoutMilliseconds = changesTimeoutMilliseconds
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.maxConnections = maxConnections
        self.operatorTokenFile = operatorTokenFile
    }

    /// A one-line reason when a value is out of range, else nil.
    public func validationProblem() -> String? {
        if stateDirectory.isEmpty { return "the state directory must be named" }
        if publishDirectory.isEmpty { return "the publish directory must be named" }
        if !(0...65535).contains(port) { return "port \(port) is not in 0...65535" }
        if settleMilliseconds < 0 { return "the settle time cannot be negative" }
        if timestampExpirySeconds < 2 { return "the timestamp expiry must be at least 2 seconds" }
        if scanIntervalMilliseconds < 1 { return "the scan interval must be at least 1 ms" }
        if notifyTimeoutMilliseconds < 1 { return "the notify timeout must be at least 1 ms" }
        if lockTTLSeconds < 1 { return "the lock TTL must be at least 1 second" }
        if changesTimeoutMilliseconds < 1 { return "the changes timeout must be at least 1 ms" }
        if idleTimeoutSeconds < 1 { return "the idle timeout must be at least 1 second" }
        if maxConnections < 1 { return "the connection limit must be at least 1" }
        return nil
    }
}

/// Handed to `onReady` once the server listens.
public struct ServerReady: Sendable {
    public let host: String
    /// The port actually bound (useful with port 0).
    public let port: Int
    public let serverID: String
    /// The running publisher, for driving it directly (tests).
    public let publisher: Publisher
}

public struct ServerStartError: Error, CustomStringConvertible, Sendable {
    public let description: String
}

/// Runs the upgrade server until the task is cancelled or the process gets
/// SIGTERM or SIGINT (then it returns normally): loads the key file, locks and
/// opens (or creates) the state directory, watches the publish directory and
/// serves HTTP. A second server on the same state directory, or an address it
/// cannot listen on, is a `ServerStartError` with a one-line reason. The whiteboard is `whiteboardStore` when given
/// (`serve --udb postgres://…`, opened by the caller), else `STATE/udb.sqlite`.
public func runUpgradeServer(
    _ configuration: ServerConfiguration,
    logger: Logger,
    whiteboardStore: (any WhiteboardStore)? = nil,
    onReady: (@Sendable (ServerReady) async -> Void)? = nil
) async throws {
    if let problem = configuration.validationProblem() { throw ServerStartError(description: problem) }
    // Before anything is created: a bad token file stops the server with the state directory untouched.
    let operatorCredential = try loadOperatorCredential(configuration.operatorTokenFile)
    let keys = try ServerKeyFile.load(from: configuration.keyFile)
    let lock = try StateLock.acquire(stateDirectory: configuration.stateDirectory)
    defer { lock.release() }
    let publisher: Publisher
    do {
        publisher = try Publisher(configuration: configuration, keys: keys, logger: logger)
    } catch let error as RepositoryError {
        throw ServerStartError(description: error.description)
    }
    let store: any WhiteboardStore
    if let whiteboardStore {
        store = whiteboardStore
    } else {
        do {
            store = try SQLiteWhiteboardStore(
                directory: configuration.stateDirectory, verifier: SodiumVerifier(), lockTTLSeconds: Double(configuration.lockTTLSeconds))
        } catch {
            throw ServerStartError(description: "cannot open the upgrade database in \(configuration.stateDirectory): \(error)")
        }
    }
    let whiteboard = try await WhiteboardHTTP(
        store: store, signingKey: keys.timestamp,
        changesTimeout: .milliseconds(configuration.changesTimeoutMilliseconds), logger: logger)
    let handler = HTTPHandler(
        metadataDirectory: publisher.metadataDirectory,
        store: ContentStore(stateDirectory: configuration.stateDirectory),
        notifier: publisher.notifier,
        serverID: keys.serverID,
        notifyTimeout: .milliseconds(configuration.notifyTimeoutMilliseconds),
        whiteboard: whiteboard, publisher: publisher,
        dashboard: try DashboardHTTP(
            store: store, notifier: whiteboard.notifier, publisher: publisher,
            contentStore: ContentStore(stateDirectory: configuration.stateDirectory),
            staleAfterSeconds: Int64(configuration.lockTTLSeconds), credential: operatorCredential,
            logger: logger))

    let serverID = keys.serverID
    let host = configuration.host
    let descriptorLimit = openFileLimit()
    let limiter = ConnectionLimiter(
        limit: ConnectionLimiter.effectiveLimit(requested: configuration.maxConnections, descriptorLimit: descriptorLimit))
    if limiter.limit < configuration.maxConnections {
        logger.warning(
            "connection limit lowered to fit the descriptor limit (raise LimitNOFILE / ulimit -n)",
            metadata: [
                "http.max_connections": .stringConvertible(limiter.limit),
                "process.open_files_limit": .stringConvertible(descriptorLimit),
            ])
    }
    let listening = ListeningFlag()
    let app = Application(
        responder: CallbackResponder<ServerRequestContext> { request, context in
            try await handler.respond(to: request, context: context)
        },
        server: .http1(configuration: HTTP1Channel.Configuration(
            additionalChannelHandlers: [ConnectionLimitHandler(limiter: limiter)],
            idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds)))),
        configuration: ApplicationConfiguration(address: .hostname(host, port: configuration.port), serverName: "upgradefs"),
        onServerRunning: { channel in
            listening.set()
            let port = channel.localAddress?.port ?? configuration.port
            logger.info(
                "upgradefs server listening",
                metadata: [
                    "http.address": .string("\(host):\(port)"), "server.id": .string(serverID),
                    "mount.source": .string("\(host):\(port),\(serverID)"),
                    "publish.dir": .string(configuration.publishDirectory), "state.dir": .string(configuration.stateDirectory),
                ])
            await onReady?(ServerReady(host: host, port: port, serverID: serverID, publisher: publisher))
        },
        logger: logger)

    let services = ServiceGroup(
        services: [
            app, PublisherService(publisher: publisher),
            QuietOnShutdown(WhiteboardService(whiteboard: whiteboard, publisher: publisher)),
        ],
        gracefulShutdownSignals: [.sigterm, .sigint],
        logger: logger)
    // Cancelling the caller's task shuts down gracefully too (in-flight
    // requests finish, long polls answer at once), as SIGTERM does.
    let running = Task { try await services.run() }
    do {
        try await withTaskCancellationHandler {
            try await running.value
        } onCancel: {
            Task { await services.triggerGracefulShutdown() }
        }
    } catch where !listening.isSet {
        guard let problem = listenProblem(error, host: host, port: configuration.port) else { throw error }
        throw ServerStartError(description: problem)
    }
}

/// The operator's credential from `--operator-token-file` (nil without one); a file that cannot be read, that others
/// may read, or that holds no good token stops the server with the reason.
func loadOperatorCredential(_ path: String?) throws -> OperatorCredential? {
    guard let path else { return nil }
    do {
        return try OperatorCredential(
            fileContent: SecretFile.read(path, limit: 4096, createdBy: "openssl rand -hex 32 > \(path); chmod 600 \(path)"))
    } catch let problem as SecretFile.Problem {
        throw ServerStartError(description: "operator token file \(path) \(problem)")
    } catch {
        throw ServerStartError(description: "operator token file \(path) \(error)")
    }
}

/// The soft limit on open files (after `serve` raised it to the hard limit).
func openFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    return Int(clamping: limit.rlim_cur)  // RLIM_INFINITY (all ones) clamps to Int.max
}

/// Raises the soft limit on open files to the hard limit (what systemd's `LimitNOFILE` or
/// `ulimit -Hn` allows); returns the soft limit now in force.
@discardableResult
public func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return openFileLimit()
}

/// Why the server could not listen, in words ("cannot listen on 127.0.0.1:7420: address in use"),
/// not the socket library's; nil for an error that is not about the address.
func listenProblem(_ error: any Error, host: String, port: Int) -> String? {
    let address = host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    let reason: String
    if let io = error as? IOError {
        switch io.errnoCode {
        case EADDRINUSE: reason = "address in use"
        case EADDRNOTAVAIL: reason = "address not available on this host"
        case EACCES: reason = "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        default: reason = String(cString: strerror(io.errnoCode)).lowercased()
        }
    } else if error is SocketAddressError || error is SocketAddressError.UnknownHost {
        reason = "cannot resolve \(host)"
    } else {
        return nil
    }
    return "cannot listen on \(address): \(reason)"
}

/// Set once the server listens (errors before that are listen errors).
final class ListeningFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// Runs a service, and treats the `CancellationError` it may throw while the group shuts down
/// gracefully as a normal end: a SIGTERM is an orderly stop, not a failure.
struct QuietOnShutdown<Wrapped: Service>: Service, CustomStringConvertible {
    let wrapped: Wrapped
    init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    var description: String { "\(Wrapped.self)" }

    func run() async throws {
        do {
            try await wrapped.run()
        } catch is CancellationError where Task.isShuttingDownGracefully || Task.isCancelled {
            return
        }
    }
}

/// Runs the publisher's scan/refresh loop inside the service group; on
/// graceful shutdown it stops and releases every long-polling client.
struct PublisherService: Service {
    let publisher: Publisher

    func run() async throws {
        let notifier = publisher.notifier
        try await withGracefulShutdownHandler {
            try await cancelWhenGracefulShutdown { await publisher.run() }
        } onGracefulShutdown: {
            notifier.shutdown()
        }
    }
}
