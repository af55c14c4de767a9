import TOMLKit
import UpgradeCore
import UpgradeFiles

/// The manager's configuration, `node.toml` (docs/DESIGN.md, "Node config"; docs/REFERENCE.md, "node.toml").
/// Every key but `node` and `class` has a default; unknown keys are refused, so a typo never passes silently.
public struct NodeConfig: Sendable, Equatable {
    public static let defaultPath = "/etc/upgradefs/node.toml"
    public static let defaultRoot = "/var/lib/upgradefs-node"
    public static let defaultStart = "\"$UPGRADEFS_RELEASE/bin/start\""
    public static let defaultStop = "\"$UPGRADEFS_RELEASE/bin/stop\""

    /// The node's enrolled name (`self/` points at `udb/nodes/<node>`).
    public var node: String
    /// The class of node; upgrades of other classes are passed over.
    public var `class`: String
    /// Where releases, states and the LDB live.
    public var root: String
    /// Shell commands (`/bin/sh -c`) that start and stop the application.
    public var start: String
    public var stop: String
    public var heartbeatIntervalSeconds: Double
    public var pollIntervalSeconds: Double
    public var sfTimeoutSeconds: Double
    public var tfTimeoutSeconds: Double
    public var checkTimeoutSeconds: Double
    public var stopTimeoutSeconds: Double
    /// `[env]`: variables given to SFs, TFs, checks, start and stop besides the documented ones.
    public var environment: [String: String]
    /// `pass-env`: names of the manager's own variables passed on to them (when set).
    public var passEnvironment: [String]
    /// `run-as`: the user they run as (its uid, primary gid, no supplementary groups); nil = the manager's.
    public var runAs: String?
    /// `[layer]`: the upgrade layer's addresses (`upgradefs layer`); nil when the table is absent.
    public var layer: Layer?
    /// Not in the file: how long `start` may take before it counts as failed (it must return once the app runs).
    public var startTimeoutSeconds: Double { stopTimeoutSeconds }

    public static let knownKeys: [String] = [
        "node", "class", "root", "start", "stop", "heartbeat-interval", "poll-interval",
        "sf-timeout", "tf-timeout", "check-timeout", "stop-timeout", "env", "pass-env", "run-as", "layer",
    ]

    public init(
        node: String, class: String, root: String = NodeConfig.defaultRoot,
        start: String = NodeConfig.defaultStart, stop: String = NodeConfig.defaultStop,
        heartbeatIntervalSeconds: Double = 5, pollIntervalSeconds: Double = 1,
        sfTimeoutSeconds: Double = 60, tfTimeoutSeconds: Double = 300,
        checkTimeoutSeconds: Double = 60, stopTimeoutSeconds: Double = 30,
        environment: [String: String] = [:], passEnvironment: [String] = [], runAs: String? = nil,
        layer: Layer? = nil
    ) {
        self.layer = layer
        self.environment = environment
        self.passEnvironment = passEnvironment
        self.runAs = runAs
        self.node = node
        self.class = `class`
        self.root = root
        self.start = start
        self.stop = stop
        self.heartbeatIntervalSeconds = heartbeatIntervalSeconds
        self.pollIntervalSeconds = pollIntervalSeconds
        self.sfTimeoutSeconds = sfTimeoutSeconds
        self.tfTimeoutSeconds = tfTimeoutSeconds
        self.checkTimeoutSeconds = checkTimeoutSeconds
        self.stopTimeoutSeconds = stopTimeoutSeconds
    }

    /// Reads and parses the file at `path`; errors name the file.
    public static func load(path: String) throws(NodeConfigError) -> NodeConfig {
        let bytes: [UInt8]
        do {
            bytes = try POSIXFiles.readFile(path, limit: 1 << 20)
        } catch {
            throw NodeConfigError(file: path, key: nil, problem: "cannot be read: \(error)", isMissing: error.isNotFound)
        }
        return try parse(String(decoding: bytes, as: UTF8.self), file: path)
    }

