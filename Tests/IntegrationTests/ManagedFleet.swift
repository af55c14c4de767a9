import Foundation
import Testing
import UpgradeCore

/// A fleet as operators run it, on one machine: a server, and per node its own key, real mount
/// (`mount --node-key`), node.toml, root directory, `upgradefs manager` and instance of the example `counter` app;
/// plus the operator's mount. Bundles come from examples/app with SFs from examples/sf.
final class ManagedFleet: @unchecked Sendable {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let app = repository.appending(path: "examples/app")

    let fleet: WhiteboardFleet
    let names: [String]
    let directory: URL
    /// TF and check wrappers append `begin NODE SECONDS` / `end NODE SECONDS` here (see `bundle`).
    let recorder: String
    private var managers: [String: ChildProcess] = [:]
    private var bundleCount = 0

    init(nodes: [String], serverArguments: [String] = []) throws {
        fleet = try WhiteboardFleet(nodes: nodes, serverArguments: serverArguments)
        names = nodes
        directory = try Harness.temporaryDirectory("fleet")
        recorder = directory.appending(path: "events").path
        FileManager.default.createFile(atPath: recorder, contents: nil)
        for node in nodes { try configure(node) }
    }

    var server: ServeProcess { fleet.server }
    var `operator`: TestMount { fleet.operator }
    subscript(node: String) -> TestMount { fleet[node] }

    func root(_ node: String) -> String { directory.appending(path: "root-\(node)").path }
    func configFile(_ node: String) -> String { directory.appending(path: "\(node).toml").path }
    func managerLog(_ node: String) -> String { directory.appending(path: "manager-\(node).log").path }

    private func configure(_ node: String) throws {
        let text = """
            node = "\(node)"
            class = "counter"
            root = "\(root(node))"
            poll-interval = 0.2
            heartbeat-interval = 1
            check-timeout = 10
            sf-timeout = 20

            """
        try text.write(toFile: configFile(node), atomically: true, encoding: .utf8)
    }

    // MARK: managers

    func startManager(_ node: String, environment: [String: String] = [:]) throws {
        managers[node] = try ChildProcess(Harness.binary, ["manager", "--mount", fleet[node].mountpoint.path,
                                                           "--config", configFile(node)],
                                          environment: environment, log: managerLog(node))
    }

    func startManagers() throws { for node in names { try startManager(node) } }

    /// Waits for the manager to end by itself (e.g. killed by crash injection); its exit status or nil.
    func waitForManagerExit(_ node: String, seconds: Double) -> Int32? {
        guard let manager = managers[node] else { return nil }
        let status = manager.wait(seconds: seconds)
        if status != nil { managers[node] = nil }
        return status
    }

    func stopManager(_ node: String, signal: Int32 = SIGTERM) {
        managers.removeValue(forKey: node)?.stop(signal: signal, within: 30, "manager of \(node)")
    }

    // MARK: what the fleet says

