import ArgumentParser
import Foundation
import SystemdNotify
import UpgradeLayer
import UpgradeManager

struct LayerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "layer",
        abstract: "Run the node's upgrade layer: route calls by the caller's version to the application, an SO, or refuse them.",
        discussion: """
        Listens on node.toml's [layer] listen address and forwards each call made for the node's version \
        (header Upgradefs-Version, none = the node's version) to the application at [layer] app, and other \
        versions' calls through the simulation objects the bundles ship (so/past, so/future), which it starts \
        and supervises (docs/REFERENCE.md, "Simulation objects"); a call no object on the node can serve is refused at once with 421 and a JSON body (docs/REFERENCE.md, "The \
        upgrade layer"). With [layer] proxy, also a plain HTTP forward proxy for the application's outgoing \
        calls, tagged with the node's version. The node's version is read from MOUNT/self/version. Runs in the \
        foreground until SIGTERM or SIGINT. Exit status 66 when the config file does not exist, 78 for a bad \
        config file or one without [layer], 69 when --mount is not an upgradefs mount with a whiteboard, 71 \
        when an address cannot be listened on or the mount cannot be read.
        """
    )

    @Option(help: "Where `upgradefs mount` mounted the server.")
    var mount: String = "/upgrades"

    @Option(help: "The node's config file (TOML), with a [layer] table.")
    var config: String = NodeConfig.defaultPath

    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        let config = ManagerCommand.absolute(self.config)
        let mount = ManagerCommand.absolute(self.mount)
        let nodeConfig = try ManagerCommand.loadNodeConfig(config, command: "layer")
        guard let layer = nodeConfig.layer else {
            printError("upgradefs layer: \(config) has no [layer] table (listen and app addresses)")
            throw ExitCodes.config
        }
        try ManagerCommand.requireWhiteboard(mount, command: "layer")
        var logger = logging.makeLogger("upgradefs.layer")
        logger[metadataKey: "node.id"] = "\(nodeConfig.node)"
        do {
            try await runUpgradeLayer(LayerConfiguration(layer: layer, mount: mount, className: nodeConfig.class, root: nodeConfig.root),
                                      logger: logger) {
                ServiceNotifier.ready(status: "listening on \(layer.listen)")
            }
        } catch {
            printError("upgradefs layer: \(error)")
            throw ExitCodes.osError
        }
    }
}
