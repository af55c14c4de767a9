import Foundation
import Sodium
import Testing
import UpgradeCore

/// Each test is named after the attack (or failure) it stops, as in
/// python-tuf's test_trusted_metadata_set.py. The repository simulator signs
/// with real Ed25519 keys; the attacker edits its payloads or replays old files.
@Suite struct TrustedMetadataSetTests {
    typealias Sim = RepositorySimulator

    // MARK: Happy path

    @Test func honestRefreshTrustsAllFourRoles() throws {
        var sim = Sim()
        sim.addTarget("1/upgrade.toml", Array("class = \"a\"\nversion = 1\n".utf8))
        sim.publish()
        let set = try sim.refreshedClient()
        #expect(set.timestamp?.version == 2)
        #expect(set.snapshot?.version == 2)
        #expect(set.targets?.version == 2)
        #expect(set.timestampBytes == sim.timestampBytes)
        #expect(set.snapshotBytes == sim.snapshotBytes)
        #expect(set.targetsBytes == sim.targetsBytes)
        #expect(set.rootBytes == sim.initialRoot)
        #expect(try set.target("1/upgrade.toml") == sim.targets.targets["1/upgrade.toml"])
        #expect(throws: TUFError.missing(what: "target nope")) { try set.target("nope") }
    }

    @Test func laterRefreshOfTheSameSetSeesNewRelease() throws {
        var sim = Sim()
        var set = try sim.refreshedClient()
        sim.addTarget("2/a", [1, 2, 3])
        sim.publish()
        try sim.refresh(&set)
        #expect(set.targets?.version == 2)
        #expect(set.targets?.targets["2/a"] != nil)
        // Nothing new: timestamp at the same version is reported as such, nothing changes.
        #expect(throws: TUFError.equalVersion(role: .timestamp)) { try set.updateTimestamp(sim.timestampBytes) }
        #expect(set.timestamp?.version == 2)
    }

