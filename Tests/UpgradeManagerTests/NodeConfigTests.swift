import Testing
@testable import UpgradeManager

/// node.toml: defaults, and errors that name the file, the key and the problem.
struct NodeConfigTests {
    func error(_ text: String) -> NodeConfigError? {
        do {
            _ = try NodeConfig.parse(text, file: "/etc/upgradefs/node.toml")
            return nil
        } catch {
            return error
        }
    }

    @Test func onlyNodeAndClassAreRequiredTheRestHasTheDocumentedDefaults() throws {
        let config = try NodeConfig.parse("node = \"n1\"\nclass = \"counter\"\n")
        #expect(config == NodeConfig(node: "n1", class: "counter"))
        #expect(config.root == "/var/lib/upgradefs-node")
        #expect(config.start == "\"$UPGRADEFS_RELEASE/bin/start\"" && config.stop == "\"$UPGRADEFS_RELEASE/bin/stop\"")
        #expect(config.heartbeatIntervalSeconds == 5 && config.pollIntervalSeconds == 1)
        #expect(config.sfTimeoutSeconds == 60 && config.tfTimeoutSeconds == 300)
        #expect(config.checkTimeoutSeconds == 60 && config.stopTimeoutSeconds == 30)
    }

    @Test func everyKeyCanBeSetAndSecondsMayBeFractions() throws {
        let config = try NodeConfig.parse("""
            node = "n1"
            class = "kv"
            root = "/srv/node"
            start = "systemctl start kv"
            stop = "systemctl stop kv"
            heartbeat-interval = 2
            poll-interval = 0.5
            sf-timeout = 10
            tf-timeout = 20
            check-timeout = 30
            stop-timeout = 40
            """)
        #expect(config == NodeConfig(node: "n1", class: "kv", root: "/srv/node", start: "systemctl start kv",
                                     stop: "systemctl stop kv", heartbeatIntervalSeconds: 2, pollIntervalSeconds: 0.5,
                                     sfTimeoutSeconds: 10, tfTimeoutSeconds: 20, checkTimeoutSeconds: 30, stopTimeoutSeconds: 40))
    }

    @Test func anUnknownKeyIsAnErrorNamingItAndTheFile() throws {
        let e = try #require(error("node = \"n1\"\nclass = \"c\"\npoll-intervall = 3\n"))
        #expect(e.key == "poll-intervall")
        #expect(e.description.hasPrefix("/etc/upgradefs/node.toml: key \"poll-intervall\" is not a known key"))
    }

    @Test func missingOrMalformedValuesAreNamed() throws {
        #expect(error("class = \"c\"\n")?.description == "/etc/upgradefs/node.toml: key \"node\" is required (the name this node is enrolled under)")
        #expect(error("node = \"n1\"\n")?.key == "class")
        #expect(error("node = \"N 1\"\nclass = \"c\"\n")?.description.contains("is not a node name") == true)
        #expect(error("node = \"n1\"\nclass = \"Big\"\n")?.key == "class")
        #expect(error("node = \"n1\"\nclass = \"c\"\nroot = \"relative/dir\"\n")?.description
            == "/etc/upgradefs/node.toml: key \"root\" must be an absolute path, got \"relative/dir\"")
        #expect(error("node = \"n1\"\nclass = \"c\"\nsf-timeout = \"60\"\n")?.description
            == "/etc/upgradefs/node.toml: key \"sf-timeout\" must be a number of seconds")
        #expect(error("node = \"n1\"\nclass = \"c\"\ntf-timeout = 0\n")?.key == "tf-timeout")
        #expect(error("node = \"n1\"\nclass = \"c\"\nstart = \"\"\n")?.key == "start")
        #expect(error("node = 1\nclass = \"c\"\n")?.description == "/etc/upgradefs/node.toml: key \"node\" must be a string")
    }

    @Test func invalidTOMLSaysWhere() throws {
        let e = try #require(error("node = \"n1\nclass = \"c\"\n"))
        #expect(e.key == nil)
        #expect(e.description.hasPrefix("/etc/upgradefs/node.toml is not valid TOML:"))
        #expect(e.description.contains("line 1"))
    }

    @Test func aMissingFileIsNamed() throws {
        do {
            _ = try NodeConfig.load(path: "/nonexistent/node.toml")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description == "/nonexistent/node.toml cannot be read: open /nonexistent/node.toml: No such file or directory")
        }
    }

    /// A careless or hostile node.toml: root "/" or a path that means something else, negative or huge
    /// seconds, a pattern for pass-env. Each is an error naming the key.
    @Test func hostileValuesAreRefusedNamingTheKey() throws {
        let base = "node = \"n1\"\nclass = \"c\"\n"
        for (line, key) in [("root = \"/\"", "root"), ("root = \"/var/lib/../../etc\"", "root"),
                            ("root = \"/var/lib/./x\"", "root"), ("root = \"/var//lib\"", "root"), ("root = \"/var/lib/\"", "root"),
                            ("sf-timeout = -1", "sf-timeout"), ("tf-timeout = 0", "tf-timeout"),
                            ("check-timeout = nan", "check-timeout"), ("stop-timeout = inf", "stop-timeout"),
                            ("poll-interval = 1e12", "poll-interval"), ("heartbeat-interval = 86401", "heartbeat-interval"),
                            ("pass-env = [\"*\"]", "pass-env"), ("pass-env = [\"UPGRADEFS_MANAGER_ROOT\"]", "pass-env"),
                            ("run-as = \"-r\"", "run-as"), ("run-as = \"root;id\"", "run-as")] {
            let found = error(base + line + "\n")
            #expect(found?.key == key, "\(line): \(String(describing: found))")
        }
        #expect(error(base + "root = \"/\"\n")?.description
            == "/etc/upgradefs/node.toml: key \"root\" must be a directory of the manager's own, not \"/\"")
        // run-as root is the manager's own user: allowed (programs still get the built environment only).
        #expect(error(base + "run-as = \"root\"\n") == nil)
    }
}