    func whiteboard(_ node: String, _ file: String) -> String? {
        Posix.read(fleet.operator.path("udb/nodes/\(node)/\(file)"))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func state(_ node: String) -> String? { whiteboard(node, "state") }
    func version(_ node: String) -> Int? { whiteboard(node, "version").flatMap { Int($0) } }

    /// Waits until every node in `nodes` (default: all) has `state` at `version`.
    @discardableResult
    func waitFor(_ nodes: [String]? = nil, state: String, version: Int, seconds: Double = 90) -> Bool {
        Harness.waitUntil(seconds) { (nodes ?? names).allSatisfy { self.state($0) == state && self.version($0) == version } }
    }

    /// What the node's `current` link points at (`gen/N`), nil if none.
    func current(_ node: String) -> String? {
        try? FileManager.default.destinationOfSymbolicLink(atPath: root(node) + "/current")
    }

    /// The counter app of the node's current generation: `bin/counter ARGS`.
    func counter(_ node: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let generation = root(node) + "/current"
        return try Harness.run(generation + "/release/bin/counter", arguments, environment: [
            "UPGRADEFS_RELEASE": generation + "/release", "UPGRADEFS_STATE": generation + "/state",
        ])
    }

    /// `bin/counter status` as `version=V pid=P count=C` fields, nil when not running.
    func appStatus(_ node: String) -> [String: String]? {
        guard let (status, output) = try? counter(node, ["status"]), status == 0 else { return nil }
        return Dictionary(output.split(whereSeparator: \.isWhitespace).compactMap { field -> (String, String)? in
            let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
            return parts.count == 2 ? (parts[0], parts[1]) : nil
        }, uniquingKeysWith: { $1 })
    }

    /// Sends `count` requests to the node's app; returns the count it reports after the last.
    @discardableResult
    func request(_ node: String, count: Int = 1) throws -> Int? {
        var last: Int?
        for _ in 0..<count {
            let (status, output) = try counter(node, ["incr"])
            guard status == 0 else { throw HarnessError("counter incr on \(node) failed: \(output)") }
            last = Int(output.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        return last
    }

    // MARK: bundles

    /// A copy of `examples/app/<source>` with the SF `sf` from examples/sf (settings baked in), renumbered if asked,
    /// whose TF and check record when they begin and pass, and may be made to fail on some nodes.
    func bundle(_ source: String, sf: String, settings: [String] = [], version: Int? = nil, from: Int? = nil,
                tfFailsOn: Set<String> = [], checkFailsOn: Set<String> = [], tfSeconds: Double = 0) throws -> URL {
        bundleCount += 1
        let out = directory.appending(path: "bundles/\(bundleCount)-\(source)")
        try FileManager.default.createDirectory(at: out.deletingLastPathComponent(), withIntermediateDirectories: true)
        var arguments: [String] = []
        if let version { arguments += ["-v", "\(version)"] }
        if let from { arguments += ["-f", "\(from)"] }
        arguments += [Self.app.appending(path: source).path, sf, out.path] + settings
        let made = try Harness.run(Self.app.appending(path: "make-bundle.sh").path, arguments)
        guard made.status == 0 else { throw HarnessError("make-bundle.sh failed: \(made.output)") }
        try wrap(out, "tf", failsOn: tfFailsOn, prologue: "echo \"begin $UPGRADEFS_NODE $(date +%s.%N)\" >> \(recorder)\n"
                    + (tfSeconds > 0 ? "sleep \(tfSeconds)\n" : ""))
        try wrap(out, "check", failsOn: checkFailsOn, epilogue: "echo \"end $UPGRADEFS_NODE $(date +%s.%N)\" >> \(recorder)\n")
        return out
    }

    /// Replaces `bundle/name` with a wrapper around it (a no-op TF when the bundle has none).
    private func wrap(_ bundle: URL, _ name: String, failsOn: Set<String>, prologue: String = "", epilogue: String = "") throws {
        let original = bundle.appending(path: name)
        let real = bundle.appending(path: name + ".real")
        let hasOriginal = FileManager.default.fileExists(atPath: original.path)
        if hasOriginal { try FileManager.default.moveItem(at: original, to: real) }
        let failing = failsOn.sorted().joined(separator: "|")
        let script = """
            #!/bin/sh
            # test wrapper: records timing, injects failures
            \(prologue)\(failing.isEmpty ? "" : "case $UPGRADEFS_NODE in \(failing)) echo \"injected \(name) failure on $UPGRADEFS_NODE\"; exit 1 ;; esac\n")\
            \(hasOriginal ? "./\(name).real \"$@\" || exit $?\n" : "")\(epilogue)exit 0

            """
        try script.write(to: original, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: original.path)
    }

    @discardableResult
    func publish(_ bundle: URL) throws -> Bool {
        let published = try server.publish(TestBundle(existing: bundle))
        if !published.published { Issue.record("bundle \(bundle.lastPathComponent) rejected: \(published.marker)") }
        return published.published
    }

    /// Intervals [TF began, check passed] per upgrade, from the recorder.
    func recordedIntervals() -> [(node: String, begin: Double, end: Double)] {
        let lines = ((try? String(contentsOfFile: recorder, encoding: .utf8)) ?? "").split(separator: "\n")
        var open: [String: Double] = [:]
        var intervals: [(String, Double, Double)] = []
        for line in lines {
            let fields = line.split(separator: " ").map(String.init)
            guard fields.count == 3, let time = Double(fields[2]) else { continue }
            if fields[0] == "begin" { open[fields[1]] = time }
            if fields[0] == "end", let begin = open.removeValue(forKey: fields[1]) { intervals.append((fields[1], begin, time)) }
        }
        return intervals
    }

    /// Stops managers, then every app instance (of every generation), then the mounts and server (via `fleet`).
    func shutdown() {
        for node in Array(managers.keys) { stopManager(node, signal: SIGKILL) }
        for node in names {
            let generations = (try? FileManager.default.contentsOfDirectory(atPath: root(node) + "/gen")) ?? []
            for generation in generations where !generation.contains(".") {
                let path = root(node) + "/gen/" + generation
                _ = try? Harness.run(path + "/release/bin/stop", [], environment: [
                    "UPGRADEFS_RELEASE": path + "/release", "UPGRADEFS_STATE": path + "/state",
                    "UPGRADEFS_NODE": node, "UPGRADEFS_VERSION": generation,
                ])
            }
        }
    }

    deinit {
        shutdown()
        try? FileManager.default.removeItem(at: directory)
    }
}

extension TestBundle {
    /// A bundle directory made elsewhere.
    init(existing directory: URL) {
        self.directory = directory
    }
}
