import Foundation
import Testing
import UpgradeCore

/// End to end: a real server process, real FUSE mounts, real HTTP.
@Suite(.serialized)
struct MountTests {
    @Test(.realMounts) func publishedBundleReadsBackByteForByteThroughTheMount() throws {
        let server = try ServeProcess()
        let work = try Harness.temporaryDirectory("bundles")
        defer { try? FileManager.default.removeItem(at: work) }
        let files: [String: [UInt8]] = [
            "payload/bin/app": Array("#!/bin/sh\necho app 1\n".utf8),
            "payload/data/big.bin": TestBundle.randomBytes(3 << 20 + 17),
            "payload/data/empty": [],
            "payload/deep/a/b/c/d.txt": Array("deep\n".utf8),
            "sf": Array("#!/bin/sh\nexit 0\n".utf8),
        ]
        let bundle = try TestBundle(in: work, name: "app-v1", version: 1, files: files,
                                    executables: ["payload/bin/app", "sf"])
        try FileManager.default.createSymbolicLink(atPath: bundle.directory.appending(path: "payload/bin/current").path,
                                                   withDestinationPath: "app")
        #expect(try server.publish(bundle).published)

        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(server.source) == nil, "mount failed: \(mount.log)")
        #expect(mount.text("latest") == "1\n")
        #expect(mount.text("server") == server.source + "\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: mount.path("versions")) == ["1"])
        for (path, bytes) in files {
            #expect(try Harness.readFile(mount.path("versions/1/\(path)")).get() == bytes, "\(path)")
        }
        let manifest = try FileManager.default.contentsOfFile(atPath: mount.path("versions/1/upgrade.toml"))
        #expect(manifest.contains("version = 1"))
        let attributes = try FileManager.default.attributesOfItem(atPath: mount.path("versions/1/payload/bin/app"))
        #expect((attributes[.posixPermissions] as? Int).map { $0 & 0o111 != 0 } == true, "executable bit kept")
        #expect((attributes[.size] as? Int) == files["payload/bin/app"]!.count)
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: mount.path("versions/1/payload/bin/current")) == "app")
        // Read-only: nobody writes into a published bundle.
        #expect(open(mount.path("versions/1/payload/bin/app"), O_WRONLY) < 0)
        // Second read comes from the verified cache (and the page cache) and is still exact.
        Harness.dropPageCache()
        #expect(try Harness.readFile(mount.path("versions/1/payload/data/big.bin")).get() == files["payload/data/big.bin"])
    }

    @Test(.realMounts) func newUpgradeAppearsOnAMountedNodeWithinAboutASecond() throws {
        let server = try ServeProcess()
        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(server.source) == nil, "mount failed: \(mount.log)")
        #expect(mount.text("latest") == "0\n")

        for version in 1...2 {
            let payload = Array("release \(version)\n".utf8)
            try server.publish(version: version, files: ["payload/release": payload])
            let published = Date()
            #expect(Harness.waitUntil(5) { mount.text("latest") == "\(version)\n" }, "version \(version) never appeared")
            #expect(Date().timeIntervalSince(published) < 2.5, "took \(Date().timeIntervalSince(published)) s")
            #expect(try Harness.readFile(mount.path("versions/\(version)/payload/release")).get() == payload)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: mount.path("versions")).sorted() == ["1", "2"])
    }

    @Test(.realMounts) func tamperedOrTruncatedBlobOnTheServerGivesEIONeverWrongBytes() throws {
        let server = try ServeProcess()
        let work = try Harness.temporaryDirectory("bundles")
        defer { try? FileManager.default.removeItem(at: work) }
        let good = TestBundle.randomBytes(100_000)
        let other = Array("the original text\n".utf8)
        try server.publish(TestBundle(in: work, name: "v1", version: 1,
                                      files: ["payload/flipped": good, "payload/truncated": other]))
        // The attacker controls the server's disk (or a mirror): same length, one byte flipped…
        var flipped = good
        flipped[50_000] ^= 0x01
        try Data(flipped).write(to: URL(fileURLWithPath: server.blobPath(sha256: TargetFile(describing: good).sha256)))
        // …and a truncated copy.
        try Data(other.prefix(5)).write(to: URL(fileURLWithPath: server.blobPath(sha256: TargetFile(describing: other).sha256)))

        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(server.source) == nil, "mount failed: \(mount.log)")
        #expect(Harness.readFile(mount.path("versions/1/payload/flipped")) == .failure(.EIO))
        #expect(Harness.readFile(mount.path("versions/1/payload/truncated")) == .failure(.EIO))
        #expect(mount.log.contains("payload/flipped"), "a log line names the refused file: \(mount.log)")
        // Nothing unverified was left in the node's cache.
        let cached = try FileManager.default.contentsOfDirectory(atPath: mount.cache.appending(path: "blobs").path)
        #expect(!cached.contains(TargetFile(describing: good).sha256))

        // Once the server has the right bytes again, the same file reads correctly.
        try Data(good).write(to: URL(fileURLWithPath: server.blobPath(sha256: TargetFile(describing: good).sha256)))
        #expect(try Harness.readFile(mount.path("versions/1/payload/flipped")).get() == good)
    }

    @Test(.realMounts) func mountOfAServerWithTheWrongIDIsRefused() throws {
        let server = try ServeProcess()
        let impostorID = String(repeating: "a", count: 52)
        let mount = try TestMount()
        defer { mount.unmount() }
        let failure = try #require(try mount.start("127.0.0.1:\(server.port),\(impostorID)"))
        #expect(failure.status == 77)
        #expect(failure.log.contains("is not the server named by the mount source"), "\(failure.log)")
        #expect(!Harness.isMounted(mount.mountpoint.path))
    }

    @Test(.realMounts) func mountOfAnUnreachableServerWithNothingCachedIsRefused() throws {
        let mount = try TestMount()
        defer { mount.unmount() }
        let port = Harness.freePort()
        let failure = try #require(try mount.start("127.0.0.1:\(port),\(ServerID.of(initialRoot: Array("no such server".utf8)))"))
        #expect(failure.status == 69)
        #expect(failure.log.contains("cannot reach 127.0.0.1:\(port): connection refused"), "\(failure.log)")
        #expect(!failure.log.contains("errno"), "no library internals: \(failure.log)")
    }

    @Test(.realMounts) func serverOutageAndRestartWhileMounted() throws {
        let server = try ServeProcess()
        let seen = Array("read before the outage\n".utf8)
        let unseen = Array("never read before the outage\n".utf8)
        try server.publish(version: 1, files: ["payload/seen": seen, "payload/unseen": unseen])
        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(server.source) == nil, "mount failed: \(mount.log)")
        #expect(try Harness.readFile(mount.path("versions/1/payload/seen")).get() == seen)

        server.stop(signal: SIGKILL)
        Harness.dropPageCache()
        #expect(try Harness.readFile(mount.path("versions/1/payload/seen")).get() == seen, "cached content survives the outage")
        #expect(Harness.readFile(mount.path("versions/1/payload/unseen")) == .failure(.EIO), "uncached content is unavailable")
        #expect(mount.text("latest") == "1\n")

        try server.start()
        try server.publish(version: 2, files: ["payload/new": Array("two\n".utf8)])
        #expect(Harness.waitUntil(15) { mount.text("latest") == "2\n" }, "the node caught up after the restart")
        #expect(try Harness.readFile(mount.path("versions/1/payload/unseen")).get() == unseen)
        #expect(try Harness.readFile(mount.path("versions/2/payload/new")).get() == Array("two\n".utf8))
    }

    @Test(.realMounts) func remountWhileTheServerIsDownShowsTheVerifiedCache() throws {
        let server = try ServeProcess()
        let bytes = Array("kept across a node restart\n".utf8)
        try server.publish(version: 1, files: ["payload/file": bytes])
        let first = try TestMount()
        #expect(try first.start(server.source) == nil, "mount failed: \(first.log)")
        #expect(try Harness.readFile(first.path("versions/1/payload/file")).get() == bytes)
        first.unmount()

        server.stop()
        let second = try TestMount(cache: first.cache)
        defer { second.unmount() }
        #expect(try second.start(server.source) == nil, "mount from cache failed: \(second.log)")
        #expect(second.text("latest") == "1\n")
        #expect(try Harness.readFile(second.path("versions/1/payload/file")).get() == bytes)
    }

    @Test(.realMounts) func mountHelperMountsThroughMountCommand() throws {
        let server = try ServeProcess()
        try server.publish(version: 1, files: ["payload/x": Array("x\n".utf8)])
        let helper = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appending(path: "mount/mount.upgradefs").path
        let mount = try TestMount()
        defer { mount.unmount() }
        // What mount(8) runs for `mount -t upgradefs SOURCE DIR -o cache=…` (and for an fstab line).
        let result = try Harness.run(helper, [server.source, mount.mountpoint.path, "-o",
                                              "_netdev,cache=\(mount.cache.path),log=\(mount.logFile.path)"],
                                     environment: ["UPGRADEFS_BIN": Harness.binary])
        #expect(result.status == 0, "\(result.output)")
        #expect(Harness.isMounted(mount.mountpoint.path))
        #expect(mount.text("latest") == "1\n")
        let mounts = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
        #expect(mounts.contains("\(server.source) \(mount.mountpoint.path) fuse.upgradefs"))
        #expect(try Harness.run("/bin/umount", [mount.mountpoint.path]).status == 0)
        #expect(Harness.waitUntil(5) { !Harness.isMounted(mount.mountpoint.path) })

        // A failing mount reports the reason and upgradefs's exit status.
        let refused = try Harness.run(helper, ["127.0.0.1:\(server.port),\(ServerID.of(initialRoot: Array("an impostor".utf8)))",
                                               mount.mountpoint.path, "-o", "cache=\(mount.cache.path)-other,log=\(mount.logFile.path)"],
                                      environment: ["UPGRADEFS_BIN": Harness.binary])
        #expect(refused.status == 77, "\(refused.output)")
        #expect(refused.output.contains("is not the server named by the mount source"))
    }
}

extension FileManager {
    func contentsOfFile(atPath path: String) throws -> String {
        try String(contentsOfFile: path, encoding: .utf8)
    }
}
