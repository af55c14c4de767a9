#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// The real `upgradefs manager` binary (issue 8): programs it runs see only what they are given, and programs
/// a killed manager left are ended at its next start.
@Suite(.serialized)
struct ManagerProcessDefenceTests {
    let helpers = ManagerProcessTests()

    @Test func aSecretInTheManagersEnvironmentDoesNotReachTheSFTFCheckOrApp() throws {
        let node = try TestNode()
        defer { node.remove() }
        let d = node.directory
        let configFile = d + "/node.toml"
        try node.write(node.configText("""
            heartbeat-interval = 0.5
            start = 'env > "\(d)/start.env"; exec "$UPGRADEFS_RELEASE/bin/start"'
            pass-env = ["PASSED", "NOT_SET_ANYWHERE"]
            """) + "\n[env]\nGREETING = \"hello from node.toml\"\n", to: configFile)
        try node.publish(1, sf: "#!/bin/sh\n[ \"$UPGRADEFS_PHASE\" = before ] && env > \(d)/sf.env\nexit 0\n",
                         tf: "#!/bin/sh\nenv > \(d)/tf.env\n" + TestNode.counterTF.replacingOccurrences(of: "#!/bin/sh\n", with: ""),
                         check: "#!/bin/sh\nenv > \(d)/check.env\n" + node.counterCheck.replacingOccurrences(of: "#!/bin/sh\n", with: ""))
        let manager = try ManagerProcess(node, config: configFile,
                                         environment: ["MANAGER_SECRET": "hunter2-do-not-leak", "PASSED": "passed-on"])
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "running" }, "\(manager.output)")
        try manager.stop()
        for program in ["sf", "tf", "check", "start"] {
            let env = try #require(node.read(d + "/\(program).env"), "\(program) did not run")
            let lines = Set(env.split(separator: "\n").map(String.init))
            #expect(!env.contains("hunter2-do-not-leak"), "\(program) saw the manager's secret")
            #expect(lines.contains("GREETING=hello from node.toml"), "\(program): \(env)")
            #expect(lines.contains("PASSED=passed-on"), "\(program): \(env)")
            #expect(lines.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"), "\(program): \(env)")
            #expect(lines.contains("LANG=C.UTF-8") && lines.contains("UPGRADEFS_NODE=n1"), "\(program): \(env)")
            #expect(!lines.contains { $0.hasPrefix("NOT_SET_ANYWHERE=") })
            // Nothing but the documented base, what node.toml passes, and UPGRADEFS_ variables (sh adds PWD, SHLVL, _).
            let names = Set(lines.compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
            let allowed: Set = ["PATH", "LANG", "HOME", "USER", "LOGNAME", "GREETING", "PASSED", "PWD", "SHLVL", "_", "OLDPWD"]
            #expect(names.filter { !allowed.contains($0) && !$0.hasPrefix("UPGRADEFS_") }.isEmpty, "\(program): \(names.sorted())")
        }
    }

    /// kill -9 of the manager while a TF writes into the staged state: the TF is ended by the next manager
    /// before it rolls back, and the node is wholly at the old version.
    @Test func anOrphanedTFIsEndedBeforeRecoveryAfterTheManagerIsKilled() throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = node.directory + "/node.toml"
        try node.write(node.configText("heartbeat-interval = 0.5\ncheck-timeout = 10\ntf-timeout = 600"), to: configFile)
        try node.publish(1)
        var leftovers: [pid_t] = [] // killed however the test ends
        defer { leftovers.forEach { kill(-$0, SIGKILL) } }
        var manager = try ManagerProcess(node, config: configFile)
        leftovers.append(manager.pid)
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "running" })

        let tfPidFile = node.directory + "/tf.pid", ticks = node.directory + "/tf.ticks"
        try node.publish(2, from: 1, tf: """
            #!/bin/sh
            echo $$ > \(tfPidFile)
            while :; do echo tick >> "$UPGRADEFS_STATE/ticks"; echo tick >> \(ticks); sleep 0.05; done
            """)
        #expect(Harness.waitUntil(30) { POSIXFiles.exists(tfPidFile) })
        let tf = try #require(node.read(tfPidFile).flatMap { pid_t($0.trimmingCharacters(in: .newlines)) })
        leftovers.append(tf)
        kill(manager.pid, SIGKILL)
        #expect(manager.wait(seconds: 10) == .signaled(SIGKILL))
        usleep(200_000)
        #expect(TestNode.isAlive(tf), "the TF should outlive the killed manager (that is the point of the test)")

        try node.control(2, "pause") // so that the rollback is not followed by a new attempt
        manager = try ManagerProcess(node, config: configFile)
        leftovers.append(manager.pid)
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "paused" }, "\(manager.output)")
        #expect(!TestNode.isAlive(tf), "the orphaned TF still runs")
        let log = node.log
        let ended = try #require(log.range(of: "ended process group \(tf) (tf 2) left running by the previous manager"), "\(log)")
        let rolledBack = try #require(log.range(of: "manager restarted during upgrade 2 at step staged; rolled back to 1"), "\(log)")
        #expect(ended.lowerBound < rolledBack.lowerBound, "the TF was ended after the recovery began")
        let count = node.read(ticks)?.count
        usleep(300_000)
        #expect(node.read(ticks)?.count == count, "something still writes")
        try manager.stop()
        try helpers.expectWhole(node, at: 1)
    }

    /// kill -9 of the manager while an SF runs: the SF is ended at the next start, the app started before
    /// (whose process group is the finished `start`'s) keeps running, the same process.
    @Test func anOrphanedSFIsEndedAndTheRunningAppIsLeftAlone() throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = node.directory + "/node.toml"
        try node.write(node.configText("heartbeat-interval = 0.5\nsf-timeout = 600"), to: configFile)
        try node.publish(1)
        var leftovers: [pid_t] = [] // killed however the test ends
        defer { leftovers.forEach { kill(-$0, SIGKILL) } }
        var manager = try ManagerProcess(node, config: configFile)
        leftovers.append(manager.pid)
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "running" })
        let app = try #require(node.appProcess()).0

        try node.publish(2, from: 1, sf: "#!/bin/sh\n[ \"$UPGRADEFS_PHASE\" = before ] || exit 0\necho $$ > \"$UPGRADEFS_LDB/pid\"\nexec sleep 1000\n")
        let sfPidFile = node.root + "/ldb/sf/2/pid"
        #expect(Harness.waitUntil(30) { POSIXFiles.exists(sfPidFile) })
        let sf = try #require(node.read(sfPidFile).flatMap { pid_t($0.trimmingCharacters(in: .newlines)) })
        leftovers.append(sf)
        kill(manager.pid, SIGKILL)
        #expect(manager.wait(seconds: 10) == .signaled(SIGKILL))
        #expect(TestNode.isAlive(sf))

        unlink(sfPidFile)
        try node.control(2, "pause")
        manager = try ManagerProcess(node, config: configFile)
        leftovers.append(manager.pid)
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "paused" }, "\(manager.output)")
        #expect(!TestNode.isAlive(sf), "the orphaned SF still runs")
        #expect(node.log.contains("ended process group \(sf) (sf 2) left running by the previous manager"))
        #expect(node.appProcess()?.0 == app, "the running app was killed or restarted")
        try manager.stop()
        #expect(node.appProcess()?.0 == app)
    }

    /// A program spawned just before a kill -9, not yet recorded, is found by the marker in its environment;
    /// one marked for another root is not touched.
    @Test func anUnrecordedProgramOfThisRootIsEndedAndAnotherRootsIsNot() throws {
        let node = try TestNode()
        defer { node.remove() }
        func spawn(root: String) throws -> pid_t {
            try ProcessRunner.start(Command(executable: "/bin/sleep", arguments: ["1000"],
                                            environment: [ProcessTable.markerName: root],
                                            outputPath: node.directory + "/sleep-\(UInt32.random(in: 0...UInt32.max)).out",
                                            timeoutSeconds: .infinity))
        }
        let ours = try spawn(root: node.root), theirs = try spawn(root: node.root + "-other")
        defer {
            kill(-theirs, SIGKILL)
            kill(-ours, SIGKILL)
            var status: Int32 = 0
            waitpid(theirs, &status, 0)
            waitpid(ours, &status, 0)
        }
        let manager = try node.manager()
        try manager.recover()
        #expect(Harness.waitUntil(5) { !TestNode.isAlive(ours) }, "the unrecorded program still runs")
        #expect(TestNode.isAlive(theirs), "another root's program was killed")
        #expect(node.log.contains("ended process groups \(ours) (unrecorded programs of the previous manager)"), "\(node.log)")
    }
}

extension ManagerProcess {
    /// The manager with any arguments, from any working directory (relative paths as an operator types them).
    init(_ node: TestNode, arguments: [String], environment: [String: String] = [:], workingDirectory: String? = nil,
         waitForHeartbeat: Bool = true) throws {
        let heartbeat = node.selfDirectory + "/heartbeat"
        unlink(heartbeat)
        outputPath = node.directory + "/manager-\(UInt32.random(in: 0...UInt32.max)).log"
        pid = try ProcessRunner.start(Command(executable: Harness.binary, arguments: arguments, environment: environment,
                                              workingDirectory: workingDirectory, outputPath: outputPath, timeoutSeconds: .infinity))
        if waitForHeartbeat {
            let output = outputPath
            #expect(Harness.waitUntil(30) { POSIXFiles.exists(heartbeat) }, "no heartbeat from the manager: \(String(decoding: (try? POSIXFiles.readFile(output)) ?? [], as: UTF8.self))")
        }
    }
}
