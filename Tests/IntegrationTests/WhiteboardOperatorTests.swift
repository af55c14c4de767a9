import Foundation
import Testing
import UpgradeCore
import UpgradeNode
import UpgradeWhiteboardClient

/// What a new operator runs into (issue 8, items 18, 21, 24), with the real binary and real mounts.
@Suite(.serialized) struct WhiteboardOperatorTests {
    /// Item 21: `enroll` (and `status`, `unlock`) with a mistyped --state must not create a new empty database.
    @Test func enrollWithAMistypedStateCreatesNoDatabaseAndExits66() throws {
        let directory = try Harness.temporaryDirectory("enroll-typo")
        defer { try? FileManager.default.removeItem(at: directory) }
        let typo = directory.appending(path: "var/lib/upgradfs").path
        let key = String(repeating: "ab", count: 32)
        let enroll = try Harness.run(Harness.binary, ["enroll", "--state", typo, "n1", key])
        #expect(enroll.status == 66)
        #expect(enroll.output.contains("no upgrade database at \(typo)/udb.sqlite"), "\(enroll.output)")
        #expect(!enroll.output.contains("enrolled n1"))
        #expect(!FileManager.default.fileExists(atPath: typo))
        for arguments in [["status", "--state", typo], ["unlock", "--state", typo, "roll", "n1"], ["enroll", "--remove", "--state", typo, "n1"]] {
            #expect(try Harness.run(Harness.binary, arguments).status == 66, "\(arguments)")
        }
        #expect(!FileManager.default.fileExists(atPath: typo))
        // Asked for explicitly (before the server's first start), it is created.
        let created = try Harness.run(Harness.binary, ["enroll", "--create", "--state", typo, "n1", key])
        #expect(created.status == 0, "\(created.output)")
        #expect(FileManager.default.fileExists(atPath: typo + "/udb.sqlite"))
    }

    /// Item 18: a mount whose node key the server does not know fails at once with a clear error and exit 67,
    /// instead of accepting writes that are never delivered.
    @Test(.realMounts) func aMountWhoseNodeKeyIsNotEnrolledFailsAtStartWithExit67() throws {
        let server = try ServeProcess()
        let keyFile = server.directory.appending(path: "n9.key").path
        #expect(try Harness.run(Harness.binary, ["keygen", "--node", "n9", "--out", keyFile]).status == 0)
        let mount = try TestMount()
        let failure = try mount.start(server.source, nodeKey: keyFile)
        #expect(failure?.status == 67, "\(failure?.log ?? "mounted")")
        #expect(failure?.log.contains("node n9 is not enrolled on the server with this key") == true, "\(failure?.log ?? "")")
    }

