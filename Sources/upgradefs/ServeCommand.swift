import ArgumentParser
import Foundation
import SystemdNotify
import Logging
import Sodium
import UpgradeCore
import UpgradeServer
import UpgradeServerPostgres

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Validate, sign and serve the bundles dropped into a publish directory.",
        discussion: """
        Watches --publish: each new bundle directory is validated, its files stored by hash, and new \
        TUF metadata signed and published atomically; NAME.published or NAME.rejected (with the \
        reason) appears beside it. Serves metadata and content over HTTP and keeps the timestamp \
        fresh. Stops on SIGTERM or SIGINT; a restart picks up where it stopped. With --config, options \
        come from a TOML file (keys are the long option names) and its drop-ins (FILE's name without .toml, \
        plus .d/*.toml, in name order); flags override them. Exit status 78 for a wrong config file, 66 for a \
        missing one.
        """
    )

    @Option(help: "The server's key file (from `upgradefs keygen`).")
    var key: String = ServerKeyFile.defaultPath

    @Option(help: "Directory for the server's state: signed metadata and content (created if missing; required).")
    var state: String?

    @Option(help: "Directory operators drop bundles into (created if missing; required).")
    var publish: String?

    @Option(help: "Address and port to listen on, ADDRESS:PORT.")
    var listen: String = "0.0.0.0:7420"

    @Option(name: .customLong("settle-ms"), help: "How long a dropped bundle must stay unchanged before it is taken, in milliseconds.")
    var settleMilliseconds: Int = 500

    @Option(name: .customLong("timestamp-expiry"), help: "Lifetime of signed timestamp metadata, in seconds; re-signed when half is gone.")
    var timestampExpirySeconds: Int = 86_400

    @OptionGroup var bundleLimits: BundleLimitOptions

    @Option(name: .customLong("lock-ttl"), help: "Release a whiteboard lock holder when its node's last heartbeat is older than this, in seconds.")
    var lockTTLSeconds: Int = ServerConfiguration.defaultLockTTLSeconds

    @Option(name: .customLong("idle-timeout"), help: "Close a connection that has no request in progress (a request head not sent in full, or idle between requests) after this many seconds.")
    var idleTimeoutSeconds: Int = ServerConfiguration.defaultIdleTimeoutSeconds

    @Option(name: .customLong("max-connections"), help: "Most connections open at once; at the limit the connection idle longest is closed for a new one (lowered to fit the open-files limit).")
    var maxConnections: Int = ServerConfiguration.defaultMaxConnections

    @Option(name: .customLong("operator-token-file"),
            help: ArgumentHelp("A file (mode 0600) holding the operator's token for the fleet page's actions, e.g. from `openssl rand -hex 32`; without it actions are off and the page is open on loopback only.",
                               valueName: "FILE"))
    var operatorTokenFile: String?

    @Option(name: .customLong("udb"), help: ArgumentHelp(
        "The upgrade database: empty for STATE/udb.sqlite (the default), or a PostgreSQL URL, postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=disable|prefer|require].",
        valueName: "URL"))
    var udb: String = ""

    @OptionGroup var logging: LoggingOptions

    @Option(help: ArgumentHelp("A TOML file of options (keys: the long option names), read with its drop-ins; flags override it.",
                               valueName: "FILE"))
    var config: String?

    @Flag(name: .customLong("print-config"), help: "Print the options in effect (files and flags merged) as TOML, and exit.")
    var printConfig = false

    var parsedListen: (host: String, port: Int)? {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
              (0...65535).contains(port) else { return nil }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : (host, port)
    }

    func validate() throws {
        guard parsedListen != nil else {
            throw ValidationError("--listen '\(listen)' is not ADDRESS:PORT (e.g. 0.0.0.0:7420)")
        }
        guard settleMilliseconds >= 0 else { throw ValidationError("--settle-ms must not be negative") }
        guard timestampExpirySeconds >= 2 else { throw ValidationError("--timestamp-expiry must be at least 2 seconds") }
        guard lockTTLSeconds >= 1 else { throw ValidationError("--lock-ttl must be at least 1 second") }
        guard idleTimeoutSeconds >= 1 else { throw ValidationError("--idle-timeout must be at least 1 second") }
        guard maxConnections >= 1 else { throw ValidationError("--max-connections must be at least 1") }
        if !udb.isEmpty { _ = try UDBOption.url(udb) }
    }

    func run() async throws {
        let effective = try withConfigFiles()
        if printConfig {
            print(effective.settingsTOML, terminator: "")
            return
        }
        try await effective.serve()
    }

    /// This command with the options of `--config` and its drop-ins, the command line's flags winning: the files'
    /// arguments are parsed again with the command line's after them.
    func withConfigFiles() throws -> ServeCommand {
        guard let config else { return self }
        let fromFiles: [String]
        do {
            fromFiles = try ServeConfigFile.arguments(for: config)
        } catch {
            printError("upgradefs serve: \(error)")
            throw error.isUnreadable ? ExitCodes.noInput : ExitCodes.config
        }
        let given = CommandLine.arguments.drop { $0 != Self.configuration.commandName }.dropFirst()
        do {
            return try Self.parse(fromFiles + given)
        } catch {
            printError("upgradefs serve: \(config): \(Self.message(for: error))")
            throw ExitCodes.config
        }
    }

    /// The options in effect, as a config file that sets them all.
    var settingsTOML: String {
        func quoted(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        let limits = bundleLimits.limits
        let lines: [(String, String)] = [
            ("key", quoted(key)), ("state", state.map(quoted) ?? "\"\""), ("publish", publish.map(quoted) ?? "\"\""),
            ("listen", quoted(listen)), ("settle-ms", "\(settleMilliseconds)"), ("timestamp-expiry", "\(timestampExpirySeconds)"),
            ("max-file-size", "\(limits.maxFileBytes)"), ("max-bundle-size", "\(limits.maxBundleBytes)"),
            ("max-files", "\(limits.maxFiles)"), ("lock-ttl", "\(lockTTLSeconds)"), ("idle-timeout", "\(idleTimeoutSeconds)"),
            ("max-connections", "\(maxConnections)"), ("udb", quoted(udb)), ("log-level", quoted(logging.logLevel.rawValue)),
            ("log-format", quoted(logging.logFormat.rawValue)),
        ] + (operatorTokenFile.map { [("operator-token-file", quoted($0))] } ?? [])
        return lines.map { "\($0.0) = \($0.1)\n" }.joined()
    }

    func serve() async throws {
        guard let state, let publish else {
            printError("upgradefs serve: --state and --publish are required (on the command line or in --config)")
            throw ExitCodes.usage
        }
        let logger = logging.makeLogger("upgradefs.serve")
        let (host, port) = parsedListen!
        var config = ServerConfiguration(
            stateDirectory: state, publishDirectory: publish, keyFile: key, host: host, port: port)
        config.settleMilliseconds = settleMilliseconds
        config.timestampExpirySeconds = timestampExpirySeconds
        config.limits = bundleLimits.limits
        config.lockTTLSeconds = lockTTLSeconds
        config.idleTimeoutSeconds = idleTimeoutSeconds
        config.maxConnections = maxConnections
        config.operatorTokenFile = operatorTokenFile
        // Connections and the publisher share the descriptor table: take all the system allows.
        raiseOpenFileLimit()
        let onReady: @Sendable (ServerReady) async -> Void = { ready in
            ServiceNotifier.ready(status: "listening on \(ready.host):\(ready.port)")
            // Requests are served on the async pool: a starved or deadlocked pool stops the pings.
            ServiceNotifier.startWatchdog(name: "serve-watchdog") { Self.asyncPoolAnswers(within: 5) }
        }
        do {
            if udb.isEmpty {
                try await runUpgradeServer(config, logger: logger, onReady: onReady)
            } else {
                let url = try UDBOption.url(udb)
                let config = config
                do {
                    try await PostgresWhiteboard.withStore(
                        url: url, verifier: SodiumVerifier(), lockTTLSeconds: Double(lockTTLSeconds), logger: logger
                    ) { store in
                        logger.info("upgrade database on PostgreSQL", metadata: ["udb.url": .string(url.redacted)])
                        return try await runUpgradeServer(config, logger: logger, whiteboardStore: store, onReady: onReady)
                    }
                } catch let error as WhiteboardStorageUnavailable {
                    printError("upgradefs serve: cannot open the upgrade database \(url.redacted): \(error.reason)")
                    throw ExitCodes.unavailable
                }
            }
        } catch let error as ExitCode {
            throw error
        } catch let error as ServerKeyFileError {
            printError("upgradefs serve: \(error)")
            throw FileManager.default.fileExists(atPath: key) ? ExitCodes.dataError : ExitCodes.noInput
        } catch {
            // Also: another serve holds the state directory; the address cannot be listened on.
            printError("upgradefs serve: \(error)")
            throw ExitCodes.osError
        }
    }

    /// Whether a task started on the async pool runs within `seconds` (blocks the calling thread meanwhile).
    static func asyncPoolAnswers(within seconds: Int) -> Bool {
        let ran = DispatchSemaphore(value: 0)
        Task { ran.signal() }
        return ran.wait(timeout: .now() + .seconds(seconds)) == .success
    }
}
