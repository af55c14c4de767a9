import Crypto
import Foundation

/// Every verification step of the TUF client workflow (spec §5.3–5.6), in
/// one place, modelled on python-tuf's `TrustedMetadataSet`. It holds the
/// metadata that passed verification and the exact bytes it was read from
/// (so the caller persists exactly what was verified). No I/O: the caller
/// fetches bytes and hands them in.
///
/// Order of use for one refresh (each step requires the ones before it):
///  1. `init(trustedRoot:)` with the root the client already trusts.
///  2. `updateRoot` with `N+1.root.json`, `N+2.root.json`, … until the server has none.
///  3. optionally `updateTimestamp(local, trusted: true)`,
///     `updateSnapshot(local, trusted: true)` and `updateTargets(local, trusted: true)`
///     with previously verified files (expired ones accepted: they serve as
///     the rollback baseline and as what is known while the server is away;
///     if they no longer verify — keys rotated — skip them).
///  4. `updateTimestamp(remote)`: `.equalVersion` means nothing changed and everything trusted is current;
///     `.expired` on an equal version means the server (or an attacker replaying it) offers nothing newer
///     than metadata that has expired: a freeze, to be reported, not ignored.
///  5. `updateSnapshot(remote)`, 6. `updateTargets(remote)`.
///
/// A set may also be kept across refreshes: `now` can be advanced and the
/// steps repeated. A new root whose timestamp or snapshot keys differ drops
/// the trusted timestamp, snapshot and targets (fast-forward recovery: a new
/// timestamp key may start over at version 1); one whose targets keys differ
/// drops targets.
public struct TrustedMetadataSet: Sendable {
    public private(set) var root: RootMetadata
    public private(set) var rootBytes: [UInt8]
    public private(set) var timestamp: TimestampMetadata?
    public private(set) var timestampBytes: [UInt8]?
    public private(set) var snapshot: SnapshotMetadata?
    public private(set) var snapshotBytes: [UInt8]?
    public private(set) var targets: TargetsMetadata?
    public private(set) var targetsBytes: [UInt8]?

    /// The reference time for expiry checks.
    public var now: Date
    private let verifier: any Ed25519Verifying

    /// Loads the root the client already trusts (e.g. the initial root whose
    /// digest is the server id). It must be signed by a threshold of its own
    /// root keys; its expiry is checked later (`checkFinalRoot`), after the
    /// client has had the chance to update it.
    public init(trustedRoot bytes: [UInt8], verifier: any Ed25519Verifying, now: Date) throws(TUFError) {
        self.verifier = verifier
        self.now = now
        let decoded = try MetadataCodec.decode(bytes, as: RootMetadata.self)
        try Self.verify(decoded.signedBytes, decoded.signatures, role: .root, by: decoded.payload, verifier: verifier)
        root = decoded.payload
        rootBytes = bytes
    }

    // MARK: Root

    /// Accepts root version N+1: signed by a threshold of the trusted root's
    /// root keys and of its own. Returns the new root.
    @discardableResult
    public mutating func updateRoot(_ bytes: [UInt8]) throws(TUFError) -> RootMetadata {
        let decoded = try MetadataCodec.decode(bytes, as: RootMetadata.self)
        let new = decoded.payload
        let trustedKeys = Self.validSigners(decoded.signedBytes, decoded.signatures, role: .root, by: root, verifier: verifier)
        let need = root.roles[.root]!.threshold
        guard trustedKeys.count >= need else {
            throw .rootNotSignedByTrustedRoot(version: new.version, got: trustedKeys.count, need: need)
        }
        guard new.version == root.version + 1 else {
            throw new.version <= root.version
                ? .rollback(role: .root, trusted: root.version, new: new.version)
                : .wrongVersion(role: .root, expected: root.version + 1, got: new.version)
        }
        try Self.verify(decoded.signedBytes, decoded.signatures, role: .root, by: new, verifier: verifier)

        let old = root
        root = new
        rootBytes = bytes
        if old.roles[.timestamp] != new.roles[.timestamp] || old.roles[.snapshot] != new.roles[.snapshot] {
            dropTimestamp()
        } else if old.roles[.targets] != new.roles[.targets] {
            targets = nil
            targetsBytes = nil
        }
        return new
    }

    /// The root updates are finished: the final root must not be expired
    /// (freeze attack). `updateTimestamp` checks this too.
    public func checkFinalRoot() throws(TUFError) {
        guard root.expires > now else { throw .expired(role: .root, expires: root.expires) }
    }

    // MARK: Timestamp

