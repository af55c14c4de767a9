import Testing
import UpgradeCore

struct BundleTreeTests {
    static func target(_ text: String, mode: Int64 = 0o644, link: String? = nil) -> TargetFile {
        var info: [String: JSONValue] = ["mode": .int(mode)]
        if let link { info["symlink"] = .bool(true); info["target"] = .string(link) }
        return TargetFile(describing: Array(text.utf8), custom: .object(["upgradefs": .object(info)]))
    }

    @Test func publishedTargetsBecomeVersionDirectories() throws {
        var tree = BundleTree()
        tree.rebuild(serverSource: "h:1,id", targets: [
            "1/upgrade.toml": Self.target("a"),
            "1/payload/bin/app": Self.target("b", mode: 0o4755),
            "2/payload/bin/app": Self.target("c"),
            "2/payload/bin/current": Self.target("app", link: "app"),
        ])
        #expect(tree.latestVersion == 2)
        let versions = try #require(tree.lookup(path: "versions"))
        guard case .directory(let children)? = tree.node(versions) else { Issue.record("versions is not a directory"); return }
        #expect(Set(children.keys) == ["1", "2"])
        guard case .file(let path, _, let mode)? = tree.node(try #require(tree.lookup(path: "versions/1/payload/bin/app"))) else {
            Issue.record("app is not a file"); return
        }
        #expect(path == "1/payload/bin/app")
        #expect(mode == 0o555, "write and set-uid bits never reach the mount")
        #expect(tree.node(try #require(tree.lookup(path: "versions/2/payload/bin/current"))) == .symlink(target: "app"))
        #expect(tree.node(try #require(tree.lookup(path: "latest"))) == .text("2\n"))
        #expect(tree.node(try #require(tree.lookup(path: "server"))) == .text("h:1,id\n"))
    }

    @Test func inodeNumbersSurviveARebuild() throws {
        var tree = BundleTree()
        tree.rebuild(serverSource: "s", targets: ["1/a/b": Self.target("x")])
        let before = try #require(tree.lookup(path: "versions/1/a/b"))
        let latest = try #require(tree.lookup(path: "latest"))
        tree.rebuild(serverSource: "s", targets: ["1/a/b": Self.target("x"), "2/a/b": Self.target("y")])
        #expect(tree.lookup(path: "versions/1/a/b") == before)
        #expect(tree.lookup(path: "latest") == latest)
        #expect(tree.lookup(path: "versions/2/a/b") != before)
    }

    @Test func emptyRepositoryShowsVersionZeroAndAnEmptyVersionsDirectory() throws {
        var tree = BundleTree()
        tree.rebuild(serverSource: "s", targets: [:])
        #expect(tree.node(try #require(tree.lookup(path: "latest"))) == .text("0\n"))
        #expect(tree.node(try #require(tree.lookup(path: "versions"))) == .directory(children: [:]))
    }

    @Test func targetsOutsideTheVersionLayoutAreNotShown() {
        var tree = BundleTree()
        tree.rebuild(serverSource: "s", targets: [
            "notaversion/x": Self.target("1"),
            "01/x": Self.target("2"),
            "3/../etc/passwd": Self.target("3"),
            "4//x": Self.target("4"),
            "5": Self.target("5"),
        ])
        #expect(tree.latestVersion == 0)
        #expect(tree.node(tree.lookup(path: "versions")!) == .directory(children: [:]))
    }

    /// A signed target path that tries to leave `versions/N` is never shown, and hides nothing else.
    @Test(arguments: ["../x", "/etc/passwd", "versions/../x", "1/../../x", "1/./x", "1/a/../../../x", "1/a/..",
                      "/1/x", "1/", "+1/x", "-1/x", "0/x", "1\u{0}/x"])
    func targetPathThatTriesToEscapeIsNotShown(path: String) {
        var tree = BundleTree()
        tree.rebuild(serverSource: "s", targets: [path: Self.target("evil"), "2/ok": Self.target("ok")])
        #expect(tree.latestVersion == 2)
        #expect(tree.node(tree.lookup(path: "versions")!) == .directory(children: ["2": tree.lookup(path: "versions/2")!]))
        #expect(tree.node(tree.lookup(path: "")!).map { node -> Set<String> in
            guard case .directory(let children) = node else { return [] }
            return Set(children.keys)
        } == ["versions", "server", "latest", "stale"])
    }
}

extension BundleTreeTests {
    @Test func staleIsEmptyUntilSetAndKeptAcrossRebuilds() throws {
        var tree = BundleTree()
        tree.rebuild(serverSource: "s", targets: [:])
        let stale = try #require(tree.lookup(path: "stale"))
        #expect(tree.node(stale) == .text(""))
        #expect(tree.setStale("expired since T (timestamp metadata)\n") == stale)
        tree.rebuild(serverSource: "s", targets: ["1/a": Self.target("x")])
        #expect(tree.lookup(path: "stale") == stale)
        #expect(tree.node(stale) == .text("expired since T (timestamp metadata)\n"))
    }
}
