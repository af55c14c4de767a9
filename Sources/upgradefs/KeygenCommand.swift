import ArgumentParser
import Foundation
import UpgradeCore
import UpgradeServer
import UpgradeWhiteboardClient

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Create a server's Ed25519 keys and initial TUF root and print the server id, or a node's key with --node.",
        discussion: """
        Writes the key file (mode 0600): the root, targets, snapshot and timestamp keys and the \
        initial root metadata (version 1). The printed id is the base32 SHA-256 of that root; \
        nodes mount HOST:PORT,ID and trust nothing else. Keep the key file secret and backed up: \
        a lost key file means a new id for the whole fleet.

        With --node NAME it writes a node's whiteboard key instead (default \(NodeKeyFile.defaultPath)) \
        and prints `NAME PUBLICKEYHEX`, the line the operator enrolls on the server. The name \
        `operator` is reserved for the operator's own key.
        """
    )

    @Option(help: "Where to write the key file (default \(ServerKeyFile.defaultPath), or \(NodeKeyFile.defaultPath) with --node).")
    var out: String?

    @Option(help: ArgumentHelp("Create a node's whiteboard key for NAME (\(WhiteboardPath.nodeNameGrammar)).", valueName: "NAME"))
    var node: String?

    @Flag(help: "Replace an existing key file (a server's id or a node's key changes).")
    var force = false

    func validate() throws {
        if let node, !NodeKeyFile.isValidNodeName(node) {
            throw ValidationError("--node '\(node)' is not a node name: expected \(WhiteboardPath.nodeNameGrammar)")
        }
    }

    func run() throws {
        if let node {
            try writeNodeKey(node: node, to: out ?? NodeKeyFile.defaultPath)
            return
        }
        let out = out ?? ServerKeyFile.defaultPath
        try makeParentDirectory(of: out)
        let keys = ServerKeyFile.generate()
        do {
            try keys.write(to: out, overwrite: force)
        } catch {
            printError("upgradefs keygen: \(error)")
            throw FileManager.default.fileExists(atPath: out) && !force ? ExitCodes.cannotCreate : ExitCodes.osError
        }
        print(keys.serverID)
    }

    private func writeNodeKey(node: String, to out: String) throws {
        try makeParentDirectory(of: out)
        let key: NodeKeyFile
        do {
            key = try NodeKeyFile.generate(node: node)
            try key.write(to: out, overwrite: force)
        } catch {
            printError("upgradefs keygen: \(error)")
            throw FileManager.default.fileExists(atPath: out) && !force ? ExitCodes.cannotCreate : ExitCodes.osError
        }
        print(key.enrollmentLine)
    }

    private func makeParentDirectory(of out: String) throws {
        let directory = URL(fileURLWithPath: out).deletingLastPathComponent().path
        if !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) {
            do {
                try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                printError("upgradefs keygen: cannot create \(directory): \(error.localizedDescription)")
                throw ExitCodes.cannotCreate
            }
        }
    }
}

struct IDCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "id",
        abstract: "Print the server id of a key file."
    )

    @Option(help: "The server's key file.")
    var key: String = ServerKeyFile.defaultPath

    func run() throws {
        do {
            print(try ServerKeyFile.load(from: key).serverID)
        } catch {
            printError("upgradefs id: \(error)")
            throw FileManager.default.fileExists(atPath: key) ? ExitCodes.dataError : ExitCodes.noInput
        }
    }
}

/// One line on standard error, for messages meant for the person at the terminal.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