    /// Accepts a timestamp signed by the root's timestamp keys. Its version
    /// must be above the trusted one's (`.equalVersion` if equal — nothing
    /// new, the trusted timestamp stays — but `.expired` if it, or the
    /// trusted snapshot or targets, has expired), and the snapshot version it
    /// names must not be below the trusted one's. `trusted: true` is for a
    /// timestamp the client verified before and stored: it may have expired.
    @discardableResult
    public mutating func updateTimestamp(_ bytes: [UInt8], trusted: Bool = false) throws(TUFError) -> TimestampMetadata {
        try checkFinalRoot()
        let decoded = try MetadataCodec.decode(bytes, as: TimestampMetadata.self)
        try Self.verify(decoded.signedBytes, decoded.signatures, role: .timestamp, by: root, verifier: verifier)
        let new = decoded.payload
        if let old = timestamp {
            if new.version < old.version { throw .rollback(role: .timestamp, trusted: old.version, new: new.version) }
            if new.version == old.version, !trusted {
                // Nothing new, but a replayed timestamp must not freeze the client (§5.4.4 onward): the offered
                // timestamp and the snapshot and targets it leads to must still be current. A refresh that stopped
                // half way (snapshot or targets not yet at the versions named) goes on instead.
                if new.expires <= now { throw .expired(role: .timestamp, expires: new.expires) }
                if isComplete {
                    if let expired = firstExpired() { throw .expired(role: expired.role, expires: expired.expires) }
                    throw .equalVersion(role: .timestamp)
                }
            } else if new.version == old.version {
                throw .equalVersion(role: .timestamp)
            }
            if new.snapshot.version < old.snapshot.version {
                throw .rollback(role: .snapshot, trusted: old.snapshot.version, new: new.snapshot.version)
            }
        }
        if !trusted, new.expires <= now { throw .expired(role: .timestamp, expires: new.expires) }
        timestamp = new
        timestampBytes = bytes
        return new
    }

    // MARK: Snapshot

    /// Accepts the snapshot the trusted timestamp names: length and hash as
    /// listed there, signed by the root's snapshot keys, version equal to the
    /// timestamp's (mix-and-match), no listed file's version lower than in the
    /// trusted snapshot (rollback) and none missing, not expired.
    /// `trusted: true` is for a snapshot the client verified before and
    /// stored: only signatures and rollback are checked (no hash, version or
    /// expiry), so that it can be the baseline for the rollback check of the new one.
    @discardableResult
    public mutating func updateSnapshot(_ bytes: [UInt8], trusted: Bool = false) throws(TUFError) -> SnapshotMetadata {
        guard let timestamp else { throw .outOfOrder("cannot update snapshot before timestamp") }
        if !trusted, timestamp.expires <= now { throw .expired(role: .timestamp, expires: timestamp.expires) }
        if !trusted {
            try timestamp.snapshot.verify(bytes, what: "snapshot version \(timestamp.snapshot.version)")
        }
        let decoded = try MetadataCodec.decode(bytes, as: SnapshotMetadata.self)
        try Self.verify(decoded.signedBytes, decoded.signatures, role: .snapshot, by: root, verifier: verifier)
        let new = decoded.payload
        if let old = snapshot {
            for (name, oldFile) in old.meta {
                guard let newFile = new.meta[name] else { throw .missing(what: "\(name) in snapshot version \(new.version)") }
                if newFile.version < oldFile.version {
                    let role = TUFRole(rawValue: String(name.dropLast(".json".count))) ?? .targets
                    throw .rollback(role: role, trusted: oldFile.version, new: newFile.version)
                }
            }
        }
        if !trusted {
            try Self.checkFinal(new, timestamp: timestamp, now: now)
        }
        snapshot = new
        snapshotBytes = bytes
        return new
    }

    // MARK: Targets

    /// Accepts the top-level targets the trusted (and current) snapshot names:
    /// length and hash if listed there, signed by the root's targets keys,
    /// version equal to the snapshot's entry (mix-and-match), not expired.
    /// `trusted: true` is for targets the client verified before and stored,
    /// loaded after the stored timestamp and snapshot: no expiry is checked
    /// (of targets, snapshot or timestamp); everything else is.
    @discardableResult
    public mutating func updateTargets(_ bytes: [UInt8], trusted: Bool = false) throws(TUFError) -> TargetsMetadata {
        guard let timestamp else { throw .outOfOrder("cannot update targets before timestamp") }
        guard let snapshot else { throw .outOfOrder("cannot update targets before snapshot") }
        let checkTime = trusted ? Date.distantPast : now
        guard timestamp.expires > checkTime else { throw .expired(role: .timestamp, expires: timestamp.expires) }
        try Self.checkFinal(snapshot, timestamp: timestamp, now: checkTime)
        let meta = snapshot.targetsMeta
        try meta.verify(bytes, what: "targets version \(meta.version)")
        let decoded = try MetadataCodec.decode(bytes, as: TargetsMetadata.self)
        try Self.verify(decoded.signedBytes, decoded.signatures, role: .targets, by: root, verifier: verifier)
        let new = decoded.payload
        guard new.version == meta.version else { throw .wrongVersion(role: .targets, expected: meta.version, got: new.version) }
        guard new.expires > checkTime else { throw .expired(role: .targets, expires: new.expires) }
        targets = new
        targetsBytes = bytes
        return new
    }

    /// True when the trusted snapshot is the one the trusted timestamp names and the trusted targets the one
    /// that snapshot names: the last refresh went all the way.
    public var isComplete: Bool {
        guard let timestamp, let snapshot, let targets else { return false }
        return snapshot.version == timestamp.snapshot.version && targets.version == snapshot.meta["targets.json"]?.version
    }

