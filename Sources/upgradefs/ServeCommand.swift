import ArgumentParser
import Foundation
import SystemdNotify
import UpgradeServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Validate, sign and serve the bundles dropped into a publish directory.",
        discussion: """
        Watches --publish: each new bundle directory is validated, its files stored by hash, and new \
        TUF metadata signed and published atomically; NAME.published or NAME.rejected (with the \
        reason) appears beside it. Serves metadata and content over HTTP and keeps the timestamp \
        fresh. Stops on SIGTERM or SIGINT; a restart picks up where it stopped.
        """
    )

    @Option(help: "The server's key file (from `upgradefs keygen`).")
    var key: String = ServerKeyFile.defaultPath

    @Option(help: "Directory for the server's state: signed metadata and content (created if missing).")
    var state: String

    @Option(help: "Directory operators drop bundles into (created if missing).")
    var publish: String

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

    @OptionGroup var logging: LoggingOptions

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
    }

    func run() async throws {
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
        // Connections and the publisher share the descriptor table: take all the system allows.
        raiseOpenFileLimit()
        do {
            try await runUpgradeServer(config, logger: logger) { ready in
                ServiceNotifier.ready(status: "listening on \(ready.host):\(ready.port)")
                // Requests are served on the async pool: a starved or deadlocked pool stops the pings.
                ServiceNotifier.startWatchdog(name: "serve-watchdog") { Self.asyncPoolAnswers(within: 5) }
            }
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
