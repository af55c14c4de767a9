#if canImport(Glibc)
import Glibc
#endif
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// The prepared install (prepare, then commit or abort) carried out by the manager against a test node.
struct ManagerPreparedInstallTests {
    /// A node running version 1 (its manager gone), its app's pid, and version 2 published.
    func nodeRunningVersion1() throws -> (TestNode, pid_t) {
        let node = try TestNode()
        try node.publish(1)
        let manager = try node.manager()
        try manager.recover()
        #expect(try manager.tick() == .running)
        let app = try #require(node.appProcess())
        try node.publish(2, from: 1)
        return (node, app.0)
    }

    @Test func aPreparedInstallStaysPreparedWhenTheManagerDiesAndCommitsLater() throws {
        let (node, app) = try nodeRunningVersion1()
        defer { node.remove() }
        var manager: NodeManager? = try node.manager()
        #expect(try manager?.prepare(2) == .prepared)
        // Staged and dry-run, the old app still serving.
        #expect(node.read(node.root + "/gen/2.staging/state/data") == "v2 2\n")
        #expect(node.current == "gen/1" && node.appProcess()?.0 == app && node.stateData(1) == "v1 1")
        #expect(try manager?.ldb.intent()?.step == .prepared)

        // The manager dies: nothing in memory survives, the next one sees only the LDB and the disk.
        manager = nil
        let restarted = try node.manager()
        try restarted.recover()
        #expect(try restarted.ldb.intent()?.step == .prepared)
        #expect(node.current == "gen/1" && node.appProcess()?.0 == app)
        #expect(try restarted.tick() == .upgrading) // nothing new is begun meanwhile
        #expect(node.selfFile("state") == "upgrading" && node.selfFile("upgrade") == "2")
        #expect(node.log.contains("manager restarted") == false)

        #expect(try restarted.commitPrepared() == .committed)
        #expect(node.current == "gen/2" && node.appVersion == 2 && node.stateData(2) == "v2 2")
        #expect(try restarted.ldb.intent() == nil)
        #expect(try restarted.ldb.nodeVersion() == 2 && restarted.ldb.installedVersion() == 2)
        #expect(try restarted.tick() == .running)
    }

    @Test func anAbortedPreparedInstallLeavesTheOldVersionServing() throws {
        let (node, app) = try nodeRunningVersion1()
        defer { node.remove() }
        let manager = try node.manager()
        #expect(try manager.prepare(2) == .prepared)
        #expect(throws: ManagerError.self) { try manager.prepare(2) }
        #expect(try manager.abortPrepared(reason: "the fleet gave it up") == .rolledBack(.aborted))
        #expect(node.current == "gen/1" && node.appProcess()?.0 == app)
        #expect(!node.generationExists(2) && !POSIXFiles.exists(node.root + "/gen/2.staging"))
        #expect(try manager.ldb.intent() == nil && manager.ldb.record(2)?.status == .aborted)
        #expect(node.log.contains("upgrade 2 aborted: the fleet gave it up; rolled back to version 1"))
        #expect(throws: ManagerError.self) { try manager.commitPrepared() }
    }
}
