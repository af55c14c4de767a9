import ArgumentParser
import Foundation
import UpgradeServer

struct KeygenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Create a server's Ed25519 keys and initial TUF root, and print the server id.",
        discussion: """
        Writes the key file (mode 0600): the root, targets, snapshot and timestamp keys and the \
        initial root metadata (version 1). The printed id is the base32 SHA-256 of that root; \
        nodes mount HOST:PORT,ID and trust nothing else. Keep the key file secret and backed up: \
        a lost key file means a new id for the whole fleet.
        """
    )

    @Option(help: "Where to write the key file.")
    var out: String = ServerKeyFile.defaultPath

    @Flag(help: "Replace an existing key file (the server id changes).")
    var force = false

    func run() throws {
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
        let keys = ServerKeyFile.generate()
        do {
            try keys.write(to: out, overwrite: force)
        } catch {
            printError("upgradefs keygen: \(error)")
            throw FileManager.default.fileExists(atPath: out) && !force ? ExitCodes.cannotCreate : ExitCodes.osError
        }
        print(keys.serverID)
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
