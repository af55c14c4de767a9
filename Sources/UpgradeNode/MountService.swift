import AsyncHTTPClient
import FuseKit
import Foundation
import Logging
import NIOCore
import Sodium
import Synchronization
import UpgradeCore
import UpgradeWhiteboardClient

/// What `upgradefs mount` needs to know.
public struct MountConfiguration: Sendable {
    public var source: MountSource
    public var mountpoint: String
    public var cacheDirectory: String
    /// Extra `-o` options for the kernel mount (e.g. `allow_other`).
    public var options: [String]
    public var threads: Int
    /// The node's key file (`keygen --node`): with it the mount shows the whiteboard, `udb/` and `self`.
    public var nodeKeyFile: String?

    public init(source: MountSource, mountpoint: String, cacheDirectory: String? = nil,
                options: [String] = [], threads: Int = 8, nodeKeyFile: String? = nil) {
        self.nodeKeyFile = nodeKeyFile
        self.source = source
        self.mountpoint = mountpoint
        self.cacheDirectory = cacheDirectory ?? "/var/cache/upgradefs/\(source.serverID)"
        self.options = options
        self.threads = threads
    }
}

/// Mounts a server and serves it until unmounted or asked to stop.
///
/// Before anything touches the mount point, trust is established: the server's
/// initial root must hash to the id in the source (or this node must have
/// trusted the server before, from its cache). The first refresh's failure is
/// fatal only when nothing is cached; later failures keep the last verified
/// state on show and are logged (`MetadataWatcher`), and once that state has
/// expired the mount's `stale` file says so.
public final class MountService: Sendable {
    let configuration: MountConfiguration
    let logger: Logger

    public init(configuration: MountConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// Runs until the file system is unmounted (`umount`, `fusermount3 -u`)
    /// or `SIGTERM`/`SIGINT` arrives. `ready` is called once the mount is up.
    public func run(ready: @Sendable () -> Void = {}) async throws {
        let config = configuration
        var logger = self.logger
        logger[metadataKey: "mount.source"] = "\(config.source)"
        var httpConfig = HTTPClient.Configuration()
        httpConfig.timeout.connect = .seconds(3)
        httpConfig.decompression = .disabled
        // The server never redirects: an answer 3xx is refused as it stands, not followed to wherever it points.
        httpConfig.redirectConfiguration = .disallow
        // The whiteboard's client reports a refused connection at once: a lock operation must fail fast, and the
        // sender and follower have their own back-off.
        var whiteboardConfig = httpConfig
        // A TUF download that stalls (no byte for 45 s, above the server's 25 s long poll) fails then, whatever its
        // overall bound (`TUFUpdater.Limits`), which for a large target is long.
        httpConfig.timeout.read = .seconds(45)
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfig)
        whiteboardConfig.timeout.connect = .seconds(2)
        whiteboardConfig.connectionPool.retryConnectionEstablishment = false
        let whiteboardHTTP = HTTPClient(eventLoopGroupProvider: .singleton, configuration: whiteboardConfig)
        do {
            try await serve(config, http: http, whiteboardHTTP: whiteboardHTTP, logger: logger, ready: ready)
        } catch {
            try? await http.shutdown()
            try? await whiteboardHTTP.shutdown()
            throw error
        }
        try? await http.shutdown()
        try? await whiteboardHTTP.shutdown()
    }

    private func serve(_ config: MountConfiguration, http: HTTPClient, whiteboardHTTP: HTTPClient, logger: Logger,
                       ready: @Sendable () -> Void) async throws {
        // The node key is read before anything else, so a bad key fails the mount at once.
        let nodeKey = try config.nodeKeyFile.map { path throws(MountError) in
            do { return try NodeKeyFile.load(from: path) } catch { throw MountError.nodeKey("\(error)") }
        }
        let cache = try NodeCache(directory: URL(fileURLWithPath: config.cacheDirectory), serverID: config.source.serverID)
        let updater = try await TUFUpdater(source: config.source, cache: cache, http: http,
                                           verifier: SodiumVerifier(), logger: logger)
        var firstFailure: String?
        do {
            try await updater.refresh()
        } catch {
            let reason = NetworkErrorText.describe(error, endpoint: config.source.endpoint)
            if await updater.targets.isEmpty && cache.metadata("targets") == nil {
                if error is MountError { throw error }
                if error is TUFError { throw MountError.verification("\(error)") }
                throw MountError.unreachable(source: config.source.description, reason: reason)
            }
            firstFailure = reason
            logger.warning("server unavailable or its metadata refused; showing the last verified state",
                           metadata: ["error": "\(reason)"])
        }

        var whiteboard: Whiteboard?
        if let nodeKey {
            guard let serverKey = await updater.timestampKey else {
                throw MountError.verification("the trusted root names no timestamp key to check whiteboard answers with")
            }
            let board = try Whiteboard(node: nodeKey, cacheDirectory: config.cacheDirectory,
                                       baseURL: config.source.baseURL, http: whiteboardHTTP,
                                       serverKey: serverKey, logger: logger)
            try await board.claimSession()
            whiteboard = board
        }
        let bundles = await BundleFileSystem(updater: updater, logger: logger)
        let fileSystem = UpgradeFileSystem(bundles: bundles, whiteboard: whiteboard?.fileSystem)
        await MetadataWatcher.showStaleness(updater: updater, fileSystem: bundles, lastFailure: firstFailure, logger: logger)
        let fuse: FuseMount
        do {
            fuse = try FuseMount(fileSystem: fileSystem, mountpoint: config.mountpoint,
                                 fsName: config.source.description, subtype: "upgradefs",
                                 options: config.options, threads: config.threads,
                                 readAheadKiB: 1024, logger: logger)
        } catch {
            throw MountError.mountFailed("\(error)")
        }
        fileSystem.attach(fuse)
        logger.notice("mounted", metadata: ["mount.point": "\(config.mountpoint)",
                                             "upgrade.latest": "\(bundles.latestVersion)"])

        let watcher = Task { await MetadataWatcher(updater: updater, fileSystem: bundles, logger: logger).run() }
        defer { watcher.cancel() }
        let stopWhiteboard = whiteboard?.start()
        defer { stopWhiteboard?() }
        let signals = SignalWatcher(signals: [SIGTERM, SIGINT, SIGHUP]) { fuse.exit() }
        defer { signals.cancel() }
        ready()
        let status = await withCheckedContinuation { continuation in
            let thread = Thread { continuation.resume(returning: fuse.run()) }
            thread.name = "fuse-loop"
            thread.start()
        }
        logger.notice("unmounted", metadata: ["mount.point": "\(config.mountpoint)", "status": "\(status)"])
    }
}

