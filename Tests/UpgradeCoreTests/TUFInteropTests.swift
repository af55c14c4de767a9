import Foundation
import Sodium
import Testing
import UpgradeCore

/// Metadata written and signed by python-tuf 7.0.1 (`tuf.api.metadata`, its
/// default indented JSON serializer, keys from fixed Ed25519 seeds): our
/// client must accept what the reference implementation produces, which
/// checks canonical JSON, key ids and the metadata layout against it.
@Suite struct TUFInteropTests {
    enum PythonTUF {
        static let root = #"""
    {
     "signatures": [
      {
       "keyid": "7ab6b86cb2c9684b0ddc10896153aa2595decf4d4327a5ff1a8ab7422c828b12",
       "sig": "330dc57d9ecbecbbbe7a4a90047f914d69f6e060738ca535030f8e5fd8495f61f3d7b005eb9770066aa72e94aa26ea7273730f037801dd163feb3e840be7780c"
      }
     ],
     "signed": {
      "_type": "root",
      "consistent_snapshot": true,
      "expires": "2099-01-01T00:00:00Z",
      "keys": {
       "3336b222894653a1c328c2636b5ada9d8c2f53be3b927369d64e7087014bf619": {
        "keytype": "ed25519",
        "keyval": {
         "public": "ca93ac1705187071d67b83c7ff0efe8108e8ec4530575d7726879333dbdabe7c"
        },
        "scheme": "ed25519"
       },
       "7ab6b86cb2c9684b0ddc10896153aa2595decf4d4327a5ff1a8ab7422c828b12": {
        "keytype": "ed25519",
        "keyval": {
         "public": "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        },
        "scheme": "ed25519"
       },
       "8bf5a507dc237a32c90c0a23b34bab6b386826145a5b726da75c91d466e4bf33": {
        "keytype": "ed25519",
        "keyval": {
         "public": "ed4928c628d1c2c6eae90338905995612959273a5c63f93636c14614ac8737d1"
        },
        "scheme": "ed25519"
       },
       "c3f860ca5da4454d33496ca33bb48f0cdcd5b731be7316b67ca191db0185aa26": {
        "keytype": "ed25519",
        "keyval": {
         "public": "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
        },
        "scheme": "ed25519"
       }
      },
      "roles": {
       "root": {
        "keyids": [
         "7ab6b86cb2c9684b0ddc10896153aa2595decf4d4327a5ff1a8ab7422c828b12"
        ],
        "threshold": 1
       },
       "snapshot": {
        "keyids": [
         "8bf5a507dc237a32c90c0a23b34bab6b386826145a5b726da75c91d466e4bf33"
        ],
        "threshold": 1
       },
       "targets": {
        "keyids": [
         "c3f860ca5da4454d33496ca33bb48f0cdcd5b731be7316b67ca191db0185aa26"
        ],
        "threshold": 1
       },
       "timestamp": {
        "keyids": [
         "3336b222894653a1c328c2636b5ada9d8c2f53be3b927369d64e7087014bf619"
        ],
        "threshold": 1
       }
      },
      "spec_version": "1.0.31",
      "version": 1
     }
    }
    """#
        static let targets = #"""
    {
     "signatures": [
      {
       "keyid": "c3f860ca5da4454d33496ca33bb48f0cdcd5b731be7316b67ca191db0185aa26",
       "sig": "6bc74c25ca0fa2de7dfc4aaa3e5dccf3fae4f7fa9445aa0f7001fd531d9c0ff02808bc6ff95b5098334aaedf5e957e8a46503bedd689a7e9af4154e0ebba9f0e"
      }
     ],
     "signed": {
      "_type": "targets",
      "expires": "2099-01-01T00:00:00Z",
      "spec_version": "1.0.31",
      "targets": {
       "1/upgrade.toml": {
        "custom": {
         "upgradefs": {
          "mode": 420,
          "note": "\u00e9\"\\"
         }
        },
        "hashes": {
         "sha256": "1c0b7cd2fd9d00b6ca41b8a2ee86d8bce7ab6bc65bb7cd8b6b5abbf3ed414239"
        },
        "length": 16
       }
      },
      "version": 1
     }
    }
    """#
        static let snapshot = #"""
    {
     "signatures": [
      {
       "keyid": "8bf5a507dc237a32c90c0a23b34bab6b386826145a5b726da75c91d466e4bf33",
       "sig": "fa79f9b7e82a587caebbf41e807b94fdcb54b9de04ce087ca37b14a3c06205a743de12a666530fe874747ac8b9599db83558024f7e4cca5557131d655d99a90f"
      }
     ],
     "signed": {
      "_type": "snapshot",
      "expires": "2099-01-01T00:00:00Z",
      "meta": {
       "targets.json": {
        "version": 1
       }
      },
      "spec_version": "1.0.31",
      "version": 1
     }
    }
    """#
        static let timestamp = #"""
    {
     "signatures": [
      {
       "keyid": "3336b222894653a1c328c2636b5ada9d8c2f53be3b927369d64e7087014bf619",
       "sig": "ba57a9b18985830f3d50bf5dc65d0b84cd25ee1536658ed7bf8d48e642e659fe23aeb03987610ed57b91f2dc1e0d2e94fd5337b1f9d570e94321481e626f0000"
      }
     ],
     "signed": {
      "_type": "timestamp",
      "expires": "2099-01-01T00:00:00Z",
      "meta": {
       "snapshot.json": {
        "hashes": {
         "sha256": "bf24deb6223bfb599bc43df56f999898fda45263a39b61cfebd4841f3a94b11c"
        },
        "length": 432,
        "version": 1
       }
      },
      "spec_version": "1.0.31",
      "version": 1
     }
    }
    """#
    }

    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    @Test func pythonTUFRepositoryVerifies() throws {
        let now = Date(timeIntervalSince1970: 1_700_000_000)
        var set = try TrustedMetadataSet(trustedRoot: Self.bytes(PythonTUF.root), verifier: SodiumVerifier(), now: now)
        try set.checkFinalRoot()
        try set.updateTimestamp(Self.bytes(PythonTUF.timestamp))
        try set.updateSnapshot(Self.bytes(PythonTUF.snapshot))
        try set.updateTargets(Self.bytes(PythonTUF.targets))
        #expect(set.root.keys[set.root.roles[.root]!.keyIDs[0]]?.keyID == "7ab6b86cb2c9684b0ddc10896153aa2595decf4d4327a5ff1a8ab7422c828b12")
        let file = try set.target("1/upgrade.toml")
        #expect(file.custom == ["upgradefs": ["mode": 420, "note": "é\"\\"]])
        try TargetVerifier.verify(Array("hello upgradefs\n".utf8), against: file, what: "1/upgrade.toml")
    }

    @Test func pythonTUFSignatureCoversCanonicalForm() throws {
        // Re-indenting the file does not matter; changing a value does.
        let decoded = try MetadataCodec.decode(Self.bytes(PythonTUF.targets), as: TargetsMetadata.self)
        let compact = try MetadataCodec.decode(JSONValue.parse(Self.bytes(PythonTUF.targets)).canonicalFileBytes(), as: TargetsMetadata.self)
        #expect(decoded.signedBytes == compact.signedBytes)
        let tampered = PythonTUF.targets.replacingOccurrences(of: "\"mode\": 420", with: "\"mode\": 493")
        #expect(tampered != PythonTUF.targets)
        var set = try TrustedMetadataSet(trustedRoot: Self.bytes(PythonTUF.root), verifier: SodiumVerifier(), now: Date(timeIntervalSince1970: 1_700_000_000))
        try set.updateTimestamp(Self.bytes(PythonTUF.timestamp))
        try set.updateSnapshot(Self.bytes(PythonTUF.snapshot))
        #expect(throws: TUFError.badSignature(role: .targets)) { try set.updateTargets(Self.bytes(tampered)) }
    }
}
