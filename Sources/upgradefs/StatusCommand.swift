import ArgumentParser
import Foundation
import UpgradeServer

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the fleet at a glance: each node's state, version and heartbeat age, lock holders, upgrade summaries.",
        discussion: """
        Reads the server's upgrade database (STATE/udb.sqlite) on the server machine. A heartbeat's \
        age counts from when it arrived at the server. --json prints one JSON object for scripts: \
        {"revision", "nodes": [{"name","state","version","heartbeat_age_seconds"}], \
        "locks": [{"name","capacity","holders": [{"holder","node","acquired_at"}]}], \
        "upgrades": [{"version","control","summary": {STATE: COUNT}}]} (null where a node wrote nothing).
        """
    )

    @OptionGroup var stateOptions: StateOptions

    @Flag(help: "Print JSON instead of tables.")
    var json = false

    func run() async throws {
        let store = try stateOptions.openStore(create: false, command: "status")
        let status = WhiteboardStatus(enrolled: try await store.enrolledNodes(), view: try await store.snapshot())
        if json {
            print(String(decoding: status.toJSON().canonicalBytes(), as: UTF8.self))
        } else {
            print(status.text(), terminator: "")
        }
    }
}
