import Foundation
import Testing
import Sodium
import UpgradeCore
@testable import UpgradeNode

/// A server and several nodes, each with its own key and its own real mount (`mount --node-key`), plus the
/// operator's mount: the whiteboard as scripts and operators use it.
final class WhiteboardFleet {
    let server: TestServer
    let keys: [String: String]
    let mounts: [String: TestMount]

    init(nodes: [String], serverArguments: [String] = []) throws {
        server = try TestServer(extraArguments: serverArguments)
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
    @Test func aStatusWrittenOnOneNodeIsReadOnAnotherWithinASecondOrSo() throws {
        guard Harness.canMount else { return }
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

        // A deletion travels too.
        #expect(Posix.unlink(n1.path("udb/shared/rollout-note")) == 0)
        #expect(Harness.waitUntil(10) { Posix.read(n2.path("udb/shared/rollout-note")) == nil })

        // And the server's view says the same.
        let status = try Harness.run(Harness.binary, ["status", "--state", fleet.server.state.path])
        #expect(status.output.contains("n1") && status.output.contains("upgrading"))
    }

    @Test func writesANodeMayNotMakeAreRefusedWithEACCESAndChangeNothing() throws {
        guard Harness.canMount else { return }
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

    @Test func aReplayedSignedRequestIsRefusedAndChangesNothing() throws {
        guard Harness.canMount else { return }
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
}
