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
        {"revision", "nodes": [{"name","state","version","class","heartbeat_age_seconds","refused",\
        "refused_writes","last_refusal": {"at","code","error"}}], "unenrolled_writers": [{"name","refused_writes",\
        "last_refusal"}], "locks": [{"name","capacity","holders": [{"holder","node","acquired_at"}]}], \
        "upgrades": [{"version","control","summary": {STATE: COUNT}}]} (null where a node wrote nothing). \
        "refused" is true while the node's latest write was refused by the server; a node without a class \
        (no manager reported one) is "unclassified" and counted under no upgrade.
        """
    )

    @OptionGroup var stateOptions: StateOptions

    @Flag(help: "Print JSON instead of tables.")
    var json = false

    func run() async throws {
        let status = try await stateOptions.withStore(create: false, command: "status") { store in
            WhiteboardStatus(enrolled: try await store.enrolledNodes(), view: try await store.snapshot(), refusals: try await store.refusals())
        }
        if json {
            print(String(decoding: status.toJSON().canonicalBytes(), as: UTF8.self))
        } else {
            print(status.text(), terminator: "")
        }
    }
}
