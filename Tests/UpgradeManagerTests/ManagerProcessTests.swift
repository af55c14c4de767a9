#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// The real `upgradefs manager` binary: killed at every step of an upgrade, then restarted, the node ends
/// wholly at the old or wholly at the new version.
@Suite(.serialized)
struct ManagerProcessTests {
    @Test(arguments: UpgradeStep.oneCallInstall)
    func killedAtAnyStepTheNodeEndsWhollyAtOneVersion(step: UpgradeStep) throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = try writeConfig(node)
        try node.publish(1)
        var manager = try ManagerProcess(node, config: configFile)
        #expect(Harness.waitUntil(30) { node.selfFile("version") == "1" && node.selfFile("state") == "running" })
        let heartbeat = try #require(node.selfFile("heartbeat").flatMap(Double.init))
        #expect(abs(heartbeat - Date().timeIntervalSince1970) < 10)
        try manager.stop()

        try node.publish(2, from: 1)
        manager = try ManagerProcess(node, config: configFile, environment: ["UPGRADEFS_MANAGER_CRASH_AT": step.rawValue])
        let status = manager.wait(seconds: 60)
        #expect(status == .signaled(SIGKILL), "the manager should have killed itself at \(step.rawValue): \(manager.output)")

        // Restarted with upgrade 2 paused, so that a rollback is not followed at once by a new attempt.
        try node.control(2, "pause")
        manager = try ManagerProcess(node, config: configFile)
        let committed = step == .committed
        #expect(Harness.waitUntil(30) { node.selfFile("state") == (committed ? "running" : "paused") },
                "state \(node.selfFile("state") ?? "-") after a crash at \(step.rawValue): \(manager.output)")
        try manager.stop()
        try expectWhole(node, at: committed ? 2 : 1)
        if !committed {
            #expect(node.log.contains("manager restarted during upgrade 2 at step \(step.rawValue); rolled back to 1"))
        }

        // And the upgrade, let go again, completes.
        try node.control(2, "go")
        manager = try ManagerProcess(node, config: configFile)
        #expect(Harness.waitUntil(30) { node.selfFile("version") == "2" && node.selfFile("state") == "running" })
        try manager.stop()
        try expectWhole(node, at: 2)
    }

    @Test func heartbeatsGoOnWhileAnSFRunsAndSIGTERMStopsTheManagerAndTheSFButNotTheApp() throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = try writeConfig(node)
        try node.publish(1)
        try node.publish(2, from: 1, sf: "#!/bin/sh\necho $$ > \"$UPGRADEFS_LDB/pid\"\nexec sleep 1000\n")
        let manager = try ManagerProcess(node, config: configFile)
        let sfPidFile = node.root + "/ldb/sf/2/pid"
        #expect(Harness.waitUntil(30) { POSIXFiles.exists(sfPidFile) && node.selfFile("state") == "waiting" })
        let sf = try #require(node.read(sfPidFile).flatMap { pid_t($0.trimmingCharacters(in: .newlines)) })
        // The heartbeat goes on while the SF runs.
        let beat = try #require(node.selfFile("heartbeat").flatMap(Int64.init))
        #expect(Harness.waitUntil(10) { (node.selfFile("heartbeat").flatMap(Int64.init) ?? 0) > beat })
        let start = Date()
        try manager.stop()
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(Harness.waitUntil(3) { !TestNode.isAlive(sf) }, "the SF outlived the manager")
        #expect(node.appVersion == 1)
    }

    @Test func aRebootedNodeGetsItsAppStartedAgain() throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = try writeConfig(node)
        try node.publish(1)
        var manager = try ManagerProcess(node, config: configFile)
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "running" })
        try manager.stop()
        let (pid, _) = try #require(node.appProcess())
        kill(pid, SIGKILL) // the machine went down
        // Gone and reaped (the app's start script, like many, takes a zombie for a running process).
        #expect(Harness.waitUntil(10) { kill(pid, 0) != 0 })
        manager = try ManagerProcess(node, config: configFile)
        #expect(Harness.waitUntil(30) { node.appVersion == 1 })
        #expect(node.appProcess()?.0 != pid)
        try manager.stop()
    }

    @Test func aBadConfigFileExitsWith78NamingTheKey() throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = node.directory + "/node.toml"
        try node.write("node = \"n1\"\nclass = \"counter\"\npoll = 1\n", to: configFile)
        let manager = try ManagerProcess(node, config: configFile, waitForHeartbeat: false)
        #expect(manager.wait(seconds: 30) == .exited(78))
        #expect(manager.output.contains("upgradefs manager: \(configFile): key \"poll\" is not a known key"))
    }

    /// Release, state, `current`, the running app, the LDB and `self/version` all agree on `version`.
    func expectWhole(_ node: TestNode, at version: Int64, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(node.current == "gen/\(version)", sourceLocation: sourceLocation)
        #expect(node.stateData(version) == "v\(version) \(version)", sourceLocation: sourceLocation)
        #expect(node.read(node.root + "/gen/\(version)/release/VERSION") == "release \(version)\n", sourceLocation: sourceLocation)
        #expect(node.appVersion == version, sourceLocation: sourceLocation)
        #expect(node.selfFile("version") == "\(version)", sourceLocation: sourceLocation)
        if version == 1 {
            #expect(!node.generationExists(2) && !POSIXFiles.exists(node.root + "/gen/2.staging"), sourceLocation: sourceLocation)
        }
        let ldb = try LocalDatabase(path: node.root + "/ldb/" + LocalDatabase.fileName)
        defer { try? ldb.close() }
        #expect(try ldb.nodeVersion() == version && ldb.installedVersion() == version, sourceLocation: sourceLocation)
        #expect(try ldb.intent() == nil, sourceLocation: sourceLocation)
    }

    func writeConfig(_ node: TestNode) throws -> String {
        let path = node.directory + "/node.toml"
        try node.write(node.configText("heartbeat-interval = 0.5\ncheck-timeout = 10"), to: path)
        return path
    }
}

/// `upgradefs manager` running in the background (spawned as the manager spawns its programs).
struct ManagerProcess {
    enum Status: Equatable {
        case exited(Int32)
        case signaled(Int32)
        case running
    }

    let pid: pid_t
    let outputPath: String

    /// Starts the manager; unless told otherwise, waits for its first heartbeat (by then it handles SIGTERM).
    init(_ node: TestNode, config: String, environment: [String: String] = [:], waitForHeartbeat: Bool = true) throws {
        try self.init(node, arguments: ["manager", "--mount", node.mount, "--config", config], environment: environment,
                      waitForHeartbeat: waitForHeartbeat)
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// Waits for the process to end (at most `seconds`).
    func wait(seconds: Double) -> Status {
        let deadline = Date().addingTimeInterval(seconds)
        var status: Int32 = 0
        while Date() < deadline {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid {
                return status & 0x7f == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f)
            }
            usleep(20_000)
        }
        return .running
    }

    /// SIGTERM; the manager must exit 0 within a few seconds.
    func stop() throws {
        kill(pid, SIGTERM)
        let status = wait(seconds: 20)
        if status == .running { kill(pid, SIGKILL); _ = wait(seconds: 5) }
        #expect(status == .exited(0), "manager did not stop cleanly on SIGTERM: \(output)")
    }
}
