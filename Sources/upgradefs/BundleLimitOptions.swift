import ArgumentParser
import UpgradeCore

/// The bundle limits `serve` enforces, and `check` checks against (the same flags, the same defaults).
struct BundleLimitOptions: ParsableArguments {
    @Option(name: .customLong("max-file-size"), help: "Largest file a bundle may hold, in bytes.")
    var maxFileBytes: Int64 = BundleLimits.default.maxFileBytes

    @Option(name: .customLong("max-bundle-size"), help: "Largest total size of a bundle, in bytes.")
    var maxBundleBytes: Int64 = BundleLimits.default.maxBundleBytes

    @Option(name: .customLong("max-files"), help: "Most files a bundle may hold.")
    var maxFiles: Int = BundleLimits.default.maxFiles

    func validate() throws {
        guard maxFileBytes > 0, maxBundleBytes > 0, maxFiles > 0 else {
            throw ValidationError("--max-file-size, --max-bundle-size and --max-files must be positive")
        }
    }

    var limits: BundleLimits { BundleLimits(maxFiles: maxFiles, maxFileBytes: maxFileBytes, maxBundleBytes: maxBundleBytes) }
}
