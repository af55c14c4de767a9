import Foundation
import Sodium
import Testing
import UpgradeCore

@Suite struct TUFMetadataTests {
    static let expires = Date(timeIntervalSince1970: 1_893_456_000)  // 2030-01-01T00:00:00Z

    @Test func keyIDMatchesSecuresystemslib() {
        // hashlib.sha256(encode_canonical({"keytype":"ed25519","scheme":"ed25519","keyval":{"public":bytes(range(32)).hex()}}).encode())
        let key = TUFKey(ed25519PublicKey: (0..<32).map { UInt8($0) })
        #expect(key.keyID == "b5b3929e2eb1cd5fb401e8d8dd00a903bfac256d06eae9cc38a51d344e14583f")
    }

    @Test func datesUseTheTUFFormat() {
        #expect(TUFDate.format(Self.expires) == "2030-01-01T00:00:00Z")
        #expect(TUFDate.format(Date(timeIntervalSince1970: 1_700_000_000.9)) == "2023-11-14T22:13:20Z")
        #expect(TUFDate.format(Date(timeIntervalSince1970: 951_782_400)) == "2000-02-29T00:00:00Z")
        #expect(TUFDate.format(Date(timeIntervalSince1970: 1_700_000_000.25), milliseconds: true) == "2023-11-14T22:13:20.250Z")
        #expect(TUFDate.format(Date(timeIntervalSince1970: 951_782_400), milliseconds: true) == "2000-02-29T00:00:00.000Z")
        #expect(TUFDate.parse("2030-01-01T00:00:00Z") == Self.expires)
        #expect(TUFDate.parse("2000-02-29T00:00:00Z") == Date(timeIntervalSince1970: 951_782_400))
        for bad in [
            "2030-01-01T00:00:00", "2030-01-01 00:00:00Z", "2030-01-01T00:00:00.000Z", "2030-01-01T00:00:00+00:00", "2030-13-01T00:00:00Z",
            "2030-02-29T00:00:00Z", "2030-01-32T00:00:00Z", "2030-01-01T24:00:00Z", "2030-1-01T00:00:00Z", "",
        ] {
            #expect(TUFDate.parse(bad) == nil, "\(bad)")
        }
    }

    @Test func initialRootHasOneKeyPerRoleAndThresholdOne() {
        let keys = (0..<4).map { _ in TUFKey(ed25519PublicKey: Ed25519KeyPair.generate().publicKey) }
        let root = RootMetadata.initial(rootKey: keys[0], targetsKey: keys[1], snapshotKey: keys[2], timestampKey: keys[3], expires: Self.expires)
        #expect(root.version == 1)
        #expect(root.consistentSnapshot)
        #expect(root.specVersion == "1.0.31")
        #expect(root.keys.count == 4)
        #expect(root.roles[.snapshot] == RoleKeys(keyIDs: [keys[2].keyID], threshold: 1))
        #expect(root.keys(for: .timestamp) == [keys[3]])
    }

    @Test func signedFilesDecodeToWhatWasSigned() throws {
        let pair = Ed25519KeyPair.generate()
        let key = TUFKey(ed25519PublicKey: pair.publicKey)
        let root = RootMetadata.initial(rootKey: key, targetsKey: key, snapshotKey: key, timestampKey: key, expires: Self.expires)
        let targets = TargetsMetadata(
            version: 3, expires: Self.expires,
            targets: [
                "2/upgrade.toml": TargetFile(describing: Array("x".utf8), custom: ["upgradefs": ["mode": 420, "manifest": ["description": "a\nb"]]]),
                "2/payload/link": TargetFile(length: 3, sha256: String(repeating: "ab", count: 32), custom: ["upgradefs": ["mode": 511, "symlink": true]]),
            ])
        let snapshot = SnapshotMetadata(version: 4, expires: Self.expires, targetsVersion: 3)
        let timestamp = TimestampMetadata(version: 5, expires: Self.expires, snapshot: MetaFile(version: 4, length: 10, sha256: String(repeating: "0f", count: 32)))

        func roundTrip<P: TUFPayload & Equatable>(_ payload: P) throws {
            let file = MetadataCodec.sign(payload, keys: [pair])
            let decoded = try MetadataCodec.decode(file, as: P.self)
            #expect(decoded.payload == payload)
            #expect(decoded.signedBytes == payload.toJSON().canonicalBytes())
            #expect(decoded.signatures.count == 1)
            #expect(decoded.signatures[0].keyID == key.keyID)
            #expect(SodiumVerifier().isValid(signature: decoded.signatures[0].signature, message: decoded.signedBytes, publicKey: pair.publicKey))
            // The file is the canonical form of the envelope (control characters escaped).
            #expect(try JSONValue.parse(file).canonicalFileBytes() == file)
        }
        try roundTrip(root)
        try roundTrip(targets)
        try roundTrip(snapshot)
        try roundTrip(timestamp)
    }

