import ArgumentParser

/// `upgradefs version`: what `upgradefs --version` prints.
struct VersionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "version", abstract: "Print upgradefs's version.")

    func run() {
        print(UpgradeFS.configuration.version)
    }
}
