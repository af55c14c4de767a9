import ArgumentParser
import Logging

@main
struct UpgradeFS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "upgradefs",
        abstract: "Signed software upgrades for fleets, published by a server and mounted on every node.",
        version: "0.1.0",
        subcommands: [
            KeygenCommand.self, ServeCommand.self, MountCommand.self, IDCommand.self, EnrollCommand.self, UnlockCommand.self,
            StatusCommand.self, ManagerCommand.self, LayerCommand.self, CheckCommand.self, PublishCommand.self, VersionCommand.self,
        ]
    )

    /// No subcommand: the usage on stderr and exit 64 (bad usage), not the help as a success.
    func run() async throws {
        printError(Self.helpMessage())
        throw ExitCodes.usage
    }
}

/// Options every long-running command shares.
struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case text, json
    }

    @Option(name: .long, help: "Log format: text, or json (one object per line, for journald and log shippers).")
    var logFormat: Format = .text

    /// Bootstraps swift-log once (only executables do that) and returns a logger.
    func makeLogger(_ label: String) -> Logger {
        switch logFormat {
        case .text: LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        case .json: LoggingSystem.bootstrap { JSONLogHandler(label: $0) }
        }
        var logger = Logger(label: label)
        logger.logLevel = logLevel
        return logger
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