    /// The trusted role that expired first, if any has expired at `now` (root, timestamp, snapshot or targets):
    /// what the client shows can no longer be confirmed current (a freeze, or a server that stopped signing).
    public func firstExpired() -> (role: TUFRole, expires: Date)? {
        let all: [(TUFRole, Date?)] = [(.root, root.expires), (.timestamp, timestamp?.expires),
                                       (.snapshot, snapshot?.expires), (.targets, targets?.expires)]
        return all.compactMap { role, expires in expires.flatMap { $0 <= now ? (role: role, expires: $0) : nil } }
            .min { $0.expires < $1.expires }
    }

    /// The trusted description of a target path.
    public func target(_ path: String) throws(TUFError) -> TargetFile {
        guard let targets else { throw .outOfOrder("no trusted targets metadata") }
        guard let file = targets.targets[path] else { throw .missing(what: "target \(path)") }
        return file
    }

    // MARK: Checks

    private mutating func dropTimestamp() {
        timestamp = nil
        timestampBytes = nil
        snapshot = nil
        snapshotBytes = nil
        targets = nil
        targetsBytes = nil
    }

    private static func checkFinal(_ snapshot: SnapshotMetadata, timestamp: TimestampMetadata, now: Date) throws(TUFError) {
        guard snapshot.version == timestamp.snapshot.version else {
            throw .wrongVersion(role: .snapshot, expected: timestamp.snapshot.version, got: snapshot.version)
        }
        guard snapshot.expires > now else { throw .expired(role: .snapshot, expires: snapshot.expires) }
    }

    /// Key ids of `role`'s authorised keys (per `root`) whose signatures over
    /// `message` verify; each key counts once.
    static func validSigners(
        _ message: [UInt8], _ signatures: [(keyID: String, signature: [UInt8])], role: TUFRole, by root: RootMetadata,
        verifier: any Ed25519Verifying
    ) -> Set<String> {
        guard let roleKeys = root.roles[role] else { return [] }
        let authorised = Set(roleKeys.keyIDs)
        var valid: Set<String> = []
        for (keyID, signature) in signatures where authorised.contains(keyID) {
            guard let key = root.keys[keyID] else { continue }
            if verifier.isValid(signature: signature, message: message, publicKey: key.publicKey) {
                valid.insert(keyID)
            }
        }
        return valid
    }

    /// Throws unless a threshold of `role`'s keys (per `root`) signed `message`.
    static func verify(
        _ message: [UInt8], _ signatures: [(keyID: String, signature: [UInt8])], role: TUFRole, by root: RootMetadata,
        verifier: any Ed25519Verifying
    ) throws(TUFError) {
        let need = root.roles[role]!.threshold
        let valid = validSigners(message, signatures, role: role, by: root, verifier: verifier)
        guard valid.count >= need else {
            let authorised = Set(root.roles[role]!.keyIDs)
            let anyAuthorisedSigned = signatures.contains { authorised.contains($0.keyID) && !valid.contains($0.keyID) }
            throw anyAuthorisedSigned ? .badSignature(role: role) : .thresholdNotMet(role: role, got: valid.count, need: need)
        }
    }
}

// MARK: - Target content

/// Checks a target's bytes as they stream in: refuses more bytes than the
/// signed length as soon as they arrive (endless data), and at the end
/// checks length and SHA-256.
public struct TargetVerifier {
    public let expected: TargetFile
    public let what: String
    public private(set) var count: Int64 = 0
    private var hasher = SHA256()

    public init(expected: TargetFile, what: String) {
        self.expected = expected
        self.what = what
    }

    /// Feeds the next piece; throws `.lengthMismatch` once the total exceeds
    /// the signed length (the piece is then not hashed).
    public mutating func update(_ bytes: UnsafeRawBufferPointer) throws(TUFError) {
        let total = count + Int64(bytes.count)
        guard total <= expected.length else {
            throw .lengthMismatch(what: what, expected: expected.length, got: total)
        }
        hasher.update(bufferPointer: bytes)
        count = total
    }

    public mutating func update(_ bytes: [UInt8]) throws(TUFError) {
        let total = count + Int64(bytes.count)
        guard total <= expected.length else {
            throw .lengthMismatch(what: what, expected: expected.length, got: total)
        }
        hasher.update(data: bytes)
        count = total
    }

    /// Throws unless exactly the signed length arrived with the signed hash.
    public func finish() throws(TUFError) {
        guard count == expected.length else {
            throw .lengthMismatch(what: what, expected: expected.length, got: count)
        }
        guard Hex.encode(Array(hasher.finalize())) == expected.sha256 else { throw .hashMismatch(what: what) }
    }

    /// Checks a whole target at once.
    public static func verify(_ bytes: [UInt8], against expected: TargetFile, what: String) throws(TUFError) {
        var verifier = TargetVerifier(expected: expected, what: what)
        try verifier.update(bytes)
        try verifier.finish()
    }
}