    /// Item 18: the same node key mounted twice at once (another cache directory) is refused (exit 73) while the
    /// first mount is live, so the first mount's writes are never refused as replays; after a clean unmount of the
    /// first, the second mounts at once.
    @Test(.realMounts) func aSecondLiveMountOfTheSameNodeKeyIsRefusedAndTheFirstKeepsDelivering() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1"])
        let second = try TestMount()
        let failure = try second.start(fleet.server.source, nodeKey: fleet.keys["n1"])
        #expect(failure?.status == 73, "\(failure?.log ?? "mounted")")
        #expect(failure?.log.contains("refusing a second live mount of the node key: node n1 is mounted elsewhere") == true,
                "\(failure?.log ?? "")")
        // The refused mount used up nothing of the live one's: its writes and lock operations go on.
        #expect(Posix.write(fleet["n1"].path("self/state"), "running\n") == 0)
        #expect(Harness.waitUntil(20) { Posix.read(fleet.operator.path("udb/nodes/n1/state")) == "running\n" })
        #expect(Posix.mkdir(fleet["n1"].path("udb/locks/roll/n1")) == 0)
        #expect(Posix.rmdir(fleet["n1"].path("udb/locks/roll/n1")) == 0)
        fleet["n1"].unmount()
        #expect(try second.start(fleet.server.source, nodeKey: fleet.keys["n1"]) == nil, "\(second.log)\nfirst:\n\(fleet["n1"].log)")
        #expect(Posix.write(second.path("self/state"), "waiting\n") == 0)
        #expect(Harness.waitUntil(20) { Posix.read(fleet.operator.path("udb/nodes/n1/state")) == "waiting\n" })
        second.unmount()
    }

    /// Items 18 and 12 on a real mount: the operator removes n1 while it is mounted; its writes are answered 401 and
    /// wait (retried with back-off, shown by `status` as a name not enrolled); once n1 is enrolled again with its key
    /// they are delivered by themselves, without a remount, and its journal's seqs go on above the old ones.
    @Test(.realMounts) func writesRefusedAsNotEnrolledAreDeliveredOnceTheNodeIsEnrolledAgainWithoutRemount() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1"])
        let state = fleet.server.state.path
        #expect(Posix.write(fleet["n1"].path("self/state"), "idle\n") == 0)
        #expect(Harness.waitUntil(20) { Posix.read(fleet.operator.path("udb/nodes/n1/state")) == "idle\n" })
        #expect(try Harness.run(Harness.binary, ["enroll", "--remove", "--state", state, "n1"]).status == 0)
        #expect(Posix.write(fleet["n1"].path("self/state"), "running\n") == 0)
        #expect(Harness.waitUntil(20) {
            let status = try? Harness.run(Harness.binary, ["status", "--state", state])
            return status?.output.contains("NOT ENROLLED") == true && status?.output.contains("unknown node n1") == true
        })
        #expect(Posix.read(fleet.operator.path("udb/nodes/n1/state")) == "idle\n")
        let key = try NodeKeyFile.load(from: try #require(fleet.keys["n1"]))
        #expect(try Harness.run(Harness.binary, ["enroll", "--state", state, "n1", Hex.encode(key.key.publicKey)]).status == 0)
        #expect(Harness.waitUntil(30) { Posix.read(fleet.operator.path("udb/nodes/n1/state")) == "running\n" })
        #expect(!fleet["n1"].log.contains("refused the write"), "\(fleet["n1"].log)")
    }

    /// Items 13, 18 and 24 on real mounts: n1 and n3 write `shared/a` as a file and `shared/a/b` while the server is
    /// down (the mount log says "cannot reach 127.0.0.1:PORT: connection refused"). Whichever arrives second is
    /// refused: its writer's later writes still arrive, its log says what was set aside, and `upgradefs status` and
    /// `/metrics` show the node whose write was refused.
    @Test(.realMounts) func aNodeWhoseWriteWasRefusedGoesOnAndShowsInStatusAndMetrics() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1", "n3"])
        let port = fleet.server.port
        fleet.server.stop(signal: SIGKILL)
        #expect(Posix.write(fleet["n1"].path("udb/shared/a"), "n1's file\n") == 0)
        #expect(Posix.mkdir(fleet["n3"].path("udb/shared/a")) == 0)
        #expect(Posix.write(fleet["n3"].path("udb/shared/a/b"), "n3's plan\n") == 0)
        for name in ["n1", "n3"] {
            #expect(Posix.write(fleet[name].path("self/state"), "running\n") == 0)
            #expect(Posix.write(fleet[name].path("self/heartbeat"), "1700000000\n") == 0)
        }
        #expect(Harness.waitUntil(20) { fleet["n1"].log.contains("cannot reach 127.0.0.1:\(port): connection refused") },
                "\(fleet["n1"].log)")
        try fleet.server.start()
        // Both nodes' later writes arrive, whichever lost.
        #expect(Harness.waitUntil(30) {
            ["n1", "n3"].allSatisfy { Posix.read(fleet.operator.path("udb/nodes/\($0)/heartbeat")) == "1700000000\n" }
        })
        let loser = Posix.read(fleet.operator.path("udb/shared/a")) == "n1's file\n" ? "n3" : "n1"
        #expect(Harness.waitUntil(20) {
            Posix.read(fleet.operator.path("udb/nodes/\(loser)/log"))?.contains("the server refused the write of shared/a") == true
        }, "\(Posix.read(fleet.operator.path("udb/nodes/\(loser)/log")) ?? "no log")")
        let status = try Harness.run(Harness.binary, ["status", "--state", fleet.server.state.path, "--json"])
        #expect(status.status == 0)
        let json = try JSONValue.parse(Array(status.output.utf8))
        let row = json["nodes"]?.arrayValue?.first { $0["name"]?.stringValue == loser }
        #expect(row?["refused_writes"]?.intValue == 1, "\(status.output)")
        #expect(fleet.server.metric("upgradefs_udb_node_refused_total{node=\"\(loser)\"}") == 1)
        // The loser's mount is killed and started again on its cache: nothing it sends is taken as a replay.
        fleet[loser].kill9()
        #expect(try fleet[loser].start(fleet.server.source, nodeKey: fleet.keys[loser]) == nil, "\(fleet[loser].log)")
        #expect(Posix.write(fleet[loser].path("self/state"), "waiting\n") == 0)
        #expect(Harness.waitUntil(30) { Posix.read(fleet.operator.path("udb/nodes/\(loser)/state")) == "waiting\n" })
        #expect(fleet.server.metric("upgradefs_udb_node_refused_total{node=\"\(loser)\"}") == 1)
        #expect(fleet.server.metric("upgradefs_udb_refused_total{reason=\"replayed\"}") == nil)
    }
    /// `systemctl stop` of a server that nodes long-poll: the polls cut short are no failure, so the log stays free of
    /// one "whiteboard request failed" error per waiting node.
    @Test func longPollsCutByAServerStopAreNotLoggedAsFailures() throws {
        let server = try ServeProcess()
        defer { try? FileManager.default.removeItem(at: server.directory) }
        let finished = LockedBox(0)
        let baseURL = server.baseURL
        for index in 0..<20 {
            Thread {
                _ = Harness.get("\(baseURL)/v1/udb/changes?after=999999&nonce=p\(index)")
                finished.withValue { $0 += 1 }
            }.start()
        }
        Thread.sleep(forTimeInterval: 1)
        server.stop()
        #expect(Harness.waitUntil(10) { finished.withValue { $0 } == 20 })
        let log = try String(contentsOf: server.logFile, encoding: .utf8)
        #expect(!log.contains("whiteboard request failed"), "\(log)")
    }
}
