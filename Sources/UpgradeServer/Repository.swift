#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import UpgradeCore
import UpgradeFiles

/// Expiry periods of the four roles, and when each is re-signed.
public struct ExpiryPolicy: Sendable, Equatable {
    public var rootSeconds: Int = 365 * 86400
    /// A new root version is signed when less than this remains.
    public var rootRenewBeforeSeconds: Int = 30 * 86400
    public var targetsSeconds: Int = 90 * 86400
    public var snapshotSeconds: Int = 30 * 86400
    public var timestampSeconds: Int = 86400

    public init(timestampSeconds: Int = 86400) {
        self.timestampSeconds = timestampSeconds
    }
}

/// The TUF repository in the state directory: the newest trusted metadata,
/// loaded from `STATE/metadata` and written back atomically.
///
/// Not thread-safe; the `Publisher` actor owns it.
struct Repository {
    let metadataDirectory: String
    let keys: ServerKeyFile

    private(set) var root: RootMetadata
    private(set) var targets: TargetsMetadata
    private(set) var snapshot: SnapshotMetadata
    private(set) var timestamp: TimestampMetadata

    /// Newest bundle version among the targets (0 when none).
    var latestBundleVersion: Int64 { Self.latestBundleVersion(in: targets) }

    /// Opens the repository in `stateDirectory`, creating it (root version 1
    /// from the key file, empty targets, snapshot and timestamp) on first use.
    /// Refuses a state directory created with another key file.
    static func open(stateDirectory: String, keys: ServerKeyFile, expiry: ExpiryPolicy, now: Date) throws(RepositoryError)
        -> (repository: Repository, created: Bool)
    {
        let metadata = stateDirectory + "/metadata"
        do {
            try POSIXFiles.makeDirectories(metadata)
        } catch {
            throw RepositoryError("cannot create the state directory: \(error)")
        }
        let rootPath = metadata + "/1.root.json"
        if POSIXFiles.exists(rootPath) {
            let existing: [UInt8]
            do { existing = try POSIXFiles.readFile(rootPath) } catch { throw RepositoryError("cannot read \(rootPath): \(error)") }
            guard existing == keys.initialRoot else {
                throw RepositoryError(
                    "state directory \(stateDirectory) belongs to another server (id \(ServerID.of(initialRoot: existing))), "
                        + "not to this key file's server (id \(keys.serverID)); use another --state directory or the matching --key")
            }
        } else {
            do { try POSIXFiles.writeAtomically(keys.initialRoot, to: rootPath) } catch {
                throw RepositoryError("cannot write \(rootPath): \(error)")
            }
        }

        // Newest root: follow N.root.json while it exists.
        var rootVersion = 1
        var rootBytes = keys.initialRoot
        while let next = try? POSIXFiles.readFile(metadata + "/\(rootVersion + 1).root.json") {
            rootVersion += 1
            rootBytes = next
        }
        let root: RootMetadata = try decodeVerified(rootBytes, as: RootMetadata.self, key: keys.root, what: "\(rootVersion).root.json")
        for role in TUFRole.allCases where root.keys(for: role).map(\.publicKey) != [keys.key(for: role).publicKey] {
            throw RepositoryError(
                "\(rootVersion).root.json does not name this key file's \(role.rawValue) key; the state directory belongs to another key")
        }

        let timestampPath = metadata + "/timestamp.json"
        if !POSIXFiles.exists(timestampPath) {
            // First start: version 1 of everything, no targets.
            var repository = Repository(
                metadataDirectory: metadata, keys: keys, root: root,
                targets: TargetsMetadata(version: 1, expires: now.adding(seconds: expiry.targetsSeconds), targets: [:]),
                snapshot: SnapshotMetadata(version: 1, expires: now.adding(seconds: expiry.snapshotSeconds), targetsVersion: 1),
                timestamp: TimestampMetadata(
                    version: 1, expires: now.adding(seconds: expiry.timestampSeconds), snapshot: MetaFile(version: 1)))
            do {
                try repository.write(targets: repository.targets, snapshotExpires: repository.snapshot.expires, timestampExpires: repository.timestamp.expires, writeTargets: true, writeSnapshot: true, initial: true)
            } catch {
                throw RepositoryError("cannot write the initial metadata: \(error)")
            }
            return (repository, true)
        }

        // Later starts: what timestamp.json names is what is published.
        func read(_ name: String) throws(RepositoryError) -> [UInt8] {
            do { return try POSIXFiles.readFile(metadata + "/" + name) } catch {
                throw RepositoryError("cannot read \(metadata)/\(name): \(error)")
            }
        }
        let timestampBytes = try read("timestamp.json")
        let timestamp = try decodeVerified(timestampBytes, as: TimestampMetadata.self, key: keys.timestamp, what: "timestamp.json")
        let snapshotName = "\(timestamp.snapshot.version).snapshot.json"
        let snapshotBytes = try read(snapshotName)
        do { try timestamp.snapshot.verify(snapshotBytes, what: snapshotName) } catch {
            throw RepositoryError("\(metadata)/\(snapshotName) does not match timestamp.json: \(error)")
        }
        let snapshot = try decodeVerified(snapshotBytes, as: SnapshotMetadata.self, key: keys.snapshot, what: snapshotName)
        let targetsName = "\(snapshot.targetsMeta.version).targets.json"
        let targetsBytes = try read(targetsName)
        let targets = try decodeVerified(targetsBytes, as: TargetsMetadata.self, key: keys.targets, what: targetsName)
        guard targets.version == snapshot.targetsMeta.version else {
            throw RepositoryError("\(targetsName) has version \(targets.version)")
        }
        return (Repository(metadataDirectory: metadata, keys: keys, root: root, targets: targets, snapshot: snapshot, timestamp: timestamp), false)
    }

