import ArgumentParser
import UpgradeCore
import UpgradeFiles
import UpgradeServer

struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a bundle exactly as the server would, without publishing it.",
        discussion: """
        Runs the server's own scan and bundle rules on DIR and prints the verdict: on success the version, \
        class and size; otherwise the reason NAME.rejected would hold. The version rule needs the newest \
        published version: give it with --latest (default 0, nothing published). Exit status 0 for a valid \
        bundle, 65 for one the server would reject, 66 when DIR cannot be read.
        """
    )

    @Argument(help: "The bundle directory (upgrade.toml, payload/, sf, tf, check).")
    var directory: String

    @Option(help: "The newest version the server has published (its `latest`).")
    var latest: Int64 = 0

    @OptionGroup var limits: BundleLimitOptions

    func validate() throws {
        guard latest >= 0 else { throw ValidationError("--latest must not be negative") }
    }

    func run() throws {
        let verdict: Result<ValidatedBundle, BundleRejection>
        do {
            verdict = try BundleCheck.check(directory: directory, latestVersion: latest, limits: limits.limits)
        } catch {
            printError("upgradefs check: \(error)")
            throw ExitCodes.noInput
        }
        switch verdict {
        case .success(let bundle):
            let manifest = bundle.manifest
            print("ok: version \(manifest.version), class \(manifest.class), \(bundle.files.count) files, \(bundle.totalBytes) bytes")
        case .failure(let rejection):
            printError("upgradefs check: rejected: \(rejection)")
            throw ExitCodes.dataError
        }
    }
}
