#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import UpgradeCore
import UpgradeFiles

/// The server's key file (`upgradefs keygen --out FILE`, mode 0600):
/// `{"kind":"upgradefs-server-key","keys":{"root":…,"targets":…,"snapshot":…,"timestamp":…},"initial_root":"<base64>"}`
/// with each key the hex of its 64-byte libsodium secret key, and the exact
/// bytes of `1.root.json`, from which the server id is computed.
public struct ServerKeyFile: Sendable {
    public static let kind = "upgradefs-server-key"
    public static let defaultPath = "/etc/upgradefs/server.key"
    public static let initialRootExpirySeconds: Int64 = 365 * 86400

    public let root: Ed25519KeyPair
    public let targets: Ed25519KeyPair
    public let snapshot: Ed25519KeyPair
    public let timestamp: Ed25519KeyPair
    /// The exact bytes of `1.root.json`.
    public let initialRoot: [UInt8]

    /// The self-certifying server id: base32 of SHA-256 over `initialRoot`.
    public var serverID: String { ServerID.of(initialRoot: initialRoot) }

    /// The key pair that signs `role`.
    public func key(for role: TUFRole) -> Ed25519KeyPair {
        switch role {
        case .root: root
        case .targets: targets
        case .snapshot: snapshot
        case .timestamp: timestamp
        }
    }

    /// Four fresh, distinct keys and the initial root (version 1, expiring
    /// 365 days from `now`) signed by the root key.
    public static func generate(now: Date = Date()) -> ServerKeyFile {
        var pairs: [Ed25519KeyPair] = []
        while pairs.count < 4 {
            let pair = Ed25519KeyPair.generate()
            if !pairs.contains(where: { $0.publicKey == pair.publicKey }) { pairs.append(pair) }
        }
        let expires = Date(timeIntervalSince1970: (now.timeIntervalSince1970 + Double(initialRootExpirySeconds)).rounded(.down))
        let rootMetadata = RootMetadata.initial(
            rootKey: TUFKey(ed25519PublicKey: pairs[0].publicKey),
            targetsKey: TUFKey(ed25519PublicKey: pairs[1].publicKey),
            snapshotKey: TUFKey(ed25519PublicKey: pairs[2].publicKey),
            timestampKey: TUFKey(ed25519PublicKey: pairs[3].publicKey),
            expires: expires)
        let bytes = MetadataCodec.sign(rootMetadata, keys: [pairs[0]])
        return ServerKeyFile(root: pairs[0], targets: pairs[1], snapshot: pairs[2], timestamp: pairs[3], initialRoot: bytes)
    }

    init(root: Ed25519KeyPair, targets: Ed25519KeyPair, snapshot: Ed25519KeyPair, timestamp: Ed25519KeyPair, initialRoot: [UInt8]) {
        self.root = root
        self.targets = targets
        self.snapshot = snapshot
        self.timestamp = timestamp
        self.initialRoot = initialRoot
    }

    private struct Document: Codable {
        struct Keys: Codable {
            var root: String
            var targets: String
            var snapshot: String
            var timestamp: String
        }
        var kind: String
        var keys: Keys
        var initial_root: String
    }

    /// The file's bytes (JSON, one line, newline-terminated).
    public func encoded() -> [UInt8] {
        let document = Document(
            kind: Self.kind,
            keys: .init(
                root: Hex.encode(root.secretKey), targets: Hex.encode(targets.secretKey),
                snapshot: Hex.encode(snapshot.secretKey), timestamp: Hex.encode(timestamp.secretKey)),
            initial_root: Data(initialRoot).base64EncodedString())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a struct of strings cannot fail.
        return Array(try! encoder.encode(document)) + [0x0A]
    }

    /// Writes the key file, created with mode 0600 (never wider, not even for
    /// a moment). Refuses to replace an existing file unless `overwrite`.
    public func write(to path: String, overwrite: Bool = false) throws(ServerKeyFileError) {
        var bytes = encoded()
        defer { Sodium.wipe(&bytes) }
        do {
            try SecretFile.write(bytes, to: path, overwrite: overwrite)
        } catch {
            throw ServerKeyFileError(path: path, problem: error.description)
        }
    }

