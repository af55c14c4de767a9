import ArgumentParser
import UpgradeCore
import UpgradeFiles
import UpgradeWhiteboardClient

/// Writes `n1.key` … `nN.key` and `operator.key` (node key files, mode 0600) and prints what to enroll.
struct LoadKeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Write the simulated nodes' and the operator's key files and print their enrollment lines."
    )

    @Option(help: "How many simulated nodes (n1 … nN).")
    var nodes: Int

    @Option(help: "Directory for the key files (created if missing).")
    var out: String

    func validate() throws {
        guard (1...10_000).contains(nodes) else { throw ValidationError("--nodes must be 1 to 10000") }
    }

    func run() throws {
        try POSIXFiles.makeDirectories(out)
        for name in SimulatedNode.names(count: nodes) + [WhiteboardRules.operatorName] {
            let key = try NodeKeyFile.generate(node: name)
            try key.write(to: SimulatedNode.keyPath(directory: out, name: name))
            print(key.enrollmentLine)
        }
    }
}
