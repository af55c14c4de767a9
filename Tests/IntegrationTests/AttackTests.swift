import Foundation
import Testing
import UpgradeCore

/// The TUF attacks a node must stop, played by an attacker who controls what
/// the node downloads (a mirror or the network) but not the server's keys.
@Suite(.serialized)
struct AttackTests {
    @Test(.realMounts) func freezeAttackWithExpiredTimestampIsRefused() throws {
        let server = try ServeProcess(arguments: ["--timestamp-expiry", "3"])
        try server.publish(version: 1, files: ["payload/x": Array("x\n".utf8)])
        // The attacker freezes the repository as it is now and keeps serving it after it expires.
        let mirror = try StaticMirror(copying: server.state.appending(path: "metadata"))
        sleep(4)
        let mount = try TestMount()
        defer { mount.unmount() }
        let failure = try #require(try mount.start(mirror.source(id: server.id)))
        #expect(failure.status == 65)
        #expect(failure.log.contains("expired"), "\(failure.log)")
    }

    @Test(.realMounts) func rollbackAttackToOlderMetadataIsRefusedAndTheNewerStateKept() throws {
        let server = try ServeProcess()
        try server.publish(version: 1, files: ["payload/x": Array("one\n".utf8)])
        let oldMirror = try StaticMirror(copying: server.state.appending(path: "metadata"))
        try server.publish(version: 2, files: ["payload/x": Array("two\n".utf8)])

        let node = try TestMount()
        #expect(try node.start(server.source) == nil, "mount failed: \(node.log)")
        #expect(node.text("latest") == "2\n")
        node.unmount()

        // The node is pointed at a mirror that still shows version 1 only.
        let again = try TestMount(cache: node.cache)
        defer { again.unmount() }
        #expect(try again.start(oldMirror.source(id: server.id)) == nil, "mount from cache failed: \(again.log)")
        #expect(again.text("latest") == "2\n", "the node did not go back to version 1")
        #expect(again.log.contains("rollback"), "\(again.log)")
    }

    /// The current timestamp with the snapshot (or the current snapshot with the targets) of an earlier publish,
    /// validly signed, under the current file's name: refused, as its hash, length or version do not match.
    @Test(.realMounts, arguments: ["snapshot", "targets"])
    func mixAndMatchAttackWithAnOlderSnapshotOrTargetsIsRefused(role: String) throws {
        let server = try ServeProcess()
        try server.publish(version: 1, files: ["payload/x": Array("one\n".utf8)])
        try server.publish(version: 2, files: ["payload/x": Array("two\n".utf8)])
        let mirror = try StaticMirror(copying: server.state.appending(path: "metadata")) { metadata in
            try StaticMirror.replaceNewest(role, withAnOlderOneIn: metadata)
        }
        let mount = try TestMount()
        defer { mount.unmount() }
        let failure = try #require(try mount.start(mirror.source(id: server.id)))
        #expect(failure.status == 65)
        #expect(failure.log.contains(role), "\(failure.log)")
    }

    @Test(.realMounts) func targetsMetadataWithATamperedSignedFieldIsRefused() throws {
        let server = try ServeProcess()
        try server.publish(version: 1, files: ["payload/x": Array("one\n".utf8)])
        // Arbitrary-package attack: the attacker edits a target's hash in targets metadata without the key.
        let mirror = try StaticMirror(copying: server.state.appending(path: "metadata")) { metadata in
            let names = try FileManager.default.contentsOfDirectory(atPath: metadata.path)
            for name in names where name.hasSuffix(".targets.json") {
                let url = metadata.appending(path: name)
                let text = try String(contentsOf: url, encoding: .utf8)
                let sha = TargetFile(describing: Array("one\n".utf8)).sha256
                try text.replacingOccurrences(of: sha, with: String(sha.reversed())).write(to: url, atomically: true, encoding: .utf8)
            }
        }
        let mount = try TestMount()
        defer { mount.unmount() }
        let failure = try #require(try mount.start(mirror.source(id: server.id)))
        #expect(failure.status == 65, "\(failure.log)")
    }
}