    @Test func initialRootMustBeSelfSigned() throws {
        let sim = Sim()
        let forged = sim.sign(sim.root, by: .targets)
        #expect(throws: TUFError.thresholdNotMet(role: .root, got: 0, need: 1)) {
            try TrustedMetadataSet(trustedRoot: forged, verifier: SodiumVerifier(), now: sim.now)
        }
    }

    // MARK: Root updates

    @Test func rootKeyRotationIsAcceptedV1toV2toV3() throws {
        var sim = Sim()
        sim.rotateKey(of: .root)
        sim.rotateKey(of: .root)
        var set = try sim.client()
        try sim.refresh(&set)
        #expect(set.root.version == 3)
        #expect(set.rootBytes == sim.signedRoots[2])
        #expect(set.root.keys(for: .root).map(\.publicKey) == [sim.signers[.root]![0].publicKey])
    }

    @Test func rootSignedOnlyByNewKeyIsRefused() throws {
        var sim = Sim()
        let newPair = Ed25519KeyPair.generate()
        let newKey = TUFKey(ed25519PublicKey: newPair.publicKey)
        sim.root.keys[newKey.keyID] = newKey
        sim.root.roles[.root] = RoleKeys(keyIDs: [newKey.keyID], threshold: 1)
        sim.signers[.root] = [newPair]
        sim.publishRoot()  // not signed by the old root key: an attacker with only their own key
        var set = try sim.client()
        #expect(throws: TUFError.rootNotSignedByTrustedRoot(version: 2, got: 0, need: 1)) { try set.updateRoot(sim.signedRoots[1]) }
        #expect(set.root.version == 1)
    }

    @Test func rootNotSignedByItsOwnKeysIsRefused() throws {
        var sim = Sim()
        let oldSigners = sim.signers[.root]!
        let newKey = TUFKey(ed25519PublicKey: Ed25519KeyPair.generate().publicKey)
        sim.root.keys[newKey.keyID] = newKey
        sim.root.roles[.root] = RoleKeys(keyIDs: [newKey.keyID], threshold: 1)
        sim.root.version += 1
        let bytes = MetadataCodec.sign(sim.root, keys: oldSigners)  // old key only: new threshold not met
        var set = try sim.client()
        #expect(throws: TUFError.thresholdNotMet(role: .root, got: 0, need: 1)) { try set.updateRoot(bytes) }
    }

    @Test func rootVersionSkipIsRefused() throws {
        var sim = Sim()
        sim.root.version += 1  // 2, never published
        sim.publishRoot()  // 3
        var set = try sim.client()
        #expect(throws: TUFError.wrongVersion(role: .root, expected: 2, got: 3)) { try set.updateRoot(sim.signedRoots[1]) }
    }

    @Test func rootReplayIsRefused() throws {
        var sim = Sim()
        sim.publishRoot()
        var set = try sim.client()
        try set.updateRoot(sim.signedRoots[1])
        #expect(throws: TUFError.rollback(role: .root, trusted: 2, new: 1)) { try set.updateRoot(sim.signedRoots[0]) }
        #expect(throws: TUFError.rollback(role: .root, trusted: 2, new: 2)) { try set.updateRoot(sim.signedRoots[1]) }
    }

    // MARK: Timestamp

    @Test func timestampRollbackIsRefused() throws {
        var sim = Sim()
        let oldTimestamp = sim.timestampBytes
        sim.publish()
        var set = try sim.refreshedClient()
        #expect(throws: TUFError.rollback(role: .timestamp, trusted: 2, new: 1)) { try set.updateTimestamp(oldTimestamp) }
        #expect(TUFError.rollback(role: .timestamp, trusted: 2, new: 1).description == "timestamp rollback: trusted version 2, server offered 1")
        #expect(set.timestamp?.version == 2)
    }

    @Test func snapshotRollbackViaTimestampIsRefused() throws {
        var sim = Sim()
        sim.publish()
        sim.publish()
        var set = try sim.refreshedClient()  // timestamp 3 names snapshot 3
        sim.timestamp.version = 4
        sim.snapshot.version = 2
        #expect(throws: TUFError.rollback(role: .snapshot, trusted: 3, new: 2)) { try set.updateTimestamp(sim.timestampBytes) }
    }

    @Test func expiredLocalTimestampStillGuardsAgainstRollback() throws {
        var sim = Sim()
        sim.publish()
        sim.publish()
        let verifiedEarlier = try sim.refreshedClient()
        let localTimestamp = try #require(verifiedEarlier.timestampBytes)
        let oldRemote = {
            var old = sim
            old.timestamp.version = 2
            old.snapshot.version = 2
            return old.timestampBytes
        }()
        // Two days later the stored timestamp has expired; it is still the rollback baseline.
        sim.now += 2 * Sim.day
        var set = try sim.client()
        #expect(throws: TUFError.expired(role: .timestamp, expires: sim.timestamp.expires)) { try set.updateTimestamp(localTimestamp) }
        try set.updateTimestamp(localTimestamp, trusted: true)
        #expect(throws: TUFError.rollback(role: .timestamp, trusted: 3, new: 2)) { try set.updateTimestamp(oldRemote) }
    }

    @Test func expiredLocalMetadataLoadsAsTrustedBaseline() throws {
        var sim = Sim()
        sim.addTarget("2/a", [1])
        sim.publish()
        let earlier = try sim.refreshedClient()
        sim.now += 100 * Sim.day  // timestamp, snapshot and targets have all expired
        var set = try sim.client()
        #expect(throws: TUFError.expired(role: .timestamp, expires: sim.timestamp.expires)) { try set.updateTimestamp(earlier.timestampBytes!) }
        try set.updateTimestamp(earlier.timestampBytes!, trusted: true)
        #expect(throws: TUFError.expired(role: .timestamp, expires: sim.timestamp.expires)) { try set.updateSnapshot(earlier.snapshotBytes!) }
        try set.updateSnapshot(earlier.snapshotBytes!, trusted: true)
        #expect(throws: TUFError.expired(role: .timestamp, expires: sim.timestamp.expires)) { try set.updateTargets(earlier.targetsBytes!) }
        try set.updateTargets(earlier.targetsBytes!, trusted: true)
        #expect(set.targets?.targets["2/a"] != nil)
        // Trusted loading skips expiry only: a mismatched version is still refused.
        var other = try sim.client()
        try other.updateTimestamp(earlier.timestampBytes!, trusted: true)
        try other.updateSnapshot(earlier.snapshotBytes!, trusted: true)
        var stale = sim.targets
        stale.version = 1
        #expect(throws: TUFError.wrongVersion(role: .targets, expected: 2, got: 1)) { try other.updateTargets(sim.sign(stale), trusted: true) }
    }

    @Test func timestampKeyRotationDropsTrustedTimestamp() throws {
        var sim = Sim()
        for _ in 0..<4 { sim.publish() }
        var set = try sim.refreshedClient()
        #expect(set.timestamp?.version == 5)
        // The timestamp key was lost; the new one starts over at version 1.
        sim.rotateKey(of: .timestamp)
        sim.timestamp.version = 1
        try sim.refresh(&set)
        #expect(set.root.version == 2)
        #expect(set.timestamp?.version == 1)
        #expect(set.targets?.version == 5)
    }

    @Test func timestampVersionResetWithoutKeyRotationIsRollback() throws {
        // The counterpart of the test above: without a new root, version 1 is a rollback.
        var sim = Sim()
        for _ in 0..<4 { sim.publish() }
        var set = try sim.refreshedClient()
        sim.timestamp.version = 1
        #expect(throws: TUFError.rollback(role: .timestamp, trusted: 5, new: 1)) { try sim.refresh(&set) }
    }

    @Test func snapshotKeyRotationDropsTrustedSnapshot() throws {
        var sim = Sim()
        for _ in 0..<3 { sim.publish() }
        var set = try sim.refreshedClient()
        sim.rotateKey(of: .snapshot)
        sim.snapshot.version = 1
        sim.timestamp.version = 1
        try sim.refresh(&set)
        #expect(set.snapshot?.version == 1)
        #expect(set.timestamp?.version == 1)
    }

    @Test func targetsKeyRotationDropsOnlyTrustedTargets() throws {
        var sim = Sim()
        var set = try sim.refreshedClient()
        sim.rotateKey(of: .targets)
        try set.updateRoot(sim.signedRoots[1])
        #expect(set.targets == nil)
        #expect(set.timestamp != nil)
        #expect(set.snapshot != nil)
    }

    @Test func storedTimestampSignedByRotatedOutKeyIsNotTrusted() throws {
        var sim = Sim()
        let stored = sim.timestampBytes
        sim.rotateKey(of: .timestamp)
        var set = try sim.client()
        try set.updateRoot(sim.signedRoots[1])
        #expect(throws: TUFError.thresholdNotMet(role: .timestamp, got: 0, need: 1)) { try set.updateTimestamp(stored, trusted: true) }
    }

    // MARK: Snapshot

    @Test func snapshotVersionMismatchIsRefused() throws {
        // Mix-and-match: an older, validly signed snapshot served with a new timestamp.
        var sim = Sim()
        let oldSnapshot = sim.snapshotBytes
        sim.publish()
        var set = try sim.client()
        var ts = sim.timestamp
        ts.snapshot = MetaFile(version: 2)  // no hash: only the version check can catch it
        try set.updateTimestamp(sim.sign(ts))
        #expect(throws: TUFError.wrongVersion(role: .snapshot, expected: 2, got: 1)) { try set.updateSnapshot(oldSnapshot) }
        #expect(set.snapshot == nil)
    }

    @Test func snapshotHashMismatchWithTimestampIsRefused() throws {
        var sim = Sim()
        var set = try sim.client()
        try set.updateTimestamp(sim.timestampBytes)
        // Same version, validly signed (compromised snapshot key), but not what the timestamp names.
        sim.snapshot.expires += 1  // same length, different bytes
        #expect(throws: TUFError.hashMismatch(what: "snapshot version 1")) { try set.updateSnapshot(sim.snapshotBytes) }
    }

    @Test func snapshotLengthMismatchWithTimestampIsRefused() throws {
        var sim = Sim()
        var set = try sim.client()
        try set.updateTimestamp(sim.timestampBytes)
        let honest = sim.snapshotBytes
        #expect(throws: TUFError.lengthMismatch(what: "snapshot version 1", expected: Int64(honest.count), got: Int64(honest.count + 1))) {
            try set.updateSnapshot(honest + [0x20])
        }
    }

    @Test func targetsRollbackInSnapshotIsRefused() throws {
        var sim = Sim()
        sim.publish()
        sim.publish()
        var set = try sim.refreshedClient()  // snapshot 3 lists targets 3
        sim.snapshot.version = 4
        sim.snapshot.meta["targets.json"] = MetaFile(version: 2)
        sim.timestamp.version = 4
        sim.timestamp.snapshot = MetaFile(version: 4)
        try set.updateTimestamp(sim.timestampBytes)
        #expect(throws: TUFError.rollback(role: .targets, trusted: 3, new: 2)) { try set.updateSnapshot(sim.snapshotBytes) }
    }

    @Test func snapshotDroppingAListedRoleIsRefused() throws {
        var sim = Sim()
        sim.snapshot.meta["class-a.json"] = MetaFile(version: 1)
        var set = try sim.refreshedClient()
        sim.publish()
        sim.snapshot.meta["class-a.json"] = nil
        try set.updateTimestamp(sim.timestampBytes)
        #expect(throws: TUFError.missing(what: "class-a.json in snapshot version 2")) { try set.updateSnapshot(sim.snapshotBytes) }
    }

    @Test func snapshotBeforeTimestampIsRefused() throws {
        let sim = Sim()
        var set = try sim.client()
        #expect(throws: TUFError.self) { try set.updateSnapshot(sim.snapshotBytes) }
        #expect(throws: TUFError.self) { try set.updateTargets(sim.targetsBytes) }
    }

    // MARK: Targets

    @Test func targetsVersionMismatchWithSnapshotIsRefused() throws {
        var sim = Sim()
        let oldTargets = sim.targetsBytes
        sim.publish()
        var set = try sim.client()
        try set.updateTimestamp(sim.timestampBytes)
        try set.updateSnapshot(sim.snapshotBytes)
        #expect(throws: TUFError.wrongVersion(role: .targets, expected: 2, got: 1)) { try set.updateTargets(oldTargets) }
        #expect(set.targets == nil)
    }

    @Test func targetsHashMismatchWithSnapshotIsRefused() throws {
        var sim = Sim()
        var set = try sim.client()
        sim.snapshot.meta["targets.json"] = MetaFile(version: 1, describing: sim.targetsBytes)
        try set.updateTimestamp(sim.timestampBytes)
        try set.updateSnapshot(sim.snapshotBytes)
        sim.addTarget("evil", [0])
        #expect(throws: TUFError.self) { try set.updateTargets(sim.targetsBytes) }
    }

    // MARK: Expiry (freeze attacks)

    @Test func expiredRootIsRefused() throws {
        var sim = Sim()
        sim.now += 366 * Sim.day
        var set = try sim.client()
        #expect(throws: TUFError.expired(role: .root, expires: sim.root.expires)) { try set.checkFinalRoot() }
        #expect(throws: TUFError.expired(role: .root, expires: sim.root.expires)) { try set.updateTimestamp(sim.timestampBytes) }
    }

    @Test func expiredRootIsAcceptedWhenANewerRootFollows() throws {
        var sim = Sim()
        sim.root.expires = Sim.start + 1000 * Sim.day
        sim.publishRoot()
        sim.timestamp.expires = Sim.start + 400 * Sim.day
        sim.snapshot.expires = Sim.start + 400 * Sim.day
        sim.targets.expires = Sim.start + 400 * Sim.day
        sim.now += 366 * Sim.day
        var set = try sim.client()
        try sim.refresh(&set)
        #expect(set.root.version == 2)
    }

    @Test func expiredTimestampIsRefused() throws {
        var sim = Sim()
        sim.now += 2 * Sim.day
        var set = try sim.client()
        #expect(throws: TUFError.expired(role: .timestamp, expires: sim.timestamp.expires)) { try set.updateTimestamp(sim.timestampBytes) }
        #expect(set.timestamp == nil)
    }

    @Test func expiredSnapshotIsRefused() throws {
        var sim = Sim()
        sim.timestamp.expires = Sim.start + 60 * Sim.day
        sim.now += 31 * Sim.day
        var set = try sim.client()
        try set.updateTimestamp(sim.timestampBytes)
        #expect(throws: TUFError.expired(role: .snapshot, expires: sim.snapshot.expires)) { try set.updateSnapshot(sim.snapshotBytes) }
    }

    @Test func expiredTargetsIsRefused() throws {
        var sim = Sim()
        sim.timestamp.expires = Sim.start + 100 * Sim.day
        sim.snapshot.expires = Sim.start + 100 * Sim.day
        sim.now += 91 * Sim.day
        var set = try sim.client()
        try set.updateTimestamp(sim.timestampBytes)
        try set.updateSnapshot(sim.snapshotBytes)
        #expect(throws: TUFError.expired(role: .targets, expires: sim.targets.expires)) { try set.updateTargets(sim.targetsBytes) }
    }

    @Test func timestampThatExpiresWhileKeptBlocksFurtherUpdates() throws {
        var sim = Sim()
        var set = try sim.refreshedClient()
        set.now += 2 * Sim.day
        #expect(throws: TUFError.expired(role: .timestamp, expires: sim.timestamp.expires)) { try set.updateSnapshot(sim.snapshotBytes) }
    }

    // MARK: Freeze by replaying what the client already trusts (an equal version is not "nothing new" once expired)

    @Test func freezeByReplayingTheTrustedTimestampAfterItExpiredIsReported() throws {
        var sim = Sim()
        sim.addTarget("2/a", [1])
        sim.publish()
        var set = try sim.refreshedClient()
        #expect(set.firstExpired() == nil)
        // The attacker keeps answering with the node's own current timestamp after it expired.
        set.now += 2 * Sim.day
        #expect(throws: TUFError.expired(role: .timestamp, expires: sim.timestamp.expires)) { try sim.refresh(&set) }
        // What was verified stays on show, and the client can say since when it is stale.
        #expect(set.timestamp?.version == 2)
        #expect(set.targets?.targets["2/a"] != nil)
        #expect(set.firstExpired()?.role == .timestamp)
        #expect(set.firstExpired()?.expires == sim.timestamp.expires)
    }

    @Test func freezeWithAFreshEqualTimestampOverAnExpiredSnapshotIsReported() throws {
        var sim = Sim()
        sim.timestamp.expires = Sim.start + 60 * Sim.day
        var set = try sim.refreshedClient()
        set.now += 31 * Sim.day  // the snapshot (30 d) expired, the timestamp (60 d) did not
        #expect(throws: TUFError.expired(role: .snapshot, expires: sim.snapshot.expires)) { try set.updateTimestamp(sim.timestampBytes) }
        #expect(set.firstExpired()?.role == .snapshot)
    }

    @Test func freezeWithAFreshEqualTimestampOverExpiredTargetsIsReported() throws {
        var sim = Sim()
        sim.timestamp.expires = Sim.start + 100 * Sim.day
        sim.snapshot.expires = Sim.start + 100 * Sim.day
        var set = try sim.refreshedClient()
        set.now += 91 * Sim.day  // targets (90 d) expired
        #expect(throws: TUFError.expired(role: .targets, expires: sim.targets.expires)) { try set.updateTimestamp(sim.timestampBytes) }
    }

    @Test func freezeWithANewTimestampNamingTheSameExpiredSnapshotAndTargetsIsRefused() throws {
        // A newer timestamp that names the snapshot version already trusted: the snapshot is fetched and judged
        // again, so its expiry (and then the targets') is checked like any other's.
        var sim = Sim()
        sim.timestamp.expires = Sim.start + 100 * Sim.day
        var set = try sim.refreshedClient()
        sim.timestamp.version += 1
        set.now += 31 * Sim.day
        #expect(throws: TUFError.expired(role: .snapshot, expires: sim.snapshot.expires)) { try sim.refresh(&set) }
        sim.snapshot.expires = Sim.start + 100 * Sim.day
        sim.snapshot.version += 1
        sim.timestamp.version += 1
        set.now += 60 * Sim.day
        #expect(throws: TUFError.expired(role: .targets, expires: sim.targets.expires)) { try sim.refresh(&set) }
    }

    @Test func refreshThatStoppedHalfWayGoesOnWhenTheSameTimestampIsOfferedAgain() throws {
        var sim = Sim()
        var set = try sim.refreshedClient()
        sim.addTarget("2/a", [1])
        sim.publish()
        try set.updateTimestamp(sim.timestampBytes)  // then the snapshot download failed
        #expect(!set.isComplete)
        try sim.refresh(&set)  // the same timestamp again: not "nothing new", the snapshot and targets follow
        #expect(set.isComplete)
        #expect(set.targets?.targets["2/a"] != nil)
        #expect(throws: TUFError.equalVersion(role: .timestamp)) { try set.updateTimestamp(sim.timestampBytes) }
    }

    @Test func targetsKeyRotationRefetchesTargetsUnderAnUnchangedTimestamp() throws {
        var sim = Sim()
        sim.addTarget("1/a", [1])
        sim.publish()
        var set = try sim.refreshedClient()
        sim.rotateKey(of: .targets)
        try sim.refresh(&set)
        #expect(set.targets?.targets["1/a"] != nil, "targets signed by the new key were fetched again")
    }

    // MARK: Signatures

    @Test func tamperedMetadataIsRefused() throws {
        let sim = Sim()
        var file = String(decoding: sim.timestampBytes, as: UTF8.self)
        file = file.replacingOccurrences(of: "\"version\":1}", with: "\"version\":9}")
        #expect(file.contains("\"version\":9"))
        var set = try sim.client()
        #expect(throws: TUFError.badSignature(role: .timestamp)) { try set.updateTimestamp(Array(file.utf8)) }
    }

    @Test func signatureByWrongKeyIsRefused() throws {
        let sim = Sim()
        var set = try sim.client()
        let bySnapshotKey = sim.sign(sim.timestamp, by: .snapshot)
        #expect(throws: TUFError.thresholdNotMet(role: .timestamp, got: 0, need: 1)) { try set.updateTimestamp(bySnapshotKey) }
        let byStranger = MetadataCodec.sign(sim.timestamp, keys: [Ed25519KeyPair.generate()])
        #expect(throws: TUFError.thresholdNotMet(role: .timestamp, got: 0, need: 1)) { try set.updateTimestamp(byStranger) }
        let unsigned = MetadataCodec.sign(sim.timestamp, keys: [])
        #expect(throws: TUFError.thresholdNotMet(role: .timestamp, got: 0, need: 1)) { try set.updateTimestamp(unsigned) }
    }

    @Test func signaturesBelowThresholdAreRefused() throws {
        var sim = Sim()
        let second = Ed25519KeyPair.generate()
        let secondKey = TUFKey(ed25519PublicKey: second.publicKey)
        sim.root.keys[secondKey.keyID] = secondKey
        sim.root.roles[.timestamp]!.keyIDs.append(secondKey.keyID)
        sim.root.roles[.timestamp]!.threshold = 2
        sim.publishRoot()
        var set = try sim.client()
        try set.updateRoot(sim.signedRoots[1])
        #expect(throws: TUFError.thresholdNotMet(role: .timestamp, got: 1, need: 2)) { try set.updateTimestamp(sim.timestampBytes) }
        // The same key's signature twice does not count twice.
        let file = try JSONValue.parse(sim.timestampBytes)
        let sig = file["signatures"]!.arrayValue![0]
        let doubled = JSONValue.object(["signatures": [sig, sig], "signed": file["signed"]!]).canonicalBytes()
        #expect(throws: TUFError.self) { try set.updateTimestamp(doubled) }
        sim.signers[.timestamp]!.append(second)
        try set.updateTimestamp(sim.timestampBytes)
        #expect(set.timestamp?.version == 1)
    }

    @Test func wrongMetadataTypeIsRefused() throws {
        let sim = Sim()
        var set = try sim.client()
        #expect(throws: TUFError.wrongType(expected: .timestamp, got: "snapshot")) { try set.updateTimestamp(sim.snapshotBytes) }
    }

    @Test func unknownFieldsSurviveVerification() throws {
        var sim = Sim()
        sim.timestamp.unrecognized["x-future"] = ["nested": [1, "two"]]
        var set = try sim.client()
        try set.updateTimestamp(sim.timestampBytes)
        #expect(set.timestamp?.unrecognized["x-future"] == ["nested": [1, "two"]])
    }

    // MARK: Target content

    @Test func targetWithWrongHashIsRefused() throws {
        var sim = Sim()
        sim.addTarget("1/payload/bin/app", Array("good".utf8))
        sim.publish()
        let set = try sim.refreshedClient()
        let file = try set.target("1/payload/bin/app")
        try TargetVerifier.verify(Array("good".utf8), against: file, what: "1/payload/bin/app")
        #expect(throws: TUFError.hashMismatch(what: "1/payload/bin/app")) {
            try TargetVerifier.verify(Array("evil".utf8), against: file, what: "1/payload/bin/app")
        }
    }

    @Test func targetLongerThanDeclaredIsCutOff() throws {
        // Endless data: the verifier refuses the first piece that goes past the signed length.
        let file = TargetFile(describing: [UInt8](repeating: 7, count: 100))
        var verifier = TargetVerifier(expected: file, what: "t")
        try verifier.update([UInt8](repeating: 7, count: 60))
        try verifier.update([UInt8](repeating: 7, count: 40))
        #expect(throws: TUFError.lengthMismatch(what: "t", expected: 100, got: 101)) { try verifier.update([7]) }
        let piece: [UInt8] = [7, 7]
        try piece.withUnsafeBytes { buffer in
            #expect(throws: TUFError.lengthMismatch(what: "t", expected: 100, got: 102)) { try verifier.update(buffer) }
        }
        #expect(verifier.count == 100)
        try verifier.finish()
    }

    @Test func targetShorterThanDeclaredIsRefused() throws {
        let file = TargetFile(describing: [UInt8](repeating: 7, count: 100))
        var verifier = TargetVerifier(expected: file, what: "t")
        try verifier.update([UInt8](repeating: 7, count: 99))
        #expect(throws: TUFError.lengthMismatch(what: "t", expected: 100, got: 99)) { try verifier.finish() }
    }
}
