#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeCore
@testable import UpgradeServer

/// Settling, restarts and the state directory's ownership.
@Suite(.serialized) struct LifecycleTests {
    // The settle time is long compared with the pauses between writes, so
    // these tests hold on a loaded machine: only a lower bound is timed.
    static let settle = Duration.milliseconds(1500)

    /// Scans until the bundle is taken; returns the outcome and when it happened.
    static func scanUntilTaken(_ publisher: Publisher) async throws -> ([BundleOutcome], ContinuousClock.Instant) {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let outcome = await publisher.scanOnce()
            if outcome.contains(where: { if case .waiting = $0 { false } else { true } }) || ContinuousClock.now > deadline {
                return (outcome, ContinuousClock.now)
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    @Test func halfCopiedBundleWaitsForTheSettleTime() async throws {
        let fixture = ServerFixture(settleMilliseconds: 1500)
        let publisher = try fixture.makePublisher()
        // The copy is under way: manifest and part of the payload are there.
        let root = fixture.publishDirectory + "/slow"
        Files.write(root + "/upgrade.toml", "class = \"kvstore\"\nversion = 1\n")
        Files.write(root + "/payload/part1", [UInt8](repeating: 1, count: 100_000))
        #expect(await publisher.scanOnce() == [.waiting(bundle: "slow")])
        try await Task.sleep(for: .milliseconds(100))
        Files.write(root + "/payload/part2", [UInt8](repeating: 2, count: 50_000))
        let lastChange = ContinuousClock.now
        #expect(await publisher.scanOnce() == [.waiting(bundle: "slow")])
        #expect(fixture.marker("slow", ".published") == nil && fixture.marker("slow", ".rejected") == nil)
        #expect(await publisher.latestVersion == 0)

        let (outcome, takenAt) = try await Self.scanUntilTaken(publisher)
        #expect(outcome == [.published(bundle: "slow", version: 1)])
        #expect(takenAt - lastChange >= Self.settle, "taken before the tree had been quiet for the settle time")
        let targets = await publisher.targets.targets
        #expect(targets["1/payload/part2"]?.length == 50_000)
    }

    @Test func growingFileResetsTheSettleClock() async throws {
        let fixture = ServerFixture(settleMilliseconds: 1500)
        let publisher = try fixture.makePublisher()
        let root = fixture.publishDirectory + "/grow"
        Files.write(root + "/upgrade.toml", "class = \"kvstore\"\nversion = 1\n")
        Files.mkdir(root + "/payload")
        let fd = open(root + "/payload/big", O_CREAT | O_WRONLY, 0o644)
        defer { close(fd) }
        var lastChange = ContinuousClock.now
        for _ in 0..<4 {
            _ = [UInt8](repeating: 9, count: 10_000).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            lastChange = ContinuousClock.now
            #expect(await publisher.scanOnce() == [.waiting(bundle: "grow")])
            try await Task.sleep(for: .milliseconds(100))
        }
        let (outcome, takenAt) = try await Self.scanUntilTaken(publisher)
        #expect(outcome == [.published(bundle: "grow", version: 1)])
        #expect(takenAt - lastChange >= Self.settle, "taken while the file was still growing")
        #expect(await publisher.targets.targets["1/payload/big"]?.length == 40_000)
    }

    @Test func restartLosesNothingAndReprocessesNothing() async throws {
        let fixture = ServerFixture()
        do {
            let server = try await InProcessServer.start(fixture.configuration)
            fixture.bundles.make("v1", version: 1)
            fixture.bundles.drop("v1")
            fixture.bundles.make("bad", version: 1)  // same version: rejected after v1
            #expect(await eventually { fixture.marker("v1", ".published") != nil })
            fixture.bundles.drop("bad")
            #expect(await eventually { fixture.marker("bad", ".rejected") != nil })
            await server.stop()
        }
        let metadata = fixture.metadataSnapshot()
        let publishedMarker = fixture.marker("v1", ".published")
        let rejectedMarker = fixture.marker("bad", ".rejected")

        // A second server over the same directories serves the same repository.
        let server = try await InProcessServer.start(fixture.configuration)
        try await Task.sleep(for: .milliseconds(200))  // several scans
        #expect(await server.publisher.latestVersion == 1)
        #expect(fixture.metadataSnapshot() == metadata)
        #expect(fixture.marker("v1", ".published") == publishedMarker)
        #expect(fixture.marker("bad", ".rejected") == rejectedMarker)
        let timestamp = try await server.get("/metadata/timestamp.json")
        #expect(Files.sha256(timestamp.body) == metadata["timestamp.json"])
        #expect(try await server.get("/v1/id").text == fixture.keys.serverID + "\n")
        await server.stop()
    }

    @Test func bundlePublishedJustBeforeACrashGetsItsMarkerNotARejection() async throws {
        let fixture = ServerFixture()
        let first = try fixture.makePublisher()
        fixture.bundles.make("v1", version: 1)
        fixture.bundles.drop("v1")
        #expect(await first.scanOnce() == [.published(bundle: "v1", version: 1)])
        // Crash between writing timestamp.json and the marker.
        unlink(fixture.publishDirectory + "/v1.published")
        let metadata = fixture.metadataSnapshot()

        let second = try fixture.makePublisher()
        #expect(await second.scanOnce() == [.published(bundle: "v1", version: 1)])
        #expect(fixture.marker("v1", ".published") != nil)
        #expect(fixture.metadataSnapshot() == metadata)
    }

    @Test func interruptedPublishIsRedoneOnRestart() async throws {
        let fixture = ServerFixture()
        let first = try fixture.makePublisher()
        let timestampBefore = await first.timestampVersion
        // A crash after N.targets.json was written but before timestamp.json:
        // an orphan targets file, no marker.
        Files.write(fixture.metadataDirectory + "/2.targets.json", "{\"half\": \"written\"}")
        fixture.bundles.make("v1", version: 1)
        fixture.bundles.drop("v1")
        let second = try fixture.makePublisher()
        #expect(await second.timestampVersion == timestampBefore)
        #expect(await second.scanOnce() == [.published(bundle: "v1", version: 1)])
        let bytes = Files.read(fixture.metadataDirectory + "/2.targets.json")!
        let targets = try verifiedPayload(bytes, as: TargetsMetadata.self, key: fixture.keys.targets.publicKey)
        #expect(targets.targets["1/upgrade.toml"] != nil)
    }

    /// Two servers on one state directory would both publish and sign: the second is refused while
    /// the first runs, naming the holder, and starts once it stopped.
    @Test func secondServerOnTheSameStateIsRefusedWhileTheFirstRuns() async throws {
        let fixture = ServerFixture()
        let first = try await InProcessServer.start(fixture.configuration)
        await #expect {
            _ = try await InProcessServer.start(fixture.configuration)
        } throws: { error in
            "\(error)" == "another upgradefs serve (pid \(getpid())) is using the state directory "
                + "\(fixture.configuration.stateDirectory) (it holds \(fixture.configuration.stateDirectory)/serve.lock)"
        }
        #expect(try await first.get("/healthz").status == 200)
        await first.stop()
        let second = try await InProcessServer.start(fixture.configuration)
        #expect(try await second.get("/healthz").status == 200)
        await second.stop()
    }

    @Test func stateDirectoryOfAnotherKeyIsRefused() async throws {
        let fixture = ServerFixture()
        _ = try fixture.makePublisher()
        let otherKeys = ServerKeyFile.generate()
        #expect {
            try Publisher(configuration: fixture.configuration, keys: otherKeys, logger: ServerFixture.logger)
        } throws: { error in
            "\(error)".contains("belongs to another server")
        }
    }

