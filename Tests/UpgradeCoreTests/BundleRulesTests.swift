import Testing
import UpgradeCore

@Suite struct BundleRulesTests {
    static let manifest = "class = \"kv\"\nversion = 3\n"

    /// A valid bundle: manifest, payload with one file, executable sf.
    static func entries(_ extra: [BundleEntry] = []) -> [BundleEntry] {
        [
            BundleEntry(path: "upgrade.toml", kind: .file(size: 26, mode: 0o644)),
            BundleEntry(path: "payload", kind: .directory(mode: 0o755)),
            BundleEntry(path: "payload/app", kind: .file(size: 100, mode: 0o755)),
            BundleEntry(path: "sf", kind: .file(size: 10, mode: 0o755)),
        ] + extra
    }

    func verdict(
        manifest: String? = BundleRulesTests.manifest, _ entries: [BundleEntry] = BundleRulesTests.entries(),
        latest: Int64 = 2, limits: BundleLimits = .default
    ) -> Result<ValidatedBundle, BundleRejection> {
        BundleRules.validate(manifestText: manifest, entries: entries, latestVersion: latest, limits: limits)
    }

    func rejection(
        manifest: String? = BundleRulesTests.manifest, _ entries: [BundleEntry] = BundleRulesTests.entries(),
        latest: Int64 = 2, limits: BundleLimits = .default
    ) -> BundleRejection? {
        if case .failure(let r) = verdict(manifest: manifest, entries, latest: latest, limits: limits) { return r }
        return nil
    }

    @Test func validBundleIsAccepted() throws {
        let bundle = try verdict(Self.entries([
            BundleEntry(path: "payload/lib", kind: .symlink(target: "app")),
        ])).get()
        #expect(bundle.manifest.version == 3)
        #expect(bundle.files.map(\.path) == ["payload/app", "sf", "upgrade.toml"])
        #expect(bundle.symlinks == [.init(path: "payload/lib", target: "app")])
        #expect(bundle.sf == "sf" && bundle.tf == nil && bundle.check == nil)
        #expect(bundle.totalBytes == 136)
    }

    @Test func missingManifestIsRejected() {
        let entries = Self.entries().filter { $0.path != "upgrade.toml" }
        #expect(rejection(manifest: nil, entries)?.description.contains("missing manifest") == true)
    }

    @Test func manifestThatIsASymlinkIsRejected() {
        var entries = Self.entries().filter { $0.path != "upgrade.toml" }
        entries.append(BundleEntry(path: "upgrade.toml", kind: .symlink(target: "payload/app")))
        #expect(rejection(entries)?.path == "upgrade.toml")
    }

    @Test func invalidManifestIsRejectedWithItsError() {
        let r = rejection(manifest: "class = \"kv\"\nversion = 3\nsurprise = 1\n")
        #expect(r?.description == "invalid manifest: upgrade.toml: key \"surprise\" unknown key")
    }

    @Test(arguments: [Int64(3), 4, 100])
    func versionNotAboveLatestIsRejected(latest: Int64) {
        let r = rejection(latest: latest)
        #expect(r?.description == "upgrade.toml: version 3 is not above the latest published version \(latest)")
    }

    @Test(arguments: [
        "payload/../x", "../x", "/etc/passwd", "payload//x", "payload/./x", "payload/a\u{1}b", "payload/a\nb",
        "payload/" + String(repeating: "n", count: 256),
        String(repeating: "d/", count: 600) + "x",
    ])
    func unsafePathsAreRejected(path: String) {
        let r = rejection(Self.entries([BundleEntry(path: path, kind: .file(size: 1, mode: 0o644))]))
        #expect(r?.path == path)
        #expect(r?.reason.hasPrefix("unsafe path") == true)
        #expect(r?.description.contains("\n") == false)
    }

    @Test(arguments: ["../../etc", "../..", "sub/../../../x", "./../../x", "a/b/../../../.."])
    func symlinkLeavingTheBundleIsRejected(target: String) {
        let r = rejection(Self.entries([BundleEntry(path: "bin/link", kind: .symlink(target: target))]))
        #expect(r?.path == "bin/link")
        #expect(r?.reason.contains("leaves the bundle") == true)
    }

