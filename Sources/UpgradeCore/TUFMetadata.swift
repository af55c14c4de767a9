import Crypto
import Foundation

// The TUF 1.0 metadata model: the `signed` part of root, targets, snapshot
// and timestamp, with conversion to and from `JSONValue`. Signing and
// decoding of the envelope live in MetadataCodec.swift, verification in
// TrustedMetadataSet.swift.

public enum TUFRole: String, Sendable, CaseIterable, Hashable {
    case root, targets, snapshot, timestamp

    /// The metadata file name the role's version is listed under in snapshot /
    /// timestamp meta ("targets.json", "snapshot.json").
    public var metadataFileName: String { "\(rawValue).json" }
}

/// The metadata every role carries. `TUFPayload`s convert to and from the
/// JSON of the `signed` object; fields this model does not know are kept in
/// `unrecognized` and written back unchanged.
public protocol TUFPayload: Sendable {
    static var role: TUFRole { get }
    var version: Int { get }
    var expires: Date { get }
    var specVersion: String { get }
    /// Parses the `signed` object; checks `_type` and `spec_version`.
    init(json: JSONValue) throws(TUFError)
    /// The `signed` object, including `_type` and `spec_version`.
    func toJSON() -> JSONValue
}

public enum TUF {
    /// The spec version this implementation writes.
    public static let specVersion = "1.0.31"
}

// MARK: - Keys and roles

/// An Ed25519 public key as TUF describes it. Its key id is the hex SHA-256 of
/// the canonical JSON of `{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"<hex>"}}`.
public struct TUFKey: Sendable, Hashable {
    public let publicKey: [UInt8]
    public let keyID: String

    public init(ed25519PublicKey: [UInt8]) {
        self.publicKey = ed25519PublicKey
        self.keyID = Hex.encode(Array(SHA256.hash(data: Self.json(publicKey: ed25519PublicKey).canonicalBytes())))
    }

    public func toJSON() -> JSONValue { Self.json(publicKey: publicKey) }

    private static func json(publicKey: [UInt8]) -> JSONValue {
        .object([
            "keytype": "ed25519",
            "scheme": "ed25519",
            "keyval": .object(["public": .string(Hex.encode(publicKey))]),
        ])
    }

    /// Parses a key object. Only Ed25519 keys (lowercase hex, 32 bytes) are accepted.
    public init(json: JSONValue) throws(TUFError) {
        guard let object = json.objectValue else { throw .malformed("a key is not an object") }
        guard object["keytype"]?.stringValue == "ed25519", object["scheme"]?.stringValue == "ed25519" else {
            throw .malformed("unsupported key type (only ed25519 keys are supported)")
        }
        guard let keyval = object["keyval"]?.objectValue, keyval.count == 1,
            let hex = keyval["public"]?.stringValue, hex.utf8.count == 64,
            let bytes = Hex.decode(hex), Hex.encode(bytes) == hex
        else { throw .malformed("an ed25519 key needs keyval {\"public\": <64 lowercase hex digits>}") }
        self.init(ed25519PublicKey: bytes)
    }
}

public struct RoleKeys: Sendable, Hashable {
    public var keyIDs: [String]
    public var threshold: Int

    public init(keyIDs: [String], threshold: Int) {
        self.keyIDs = keyIDs
        self.threshold = threshold
    }
}

// MARK: - Root

public struct RootMetadata: TUFPayload, Hashable {
    public static let role = TUFRole.root
    public var version: Int
    public var expires: Date
    public var specVersion: String
    public var consistentSnapshot: Bool
    /// Keyed by key id.
    public var keys: [String: TUFKey]
    public var roles: [TUFRole: RoleKeys]
    public var unrecognized: [String: JSONValue]

    public init(
        version: Int, expires: Date, consistentSnapshot: Bool = true, keys: [String: TUFKey],
        roles: [TUFRole: RoleKeys], specVersion: String = TUF.specVersion, unrecognized: [String: JSONValue] = [:]
    ) {
        self.version = version
        self.expires = expires
        self.specVersion = specVersion
        self.consistentSnapshot = consistentSnapshot
        self.keys = keys
        self.roles = roles
        self.unrecognized = unrecognized
    }

    /// Version 1 with one key per role, threshold 1 each, consistent snapshots.
    public static func initial(rootKey: TUFKey, targetsKey: TUFKey, snapshotKey: TUFKey, timestampKey: TUFKey, expires: Date)
        -> RootMetadata
    {
        let perRole: [TUFRole: TUFKey] = [.root: rootKey, .targets: targetsKey, .snapshot: snapshotKey, .timestamp: timestampKey]
        var keys: [String: TUFKey] = [:]
        for key in perRole.values { keys[key.keyID] = key }
        return RootMetadata(
            version: 1, expires: expires, keys: keys,
            roles: perRole.mapValues { RoleKeys(keyIDs: [$0.keyID], threshold: 1) })
    }

