import ArgumentParser
import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import UpgradeCore
import UpgradeNode
import UpgradeServer
import UpgradeWhiteboardClient

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the fleet at a glance: each node's state, version and heartbeat age, lock holders, upgrade summaries.",
        discussion: """
        Reads the server's upgrade database (STATE/udb.sqlite) on the server machine. A heartbeat's \
        age counts from when it arrived at the server. --json prints one JSON object for scripts: \
        {"revision", "nodes": [{"name","state","version","class","heartbeat_age_seconds","refused",\
        "refused_writes","last_refusal": {"at","code","error"}}], "unenrolled_writers": [{"name","refused_writes",\
        "last_refusal"}], "locks": [{"name","capacity","holders": [{"holder","node","acquired_at"}]}], \
        "upgrades": [{"version","control","summary": {STATE: COUNT}}]} (null where a node wrote nothing). \
        "refused" is true while the node's latest write was refused by the server; a node without a class \
        (no manager reported one) is "unclassified" and counted under no upgrade.

        --watch follows one upgrade (--upgrade N, default the newest published) as `kubectl rollout status` \
        does: one line each time its counts change, until every node of its class is at version N (exit 0), \
        or it stops: more nodes failed than --failure-budget, the healthy SF's budget stopped it, or every \
        other node is done while failed ones wait for `retry` (exit 80); the operator wrote abort (exit 81); \
        --timeout passed (exit 75). With --json, one JSON object per line and event ({"event": "progress" | \
        "succeeded" | "failed" | "aborted" | "timeout" | "unpublished", "upgrade", "revision", "total", "done", \
        "upgrading", "failed", "waiting", "control", "summary", "reason"}). On the server machine it reads \
        the database (its revision four times a second, then what changed); from anywhere else, --server \
        HOST:PORT,ID reads the server's signed change feed, trusting only the id, as a mount does.
        """
    )

    @OptionGroup var stateOptions: StateOptions

    @Flag(help: "Print JSON instead of tables (with --watch: one object per event and line).")
    var json = false

    @Flag(help: "Follow one upgrade until it is rolled out or stops; the exit status says which.")
    var watch = false

    @Option(help: "With --watch: the upgrade to follow (default: the newest published).")
    var upgrade: Int64?

    @Option(help: "With --watch: give up after this many seconds (exit 75; default: wait forever).")
    var timeout: Double?

    @Option(help: "With --watch: failed nodes tolerated while the rollout goes on.")
    var failureBudget: Int64 = 0

    @Option(help: "With --watch: read the server's signed change feed at HOST:PORT,ID (a mount's source) instead of --state.")
    var server: String?

    func validate() throws {
        if !watch && (upgrade != nil || timeout != nil || failureBudget != 0 || server != nil) {
            throw ValidationError("--upgrade, --timeout, --failure-budget and --server go with --watch")
        }
        if let server {
            do { _ = try MountSource(parsing: server) } catch { throw ValidationError("--server: \(error)") }
        }
        if let upgrade, upgrade < 1 { throw ValidationError("--upgrade must be at least 1") }
        if let timeout, !(timeout > 0) { throw ValidationError("--timeout must be a positive number of seconds") }
        if failureBudget < 0 { throw ValidationError("--failure-budget must be 0 or more") }
    }

    func run() async throws {
        if watch {
            let deadline = timeout.map { ContinuousClock.now + .milliseconds(Int64($0 * 1000)) }
            if let server { throw try await watchRemotely(try MountSource(parsing: server), deadline: deadline) }
            throw try await stateOptions.withStore(create: false, command: "status") { store in
                try await watch(LocalWhiteboardFeed(store: store), deadline: deadline)
            }
        }
        let status = try await stateOptions.withStore(create: false, command: "status") { store in
            WhiteboardStatus(enrolled: try await store.enrolledNodes(), view: try await store.snapshot(), refusals: try await store.refusals())
        }
        if json {
            print(String(decoding: status.toJSON().canonicalBytes(), as: UTF8.self))
        } else {
            print(status.text(), terminator: "")
        }
    }

    private func watch(_ feed: any WhiteboardFeed, deadline: ContinuousClock.Instant?) async throws -> ExitCode {
        try await StatusWatch(
            feed: feed, upgrade: upgrade, rule: RolloutWatch(failureBudget: failureBudget), json: json, deadline: deadline
        ).run()
    }

    /// Establishes trust in the server as a mount does (its initial root must hash to the id; then the TUF chain,
    /// in a throwaway cache), and follows its feed with the trusted root's timestamp key.
    private func watchRemotely(_ source: MountSource, deadline: ContinuousClock.Instant?) async throws -> ExitCode {
        let cacheDirectory = FileManager.default.temporaryDirectory.appending(path: "upgradefs-status-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: cacheDirectory) }
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(3)
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .disallow
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        do {
            let code = try await watchRemotely(source, http: http, cacheDirectory: cacheDirectory, deadline: deadline)
            try? await http.shutdown()
            return code
        } catch {
            try? await http.shutdown()
            throw error
        }
    }

    private func watchRemotely(_ source: MountSource, http: HTTPClient, cacheDirectory: URL,
                               deadline: ContinuousClock.Instant?) async throws -> ExitCode {
        var logger = Logger(label: "upgradefs.status")
        logger.logLevel = .critical
        let serverKey: [UInt8]
        do {
            let cache = try NodeCache(directory: cacheDirectory, serverID: source.serverID)
            let updater = try await TUFUpdater(source: source, cache: cache, http: http, verifier: SodiumVerifier(), logger: logger)
            try await updater.refresh()
            guard let key = await updater.timestampKey else {
                throw MountError.verification("the trusted root names no timestamp key to check whiteboard answers with")
            }
            serverKey = key
        } catch {
            printError("upgradefs status: \(NetworkErrorText.describe(error, endpoint: source.endpoint))")
            throw (error as? MountError).map(MountCommand.exitCode) ?? (error is TUFError ? ExitCodes.dataError : ExitCodes.unavailable)
        }
        let reader = WhiteboardReader(baseURL: source.baseURL, http: http, serverKey: serverKey, logger: logger)
        return try await watch(RemoteWhiteboardFeed(reader: reader), deadline: deadline)
    }
}