    /// The payload is what a node installs as its release: a link in it is judged against the payload,
    /// not the bundle. With `payload = "a/b/c/d/e/f"`, `etc -> ../../../../../../etc` stays inside the
    /// bundle but would be the host's /etc once installed.
    @Test func payloadLinkThatStaysInTheBundleButLeavesThePayloadIsRejected() {
        let deep = "a/b/c/d/e/f"
        var entries = Self.entries().filter { !$0.path.hasPrefix("payload") }
        var prefix = ""
        for component in deep.split(separator: "/") {
            prefix += (prefix.isEmpty ? "" : "/") + component
            entries.append(BundleEntry(path: prefix, kind: .directory(mode: 0o755)))
        }
        entries.append(BundleEntry(path: deep + "/app", kind: .file(size: 1, mode: 0o755)))
        entries.append(BundleEntry(path: "etc", kind: .directory(mode: 0o755)))
        entries.append(BundleEntry(path: deep + "/etc", kind: .symlink(target: "../../../../../../etc")))
        let r = rejection(manifest: Self.manifest + "payload = \"\(deep)\"\n", entries)
        #expect(r?.description
            == "a/b/c/d/e/f/etc: symlink target \"../../../../../../etc\" leaves the payload directory \"a/b/c/d/e/f\" (the installed release)")
        // The same link text is fine where it stays inside the payload.
        var inside = entries.filter { $0.path != deep + "/etc" }
        inside.append(BundleEntry(path: deep + "/x/y/z/u/v/w", kind: .directory(mode: 0o755)))
        inside.append(BundleEntry(path: deep + "/x/y/z/u/v/w/etc", kind: .symlink(target: "../../../../../../app")))
        #expect(rejection(manifest: Self.manifest + "payload = \"\(deep)\"\n", inside) == nil)
    }

    @Test(arguments: ["..", "../sf", "../payload/app", "sub/../../x", "../../etc"])
    func payloadLinkLeavingThePayloadIsRejected(target: String) {
        let r = rejection(Self.entries([BundleEntry(path: "payload/link", kind: .symlink(target: target))]))
        #expect(r?.path == "payload/link")
        #expect(r?.reason.contains("leaves the payload directory \"payload\"") == true)
    }

    /// A link outside the payload (beside sf, say) may point anywhere inside the bundle, the payload included.
    @Test func linkOutsideThePayloadMayPointIntoIt() throws {
        _ = try verdict(Self.entries([BundleEntry(path: "bin/app", kind: .symlink(target: "../payload/app"))])).get()
    }

    @Test func absoluteSymlinkIsRejected() {
        let r = rejection(Self.entries([BundleEntry(path: "payload/link", kind: .symlink(target: "/etc/passwd"))]))
        #expect(r?.description == "payload/link: symlink target \"/etc/passwd\" is absolute")
    }

    @Test func symlinkToBundleRootIsAllowedOutsideThePayload() throws {
        _ = try verdict(Self.entries([BundleEntry(path: "bin/root", kind: .symlink(target: ".."))])).get()
    }

    @Test func chainOfLinksThatClimbsOutIsRejected() {
        // bin/up -> .. (the bundle root, fine on its own); bin/out -> up/.. climbs out through it.
        let r = rejection(Self.entries([
            BundleEntry(path: "bin/up", kind: .symlink(target: "..")),
            BundleEntry(path: "bin/out", kind: .symlink(target: "up/..")),
        ]))
        #expect(r?.path == "bin/out")
        // In the payload, a chain through a link that stays inside it cannot climb out either.
        let inPayload = rejection(Self.entries([
            BundleEntry(path: "payload/sub", kind: .directory(mode: 0o755)),
            BundleEntry(path: "payload/sub/up", kind: .symlink(target: "..")),
            BundleEntry(path: "payload/sub/out", kind: .symlink(target: "up/../x")),
        ]))
        #expect(inPayload?.path == "payload/sub/out")
    }

    /// A hard link is a second name for a file that may live outside the bundle (anything the
    /// server may read): refused, naming the file.
    @Test func fileWithMoreThanOneLinkIsRejected() {
        let r = rejection(Self.entries([BundleEntry(path: "payload/shadow", kind: .file(size: 10, mode: 0o644), linkCount: 2)]))
        #expect(r?.description == "payload/shadow: file has 2 hard links (another name may be outside the bundle); copy it instead")
    }

    /// A version far above the latest (Int64.max, say) would leave no room for any later bundle.
    @Test func versionFarAboveTheLatestIsRejected() {
        let huge = rejection(manifest: "class = \"kv\"\nversion = 9223372036854775807\n", latest: 0)
        #expect(huge?.description
            == "upgrade.toml: version 9223372036854775807 is more than 1000 above the latest published version 0 (at most 1000)")
        #expect(rejection(manifest: "class = \"kv\"\nversion = 1003\n", latest: 2)?.reason.contains("more than 1000 above") == true)
        // Gaps within the step are allowed.
        #expect(rejection(manifest: "class = \"kv\"\nversion = 1002\n", latest: 2) == nil)
        #expect(rejection(manifest: "class = \"kv\"\nversion = 9223372036854775807\n", latest: Int64.max - 1) == nil)
    }

    @Test func symlinkLoopIsRejected() {
        let r = rejection(Self.entries([
            BundleEntry(path: "a", kind: .symlink(target: "b/x")),
            BundleEntry(path: "b", kind: .symlink(target: "a/x")),
        ]))
        #expect(r?.reason == "too many levels of symbolic links")
    }

    @Test func emptySymlinkTargetIsRejected() {
        #expect(rejection(Self.entries([BundleEntry(path: "l", kind: .symlink(target: ""))]))?.path == "l")
    }

    @Test func specialFilesAreRejected() {
        #expect(rejection(Self.entries([BundleEntry(path: "payload/dev", kind: .device)]))?.description
            == "payload/dev: device files are not allowed")
        #expect(rejection(Self.entries([BundleEntry(path: "payload/p", kind: .fifo)]))?.description
            == "payload/p: FIFOs (named pipes) are not allowed")
        #expect(rejection(Self.entries([BundleEntry(path: "payload/s", kind: .socket)]))?.description
            == "payload/s: sockets are not allowed")
    }

    @Test func tooManyFilesIsRejected() {
        let limits = BundleLimits(maxFiles: 4)
        #expect(rejection(limits: limits) == nil)  // exactly 3 files
        let extra = (0..<2).map { BundleEntry(path: "payload/f\($0)", kind: .file(size: 1, mode: 0o644)) }
        #expect(rejection(Self.entries(extra), limits: limits)?.reason.contains("more than 4 files") == true)
    }

    @Test func fileOverSizeLimitIsRejected() {
        let limits = BundleLimits(maxFileBytes: 100)
        #expect(rejection(limits: limits) == nil)  // payload/app is exactly 100
        let r = rejection(Self.entries([BundleEntry(path: "payload/big", kind: .file(size: 101, mode: 0o644))]), limits: limits)
        #expect(r?.description == "payload/big: file of 101 bytes is larger than the limit of 100 bytes")
    }

    @Test func bundleOverSizeLimitIsRejected() {
        let r = rejection(limits: BundleLimits(maxBundleBytes: 135))
        #expect(r?.reason == "bundle is larger than the limit of 135 bytes")
        #expect(rejection(limits: BundleLimits(maxBundleBytes: 136)) == nil)
    }

    @Test func specialBitsAreDroppedNotRejected() throws {
        let bundle = try verdict(Self.entries([
            BundleEntry(path: "payload/suid", kind: .file(size: 1, mode: 0o4755)),
            BundleEntry(path: "payload/sgid", kind: .file(size: 1, mode: 0o2711)),
            BundleEntry(path: "payload/sticky", kind: .file(size: 1, mode: 0o1644)),
        ])).get()
        let modes = Dictionary(uniqueKeysWithValues: bundle.files.map { ($0.path, $0.mode) })
        #expect(modes["payload/suid"] == 0o755)
        #expect(modes["payload/sgid"] == 0o711)
        #expect(modes["payload/sticky"] == 0o644)
        #expect(bundle.droppedSpecialBits == ["payload/sgid", "payload/sticky", "payload/suid"])
    }

    @Test func missingPayloadIsRejected() {
        let entries = Self.entries().filter { !$0.path.hasPrefix("payload") }
        #expect(rejection(entries)?.path == "payload")
        #expect(rejection(manifest: Self.manifest + "payload = \"sf\"\n")?.reason.contains("not a directory") == true)
    }

    @Test func namedRoleMustExistAndBeExecutable() {
        #expect(rejection(manifest: Self.manifest + "tf = \"tf\"\n")?.description
            == "tf: tf is named in the manifest but missing")
        let plain = Self.entries([BundleEntry(path: "bin/check", kind: .file(size: 1, mode: 0o644))])
        #expect(rejection(manifest: Self.manifest + "check = \"bin/check\"\n", plain)?.description
            == "bin/check: check is not executable")
        let dir = Self.entries([BundleEntry(path: "tfdir", kind: .directory(mode: 0o755))])
        #expect(rejection(manifest: Self.manifest + "tf = \"tfdir\"\n", dir)?.reason
            == "tf must be a regular executable file")
    }

    @Test func defaultRoleThatIsNotExecutableIsRejected() {
        var entries = Self.entries().filter { $0.path != "sf" }
        entries.append(BundleEntry(path: "sf", kind: .file(size: 1, mode: 0o644)))
        #expect(rejection(entries)?.description == "sf: sf is not executable")
    }

    @Test func namedRoleIsResolved() throws {
        let entries = Self.entries([BundleEntry(path: "bin/tf", kind: .file(size: 1, mode: 0o700))])
        let bundle = try verdict(manifest: Self.manifest + "tf = \"bin/tf\"\n", entries).get()
        #expect(bundle.tf == "bin/tf")
    }

    @Test func duplicatePathsAreRejected() {
        #expect(rejection(Self.entries([BundleEntry(path: "sf", kind: .file(size: 1, mode: 0o755))]))?.path == "sf")
    }
}
