import ArgumentParser
import Foundation
import Sodium
import UpgradeCore
import UpgradeServer
import UpgradeServerPostgres
import Logging

/// The server's upgrade database, for the commands that read or change it directly (the server may be running):
/// `STATE/udb.sqlite` (WAL allows it), or the PostgreSQL database of `--udb` (the server's --udb).
struct StateOptions: ParsableArguments {
    static let defaultPath = "/var/lib/upgradefs"

    @Option(help: "The server's state directory (its --state), holding udb.sqlite.")
    var state: String = StateOptions.defaultPath

    @Option(name: .customLong("udb"), help: ArgumentHelp(
        "The server's PostgreSQL upgrade database (its --udb), instead of STATE/udb.sqlite.", valueName: "postgres://…"))
    var udb: String?

    func validate() throws {
        if let udb, !udb.isEmpty { _ = try UDBOption.url(udb) }
    }

    /// Runs `body` with the existing database; refuses (exit 66) when there is no SQLite database and `create` is
    /// false. A PostgreSQL database is created (migrated) when it has no tables yet; unreachable: exit 69.
    func withStore<T: Sendable>(create: Bool, command: String, _ body: @Sendable (any WhiteboardStore) async throws -> T) async throws -> T {
        if let udb, !udb.isEmpty {
            let url = try UDBOption.url(udb)
            do {
                return try await PostgresWhiteboard.withStore(url: url, verifier: SodiumVerifier(), logger: Logger(label: "upgradefs.\(command)")) {
                    try await body($0)
                }
            } catch let error as WhiteboardStorageUnavailable {
                printError("upgradefs \(command): \(url.redacted): \(error)")
                throw ExitCodes.unavailable
            }
        }
        let path = state + "/" + SQLiteWhiteboardStore.fileName
        if !create && !FileManager.default.fileExists(atPath: path) {
            printError("upgradefs \(command): no upgrade database at \(path) (is --state the server's state directory?)")
            throw ExitCodes.noInput
        }
        let store: SQLiteWhiteboardStore
        do {
            store = try SQLiteWhiteboardStore(directory: state, verifier: SodiumVerifier())
        } catch {
            printError("upgradefs \(command): cannot open \(path): \(error)")
            throw ExitCodes.osError
        }
        return try await body(store)
    }
}

/// `--udb`: empty (the default) for SQLite in the state directory, or a PostgreSQL connection URL.
enum UDBOption {
    static func url(_ text: String) throws -> PostgresWhiteboard.ConnectionURL {
        do {
            return try PostgresWhiteboard.ConnectionURL(text)
        } catch {
            throw ValidationError("--udb: \(error.description)")
        }
    }
}

struct EnrollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enroll",
        abstract: "Admit a node's key to write on the whiteboard, or revoke it with --remove.",
        discussion: """
        Writes the server's upgrade database (STATE/udb.sqlite) directly; a running server sees \
        the change at its next request. NAME and PUBLICKEYHEX are what `upgradefs keygen --node NAME` \
        printed. The name `operator` gives the key the operator's rights (control files, lock \
        capacities, releasing any holder). Enrolling a name again with another key replaces the key; \
        its replay counters are kept (also across --remove), so a write captured earlier stays refused. \
        --remove revokes NAME: its files stay, its lock holders are released. The database must exist \
        (`upgradefs serve` creates it at its first start; exit 66 otherwise, so a mistyped --state \
        creates nothing) unless --create is given.
        """
    )

    @OptionGroup var stateOptions: StateOptions

    @Argument(help: "The node's name (\(WhiteboardPath.nodeNameGrammar)).")
    var name: String

    @Argument(help: "The node's Ed25519 public key, 64 hex digits (not needed with --remove).")
    var publicKeyHex: String?

    @Flag(help: "Revoke NAME instead of admitting it.")
    var remove = false

    @Flag(help: "Create the upgrade database if the state directory has none yet (before the server's first start).")
    var create = false

    func validate() throws {
        guard WhiteboardPath.isNodeName(name) else {
            throw ValidationError("'\(name)' is not a node name: expected \(WhiteboardPath.nodeNameGrammar)")
        }
        if remove {
            if publicKeyHex != nil { throw ValidationError("--remove takes only NAME") }
            if create { throw ValidationError("--create goes with enrolling, not with --remove") }
        } else {
            guard let publicKeyHex else { throw ValidationError("missing PUBLICKEYHEX (printed by `upgradefs keygen --node \(name)`)") }
            guard publicKeyHex.utf8.count == 64, Hex.decode(publicKeyHex) != nil else {
                throw ValidationError("PUBLICKEYHEX must be 64 hex digits (an Ed25519 public key)")
            }
        }
    }

    func run() async throws {
        let (name, remove, key) = (name, remove, publicKeyHex.flatMap(Hex.decode))
        try await stateOptions.withStore(create: create, command: "enroll") { store in
            if remove {
                if try await store.remove(node: name) {
                    print("removed \(name)")
                } else {
                    printError("upgradefs enroll: \(name) is not enrolled")
                    throw ExitCodes.dataError
                }
            } else {
                let changed = try await store.enroll(node: name, publicKey: key!)
                print(changed ? "enrolled \(name)" : "\(name) is already enrolled with this key")
            }
        }
    }
}

struct UnlockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unlock",
        abstract: "Release a stuck holder of a whiteboard lock.",
        discussion: """
        Removes locks/LOCK/HOLDER in the server's upgrade database directly, as the operator's \
        `rmdir` on a mount would. Holders whose node's heartbeat is older than the server's \
        --lock-ttl are released automatically.
        """
    )

    @OptionGroup var stateOptions: StateOptions

    @Argument(help: "The lock's name.")
    var lock: String

    @Argument(help: "The holder to release.")
    var holder: String

    func run() async throws {
        let (lock, holder) = (lock, holder)
        try await stateOptions.withStore(create: false, command: "unlock") { store in
            if try await store.release(lock: lock, holder: holder) {
                print("released \(holder) of \(lock)")
            } else {
                printError("upgradefs unlock: lock \(lock) has no holder \(holder)")
                throw ExitCodes.dataError
            }
        }
    }
}
