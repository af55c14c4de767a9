#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer

/// Bundles dropped into a live server's publish directory come out as signed
/// TUF metadata and content that verify.
@Suite(.serialized) struct PublishTests {
    @Test func droppedBundleIsPublishedAndVerifies() async throws {
        let fixture = ServerFixture()
        let server = try await InProcessServer.start(fixture.configuration)
        defer { Task { await server.stop() } }

        fixture.bundles.make("app-v1", version: 1, extraManifest: "description = \"first\"\n") { root in
            Files.write(root + "/payload/bin/suid", "x", mode: 0o4755)
            Files.symlink("bin/app", at: root + "/payload/current")
            Files.symlink("../README", at: root + "/payload/bin/readme-link")  // climbs, but stays in the payload
            Files.mkdir(root + "/payload/empty")
        }
        fixture.bundles.drop("app-v1")
        #expect(await eventually { fixture.marker("app-v1", ".published") != nil })
        #expect(fixture.marker("app-v1", ".published")?.hasPrefix("version 1\n") == true)
        #expect(fixture.marker("app-v1", ".published")?.contains("dropped set-uid/set-gid/sticky bits: payload/bin/suid") == true)

        // Root 1 is the key file's exact bytes, and names the server.
        let root = try await server.get("/metadata/1.root.json")
        #expect(root.status == 200)
        #expect(root.headers["content-type"] == "application/json")
        #expect(root.body == fixture.keys.initialRoot)
        #expect(try await server.get("/v1/id").text == fixture.keys.serverID + "\n")
        #expect(try await server.get("/healthz").text == "ok")

        // timestamp → snapshot → targets, each signed by its own key.
        let timestampBytes = try await server.get("/metadata/timestamp.json").body
        let timestamp = try verifiedPayload(timestampBytes, as: TimestampMetadata.self, key: fixture.keys.timestamp.publicKey)
        let snapshotBytes = try await server.get("/metadata/\(timestamp.snapshot.version).snapshot.json").body
        try timestamp.snapshot.verify(snapshotBytes, what: "snapshot")
        #expect(timestamp.snapshot.length != nil && timestamp.snapshot.sha256 != nil)
        let snapshot = try verifiedPayload(snapshotBytes, as: SnapshotMetadata.self, key: fixture.keys.snapshot.publicKey)
        let targetsResponse = try await server.get("/metadata/\(snapshot.targetsMeta.version).targets.json")
        #expect(targetsResponse.headers["content-length"] == String(targetsResponse.body.count))
        let targets = try verifiedPayload(targetsResponse.body, as: TargetsMetadata.self, key: fixture.keys.targets.publicKey)
        #expect(targets.version == snapshot.targetsMeta.version)

        #expect(Set(targets.targets.keys) == [
            "1/upgrade.toml", "1/payload/bin/app", "1/payload/bin/suid", "1/payload/README", "1/sf",
            "1/payload/current", "1/payload/bin/readme-link",
        ])
        // Every target's content is served under <dir>/<hash>.<name> and matches.
        let staged = fixture.publishDirectory + "/app-v1/"
        for (path, target) in targets.targets {
            let slash = path.lastIndex(of: "/")!
            let url = "/targets/\(path[..<slash])/\(target.sha256).\(path[path.index(after: slash)...])"
            let blob = try await server.get(url)
            #expect(blob.status == 200, "\(url)")
            #expect(blob.headers["content-type"] == "application/octet-stream")
            #expect(blob.headers["content-length"] == String(target.length))
            #expect(Int64(blob.body.count) == target.length)
            #expect(Files.sha256(blob.body) == target.sha256, "\(path)")
            let inBundle = String(path.dropFirst(2))
            let info = target.custom?["upgradefs"]
            if info?["symlink"]?.boolValue == true {
                let text = try FileManager.default.destinationOfSymbolicLink(atPath: staged + inBundle)
                #expect(blob.text == text)
                #expect(info?["target"]?.stringValue == text)
                #expect(info?["mode"]?.intValue == 0o777)
            } else {
                #expect(blob.body == Files.read(staged + inBundle))
            }
        }
        let info = { (path: String) in targets.targets[path]?.custom?["upgradefs"] }
        #expect(info("1/payload/bin/app")?["mode"]?.intValue == 0o755)
        #expect(info("1/payload/bin/suid")?["mode"]?.intValue == 0o755)  // set-uid dropped
        #expect(info("1/payload/README")?["mode"]?.intValue == 0o644)
        #expect(info("1/upgrade.toml")?["bundle"]?.stringValue == "app-v1")
        let manifest = info("1/upgrade.toml")?["manifest"]
        #expect(manifest?["class"]?.stringValue == "kvstore")
        #expect(manifest?["version"]?.intValue == 1)
        #expect(manifest?["description"]?.stringValue == "first")
        #expect(manifest?["payload"]?.stringValue == "payload")
        #expect(manifest?["sf"]?.stringValue == "sf")
        #expect(manifest?["tf"] == .null && manifest?["from_version"] == .null)

        // The content store holds the blobs under blobs/sha256/xx/<hex>.
        let app = targets.targets["1/payload/bin/app"]!
        #expect(Files.exists("\(fixture.configuration.stateDirectory)/blobs/sha256/\(app.sha256.prefix(2))/\(app.sha256)"))
        await server.stop()
    }

    @Test func secondVersionKeepsTheFirstAndBumpsEveryRole() async throws {
        let fixture = ServerFixture()
        let publisher = try fixture.makePublisher()
        fixture.bundles.make("v1", version: 1)
        fixture.bundles.drop("v1")
        #expect(await publisher.scanOnce() == [.published(bundle: "v1", version: 1)])
        let first = await publisher.targets
        fixture.bundles.make("v2", version: 2, extraManifest: "from-version = 1\n")
        fixture.bundles.drop("v2")
        #expect(await publisher.scanOnce() == [.published(bundle: "v2", version: 2)])
        let second = await publisher.targets
        #expect(second.version == first.version + 1)
        for (path, target) in first.targets { #expect(second.targets[path] == target) }
        #expect(second.targets["2/payload/bin/app"] != nil)
        #expect(await publisher.latestVersion == 2)
        #expect(await publisher.timestampVersion == 3)
        // All versions of targets and snapshot stay on disk (consistent snapshots).
        for name in ["1.targets.json", "2.targets.json", "3.targets.json", "1.snapshot.json", "3.snapshot.json"] {
            #expect(Files.exists(fixture.metadataDirectory + "/" + name), "\(name)")
        }
    }

    @Test func notifyLongPollReturnsOnPublish() async throws {
        let fixture = ServerFixture()
        let server = try await InProcessServer.start(fixture.configuration)
        let current = await server.publisher.timestampVersion

        // Already newer: answers at once.
        #expect(try await server.get("/v1/notify?after=0").text == "\(current)\n")

        let started = Date()
        async let poll = server.get("/v1/notify?after=\(current)")
        try await Task.sleep(for: .milliseconds(300))
        fixture.bundles.make("v1", version: 1)
        fixture.bundles.drop("v1")
        let answer = try await poll
        #expect(answer.status == 200)
        #expect(Int(answer.text.trimmingCharacters(in: .newlines))! > current)
        #expect(Date().timeIntervalSince(started) < 2.5, "woken by the publish, not by the 3 s timeout")
        await server.stop()
    }

    @Test func notifyAnswersTheCurrentVersionAfterTheTimeout() async throws {
        let fixture = ServerFixture()
        var configuration = fixture.configuration
        configuration.notifyTimeoutMilliseconds = 300
        let server = try await InProcessServer.start(configuration)
        let current = await server.publisher.timestampVersion
        let started = Date()
        #expect(try await server.get("/v1/notify?after=\(current)").text == "\(current)\n")
        #expect(Date().timeIntervalSince(started) >= 0.25)
        await server.stop()
    }

    @Test func timestampIsResignedWhenHalfItsLifetimeIsGone() async throws {
        let fixture = ServerFixture(timestampExpirySeconds: 10)
        let publisher = try fixture.makePublisher()
        let before = await publisher.timestampVersion
        #expect(await publisher.refreshIfNeeded(now: Date()) == [])
        #expect(await publisher.refreshIfNeeded(now: Date().addingTimeInterval(6)) == [.timestamp])
        #expect(await publisher.timestampVersion == before + 1)
        let bytes = Files.read(fixture.metadataDirectory + "/timestamp.json")!
        let timestamp = try verifiedPayload(bytes, as: TimestampMetadata.self, key: fixture.keys.timestamp.publicKey)
        #expect(timestamp.version == before + 1)
        #expect(timestamp.expires.timeIntervalSinceNow > 14)

        // Snapshot after half of 30 days; targets after half of 90; root when < 30 days remain.
        let renewed = await publisher.refreshIfNeeded(now: Date().addingTimeInterval(16 * 86400))
        #expect(renewed == [.snapshot, .timestamp])
        let all = await publisher.refreshIfNeeded(now: Date().addingTimeInterval(340 * 86400))
        #expect(all == [.root, .targets, .snapshot, .timestamp])
        let root2 = try verifiedPayload(Files.read(fixture.metadataDirectory + "/2.root.json")!, as: RootMetadata.self, key: fixture.keys.root.publicKey)
        #expect(root2.version == 2)
    }
}