    @Test func fileLayoutMatchesTheTUFFormat() throws {
        let pair = Ed25519KeyPair.generate()
        let timestamp = TimestampMetadata(version: 5, expires: Self.expires, snapshot: MetaFile(version: 4))
        let file = String(decoding: MetadataCodec.sign(timestamp, keys: [pair]), as: UTF8.self)
        let keyID = TUFKey(ed25519PublicKey: pair.publicKey).keyID
        #expect(file.hasPrefix(#"{"signatures":[{"keyid":"\#(keyID)","sig":""#))
        #expect(
            file.hasSuffix(
                #""}],"signed":{"_type":"timestamp","expires":"2030-01-01T00:00:00Z","meta":{"snapshot.json":{"version":4}},"spec_version":"1.0.31","version":5}}"#
            ))
    }

    @Test func wrongTypeIsRefused() throws {
        let pair = Ed25519KeyPair.generate()
        let file = MetadataCodec.sign(SnapshotMetadata(version: 1, expires: Self.expires, targetsVersion: 1), keys: [pair])
        #expect(throws: TUFError.wrongType(expected: .timestamp, got: "snapshot")) { try MetadataCodec.decode(file, as: TimestampMetadata.self) }
        #expect(MetadataCodec.metadataType(of: file) == "snapshot")
    }

    @Test(arguments: ["2.0.0", "1", "1.0.x", "", "1..0", "0.9"])
    func unsupportedSpecVersionIsRefused(_ spec: String) throws {
        var snapshot = SnapshotMetadata(version: 1, expires: Self.expires, targetsVersion: 1)
        snapshot.specVersion = spec
        let file = MetadataCodec.sign(snapshot, keys: [Ed25519KeyPair.generate()])
        #expect(throws: TUFError.unsupportedSpecVersion(spec)) { try MetadataCodec.decode(file, as: SnapshotMetadata.self) }
    }

    @Test func unknownFieldsAreKeptAndSigned() throws {
        let text = #"{"signed":{"_type":"snapshot","spec_version":"1.0.0","version":2,"expires":"2030-01-01T00:00:00Z","meta":{"targets.json":{"version":2,"x-meta":1}},"x-new":{"z":[true]}},"signatures":[]}"#
        let decoded = try MetadataCodec.decode(Array(text.utf8), as: SnapshotMetadata.self)
        #expect(decoded.payload.unrecognized == ["x-new": ["z": [true]]])
        // The bytes to verify are the canonical form of `signed` as received, unknown fields included.
        let signed = try #require(JSONValue.parse(Array(text.utf8))["signed"])
        #expect(decoded.signedBytes == signed.canonicalBytes())
        #expect(String(decoding: decoded.signedBytes, as: UTF8.self).contains("x-meta"))
    }

    @Test(arguments: [
        #"[]"#,
        #"{"signed":{}}"#,
        #"{"signatures":[],"signed":[]}"#,
        #"{"signatures":{},"signed":{"_type":"timestamp"}}"#,
        #"{"signatures":[{"keyid":1,"sig":"00"}],"signed":{}}"#,
        #"{"signatures":[{"keyid":"a","sig":"00"},{"keyid":"a","sig":"01"}],"signed":{}}"#,
        #"{"signatures":[],"signed":{"_type":"timestamp","spec_version":"1.0.31","version":0,"expires":"2030-01-01T00:00:00Z","meta":{"snapshot.json":{"version":1}}}}"#,
        #"{"signatures":[],"signed":{"_type":"timestamp","spec_version":"1.0.31","version":1,"expires":"2030-01-01","meta":{"snapshot.json":{"version":1}}}}"#,
        #"{"signatures":[],"signed":{"_type":"timestamp","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","meta":{}}}"#,
        #"{"signatures":[],"signed":{"_type":"timestamp","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","meta":{"snapshot.json":{"version":1},"targets.json":{"version":1}}}}"#,
        #"{"signatures":[],"signed":{"_type":"timestamp","spec_version":"1.0.31","version":1.0,"expires":"2030-01-01T00:00:00Z","meta":{"snapshot.json":{"version":1}}}}"#,
        #"{"signatures":[],"signed":{"_type":"timestamp","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","meta":{"snapshot.json":{"version":1,"hashes":{"sha512":"00"}}}}}"#,
        #"{"signatures":[],"signed":{"_type":"timestamp","spec_version":"1.0.31","version":1,"expires":"2030-01-01T00:00:00Z","meta":{"snapshot.json":{"version":1,"length":-1}}}}"#,
    ])
    func malformedTimestampFilesAreRefused(_ text: String) {
        #expect(throws: TUFError.self) { try MetadataCodec.decode(Array(text.utf8), as: TimestampMetadata.self) }
    }

    @Test func twoSignaturesByTheSameKeyAreRefused() throws {
        let file = try JSONValue.parse(MetadataCodec.sign(SnapshotMetadata(version: 1, expires: Self.expires, targetsVersion: 1), keys: [Ed25519KeyPair.generate()]))
        let sig = try #require(file["signatures"]?.arrayValue?.first)
        let doubled = JSONValue.object(["signatures": [sig, sig], "signed": file["signed"]!]).canonicalBytes()
        let keyID = sig["keyid"]!.stringValue!
        #expect(throws: TUFError.malformed("snapshot: two signatures by key \(keyID)")) { try MetadataCodec.decode(doubled, as: SnapshotMetadata.self) }
    }

    @Test func rootListingAKeyUnderTheWrongIDIsRefused() throws {
        // Otherwise one key listed under two ids would count twice towards a threshold.
        let pair = Ed25519KeyPair.generate()
        let key = TUFKey(ed25519PublicKey: pair.publicKey)
        var root = RootMetadata.initial(rootKey: key, targetsKey: key, snapshotKey: key, timestampKey: key, expires: Self.expires)
        let fakeID = String(repeating: "0", count: 64)
        root.keys[fakeID] = key
        root.roles[.timestamp] = RoleKeys(keyIDs: [key.keyID, fakeID], threshold: 2)
        let file = MetadataCodec.sign(root, keys: [pair])
        #expect(throws: TUFError.self) { try MetadataCodec.decode(file, as: RootMetadata.self) }
    }

    @Test func rootWithImpossibleThresholdIsRefused() throws {
        let pair = Ed25519KeyPair.generate()
        let key = TUFKey(ed25519PublicKey: pair.publicKey)
        var root = RootMetadata.initial(rootKey: key, targetsKey: key, snapshotKey: key, timestampKey: key, expires: Self.expires)
        for threshold in [0, 2] {
            root.roles[.root]!.threshold = threshold
            #expect(throws: TUFError.self) { try MetadataCodec.decode(MetadataCodec.sign(root, keys: [pair]), as: RootMetadata.self) }
        }
    }

    @Test func errorMessagesNameTheProblem() {
        #expect(TUFError.rollback(role: .timestamp, trusted: 5, new: 3).description == "timestamp rollback: trusted version 5, server offered 3")
        #expect(TUFError.expired(role: .snapshot, expires: Self.expires).description.contains("snapshot expired at 2030-01-01T00:00:00Z"))
        #expect(TUFError.thresholdNotMet(role: .root, got: 1, need: 2).description == "root is signed by 1 of the 2 required keys")
        #expect(TUFError.wrongVersion(role: .targets, expected: 4, got: 3).description == "targets version mismatch: expected version 4, got 3")
    }
}