    @Test func tamperedStateIsRefusedAtStart() async throws {
        let fixture = ServerFixture()
        _ = try fixture.makePublisher()
        var bytes = Files.read(fixture.metadataDirectory + "/timestamp.json")!
        let text = String(decoding: bytes, as: UTF8.self).replacingOccurrences(of: "\"version\":1}", with: "\"version\":7}")
        bytes = Array(text.utf8)
        Files.write(fixture.metadataDirectory + "/timestamp.json", bytes)
        #expect(throws: RepositoryError.self) { try fixture.makePublisher() }
    }
}

@Suite struct KeyFileTests {
    @Test func generatedKeyFileRoundTripsWithMode0600() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let keys = ServerKeyFile.generate()
        let path = directory.path + "/server.key"
        let previous = umask(0)
        defer { umask(previous) }
        try keys.write(to: path)
        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o7777 == 0o600)
        let loaded = try ServerKeyFile.load(from: path)
        #expect(loaded.initialRoot == keys.initialRoot)
        #expect(loaded.serverID == keys.serverID)
        #expect(loaded.serverID == ServerID.of(initialRoot: keys.initialRoot))
        #expect(ServerID.isWellFormed(loaded.serverID))
        #expect(Set([loaded.root, loaded.targets, loaded.snapshot, loaded.timestamp].map(\.publicKey)).count == 4)
        let root = try verifiedPayload(keys.initialRoot, as: RootMetadata.self, key: keys.root.publicKey)
        #expect(root.version == 1 && root.consistentSnapshot)
        #expect(abs(root.expires.timeIntervalSinceNow - 365 * 86400) < 60)
        // The file names its kind and holds the four keys and the root.
        let json = try JSONValue.parse(Files.read(path)!)
        #expect(json["kind"]?.stringValue == "upgradefs-server-key")
        #expect(json["keys"]?["timestamp"]?.stringValue == Hex.encode(keys.timestamp.secretKey))
        #expect(json["initial_root"]?.stringValue == Data(keys.initialRoot).base64EncodedString())
        // Not overwritten by accident.
        #expect(throws: ServerKeyFileError.self) { try ServerKeyFile.generate().write(to: path) }
        #expect(try ServerKeyFile.load(from: path).serverID == keys.serverID)
    }

    /// Like ssh: a key file others may read is refused, with the mode and the fix in the message.
    @Test func keyFileWithLooseModeIsRefusedWithTheFix() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.path + "/server.key"
        try ServerKeyFile.generate().write(to: path)
        chmod(path, 0o644)
        #expect { try ServerKeyFile.load(from: path) } throws: {
            "\($0)" == "server key file \(path) has mode 0644: its group or others may read or write it, so it is not used (fix: chmod 600 \(path))"
        }
        chmod(path, 0o600)
        _ = try ServerKeyFile.load(from: path)
    }

    @Test func missingAndMalformedKeyFilesSayWhy() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        #expect { try ServerKeyFile.load(from: directory.path + "/none") } throws: { "\($0)".contains("does not exist") }
        Files.write(directory.path + "/garbage", "not json", mode: 0o600)
        #expect { try ServerKeyFile.load(from: directory.path + "/garbage") } throws: { "\($0)".contains("is not a server key file") }
        // A key file whose root names other keys.
        let a = ServerKeyFile.generate(), b = ServerKeyFile.generate()
        var json = String(decoding: a.encoded(), as: UTF8.self)
        json = json.replacingOccurrences(of: Data(a.initialRoot).base64EncodedString(), with: Data(b.initialRoot).base64EncodedString())
        Files.write(directory.path + "/mixed", json, mode: 0o600)
        #expect { try ServerKeyFile.load(from: directory.path + "/mixed") } throws: { "\($0)".contains("initial_root does not name") }
    }
}
