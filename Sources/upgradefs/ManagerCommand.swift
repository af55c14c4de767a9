import ArgumentParser
import Dispatch
import Foundation
import Logging
import SystemdNotify
import UpgradeManager

struct ManagerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "manager",
        abstract: "Run the node's upgrade manager: apply published upgrades with their scheduling and transform functions.",
        discussion: """
        Reads the mount's latest/ and versions/, asks each pending upgrade's SF when, and installs it under \
        the config's root (docs: README, "The manager"; docs/REFERENCE.md). Reports on the whiteboard through MOUNT/self/. \
        Runs in the foreground until SIGTERM or SIGINT; an upgrade in flight is finished first. Exit status \
        66 when the config file does not exist, 78 for a bad config file, 69 when --mount is not an upgradefs \
        mount with a whiteboard (latest, versions/ and self/, i.e. mounted with --node-key), 71 when the \
        manager cannot keep its local database.
        """
    )

    @Option(help: "Where `upgradefs mount` mounted the server.")
    var mount: String = "/upgrades"

    @Option(help: "The node's config file (TOML).")
    var config: String = NodeConfig.defaultPath

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        // Resolved once: the manager runs programs from other working directories.
        let config = Self.absolute(self.config)
        let mount = Self.absolute(self.mount)
        let nodeConfig = try Self.loadNodeConfig(config, command: "manager")
        if let name = nodeConfig.runAs, RunAsUser.lookup(name) == nil {
            printError("upgradefs manager: \(config): key \"run-as\" names no user on this machine: \"\(name)\"")
            throw ExitCodes.config
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: mount, isDirectory: &isDirectory), isDirectory.boolValue else {
            printError("upgradefs manager: --mount \(mount) is not a directory")
            throw ExitCodes.noInput
        }
        try Self.requireWhiteboard(mount, command: "manager")
        var logger = logging.makeLogger("upgradefs.manager")
        logger[metadataKey: "node.id"] = "\(nodeConfig.node)"

        var crashAt: UpgradeStep?
        if let step = ProcessInfo.processInfo.environment["UPGRADEFS_MANAGER_CRASH_AT"] {
            guard let parsed = UpgradeStep(rawValue: step) else {
                printError("upgradefs manager: UPGRADEFS_MANAGER_CRASH_AT=\(step) is not a step (\(UpgradeStep.allCases.map(\.rawValue).joined(separator: ", ")))")
                throw ExitCodes.usage
            }
            crashAt = parsed
        }

        let stop = StopFlag()
        let signals = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { stop.set() }
            source.resume()
            return source
        }
        defer { signals.forEach { $0.cancel() } }

        let manager: NodeManager
        do {
            manager = try NodeManager(config: nodeConfig, mount: mount, logger: logger, crashAt: crashAt,
                                      shouldStop: { stop.isSet })
        } catch {
            printError("upgradefs manager: \(error)")
            throw ExitCodes.osError
        }
        // The loop blocks (programs, fsync): it gets a thread of its own, not one of the async pool's.
        let failure = await withCheckedContinuation { (continuation: CheckedContinuation<ManagerError?, Never>) in
            Thread {
                do throws(ManagerError) {
                    // Under systemd, READY=1 once the intent journal is read and an interrupted upgrade recovered.
                    try manager.run(ready: { ServiceNotifier.ready(status: "journal read; watching \(mount)") })
                    continuation.resume(returning: nil)
                } catch {
                    continuation.resume(returning: error)
                }
            }.start()
        }
        if let failure {
            printError("upgradefs manager: \(failure)")
            throw ExitCodes.osError
        }
    }

    /// node.toml at `path`; a missing file is exit 66, a bad one 78 (the message names the file and the key).
    static func loadNodeConfig(_ path: String, command: String) throws -> NodeConfig {
        do {
            return try NodeConfig.load(path: path)
        } catch {
            printError("upgradefs \(command): \(error)")
            throw error.isMissing ? ExitCodes.noInput : ExitCodes.config
        }
    }

    /// Exit 69 unless `mount` is an upgradefs mount with a whiteboard (`latest`, `versions/`, `self/`).
    static func requireWhiteboard(_ mount: String, command: String) throws {
        if let problem = MountView(mount: mount).whiteboardProblem() {
            printError("upgradefs \(command): \(problem)")
            throw ExitCodes.unavailable
        }
    }

    /// `path` made absolute against the working directory at start (`.` and `..` kept: they are resolved by
    /// the kernel as the path is used, like any other component).
    static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        let directory = FileManager.default.currentDirectoryPath
        return (directory.hasSuffix("/") ? directory : directory + "/") + path
    }
}