    /// The keys authorised for `role` (key ids without a key are skipped).
    public func keys(for role: TUFRole) -> [TUFKey] {
        (roles[role]?.keyIDs ?? []).compactMap { keys[$0] }
    }

    public init(json: JSONValue) throws(TUFError) {
        var fields = try SignedFields(json, role: Self.role)
        var consistent = false
        if let value = fields.take("consistent_snapshot") {
            guard let b = value.boolValue else { throw .malformed("root consistent_snapshot is not a boolean") }
            consistent = b
        }
        guard let keysJSON = fields.take("keys")?.objectValue else { throw .malformed("root has no keys object") }
        var keys: [String: TUFKey] = [:]
        for (keyID, keyJSON) in keysJSON {
            let key = try TUFKey(json: keyJSON)
            guard key.keyID == keyID else {
                throw .malformed("root lists a key under id \(keyID), but that key's id is \(key.keyID)")
            }
            keys[keyID] = key
        }
        guard let rolesJSON = fields.take("roles")?.objectValue else { throw .malformed("root has no roles object") }
        guard Set(rolesJSON.keys) == Set(TUFRole.allCases.map(\.rawValue)) else {
            throw .malformed("root roles must be exactly root, targets, snapshot and timestamp")
        }
        var roles: [TUFRole: RoleKeys] = [:]
        for (name, roleJSON) in rolesJSON {
            let role = TUFRole(rawValue: name)!
            guard let idsJSON = roleJSON["keyids"]?.arrayValue,
                let threshold = roleJSON["threshold"]?.intValue
            else { throw .malformed("root role \(name) needs keyids and threshold") }
            var ids: [String] = []
            for idJSON in idsJSON {
                guard let id = idJSON.stringValue else { throw .malformed("root role \(name) has a non-string key id") }
                guard keys[id] != nil else { throw .malformed("root role \(name) names key \(id), which root does not list") }
                guard !ids.contains(id) else { throw .malformed("root role \(name) lists key \(id) twice") }
                ids.append(id)
            }
            guard threshold >= 1, threshold <= ids.count else {
                throw .malformed("root role \(name) has threshold \(threshold) with \(ids.count) keys")
            }
            roles[role] = RoleKeys(keyIDs: ids, threshold: Int(threshold))
        }
        self.init(
            version: fields.version, expires: fields.expires, consistentSnapshot: consistent, keys: keys, roles: roles,
            specVersion: fields.specVersion, unrecognized: fields.rest)
    }

    public func toJSON() -> JSONValue {
        var object = SignedFields.header(role: Self.role, version: version, expires: expires, specVersion: specVersion, rest: unrecognized)
        object["consistent_snapshot"] = .bool(consistentSnapshot)
        object["keys"] = .object(keys.mapValues { $0.toJSON() })
        var rolesJSON: [String: JSONValue] = [:]
        for (role, roleKeys) in roles {
            rolesJSON[role.rawValue] = .object([
                "keyids": .array(roleKeys.keyIDs.map { .string($0) }),
                "threshold": .int(Int64(roleKeys.threshold)),
            ])
        }
        object["roles"] = .object(rolesJSON)
        return .object(object)
    }
}

// MARK: - Targets

public struct TargetFile: Sendable, Hashable {
    public var length: Int64
    /// Lowercase hex.
    public var sha256: String
    public var custom: JSONValue?

    public init(length: Int64, sha256: String, custom: JSONValue? = nil) {
        self.length = length
        self.sha256 = sha256
        self.custom = custom
    }

    /// The description of `bytes`.
    public init(describing bytes: [UInt8], custom: JSONValue? = nil) {
        self.init(length: Int64(bytes.count), sha256: Hex.encode(Array(SHA256.hash(data: bytes))), custom: custom)
    }

    public init(json: JSONValue, path: String) throws(TUFError) {
        guard let length = json["length"]?.intValue, length >= 0 else {
            throw .malformed("target \(path) has no valid length")
        }
        guard let sha256 = try Hashes.sha256(json["hashes"], what: "target \(path)") else {
            throw .malformed("target \(path) has no hashes")
        }
        self.init(length: length, sha256: sha256, custom: json["custom"])
    }

    public func toJSON() -> JSONValue {
        var object: [String: JSONValue] = ["length": .int(length), "hashes": .object(["sha256": .string(sha256)])]
        if let custom { object["custom"] = custom }
        return .object(object)
    }
}

