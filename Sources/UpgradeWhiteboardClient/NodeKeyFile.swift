#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import UpgradeCore
import UpgradeFiles

/// A node's (or the operator's) whiteboard identity (`upgradefs keygen --node NAME --out FILE`, mode 0600):
/// `{"kind":"upgradefs-node-key","node":"NAME","secret":"<hex 64-byte libsodium secret>"}`.
/// The public half, printed by keygen as `NAME <64 hex>`, is what the operator enrolls on the server.
public struct NodeKeyFile: Sendable {
    public static let kind = "upgradefs-node-key"
    public static let defaultPath = "/etc/upgradefs/node.key"

    public let node: String
    public let key: Ed25519KeyPair

    /// The line the operator enrolls: `NAME <public key hex>`.
    public var enrollmentLine: String { "\(node) \(Hex.encode(key.publicKey))" }

    /// A node name is `[a-z0-9][a-z0-9._-]{0,62}` (`WhiteboardPath.isNodeName`): safe as a path component and in a log line.
    public static func isValidNodeName(_ name: String) -> Bool { WhiteboardPath.isNodeName(name) }

    /// A fresh key for `node`.
    public static func generate(node: String) throws(NodeKeyFileError) -> NodeKeyFile {
        guard isValidNodeName(node) else { throw NodeKeyFileError.badName(node) }
        return NodeKeyFile(node: node, key: Ed25519KeyPair.generate())
    }

    public init(node: String, key: Ed25519KeyPair) {
        self.node = node
        self.key = key
    }

    private struct Document: Codable {
        var kind: String
        var node: String
        var secret: String
    }

    /// The file's bytes (JSON, one line, newline-terminated).
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a struct of strings cannot fail.
        return Array(try! encoder.encode(Document(kind: Self.kind, node: node, secret: Hex.encode(key.secretKey)))) + [0x0A]
    }

    /// Writes the key file, created with mode 0600 by `open(O_CREAT|O_EXCL)` (never wider, not even for a
    /// moment; no chmod afterwards). Refuses to replace an existing file unless `overwrite`.
    public func write(to path: String, overwrite: Bool = false) throws(NodeKeyFileError) {
        var bytes = encoded()
        defer { Sodium.wipe(&bytes) }
        do {
            try SecretFile.write(bytes, to: path, overwrite: overwrite)
        } catch {
            throw NodeKeyFileError(path: path, problem: error.description)
        }
    }

    /// Reads and checks a node key file. A file its group or others may read or write is refused (as ssh
    /// does), with the fix in the message.
    public static func load(from path: String) throws(NodeKeyFileError) -> NodeKeyFile {
        var bytes: [UInt8]
        do {
            bytes = try SecretFile.read(path, limit: 64 << 10, createdBy: "upgradefs keygen --node NAME --out \(path)")
        } catch {
            throw NodeKeyFileError(path: path, problem: error.description)
        }
        defer { Sodium.wipe(&bytes) }
        return try parse(bytes, path: path)
    }

    /// Parses a node key file's bytes.
    public static func parse(_ bytes: [UInt8], path: String = "key file") throws(NodeKeyFileError) -> NodeKeyFile {
        func fail(_ problem: String) -> NodeKeyFileError { NodeKeyFileError(path: path, problem: problem) }
        let document: Document
        do {
            document = try JSONDecoder().decode(Document.self, from: Data(bytes))
        } catch {
            throw fail("is not a node key file (expected JSON with kind, node and secret)")
        }
        guard document.kind == kind else { throw fail("kind is \"\(document.kind)\", expected \"\(kind)\"") }
        guard isValidNodeName(document.node) else {
            throw fail("node name \"\(document.node)\" is not valid (\(WhiteboardPath.nodeNameGrammar))")
        }
        guard let secret = Hex.decode(document.secret) else { throw fail("secret is not hex") }
        let key: Ed25519KeyPair
        do {
            key = try Ed25519KeyPair(secretKey: secret)
        } catch {
            throw fail("secret: \(error)")
        }
        return NodeKeyFile(node: document.node, key: key)
    }
}

public struct NodeKeyFileError: Error, CustomStringConvertible, Sendable {
    /// The key file concerned, empty when the problem is not about a file.
    public let path: String
    public let problem: String
    public var description: String { path.isEmpty ? problem : "node key file \(path) \(problem)" }

    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }

    static func badName(_ name: String) -> NodeKeyFileError {
        NodeKeyFileError(path: "", problem: "bad node name \"\(name)\": expected \(WhiteboardPath.nodeNameGrammar)")
    }
}