    /// Reads and checks a key file. A file its group or others may read or write is refused (as ssh
    /// does), with the fix in the message.
    public static func load(from path: String) throws(ServerKeyFileError) -> ServerKeyFile {
        var bytes: [UInt8]
        do {
            bytes = try SecretFile.read(path, limit: 1 << 20, createdBy: "upgradefs keygen --out \(path)")
        } catch {
            throw ServerKeyFileError(path: path, problem: error.description)
        }
        defer { Sodium.wipe(&bytes) }
        return try parse(bytes, path: path)
    }

    /// Parses a key file's bytes and checks that the initial root names exactly these keys.
    public static func parse(_ bytes: [UInt8], path: String = "key file") throws(ServerKeyFileError) -> ServerKeyFile {
        func fail(_ problem: String) -> ServerKeyFileError { ServerKeyFileError(path: path, problem: problem) }
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(bytes))
        } catch {
            throw fail("is not a server key file (expected JSON with kind, keys and initial_root)")
        }
        guard document.kind == kind else { throw fail("kind is \"\(document.kind)\", expected \"\(kind)\"") }
        func pair(_ role: String, _ hex: String) throws(ServerKeyFileError) -> Ed25519KeyPair {
            guard let secret = Hex.decode(hex) else { throw fail("\(role) key is not hex") }
            do {
                return try Ed25519KeyPair(secretKey: secret)
            } catch {
                throw fail("\(role) key: \(error)")
            }
        }
        let root = try pair("root", document.keys.root)
        let targets = try pair("targets", document.keys.targets)
        let snapshot = try pair("snapshot", document.keys.snapshot)
        let timestamp = try pair("timestamp", document.keys.timestamp)
        guard Set([root, targets, snapshot, timestamp].map(\.publicKey)).count == 4 else {
            throw fail("the four keys must be distinct")
        }
        guard let initialRoot = Data(base64Encoded: document.initial_root).map(Array.init) else {
            throw fail("initial_root is not base64")
        }
        let envelope: (payload: RootMetadata, signedBytes: [UInt8], signatures: [(keyID: String, signature: [UInt8])])
        do {
            envelope = try MetadataCodec.decode(initialRoot, as: RootMetadata.self)
        } catch {
            throw fail("initial_root is not root metadata: \(error)")
        }
        let decoded = envelope.payload
        guard decoded.version == 1 else { throw fail("initial_root has version \(decoded.version), expected 1") }
        let expected: [TUFRole: Ed25519KeyPair] = [.root: root, .targets: targets, .snapshot: snapshot, .timestamp: timestamp]
        for (role, keyPair) in expected {
            guard decoded.keys(for: role).map(\.publicKey) == [keyPair.publicKey] else {
                throw fail("initial_root does not name this file's \(role.rawValue) key for the \(role.rawValue) role")
            }
        }
        let rootKeyID = TUFKey(ed25519PublicKey: root.publicKey).keyID
        let verifier = SodiumVerifier()
        guard envelope.signatures.contains(where: {
            $0.keyID == rootKeyID && verifier.isValid(signature: $0.signature, message: envelope.signedBytes, publicKey: root.publicKey)
        }) else {
            throw fail("initial_root is not signed by this file's root key")
        }
        return ServerKeyFile(root: root, targets: targets, snapshot: snapshot, timestamp: timestamp, initialRoot: initialRoot)
    }
}

/// Prints, debug-prints and reflects as the server id and the key ids only: never a secret.
extension ServerKeyFile: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "ServerKeyFile(server id: \(serverID), root: \(root.keyID), targets: \(targets.keyID), "
            + "snapshot: \(snapshot.keyID), timestamp: \(timestamp.keyID))"
    }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(self, children: [
            "serverID": serverID, "root": root, "targets": targets, "snapshot": snapshot, "timestamp": timestamp,
        ], displayStyle: .struct)
    }
}

public struct ServerKeyFileError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let problem: String
    public var description: String { "server key file \(path) \(problem)" }
}