public struct TargetsMetadata: TUFPayload, Hashable {
    public static let role = TUFRole.targets
    public var version: Int
    public var expires: Date
    public var specVersion: String
    public var targets: [String: TargetFile]
    /// Includes `delegations`, which this implementation does not follow.
    public var unrecognized: [String: JSONValue]

    public init(
        version: Int, expires: Date, targets: [String: TargetFile], specVersion: String = TUF.specVersion,
        unrecognized: [String: JSONValue] = [:]
    ) {
        self.version = version
        self.expires = expires
        self.specVersion = specVersion
        self.targets = targets
        self.unrecognized = unrecognized
    }

    public init(json: JSONValue) throws(TUFError) {
        var fields = try SignedFields(json, role: Self.role)
        guard let targetsJSON = fields.take("targets")?.objectValue else { throw .malformed("targets has no targets object") }
        var targets: [String: TargetFile] = [:]
        for (path, fileJSON) in targetsJSON {
            targets[path] = try TargetFile(json: fileJSON, path: path)
        }
        self.init(
            version: fields.version, expires: fields.expires, targets: targets, specVersion: fields.specVersion,
            unrecognized: fields.rest)
    }

    public func toJSON() -> JSONValue {
        var object = SignedFields.header(role: Self.role, version: version, expires: expires, specVersion: specVersion, rest: unrecognized)
        object["targets"] = .object(targets.mapValues { $0.toJSON() })
        return .object(object)
    }
}

// MARK: - Snapshot and timestamp

/// A metadata file's entry in snapshot or timestamp `meta`.
public struct MetaFile: Sendable, Hashable {
    public var version: Int
    public var length: Int64?
    /// Lowercase hex.
    public var sha256: String?

    public init(version: Int, length: Int64? = nil, sha256: String? = nil) {
        self.version = version
        self.length = length
        self.sha256 = sha256
    }

    /// Version, length and hash of the metadata file `bytes`.
    public init(version: Int, describing bytes: [UInt8]) {
        self.init(version: version, length: Int64(bytes.count), sha256: Hex.encode(Array(SHA256.hash(data: bytes))))
    }

    public init(json: JSONValue, name: String) throws(TUFError) {
        guard let version = json["version"]?.intValue, version >= 1, version <= Int64(Int.max) else {
            throw .malformed("meta \(name) has no valid version")
        }
        var length: Int64?
        if let value = json["length"] {
            guard let l = value.intValue, l >= 0 else { throw .malformed("meta \(name) has an invalid length") }
            length = l
        }
        self.init(version: Int(version), length: length, sha256: try Hashes.sha256(json["hashes"], what: "meta \(name)"))
    }

    public func toJSON() -> JSONValue {
        var object: [String: JSONValue] = ["version": .int(Int64(version))]
        if let length { object["length"] = .int(length) }
        if let sha256 { object["hashes"] = .object(["sha256": .string(sha256)]) }
        return .object(object)
    }

    /// Checks `bytes` against the length and hash, where they are given.
    public func verify(_ bytes: [UInt8], what: String) throws(TUFError) {
        if let length, Int64(bytes.count) != length {
            throw .lengthMismatch(what: what, expected: length, got: Int64(bytes.count))
        }
        if let sha256, Hex.encode(Array(SHA256.hash(data: bytes))) != sha256 {
            throw .hashMismatch(what: what)
        }
    }
}

public struct SnapshotMetadata: TUFPayload, Hashable {
    public static let role = TUFRole.snapshot
    public var version: Int
    public var expires: Date
    public var specVersion: String
    /// Keyed by file name: "targets.json" (always present), delegated roles' files.
    public var meta: [String: MetaFile]
    public var unrecognized: [String: JSONValue]

    public init(
        version: Int, expires: Date, meta: [String: MetaFile], specVersion: String = TUF.specVersion,
        unrecognized: [String: JSONValue] = [:]
    ) {
        self.version = version
        self.expires = expires
        self.specVersion = specVersion
        self.meta = meta
        self.unrecognized = unrecognized
    }

    /// Snapshot listing only top-level targets at `targetsVersion`.
    public init(version: Int, expires: Date, targetsVersion: Int) {
        self.init(version: version, expires: expires, meta: ["targets.json": MetaFile(version: targetsVersion)])
    }

    /// The entry for the top-level targets role.
    public var targetsMeta: MetaFile { meta["targets.json"]! }

    public init(json: JSONValue) throws(TUFError) {
        var fields = try SignedFields(json, role: Self.role)
        guard let metaJSON = fields.take("meta")?.objectValue else { throw .malformed("snapshot has no meta object") }
        var meta: [String: MetaFile] = [:]
        for (name, fileJSON) in metaJSON {
            meta[name] = try MetaFile(json: fileJSON, name: name)
        }
        guard meta["targets.json"] != nil else { throw .malformed("snapshot meta does not list targets.json") }
        self.init(
            version: fields.version, expires: fields.expires, meta: meta, specVersion: fields.specVersion,
            unrecognized: fields.rest)
    }

