import UpgradeCore
import UpgradeFiles

/// The publisher's verdict on a dropped bundle before anything is copied, in one place for `upgradefs serve` and
/// `upgradefs check`: the scan's own problems (a name that is not UTF-8, an unreadable directory, a manifest too
/// large), a manifest that is not UTF-8, then `BundleRules`. The messages are those `NAME.rejected` holds.
extension ScannedBundle {
    /// The manifest's text (nil when the bundle has none), or why the bundle is rejected before its rules are read.
    func manifestText() -> Result<String?, BundleRejection> {
        if let problem { return .failure(problem) }
        guard let bytes = manifestBytes else { return .success(nil) }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            return .failure(BundleRejection(path: UpgradeManifest.fileName, reason: "the manifest is not valid UTF-8"))
        }
        return .success(text)
    }

    /// The whole verdict, `latestVersion` being the newest published version.
    func validate(latestVersion: Int64, limits: BundleLimits) -> Result<ValidatedBundle, BundleRejection> {
        manifestText().flatMap {
            BundleRules.validate(manifestText: $0, entries: entries, latestVersion: latestVersion, limits: limits)
        }
    }
}

/// `upgradefs check DIR`: a bundle judged exactly as `upgradefs serve` judges one dropped into its publish directory
/// (same scan, same rules, same messages), without publishing anything.
public enum BundleCheck {
    /// Scans `directory` and validates it against `latestVersion` (the server's newest published version) and
    /// `limits` (the server's `--max-*` flags). Throws when the directory cannot be read at all (it does not
    /// exist, it changed under the scan); the server would look again later then, not reject it.
    public static func check(directory: String, latestVersion: Int64, limits: BundleLimits)
        throws(FileError) -> Result<ValidatedBundle, BundleRejection>
    {
        try BundleScanner.scan(directory, limits: limits).validate(latestVersion: latestVersion, limits: limits)
    }
}
