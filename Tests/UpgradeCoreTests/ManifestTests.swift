import Testing
import UpgradeCore

@Suite struct ManifestTests {
    @Test func fullManifestParses() throws {
        let manifest = try UpgradeManifest.parse("""
            class = "kvstore"
            version = 2
            from-version = 1
            description = "faster compaction"
            payload = "release"
            sf = "policy/sf"
            tf = "tf"
            check = "check"
            """)
        #expect(manifest == UpgradeManifest(
            class: "kvstore", version: 2, fromVersion: 1, description: "faster compaction",
            payload: "release", sf: "policy/sf", tf: "tf", check: "check"))
    }

    @Test func minimalManifestGetsDefaults() throws {
        let manifest = try UpgradeManifest.parse("class = \"a\"\nversion = 1\n")
        #expect(manifest.payload == "payload")
        #expect(manifest.fromVersion == nil && manifest.description == nil)
        #expect(manifest.sf == nil && manifest.tf == nil && manifest.check == nil)
    }

    private func error(_ text: String) -> ManifestError? {
        do {
            _ = try UpgradeManifest.parse(text)
            return nil
        } catch {
            return error
        }
    }

    @Test func unknownKeyIsRejectedWithASuggestion() {
        let e = error("class = \"a\"\nversion = 2\nfrom_version = 1\n")
        #expect(e?.key == "from_version")
        #expect(e?.description.contains("unknown key") == true)
        #expect(e?.description.contains("from-version") == true)
    }

    @Test func unknownTableIsRejected() {
        #expect(error("class = \"a\"\nversion = 2\n[extra]\nx = 1\n")?.key == "extra")
    }

    @Test func missingClassAndVersion() {
        #expect(error("version = 2\n") == ManifestError(key: "class", problem: "is required"))
        #expect(error("class = \"a\"\n") == ManifestError(key: "version", problem: "is required"))
    }

    @Test(arguments: ["", "Kv", "-kv", ".kv", "kv store", String(repeating: "a", count: 65), "kv/store"])
    func invalidClassNames(_ name: String) {
        #expect(error("class = \"\(name)\"\nversion = 2\n")?.key == "class")
    }

    @Test(arguments: ["a", "kv-store", "kv.store_2", "0x", String(repeating: "a", count: 64)])
    func validClassNames(_ name: String) throws {
        #expect(try UpgradeManifest.parse("class = \"\(name)\"\nversion = 2\n").class == name)
    }

    @Test func wrongTypesNameTheKeyAndTheType() {
        let e = error("class = \"a\"\nversion = \"2\"\n")
        #expect(e?.key == "version")
        #expect(e?.problem == "must be an integer, got a string")
        #expect(error("class = 3\nversion = 2\n")?.problem == "must be a string, got an integer")
        #expect(error("class = \"a\"\nversion = 2.5\n")?.problem == "must be an integer, got a float")
    }

    @Test func versionBounds() {
        #expect(error("class = \"a\"\nversion = 0\n")?.key == "version")
        #expect(error("class = \"a\"\nversion = -3\n")?.key == "version")
        #expect(error("class = \"a\"\nversion = 2\nfrom-version = 2\n")?.key == "from-version")
        #expect(error("class = \"a\"\nversion = 2\nfrom-version = 5\n")?.key == "from-version")
        #expect(error("class = \"a\"\nversion = 2\nfrom-version = 0\n")?.key == "from-version")
    }

    @Test func descriptionLimit() throws {
        let ok = String(repeating: "x", count: 4096)
        #expect(try UpgradeManifest.parse("class = \"a\"\nversion = 2\ndescription = \"\(ok)\"\n").description == ok)
        let e = error("class = \"a\"\nversion = 2\ndescription = \"\(ok)é\"\n")
        #expect(e?.key == "description")
        #expect(e?.problem.contains("4098 bytes") == true)
    }

    @Test(arguments: ["payload", "sf", "tf", "check"])
    func rolePathsMustBeSafe(_ key: String) {
        for bad in ["/bin/sh", "../sf", "a/../../x", "", "a//b", "a\\u0001b"] {
            #expect(error("class = \"a\"\nversion = 2\n\(key) = \"\(bad)\"\n")?.key == key, "\(key) = \(bad)")
        }
    }

    @Test func invalidTOMLSaysWhere() {
        let e = error("class = \"a\"\nversion = = 2\n")
        #expect(e?.key == nil)
        #expect(e?.description.hasPrefix("upgrade.toml is not valid TOML") == true)
        #expect(e?.description.contains("line 2") == true)
    }

    @Test func duplicateKeyIsInvalidTOML() {
        #expect(error("class = \"a\"\nclass = \"b\"\nversion = 2\n")?.key == nil)
    }

    @Test func errorDescriptionNamesKeyAndProblem() {
        #expect(ManifestError(key: "version", problem: "is required").description == "upgrade.toml: key \"version\" is required")
    }
}