    private init(
        metadataDirectory: String, keys: ServerKeyFile, root: RootMetadata, targets: TargetsMetadata,
        snapshot: SnapshotMetadata, timestamp: TimestampMetadata
    ) {
        self.metadataDirectory = metadataDirectory
        self.keys = keys
        self.root = root
        self.targets = targets
        self.snapshot = snapshot
        self.timestamp = timestamp
    }

    private static func decodeVerified<P: TUFPayload>(_ bytes: [UInt8], as type: P.Type, key: Ed25519KeyPair, what: String)
        throws(RepositoryError) -> P
    {
        let decoded: (payload: P, signedBytes: [UInt8], signatures: [(keyID: String, signature: [UInt8])])
        do { decoded = try MetadataCodec.decode(bytes, as: type) } catch {
            throw RepositoryError("\(what) in the state directory is unreadable: \(error)")
        }
        let keyID = TUFKey(ed25519PublicKey: key.publicKey).keyID
        let verifier = SodiumVerifier()
        guard decoded.signatures.contains(where: { $0.keyID == keyID && verifier.isValid(signature: $0.signature, message: decoded.signedBytes, publicKey: key.publicKey) })
        else {
            throw RepositoryError("\(what) in the state directory is not signed by this key file's \(P.role.rawValue) key")
        }
        return decoded.payload
    }

    static func latestBundleVersion(in targets: TargetsMetadata) -> Int64 {
        var latest: Int64 = 0
        for path in targets.targets.keys {
            guard let slash = path.firstIndex(of: "/"), let version = Int64(path[..<slash]) else { continue }
            latest = max(latest, version)
        }
        return latest
    }

    // MARK: - Writing

    /// Publishes new targets: writes `N.targets.json`, then a new snapshot and
    /// timestamp, in that order, each atomically. The in-memory state changes
    /// only when all three are on disk.
    mutating func publish(targets newTargets: [String: TargetFile], expiry: ExpiryPolicy, now: Date) throws(FileError) {
        let targets = TargetsMetadata(
            version: self.targets.version + 1, expires: now.adding(seconds: expiry.targetsSeconds), targets: newTargets)
        try write(
            targets: targets, snapshotExpires: now.adding(seconds: expiry.snapshotSeconds),
            timestampExpires: now.adding(seconds: expiry.timestampSeconds), writeTargets: true, writeSnapshot: true)
    }