    public func toJSON() -> JSONValue {
        var object = SignedFields.header(role: Self.role, version: version, expires: expires, specVersion: specVersion, rest: unrecognized)
        object["meta"] = .object(meta.mapValues { $0.toJSON() })
        return .object(object)
    }
}

public struct TimestampMetadata: TUFPayload, Hashable {
    public static let role = TUFRole.timestamp
    public var version: Int
    public var expires: Date
    public var specVersion: String
    /// Serialised as `meta: {"snapshot.json": …}`.
    public var snapshot: MetaFile
    public var unrecognized: [String: JSONValue]

    public init(
        version: Int, expires: Date, snapshot: MetaFile, specVersion: String = TUF.specVersion,
        unrecognized: [String: JSONValue] = [:]
    ) {
        self.version = version
        self.expires = expires
        self.specVersion = specVersion
        self.snapshot = snapshot
        self.unrecognized = unrecognized
    }

    public init(json: JSONValue) throws(TUFError) {
        var fields = try SignedFields(json, role: Self.role)
        guard let metaJSON = fields.take("meta")?.objectValue, metaJSON.count == 1, let snapshotJSON = metaJSON["snapshot.json"]
        else { throw .malformed("timestamp meta must list exactly snapshot.json") }
        self.init(
            version: fields.version, expires: fields.expires, snapshot: try MetaFile(json: snapshotJSON, name: "snapshot.json"),
            specVersion: fields.specVersion, unrecognized: fields.rest)
    }

    public func toJSON() -> JSONValue {
        var object = SignedFields.header(role: Self.role, version: version, expires: expires, specVersion: specVersion, rest: unrecognized)
        object["meta"] = .object(["snapshot.json": snapshot.toJSON()])
        return .object(object)
    }
}

// MARK: - Shared helpers

/// The fields every `signed` object has, and the members left over.
struct SignedFields {
    var version: Int
    var expires: Date
    var specVersion: String
    var rest: [String: JSONValue]

    init(_ json: JSONValue, role: TUFRole) throws(TUFError) {
        guard var object = json.objectValue else { throw .malformed("\(role.rawValue): signed is not an object") }
        guard let type = object.removeValue(forKey: "_type")?.stringValue else {
            throw .malformed("\(role.rawValue): signed has no _type")
        }
        guard type == role.rawValue else { throw .wrongType(expected: role, got: type) }
        guard let spec = object.removeValue(forKey: "spec_version")?.stringValue else {
            throw .malformed("\(role.rawValue): signed has no spec_version")
        }
        let parts = spec.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, parts[0] == "1",
            parts.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") } })
        else { throw .unsupportedSpecVersion(spec) }
        guard let version = object.removeValue(forKey: "version")?.intValue, version >= 1, version <= Int64(Int.max) else {
            throw .malformed("\(role.rawValue): version must be an integer ≥ 1")
        }
        guard let expiresString = object.removeValue(forKey: "expires")?.stringValue,
            let expires = TUFDate.parse(expiresString)
        else { throw .malformed("\(role.rawValue): expires must be a date like 2030-01-01T00:00:00Z") }
        self.version = Int(version)
        self.expires = expires
        self.specVersion = spec
        self.rest = object
    }

    mutating func take(_ key: String) -> JSONValue? { rest.removeValue(forKey: key) }

    static func header(role: TUFRole, version: Int, expires: Date, specVersion: String, rest: [String: JSONValue])
        -> [String: JSONValue]
    {
        var object = rest
        object["_type"] = .string(role.rawValue)
        object["spec_version"] = .string(specVersion)
        object["version"] = .int(Int64(version))
        object["expires"] = .string(TUFDate.format(expires))
        return object
    }
}

enum Hashes {
    /// The sha256 member of a `hashes` object; nil when `hashes` is absent.
    /// A `hashes` object without sha256 is refused: it could not be checked.
    static func sha256(_ json: JSONValue?, what: String) throws(TUFError) -> String? {
        guard let json else { return nil }
        guard let object = json.objectValue, !object.isEmpty else { throw .malformed("\(what): hashes is not a non-empty object") }
        guard let hex = object["sha256"]?.stringValue else { throw .malformed("\(what): hashes has no sha256") }
        guard hex.utf8.count == 64, let bytes = Hex.decode(hex), Hex.encode(bytes) == hex else {
            throw .malformed("\(what): sha256 is not 64 lowercase hex digits")
        }
        return hex
    }
}