/// The whiteboard's parts on a node: the journal, the sender delivering it, the follower keeping the view
/// current, and the files the mount shows.
struct Whiteboard {
    let journal: WhiteboardJournal
    let sender: WhiteboardSender
    let follower: WhiteboardFollower
    let fileSystem: WhiteboardFileSystem
    let locks: WhiteboardLockClient
    let logger: Logger

    init(node: NodeKeyFile, cacheDirectory: String, baseURL: String, http: HTTPClient, serverKey: [UInt8],
         logger: Logger) throws(MountError) {
        var logger = logger
        logger[metadataKey: "udb.node"] = "\(node.node)"
        self.logger = logger
        do {
            journal = try WhiteboardJournal(cacheDirectory: cacheDirectory, node: node.node, key: node.key)
        } catch {
            throw MountError.cache("\(error)")
        }
        let sender = WhiteboardSender(journal: journal, baseURL: baseURL, http: http, serverKey: serverKey, logger: logger)
        self.sender = sender
        locks = WhiteboardLockClient(journal: journal, baseURL: baseURL, http: http, serverKey: serverKey, logger: logger)
        // One holder table: the follower records what the server reports, the files their own lock operations.
        let holders = WhiteboardHolders()
        fileSystem = WhiteboardFileSystem(node: node.node, journal: journal, locks: locks, holders: holders,
                                          wakeSender: { sender.wake() }, logger: logger)
        let fileSystem = self.fileSystem
        follower = WhiteboardFollower(journal: journal, baseURL: baseURL, http: http, serverKey: serverKey, logger: logger,
                                      holders: holders, filesChanged: { fileSystem.filesChanged($0) })
    }

    /// Claims the node's mount session (`WhiteboardSession`): fails the mount when the server says (signed) that the
    /// node key is not enrolled or is mounted elsewhere; when it cannot say, the mount starts anyway (offline work goes
    /// on; the sender retries until the node is enrolled, the session is claimed at the next renewal).
    func claimSession() async throws(MountError) {
        switch await locks.claimSession() {
        case .granted:
            break
        case .notEnrolled(let reason):
            throw MountError.notEnrolled(node: journal.node, reason: reason)
        case .inUse(let reason):
            throw MountError.nodeInUse(reason)
        case .unknown(let reason):
            logger.warning("cannot check the node's enrolment now; mounting anyway", metadata: ["error": "\(reason)"])
        }
    }

    /// Starts delivering, following, and fencing uncertain lock acquisitions (on a thread of its own: it blocks
    /// while a lock request is out); call the returned closure to stop.
    func start() -> @Sendable () -> Void {
        let sender = self.sender, follower = self.follower, locks = self.locks
        let tasks = [Task { await sender.run() }, Task { await follower.run() }]
        let stopped = Atomic<Bool>(false)
        let logger = self.logger
        let fencing = Thread {
            var sinceRenewal = 0
            var lastAnswer = WhiteboardLockClient.SessionAnswer.granted
            while !stopped.load(ordering: .relaxed) {
                sleep(1)
                locks.fenceUncertainAcquires()
                sinceRenewal += 1
                if sinceRenewal >= Int(WhiteboardSession.renewSeconds), !stopped.load(ordering: .relaxed) {
                    sinceRenewal = 0
                    let answer = locks.renewSession()
                    if answer != lastAnswer { Self.report(session: answer, logger: logger) }
                    lastAnswer = answer
                }
            }
        }
        fencing.name = "udb-lock-fencing"
        fencing.start()
        return {
            tasks.forEach { $0.cancel() }
            stopped.store(true, ordering: .relaxed)
            locks.endSession()
        }
    }

    private static func report(session answer: WhiteboardLockClient.SessionAnswer, logger: Logger) {
        switch answer {
        case .granted: logger.notice("the node's mount session is renewed again")
        case .inUse(let reason):
            logger.error("another mount of this node key holds the node's session; this mount's writes may be refused",
                         metadata: ["error": "\(reason)"])
        case .notEnrolled(let reason):
            logger.error("the server no longer knows this node key; writes wait until it is enrolled", metadata: ["error": "\(reason)"])
        case .unknown(let reason):
            logger.debug("cannot renew the node's mount session now", metadata: ["error": "\(reason)"])
        }
    }
}

/// Runs a handler on a background queue when one of the signals arrives.
final class SignalWatcher: @unchecked Sendable {
    private let sources: [any DispatchSourceSignal]

    init(signals: [Int32], handler: @escaping @Sendable () -> Void) {
        sources = signals.map { signo in
            signal(signo, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: signo, queue: .global())
            source.setEventHandler(handler: handler)
            source.resume()
            return source
        }
    }

    func cancel() { sources.forEach { $0.cancel() } }
}