    /// Re-signs whatever is near its expiry (or, for the timestamp, whose
    /// lifetime no longer matches the configured one). Returns the roles re-signed.
    mutating func refresh(expiry: ExpiryPolicy, now: Date) throws(FileError) -> [TUFRole] {
        var renewed: [TUFRole] = []
        func remaining(_ date: Date) -> Double { date.timeIntervalSince(now) }

        if remaining(root.expires) < Double(expiry.rootRenewBeforeSeconds) {
            var next = root
            next.version += 1
            next.expires = now.adding(seconds: expiry.rootSeconds)
            let bytes = MetadataCodec.sign(next, keys: [keys.root])
            try POSIXFiles.writeAtomically(bytes, to: "\(metadataDirectory)/\(next.version).root.json")
            root = next
            renewed.append(.root)
        }

        let renewTargets = remaining(targets.expires) < Double(expiry.targetsSeconds) / 2
        let renewSnapshot = renewTargets || remaining(snapshot.expires) < Double(expiry.snapshotSeconds) / 2
        let timestampLeft = remaining(timestamp.expires)
        let renewTimestamp = renewSnapshot || timestampLeft < Double(expiry.timestampSeconds) / 2
            || timestampLeft > Double(expiry.timestampSeconds) + 1
        guard renewTimestamp else { return renewed }

        var targets = self.targets
        if renewTargets {
            targets.version += 1
            targets.expires = now.adding(seconds: expiry.targetsSeconds)
            renewed.append(.targets)
        }
        if renewSnapshot { renewed.append(.snapshot) }
        renewed.append(.timestamp)
        try write(
            targets: targets,
            snapshotExpires: renewSnapshot ? now.adding(seconds: expiry.snapshotSeconds) : snapshot.expires,
            timestampExpires: now.adding(seconds: expiry.timestampSeconds),
            writeTargets: renewTargets, writeSnapshot: renewSnapshot)
        return renewed
    }

    private mutating func write(
        targets: TargetsMetadata, snapshotExpires: Date, timestampExpires: Date, writeTargets: Bool, writeSnapshot: Bool,
        initial: Bool = false
    ) throws(FileError) {
        if writeTargets {
            let bytes = MetadataCodec.sign(targets, keys: [keys.targets])
            try POSIXFiles.writeAtomically(bytes, to: "\(metadataDirectory)/\(targets.version).targets.json")
        }
        var snapshot = self.snapshot
        var snapshotBytes: [UInt8]
        if writeSnapshot {
            snapshot = SnapshotMetadata(
                version: initial ? 1 : self.snapshot.version + 1,
                expires: snapshotExpires, targetsVersion: targets.version)
            snapshotBytes = MetadataCodec.sign(snapshot, keys: [keys.snapshot])
            try POSIXFiles.writeAtomically(snapshotBytes, to: "\(metadataDirectory)/\(snapshot.version).snapshot.json")
        } else {
            snapshotBytes = try POSIXFiles.readFile("\(metadataDirectory)/\(snapshot.version).snapshot.json")
        }
        let timestamp = TimestampMetadata(
            version: initial ? 1 : self.timestamp.version + 1,
            expires: timestampExpires,
            snapshot: MetaFile(version: snapshot.version, describing: snapshotBytes))
        try POSIXFiles.writeAtomically(MetadataCodec.sign(timestamp, keys: [keys.timestamp]), to: "\(metadataDirectory)/timestamp.json")
        self.targets = targets
        self.snapshot = snapshot
        self.timestamp = timestamp
    }
}

public struct RepositoryError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}

extension Date {
    /// `self + seconds`, truncated to whole seconds (TUF dates have no fractions).
    func adding(seconds: Int) -> Date {
        Date(timeIntervalSince1970: (timeIntervalSince1970 + Double(seconds)).rounded(.down))
    }
}