    /// Parses the text of a `node.toml`; `file` is only used in messages.
    public static func parse(_ text: String, file: String = "node.toml") throws(NodeConfigError) -> NodeConfig {
        func fail(_ key: String?, _ problem: String) -> NodeConfigError {
            NodeConfigError(file: file, key: key, problem: problem)
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw fail(nil, "is not valid TOML: \(error.description) at line \(error.source.begin.line), column \(error.source.begin.column)")
        } catch {
            throw fail(nil, "is not valid TOML: \(error)")
        }
        for key in table.keys.sorted() where !knownKeys.contains(key) {
            throw fail(key, "is not a known key (known: \(knownKeys.joined(separator: ", ")))")
        }

        func string(_ key: String) throws(NodeConfigError) -> String? {
            guard let value = table[key] else { return nil }
            guard let string = value.string else { throw fail(key, "must be a string") }
            guard !string.isEmpty else { throw fail(key, "must not be empty") }
            return string
        }
        func seconds(_ key: String, default value: Double) throws(NodeConfigError) -> Double {
            guard let raw = table[key] else { return value }
            let number: Double
            if let int = raw.int {
                number = Double(int)
            } else if let double = raw.double {
                number = double
            } else {
                throw fail(key, "must be a number of seconds")
            }
            guard number > 0, number <= 86_400 else { throw fail(key, "must be more than 0 and at most 86400 seconds, got \(number)") }
            return number
        }

        guard let node = try string("node") else { throw fail("node", "is required (the name this node is enrolled under)") }
        guard WhiteboardPath.isNodeName(node) else {
            throw fail("node", "\"\(BundlePath.printable(node))\" is not a node name: expected \(WhiteboardPath.nodeNameGrammar)")
        }
        guard let className = try string("class") else { throw fail("class", "is required (the class of upgrades this node applies)") }
        guard UpgradeManifest.isValidClassName(className) else {
            throw fail("class", "\"\(BundlePath.printable(className))\" is not a class name: expected \(UpgradeManifest.classNameGrammar)")
        }
        let root = try string("root") ?? defaultRoot
        guard root.hasPrefix("/") else { throw fail("root", "must be an absolute path, got \"\(root)\"") }
        // The manager creates, replaces and removes trees under root: never the host's own top directory, and
        // no component that makes the path mean something else than it says.
        guard root != "/" else { throw fail("root", "must be a directory of the manager's own, not \"/\"") }
        guard root.split(separator: "/", omittingEmptySubsequences: false).dropFirst().allSatisfy({ !["", ".", ".."].contains($0) }) else {
            throw fail("root", "must be a plain absolute path (no \".\", \"..\", empty components or trailing /), got \"\(BundlePath.printable(root))\"")
        }

        func variableName(_ key: String, _ name: String) throws(NodeConfigError) -> String {
            guard isVariableName(name) else {
                throw fail(key, "\"\(BundlePath.printable(name))\" is not a variable name: expected [A-Za-z_][A-Za-z0-9_]*")
            }
            guard !name.hasPrefix("UPGRADEFS_") else { throw fail(key, "may not set \(name): UPGRADEFS_ variables are the manager's") }
            return name
        }
        var environment: [String: String] = [:]
        if let raw = table["env"] {
            guard let env = raw.table else { throw fail("env", "must be a table of NAME = \"value\"") }
            for name in env.keys.sorted() {
                guard let value = env[name]?.string else { throw fail("env", "\(name) must be a string") }
                guard !value.utf8.contains(0) else { throw fail("env", "\(name) must not contain a NUL byte") }
                environment[try variableName("env", name)] = value
            }
        }
        var passEnvironment: [String] = []
        if let raw = table["pass-env"] {
            guard let names = raw.array else { throw fail("pass-env", "must be an array of variable names") }
            for element in names {
                guard let name = element.string else { throw fail("pass-env", "must be an array of variable names") }
                passEnvironment.append(try variableName("pass-env", name))
            }
        }
        let runAs = try string("run-as")
        if let runAs, !isUserName(runAs) {
            throw fail("run-as", "\"\(BundlePath.printable(runAs))\" is not a user name")
        }

        var layer: Layer?
        if let raw = table["layer"] {
            guard let layerTable = raw.table else { throw fail("layer", "must be a table ([layer])") }
            layer = try Layer.parse(layerTable, fail: { key, problem in fail("layer." + key, problem) })
        }

        return NodeConfig(
            node: node, class: className, root: root,
            start: try string("start") ?? defaultStart, stop: try string("stop") ?? defaultStop,
            heartbeatIntervalSeconds: try seconds("heartbeat-interval", default: 5),
            pollIntervalSeconds: try seconds("poll-interval", default: 1),
            sfTimeoutSeconds: try seconds("sf-timeout", default: 60),
            tfTimeoutSeconds: try seconds("tf-timeout", default: 300),
            checkTimeoutSeconds: try seconds("check-timeout", default: 60),
            stopTimeoutSeconds: try seconds("stop-timeout", default: 30),
            environment: environment, passEnvironment: passEnvironment, runAs: runAs, layer: layer
        )
    }

    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic) else { return false }
        return name.unicodeScalars.allSatisfy { $0 == "_" || ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) }
    }

    static func isUserName(_ name: String) -> Bool {
        name.utf8.count <= 32 && !name.hasPrefix("-")
            && name.unicodeScalars.allSatisfy { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)) }
    }
}

/// Why a `node.toml` was refused: the file, the key at fault (if any) and the problem.
public struct NodeConfigError: Error, CustomStringConvertible, Sendable, Equatable {
    public let file: String
    public let key: String?
    public let problem: String
    /// The file does not exist (exit 66, not 78).
    public var isMissing = false

    public var description: String {
        if let key { return "\(file): key \"\(key)\" \(problem)" }
        return "\(file) \(problem)"
    }
}
