import Foundation
import Testing
import UpgradeCore

/// Attacks on the mount's TUF client and verified cache that got through before (issue 8, items 1, 2, 3
/// and 17), played with real servers, real mounts and a static mirror an attacker controls.
@Suite(.serialized)
struct MountAttackTests {
    /// Item 1: the attacker answers with the node's own current timestamp after it has expired. Nothing
    /// newer gets through (every later upgrade is hidden), but the node says so: `stale` names the expiry,
    /// a log line reports it, and what was verified stays on show.
    @Test(.realMounts) func freezeByReplayingTheNodesOwnExpiredTimestampIsReportedInStale() throws {
        let server = try ServeProcess(arguments: ["--timestamp-expiry", "12"])
        try server.publish(version: 1, files: ["payload/x": Array("x\n".utf8)])
        // The attacker freezes the repository as it is now (a static mirror: no /v1/notify) and never changes it.
        let mirror = try StaticMirror(copying: server.state.appending(path: "metadata"))
        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(mirror.source(id: server.id)) == nil, "mount failed: \(mount.log)")
        #expect(mount.text("stale") == "", "fresh metadata is not stale")
        try server.publish(version: 2, files: ["payload/x": Array("y\n".utf8)])

        #expect(Harness.waitUntil(40) { mount.text("stale")?.isEmpty == false }, "stale never said so: \(mount.log)")
        let stale = mount.text("stale") ?? ""
        #expect(stale.hasPrefix("expired since "), "\(stale)")
        #expect(stale.contains("(timestamp metadata)"), "\(stale)")
        #expect(stale.contains("last refresh: timestamp expired"), "\(stale)")
        #expect(mount.log.contains("has expired and the server offers nothing newer"), "\(mount.log)")
        // What was verified is still shown, and nothing the attacker served replaced it.
        #expect(mount.text("latest") == "1\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mount.path("versions")) == ["1"])
    }

    /// Item 1, the class around it: a node restarted while the attacker keeps replaying shows `stale`
    /// from the start.
    @Test(.realMounts) func remountFromCacheUnderAFreezeIsStaleFromTheStart() throws {
        let server = try ServeProcess(arguments: ["--timestamp-expiry", "4"])
        try server.publish(version: 1, files: ["payload/x": Array("x\n".utf8)])
        let first = try TestMount()
        #expect(try first.start(server.source) == nil, "mount failed: \(first.log)")
        first.unmount()
        // The node's own (now trusted) timestamp, replayed after it expired.
        let mirror = try StaticMirror(copying: server.state.appending(path: "metadata")) { metadata in
            try FileManager.default.removeItem(at: metadata.appending(path: "timestamp.json"))
            try FileManager.default.copyItem(at: first.cache.appending(path: "metadata/timestamp.json"),
                                             to: metadata.appending(path: "timestamp.json"))
        }
        sleep(5)
        let again = try TestMount(cache: first.cache)
        defer { again.unmount() }
        #expect(try again.start(mirror.source(id: server.id)) == nil, "mount from cache failed: \(again.log)")
        #expect(again.text("stale")?.hasPrefix("expired since ") == true, "\(again.text("stale") ?? "nil")")
        #expect(again.text("latest") == "1\n")
    }

    /// Around item 1: a refresh that stops half way (the snapshot the new timestamp names cannot be had) must
    /// leave the node's cache as it was, so that after a restart with the server away it shows what it verified.
    @Test(.realMounts) func restartWithTheServerAwayAfterAHalfFinishedRefreshShowsWhatWasVerified() throws {
        let server = try ServeProcess()
        try server.publish(version: 1, files: ["payload/x": Array("x\n".utf8)])
        let first = try TestMount()
        #expect(try first.start(server.source) == nil, "mount failed: \(first.log)")
        first.unmount()
        try server.publish(version: 2, files: ["payload/x": Array("y\n".utf8)])
        let halfMirror = try StaticMirror(copying: server.state.appending(path: "metadata")) { metadata in
            let timestamp = try JSONValue.parse(Array(try Data(contentsOf: metadata.appending(path: "timestamp.json"))))
            let named = try #require(timestamp["signed"]?["meta"]?["snapshot.json"]?["version"]?.intValue)
            try FileManager.default.removeItem(at: metadata.appending(path: "\(named).snapshot.json"))
        }
        let second = try TestMount(cache: first.cache)
        #expect(try second.start(halfMirror.source(id: server.id)) == nil, "mount from cache failed: \(second.log)")
        #expect(second.text("latest") == "1\n")
        second.unmount()

        let third = try TestMount(cache: first.cache)
        defer { third.unmount() }
        #expect(try third.start("127.0.0.1:\(Harness.freePort()),\(server.id)") == nil, "mount from cache failed: \(third.log)")
        #expect(third.text("latest") == "1\n", "\(third.log)")
    }

    /// Item 3: a plain static mirror answers /v1/notify with 404; the mount used to retry about 70 times a
    /// second. It now polls the timestamp at a modest pace.
    @Test(.realMounts) func staticMirrorWithoutNotifyIsPolledAtAModestRateNotHammered() throws {
        let server = try ServeProcess()
        try server.publish(version: 1, files: ["payload/x": Array("x\n".utf8)])
        let mirror = try StaticMirror(copying: server.state.appending(path: "metadata"))
        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(mirror.source(id: server.id)) == nil, "mount failed: \(mount.log)")
        let before = mirror.requests.count
        sleep(12)
        let during = Array(mirror.requests.dropFirst(before))
        #expect(during.count <= 8, "\(during.count) requests in 12 s: \(during.prefix(20))")
        #expect(during.contains { $0.contains("/metadata/timestamp.json") }, "it still polls: \(during)")
        #expect(mount.log.contains("polling its timestamp"), "\(mount.log)")
        #expect(mount.text("latest") == "1\n")
        #expect(mount.text("stale") == "")
    }

    /// Item 2: a cache filled from server A, used with a mount source naming server B, used to show A's
    /// content under B's id. It is refused, naming both ids and the fix.
    @Test(.realMounts) func cacheFilledFromServerAIsRefusedWhenTheSourceNamesServerB() throws {
        let serverA = try ServeProcess()
        let serverB = try ServeProcess()
        try serverA.publish(TestBundle(in: serverA.staging, name: "a1", version: 1, files: ["payload/who": Array("A\n".utf8)]))
        let nodeA = try TestMount()
        #expect(try nodeA.start(serverA.source) == nil, "mount failed: \(nodeA.log)")
        #expect(try Harness.readFile(nodeA.path("versions/1/payload/who")).get() == Array("A\n".utf8))
        nodeA.unmount()

        let nodeB = try TestMount(cache: nodeA.cache)
        defer { nodeB.unmount() }
        let failure = try #require(try nodeB.start(serverB.source), "B mounted over A's cache: server says \(nodeB.text("server") ?? "?")")
        #expect(failure.status == 78, "\(failure.log)")
        #expect(failure.log.contains(serverA.id) && failure.log.contains(serverB.id), "\(failure.log)")
        #expect(failure.log.contains("own cache"), "\(failure.log)")
        #expect(!Harness.isMounted(nodeB.mountpoint.path))
        // A's cache is untouched and still A's.
        let again = try TestMount(cache: nodeA.cache)
        defer { again.unmount() }
        #expect(try again.start(serverA.source) == nil, "A's own cache no longer mounts: \(again.log)")
        #expect(again.text("server") == serverA.source + "\n")
    }

    /// Item 17: root alters a cached file while the mount serves it. A handle that was open gives EIO, a
    /// fresh open gets the verified bytes again (fetched anew), and with the server away, EIO — never the
    /// altered bytes.
    @Test(.realMounts) func cachedFileAlteredOnDiskWhileMountedIsNeverServed() throws {
        let server = try ServeProcess()
        let good = TestBundle.randomBytes(300_000)
        try server.publish(version: 1, files: ["payload/data": good])
        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(server.source) == nil, "mount failed: \(mount.log)")
        let file = mount.path("versions/1/payload/data")
        #expect(try Harness.readFile(file).get() == good)
        let blob = mount.cache.appending(path: "blobs/\(TargetFile(describing: good).sha256)").path
        var st = stat()
        #expect(stat(blob, &st) == 0 && st.st_mode & 0o777 == 0o444, "cached content is read-only")

        let held = open(file, O_RDONLY)
        defer { close(held) }
        var byte: UInt8 = 0
        #expect(pread(held, &byte, 1, 0) == 1)
        Self.alterInPlace(blob)
        Harness.dropPageCache()
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = pread(held, &buffer, buffer.count, 100_000)
        #expect(n < 0 && errno == EIO, "an open handle read \(n) bytes of the altered file")
        #expect(try Harness.readFile(file).get() == good, "a fresh open is verified again")
        #expect(mount.log.contains("changed on disk after it was verified"), "\(mount.log)")

        server.stop(signal: SIGKILL)
        Self.alterInPlace(blob)
        Harness.dropPageCache()
        #expect(Harness.readFile(file) == .failure(.EIO), "the altered file was served")
    }

    /// Writes into a cached file in place, keeping its length and modification time (as root can).
    static func alterInPlace(_ path: String) {
        var st = stat()
        stat(path, &st)
        let fd = open(path, O_WRONLY)
        defer { close(fd) }
        let evil = [UInt8](repeating: 0x41, count: 200_000)
        _ = evil.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 50_000) }
        var times = [st.st_mtim, st.st_mtim]
        futimens(fd, &times)
    }
}
