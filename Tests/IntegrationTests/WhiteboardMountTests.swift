import Foundation
import Testing
import Sodium
import UpgradeCore
@testable import UpgradeNode
@testable import UpgradeWhiteboardClient

/// A server and several nodes, each with its own key and its own real mount (`mount --node-key`), plus the
/// operator's mount: the whiteboard as scripts and operators use it.
final class WhiteboardFleet {
    let server: ServeProcess
    let keys: [String: String]
    let mounts: [String: TestMount]

    init(nodes: [String], serverArguments: [String] = []) throws {
        server = try ServeProcess(arguments: serverArguments)
        var keys: [String: String] = [:]
        var mounts: [String: TestMount] = [:]
        for name in nodes + [WhiteboardRules.operatorName] {
            keys[name] = try server.enroll(name)
            let mount = try TestMount()
            if let failure = try mount.start(server.source, nodeKey: keys[name]) {
                throw HarnessError("mount of \(name) failed (\(failure.status)): \(failure.log)")
            }
            mounts[name] = mount
        }
        self.keys = keys
        self.mounts = mounts
    }

    subscript(node: String) -> TestMount { mounts[node]! }
    var `operator`: TestMount { mounts[WhiteboardRules.operatorName]! }
}

/// POSIX calls on the mount that report the errno a script would see.
enum Posix {
    /// Writes `text` to `path` as a shell redirection does (`>` or `>>`); 0 or the errno.
    @discardableResult
    static func write(_ path: String, _ text: String, append: Bool = false) -> Int32 {
        let fd = open(path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
        guard fd >= 0 else { return errno }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let writeErrno = written < 0 ? errno : 0
        let closed = close(fd) == 0 ? 0 : errno
        return writeErrno != 0 ? writeErrno : closed
    }

    static func mkdir(_ path: String) -> Int32 { Glibc.mkdir(path, 0o755) == 0 ? 0 : errno }
    static func rmdir(_ path: String) -> Int32 { Glibc.rmdir(path) == 0 ? 0 : errno }
    static func unlink(_ path: String) -> Int32 { Glibc.unlink(path) == 0 ? 0 : errno }

    static func read(_ path: String) -> String? {
        try? Harness.readFile(path).map { String(decoding: $0, as: UTF8.self) }.get()
    }

    static func list(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted()
    }
}

@Suite(.serialized) struct WhiteboardMountTests {
    @Test(.realMounts) func aStatusWrittenOnOneNodeIsReadOnAnotherWithinASecondOrSo() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1", "n2"])
        let n1 = fleet["n1"], n2 = fleet["n2"]
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: n1.path("self")) == "udb/nodes/n1")
        #expect(Posix.list(n1.path("udb")) == ["locks", "nodes", "shared", "upgrades"])

        #expect(Posix.write(n1.path("self/state"), "upgrading\n") == 0)
        #expect(Posix.write(n1.path("self/version"), "3\n") == 0)
        #expect(Posix.write(n1.path("self/heartbeat"), "\(Int(Date().timeIntervalSince1970))\n") == 0)
        #expect(Posix.write(n1.path("self/log"), "first line\n", append: true) == 0)
        #expect(Posix.write(n1.path("self/log"), "second line\n", append: true) == 0)
        #expect(Posix.write(n1.path("udb/shared/rollout-note"), "wave 1 done\n") == 0)
        // Read-your-writes on the writing node at once, from the journal.
        #expect(Posix.read(n1.path("self/state")) == "upgrading\n")
        #expect(Posix.read(n1.path("self/log")) == "first line\nsecond line\n")

        #expect(Harness.waitUntil(10) {
            Posix.read(n2.path("udb/nodes/n1/log")) == "first line\nsecond line\n"
                && Posix.read(n2.path("udb/shared/rollout-note")) == "wave 1 done\n"
        })
        #expect(Posix.read(n2.path("udb/nodes/n1/state")) == "upgrading\n")
        #expect(Posix.read(n2.path("udb/nodes/n1/version")) == "3\n")
        #expect(Posix.list(n2.path("udb/nodes")).contains("n1"))
        #expect(Posix.list(n2.path("udb/nodes/n1")) == ["heartbeat", "log", "state", "version"])
        // grep across nodes, as an operator would.
        let grep = try Harness.run("/bin/sh", ["-c", "grep -l upgrading \(fleet.operator.path("udb"))/nodes/*/state"])
        #expect(grep.output.contains("nodes/n1/state"))

        // A deletion travels too; writing the name again on n2 right after (while n2's kernel may still know the
        // name) makes the file again.
        #expect(Posix.unlink(n1.path("udb/shared/rollout-note")) == 0)
        #expect(Harness.waitUntil(10) { Posix.read(n2.path("udb/shared/rollout-note")) == nil })
        #expect(Posix.write(n2.path("udb/shared/rollout-note"), "wave 2\n") == 0)
        #expect(Harness.waitUntil(10) { Posix.read(n1.path("udb/shared/rollout-note")) == "wave 2\n" })

        // And the server's view says the same.
        let status = try Harness.run(Harness.binary, ["status", "--state", fleet.server.state.path])
        #expect(status.output.contains("n1") && status.output.contains("upgrading"))
    }

    @Test(.realMounts) func writesANodeMayNotMakeAreRefusedWithEACCESAndChangeNothing() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1", "n2"])
        let n1 = fleet["n1"], n2 = fleet["n2"]
        #expect(Posix.write(n1.path("self/state"), "running\n") == 0)
        #expect(Posix.write(fleet.operator.path("udb/upgrades/7/control"), "pause\n") == 0)
        #expect(Harness.waitUntil(10) {
            Posix.read(n2.path("udb/nodes/n1/state")) == "running\n" && Posix.read(n1.path("udb/upgrades/7/control")) == "pause\n"
        })

        // Another node's files, the operator's control file, a computed summary: EACCES, nothing changes.
        #expect(Posix.write(n2.path("udb/nodes/n1/state"), "failed\n") == EACCES)
        #expect(Posix.write(n2.path("udb/nodes/n1/log"), "forged\n", append: true) == EACCES)
        #expect(Posix.unlink(n2.path("udb/nodes/n1/state")) == EACCES)
        #expect(Posix.write(n1.path("udb/upgrades/7/control"), "go\n") == EACCES)
        #expect(Posix.write(n2.path("udb/locks/roll/capacity"), "5\n") == EACCES)
        // The operator may not forge a node's heartbeat or log either.
        #expect(Posix.write(fleet.operator.path("udb/nodes/n1/heartbeat"), "1\n") == EACCES)
        // Content that breaks a file's format: EINVAL.
        #expect(Posix.write(n1.path("self/state"), "Not One Word\n") == EINVAL)
        #expect(Posix.write(n1.path("self/version"), "-1\n") == EINVAL)
        #expect(Posix.write(fleet.operator.path("udb/upgrades/7/control"), "maybe\n") == EINVAL)
        // Bundles stay read-only.
        #expect(Posix.write(n1.path("latest"), "9\n") == EROFS || Posix.write(n1.path("latest"), "9\n") == EACCES)

        usleep(500_000)
        #expect(Posix.read(n1.path("self/state")) == "running\n")
        #expect(Posix.read(n2.path("udb/nodes/n1/state")) == "running\n")
        #expect(Posix.read(n2.path("udb/upgrades/7/control")) == "pause\n")
        #expect(Posix.read(n1.path("udb/nodes/n1/heartbeat")) == nil)
        // The node-side refusal is logged, naming the rule.
        #expect(n2.log.contains("n2 may not write nodes/n1/state"))
    }

    /// A hostile n2 takes `locks/roll/n1` before n1 does: refused (EACCES), so n1's own mkdir acquires instead of
    /// answering EEXIST, which an SF reads as "I hold it already"; n2 cannot release n1's holder either.
    @Test(.realMounts) func aLockHolderNamedAfterAnotherNodeIsRefusedOnTheMount() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1", "n2"])
        let n1 = fleet["n1"], n2 = fleet["n2"]
        #expect(Posix.mkdir(n2.path("udb/locks/roll/n1")) == EACCES)
        #expect(Posix.mkdir(n1.path("udb/locks/roll/n1")) == 0)
        // n2 releases only what it sees: once n1's holder has reached n2's view, n2 may still not remove it.
        #expect(Harness.waitUntil(10) { FileManager.default.fileExists(atPath: n2.path("udb/locks/roll/n1")) })
        #expect(Posix.rmdir(n2.path("udb/locks/roll/n1")) == EACCES)
        #expect(Posix.rmdir(n1.path("udb/locks/roll/n1")) == 0)
    }

    @Test(.realMounts) func aReplayedSignedRequestIsRefusedAndChangesNothing() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1", "n2"])
        // What an attacker on the network captured: two of n1's signed writes, in order.
        let key = try NodeKeyFile.load(from: fleet.keys["n1"]!)
        let scratch = try Harness.temporaryDirectory("captured")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let journal = try WhiteboardJournal(path: scratch.appending(path: "j.sqlite").path, node: "n1", key: key.key)
        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("waiting\n".utf8))
        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("running\n".utf8))
        let captured = try journal.pending()
        let url = "\(fleet.server.baseURL)/v1/udb/apply"
        #expect(Harness.post(url, captured[0].body)?.status == 200)
        #expect(Harness.post(url, captured[1].body)?.status == 200)
        #expect(Harness.waitUntil(10) { Posix.read(fleet["n2"].path("udb/nodes/n1/state")) == "running\n" })

        // Replaying the older request is refused; the file keeps the newer content.
        let replay = Harness.post(url, captured[0].body)
        #expect(replay?.status == 409)
        let replayAnswer = String(decoding: replay?.body ?? Data(), as: UTF8.self)
        #expect(replayAnswer.contains("replayed"))
        // A request with a forged signature is refused too.
        var forged = captured[1].body
        if let index = forged.lastIndex(of: UInt8(ascii: "a")) { forged[index] = UInt8(ascii: "b") }
        #expect(Harness.post(url, forged)?.status == 401 || Harness.post(url, forged)?.status == 400)
        usleep(500_000)
        #expect(Posix.read(fleet["n2"].path("udb/nodes/n1/state")) == "running\n")
        #expect(fleet.server.metric("upgradefs_udb_refused_total{reason=\"replayed\"}") == 1)
    }

    /// Six nodes race for a lock of capacity 2, twenty rounds: never more than two holders, always exactly two
    /// winners, the losers fail with EBUSY.
    @Test(.realMounts) func lockCapacityHoldsUnderConcurrentMkdirFromManyNodes() throws {
        let names = (1...6).map { "n\($0)" }
        let fleet = try WhiteboardFleet(nodes: names)
        #expect(Posix.write(fleet.operator.path("udb/locks/roll/capacity"), "2\n") == 0)
        #expect(Harness.waitUntil(10) { names.allSatisfy { Posix.read(fleet[$0].path("udb/locks/roll/capacity")) == "2\n" } })

        for round in 1...20 {
            let results = LockedBox<[String: Int32]>([:])
            let paths = names.map { fleet[$0].path("udb/locks/roll/\($0)") }
            DispatchQueue.concurrentPerform(iterations: names.count) { index in
                let result = Posix.mkdir(paths[index])
                results.withValue { $0[names[index]] = result }
            }
            let winners = results.value.filter { $0.value == 0 }.map(\.key).sorted()
            let losers = results.value.filter { $0.value != 0 }
            #expect(winners.count == 2, "round \(round): winners \(winners)")
            #expect(losers.values.allSatisfy { $0 == EBUSY }, "round \(round): \(losers)")
            // Every node sees exactly the winners as holders.
            #expect(Harness.waitUntil(10) {
                names.allSatisfy { name in Posix.list(fleet[name].path("udb/locks/roll")) == ["capacity"] + winners }
            }, "round \(round)")
            for winner in winners {
                #expect(Posix.rmdir(fleet[winner].path("udb/locks/roll/\(winner)")) == 0)
            }
        }
        // Holding twice and releasing what is not held have their own errnos.
        #expect(Posix.mkdir(fleet["n1"].path("udb/locks/solo/n1")) == 0)
        #expect(Posix.mkdir(fleet["n1"].path("udb/locks/solo/n1")) == EEXIST)
        #expect(Posix.mkdir(fleet["n2"].path("udb/locks/solo/n2")) == EBUSY)  // default capacity 1
        #expect(Posix.rmdir(fleet["n2"].path("udb/locks/solo/n1")) == EACCES)  // n1's holder, not n2's
        #expect(Posix.rmdir(fleet["n2"].path("udb/locks/solo/n2")) == ENOENT)
        // The operator releases a stuck holder (n1 has just looked at its holder, so its kernel knew the name).
        var info = stat()
        #expect(stat(fleet["n1"].path("udb/locks/solo/n1"), &info) == 0)
        #expect(Posix.rmdir(fleet.operator.path("udb/locks/solo/n1")) == 0)
        #expect(Posix.mkdir(fleet["n2"].path("udb/locks/solo/n2")) == 0)
        // n1 asks again at once: full — not "File exists", which an SF would take for "I hold it".
        #expect(Posix.mkdir(fleet["n1"].path("udb/locks/solo/n1")) == EBUSY)
        // Acquire and release in a tight loop: the change feed's answers about earlier rounds, arriving late, never
        // hide the holder just acquired (each rmdir finds it).
        let tight = fleet["n3"].path("udb/locks/tight/n3")
        var failures: [Int32] = []
        for _ in 1...200 {
            let acquired = Posix.mkdir(tight), released = Posix.rmdir(tight)
            if acquired != 0 || released != 0 { failures.append(acquired != 0 ? acquired : released) }
        }
        #expect(failures.isEmpty, "errnos: \(failures)")
    }

    @Test(.realMounts) func aHolderWhoseHeartbeatStopsIsReleasedAfterTheTTL() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1", "n2"], serverArguments: ["--lock-ttl", "2"])
        #expect(Posix.write(fleet["n1"].path("self/heartbeat"), "\(Int(Date().timeIntervalSince1970))\n") == 0)
        #expect(Posix.mkdir(fleet["n1"].path("udb/locks/roll/n1")) == 0)
        #expect(Posix.mkdir(fleet["n2"].path("udb/locks/roll/n2")) == EBUSY)
        // n1 goes silent: within TTL + the 5 s sweep its holder is gone and n2 gets the lock.
        #expect(Harness.waitUntil(15) { Posix.mkdir(fleet["n2"].path("udb/locks/roll/n2")) == 0 })
        #expect(Harness.waitUntil(10) { Posix.list(fleet["n1"].path("udb/locks/roll")) == ["n2"] })
        #expect(fleet.server.log.contains("lock holder released: its node's heartbeat is older than the lock TTL"))
        #expect(fleet.server.metric("upgradefs_udb_ttl_releases_total") == 1)
    }

    @Test(.realMounts) func lockOperationsFailAtOnceWithEHOSTUNREACHWhileTheServerIsDown() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1"])
        #expect(Posix.mkdir(fleet["n1"].path("udb/locks/held/n1")) == 0)
        fleet.server.stop(signal: SIGKILL)
        let started = Date()
        #expect(Posix.mkdir(fleet["n1"].path("udb/locks/roll/n1")) == EHOSTUNREACH)
        #expect(Posix.rmdir(fleet["n1"].path("udb/locks/held/n1")) == EHOSTUNREACH)
        #expect(Date().timeIntervalSince(started) < 5, "a lock operation must not wait for the server")
        // File writes still succeed at once: they are journaled.
        #expect(Posix.write(fleet["n1"].path("self/state"), "waiting\n") == 0)
        try fleet.server.start()
        #expect(Harness.waitUntil(20) { Posix.mkdir(fleet["n1"].path("udb/locks/roll/n1")) == 0 })
    }

    /// kill -9 of the server while nodes keep writing; after the restart every write arrives, once.
    @Test(.realMounts) func writesMadeWhileTheServerIsDownArriveExactlyOnceAfterItRestarts() throws {
        let names = ["n1", "n2", "n3"]
        let fleet = try WhiteboardFleet(nodes: names)
        for name in names { #expect(Posix.write(fleet[name].path("self/state"), "running\n") == 0) }
        #expect(Harness.waitUntil(10) { names.allSatisfy { Posix.read(fleet.operator.path("udb/nodes/\($0)/state")) == "running\n" } })

        fleet.server.stop(signal: SIGKILL)
        var writes = 0
        for name in names {
            let node = fleet[name]
            for line in 1...5 {
                #expect(Posix.write(node.path("self/log"), "\(name) line \(line)\n", append: true) == 0)
                writes += 1
            }
            #expect(Posix.write(node.path("self/state"), "upgrading\n") == 0)
            #expect(Posix.write(node.path("self/version"), "2\n") == 0)
            #expect(Posix.write(node.path("udb/shared/\(name)-done"), "yes\n") == 0)
            writes += 3
        }
        try fleet.server.start()
        let expectedLog = { (name: String) in (1...5).map { "\(name) line \($0)\n" }.joined() }
        #expect(Harness.waitUntil(40) {
            names.allSatisfy { name in
                Posix.read(fleet.operator.path("udb/nodes/\(name)/log")) == expectedLog(name)
                    && Posix.read(fleet.operator.path("udb/nodes/\(name)/version")) == "2\n"
                    && Posix.read(fleet.operator.path("udb/shared/\(name)-done")) == "yes\n"
            }
        })
        // Exactly once: the restarted server applied each pending write one time.
        let applied = (fleet.server.metric("upgradefs_udb_writes_total{op=\"put\"}") ?? -1)
        #expect(applied == Double(writes))
        let status = try Harness.run(Harness.binary, ["status", "--state", fleet.server.state.path, "--json"])
        #expect(status.output.contains("upgrading"))
    }

    /// The mount process is killed with writes still in its journal; the restarted mount shows them and delivers them.
    @Test(.realMounts) func aNodeMountRestartedWithPendingWritesLosesNothing() throws {
        let fleet = try WhiteboardFleet(nodes: ["n1", "n2"])
        let n1 = fleet["n1"]
        fleet.server.stop(signal: SIGKILL)
        #expect(Posix.write(n1.path("self/state"), "upgrading\n") == 0)
        #expect(Posix.write(n1.path("self/log"), "before the crash\n", append: true) == 0)
        n1.kill9()
        #expect(!Harness.isMounted(n1.mountpoint.path))

        // The mount comes back from its cache while the server is still down, showing the pending writes.
        #expect(try n1.start(fleet.server.source, nodeKey: fleet.keys["n1"]) == nil)
        #expect(Posix.read(n1.path("self/state")) == "upgrading\n")
        #expect(Posix.write(n1.path("self/log"), "after the restart\n", append: true) == 0)
        try fleet.server.start()
        #expect(Harness.waitUntil(40) {
            Posix.read(fleet["n2"].path("udb/nodes/n1/log")) == "before the crash\nafter the restart\n"
                && Posix.read(fleet["n2"].path("udb/nodes/n1/state")) == "upgrading\n"
        })
    }

    /// A network cut between one node and the server: the node keeps writing (each write durable at once), its lock
    /// operations fail with EHOSTUNREACH, nobody sees its writes; after the cut heals every write arrives, in order, once.
    @Test(.realMounts) func writesMadeDuringANetworkCutArriveInOrderExactlyOnceAfterItHeals() throws {
        let fleet = try WhiteboardFleet(nodes: ["n2"])
        let proxy = try CutProxy(to: fleet.server.port)
        let n1Key = try fleet.server.enroll("n1")
        let n1 = try TestMount()
        #expect(try n1.start("127.0.0.1:\(proxy.port),\(fleet.server.id)", nodeKey: n1Key) == nil)
        #expect(Posix.write(n1.path("self/state"), "running\n") == 0)
        #expect(Harness.waitUntil(10) { Posix.read(fleet["n2"].path("udb/nodes/n1/state")) == "running\n" })
        let appliedBefore = fleet.server.metric("upgradefs_udb_writes_total{op=\"put\"}") ?? -1

        proxy.cut()
        for step in ["stopping", "transforming", "starting", "checking"] {
            #expect(Posix.write(n1.path("self/state"), "\(step)\n") == 0)
            #expect(Posix.write(n1.path("self/log"), "\(step)\n", append: true) == 0)
        }
        #expect(Posix.mkdir(n1.path("udb/locks/roll/n1")) == EHOSTUNREACH)
        usleep(1_000_000)
        #expect(Posix.read(fleet["n2"].path("udb/nodes/n1/state")) == "running\n")

        proxy.heal()
        #expect(Harness.waitUntil(60) {
            Posix.read(fleet["n2"].path("udb/nodes/n1/log")) == "stopping\ntransforming\nstarting\nchecking\n"
                && Posix.read(fleet["n2"].path("udb/nodes/n1/state")) == "checking\n"
        })
        #expect(fleet.server.metric("upgradefs_udb_writes_total{op=\"put\"}") == appliedBefore + 8)
        // The mkdir that failed during the cut may have reached the server once it healed; the node fenced it, so
        // nobody holds the lock (a ghost holder would block the fleet while n1's heartbeat keeps it alive).
        #expect(Harness.waitUntil(10) { Posix.list(fleet["n2"].path("udb/locks/roll")).isEmpty })
        #expect(Posix.mkdir(n1.path("udb/locks/roll/n1")) == 0)
        n1.unmount()
    }
}
