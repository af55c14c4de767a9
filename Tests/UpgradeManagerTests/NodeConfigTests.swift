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

/// node.toml's [layer] table (`upgradefs layer`).
struct NodeConfigLayerTests {
    func problem(_ layer: String) -> String? {
        do {
            _ = try NodeConfig.parse("node = \"n1\"\nclass = \"kv\"\n[layer]\n" + layer, file: "node.toml")
            return nil
        } catch {
            return error.description
        }
    }

    @Test func theLayerTableIsOptionalAndHoldsTheAddresses() throws {
        #expect(try NodeConfig.parse("node = \"n1\"\nclass = \"kv\"\n").layer == nil)
        let config = try NodeConfig.parse("""
            node = "n1"
            class = "kv"
            [layer]
            listen = "0.0.0.0:8080"
            app = "127.0.0.1:18080"
            proxy = "127.0.0.1:3128"
            upstream-timeout = 2.5
            """)
        #expect(config.layer == NodeConfig.Layer(listen: HostPort(host: "0.0.0.0", port: 8080),
                                                 app: HostPort(host: "127.0.0.1", port: 18080),
                                                 proxy: HostPort(host: "127.0.0.1", port: 3128), upstreamTimeoutSeconds: 2.5))
        let minimal = try NodeConfig.parse("node = \"n1\"\nclass = \"kv\"\n[layer]\nlisten = \"localhost:80\"\napp = \"localhost:81\"\n")
        #expect(minimal.layer?.proxy == nil && minimal.layer?.upstreamTimeoutSeconds == 30)
    }

    @Test func theApplicationIsToldItsAddressesAndTheProxy() {
        var layer = NodeConfig.Layer(listen: HostPort(host: "0.0.0.0", port: 80), app: HostPort(host: "127.0.0.1", port: 8080))
        #expect(layer.applicationEnvironment == ["UPGRADEFS_APP_ADDRESS": "127.0.0.1:8080", "UPGRADEFS_PUBLIC_ADDRESS": "0.0.0.0:80"])
        layer.proxy = HostPort(host: "127.0.0.1", port: 3128)
        #expect(layer.applicationEnvironment["HTTP_PROXY"] == "http://127.0.0.1:3128")
        #expect(layer.applicationEnvironment["http_proxy"] == "http://127.0.0.1:3128")
    }

    @Test func aBadLayerTableNamesTheKey() {
        #expect(problem("app = \"127.0.0.1:1\"\n") == "node.toml: key \"layer.listen\" is required (the application's public address)")
        #expect(problem("listen = \"127.0.0.1:1\"\n")?.contains("\"layer.app\" is required") == true)
        #expect(problem("listen = \"127.0.0.1:1\"\napp = \"127.0.0.1:1\"\n")?.contains("\"layer.app\" must differ") == true)
        #expect(problem("listen = \"127.0.0.1:1\"\napp = \"127.0.0.1:2\"\nport = 3\n")?.contains("\"layer.port\" is not a known key") == true)
        for bad in ["127.0.0.1", ":80", "h:0", "h:65536", "h:-1", "h:8a", "a b:80", "[::1]:80"] {
            #expect(problem("listen = \"\(bad)\"\napp = \"127.0.0.1:2\"\n")?.contains("is not an address") == true, "\(bad)")
        }
        #expect(problem("listen = \"h:1\"\napp = \"h:2\"\nupstream-timeout = 0\n")?.contains("layer.upstream-timeout") == true)
        #expect(problem("listen = \"h:1\"\napp = \"h:2\"\nproxy = \"h:1\"\n")?.contains("layer.proxy") == true)
    }
}
