import ArgumentParser
import Foundation
import Logging
import SystemdNotify
import UpgradeNode

struct MountCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount",
        abstract: "Mount a server's signed upgrades and, with --node-key, its upgrade database with FUSE.",
        discussion: """
        SOURCE is HOST:PORT,ID where ID is the server id printed by `upgradefs keygen`. The mount \
        refuses a server whose initial root does not hash to ID. Runs in the foreground until \
        unmounted (umount MOUNTPOINT) or sent SIGTERM; `mount -t upgradefs` (mount/mount.upgradefs) \
        runs it in the background.
        """
    )

    @Argument(help: "The server: HOST:PORT,ID.")
    var source: String

    @Argument(help: "An existing empty directory to mount on.")
    var mountpoint: String

    @Option(help: "Where verified metadata and content are cached, for this server only (default: /var/cache/upgradefs/ID).")
    var cache: String?

    @Option(name: .customLong("node-key"), help: ArgumentHelp(
        "This node's key file (upgradefs keygen --node NAME): shows the upgrade database under udb/ and self.",
        valueName: "FILE"))
    var nodeKey: String?

    @Option(name: .customShort("o"), help: "Comma-separated mount options passed to FUSE (e.g. allow_other).")
    var options: String?

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        do { _ = try MountSource(parsing: source) } catch { throw ValidationError("\(error)") }
    }

    func run() async throws {
        let logger = logging.makeLogger("upgradefs.mount")
        let config = MountConfiguration(
            source: try MountSource(parsing: source), mountpoint: mountpoint, cacheDirectory: cache,
            options: options?.split(separator: ",").map(String.init) ?? [], nodeKeyFile: nodeKey)
        do {
            try await MountService(configuration: config, logger: logger).run(ready: { [mountpoint] in
                Self.notifyWhenAnswering(mountpoint)
            })
        } catch let error as MountError {
            printError("upgradefs mount: \(error)")
            throw Self.exitCode(error)
        }
    }

    /// The exit status of each way a mount (or `status --watch --server`, which trusts the server as a mount
    /// does) fails.
    static func exitCode(_ error: MountError) -> ExitCode {
        switch error {
        case .identityMismatch: ExitCodes.identityMismatch
        case .unreachable: ExitCodes.unavailable
        case .verification: ExitCodes.dataError
        case .badSource: ExitCodes.usage
        case .cache, .mountFailed: ExitCodes.osError
        case .cacheOfAnotherServer: ExitCodes.config
        case .nodeKey: ExitCodes.noInput
        case .notEnrolled: ExitCodes.notEnrolled
        case .nodeInUse: ExitCodes.cannotCreate
        }
    }

    /// Under systemd: READY=1 once the file system answers a directory listing (the FUSE loop runs), then
    /// WATCHDOG=1 while it keeps answering; a hung loop would freeze every reader on the node, so the watchdog
    /// restarts it. Run by hand (no NOTIFY_SOCKET), nothing is checked.
    static func notifyWhenAnswering(_ mountpoint: String) {
        guard ServiceNotifier.isSupervised else { return }
        let thread = Thread {
            while !answers(mountpoint) { usleep(20_000) }
            ServiceNotifier.ready(status: "mounted on \(mountpoint)")
            ServiceNotifier.startWatchdog(name: "mount-watchdog") { answers(mountpoint) }
        }
        thread.name = "mount-ready"
        thread.start()
    }

    /// Whether the mounted file system lists its root (OPENDIR and READDIR reach the FUSE loop).
    static func answers(_ mountpoint: String) -> Bool {
        guard let directory = opendir(mountpoint) else { return false }
        defer { closedir(directory) }
        errno = 0
        return readdir(directory) != nil
    }
}
