import Foundation
import Sodium
import UpgradeCore

/// An in-memory TUF repository that signs with real Ed25519 keys, for
/// playing both the honest server and the attacker in tests (after
/// python-tuf's `RepositorySimulator`). Payloads are edited in place and
/// signed on demand: `timestampBytes` always describes the current
/// `snapshotBytes`, and `snapshot` lists `targets.version` after `publish()`.
struct RepositorySimulator {
    static let start = Date(timeIntervalSince1970: 1_700_000_000)  // 2023-11-14T22:13:20Z
    static let day: TimeInterval = 86_400

    var now = start
    var signers: [TUFRole: [Ed25519KeyPair]] = [:]
    var root: RootMetadata
    /// `signedRoots[i]` is the file `(i+1).root.json`.
    var signedRoots: [[UInt8]] = []
    var targets: TargetsMetadata
    var snapshot: SnapshotMetadata
    var timestamp: TimestampMetadata
    var contents: [String: [UInt8]] = [:]

    init() {
        for role in TUFRole.allCases { signers[role] = [Ed25519KeyPair.generate()] }
        var keys: [TUFRole: TUFKey] = [:]
        for role in TUFRole.allCases { keys[role] = TUFKey(ed25519PublicKey: signers[role]![0].publicKey) }
        let start = Self.start
        root = RootMetadata.initial(
            rootKey: keys[.root]!, targetsKey: keys[.targets]!, snapshotKey: keys[.snapshot]!, timestampKey: keys[.timestamp]!,
            expires: start + 365 * Self.day)
        targets = TargetsMetadata(version: 1, expires: start + 90 * Self.day, targets: [:])
        snapshot = SnapshotMetadata(version: 1, expires: start + 30 * Self.day, targetsVersion: 1)
        timestamp = TimestampMetadata(version: 1, expires: start + Self.day, snapshot: MetaFile(version: 1))
        signedRoots = [MetadataCodec.sign(root, keys: signers[.root]!)]
    }

    var initialRoot: [UInt8] { signedRoots[0] }

    /// A client that trusts version 1 of the root, at `now`.
    func client() throws -> TrustedMetadataSet {
        try TrustedMetadataSet(trustedRoot: initialRoot, verifier: SodiumVerifier(), now: now)
    }

    // MARK: Signed files

    func sign<P: TUFPayload>(_ payload: P, by role: TUFRole? = nil) -> [UInt8] {
        MetadataCodec.sign(payload, keys: signers[role ?? P.role]!)
    }

    var targetsBytes: [UInt8] { sign(targets) }
    var snapshotBytes: [UInt8] { sign(snapshot) }
    var timestampBytes: [UInt8] {
        var ts = timestamp
        ts.snapshot = MetaFile(version: snapshot.version, describing: snapshotBytes)
        return sign(ts)
    }

    // MARK: Publishing

    /// Adds (or replaces) a target; call `publish()` to make it visible.
    mutating func addTarget(_ path: String, _ bytes: [UInt8]) {
        contents[path] = bytes
        targets.targets[path] = TargetFile(describing: bytes)
    }

    /// A new release: targets, snapshot and timestamp each one version up.
    mutating func publish() {
        targets.version += 1
        snapshot.version += 1
        snapshot.meta["targets.json"] = MetaFile(version: targets.version)
        timestamp.version += 1
        timestamp.snapshot = MetaFile(version: snapshot.version)
    }

    /// Signs the current `root` (after bumping its version) by the current
    /// root keys plus `alsoSignedBy` (e.g. the previous root keys), and publishes it.
    @discardableResult
    mutating func publishRoot(alsoSignedBy extra: [Ed25519KeyPair] = []) -> [UInt8] {
        root.version += 1
        let bytes = MetadataCodec.sign(root, keys: extra + signers[.root]!)
        signedRoots.append(bytes)
        return bytes
    }

    /// Replaces `role`'s key by a fresh one in a new root version, signed by
    /// the old and the new root keys (as the spec requires).
    @discardableResult
    mutating func rotateKey(of role: TUFRole) -> [UInt8] {
        let oldRootSigners = signers[.root]!
        let newPair = Ed25519KeyPair.generate()
        let newKey = TUFKey(ed25519PublicKey: newPair.publicKey)
        for oldID in root.roles[role]!.keyIDs {
            let stillUsed = root.roles.contains { $0.key != role && $0.value.keyIDs.contains(oldID) }
            if !stillUsed { root.keys[oldID] = nil }
        }
        root.keys[newKey.keyID] = newKey
        root.roles[role] = RoleKeys(keyIDs: [newKey.keyID], threshold: 1)
        signers[role] = [newPair]
        return publishRoot(alsoSignedBy: role == .root ? oldRootSigners : [])
    }

    // MARK: Client workflow

    /// One refresh as the node's updater does it: newer roots until there are
    /// none, then timestamp (equal version = nothing new), snapshot, targets.
    func refresh(_ set: inout TrustedMetadataSet) throws {
        while set.root.version < signedRoots.count {
            try set.updateRoot(signedRoots[set.root.version])
        }
        try set.checkFinalRoot()
        do {
            try set.updateTimestamp(timestampBytes)
        } catch TUFError.equalVersion {
            return
        }
        try set.updateSnapshot(snapshotBytes)
        try set.updateTargets(targetsBytes)
    }

    /// A client that has completed one refresh.
    func refreshedClient() throws -> TrustedMetadataSet {
        var set = try client()
        try refresh(&set)
        return set
    }
}
