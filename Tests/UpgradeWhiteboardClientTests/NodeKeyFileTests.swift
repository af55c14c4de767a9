#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeWhiteboardClient

/// The node key file: what `upgradefs keygen --node` writes and `mount --node-key` reads.
struct NodeKeyFileTests {
    @Test func aWrittenKeyFileIsPrivateAndLoadsBackTheSameKey() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path + "/n1.key"
        let key = try NodeKeyFile.generate(node: "n1")
        try key.write(to: path)

        var st = stat()
        #expect(stat(path, &st) == 0)
        #expect(st.st_mode & 0o7777 == 0o600)
        let loaded = try NodeKeyFile.load(from: path)
        #expect(loaded.node == "n1")
        #expect(loaded.key.publicKey == key.key.publicKey)
        #expect(loaded.key.secretKey == key.key.secretKey)
        #expect(loaded.enrollmentLine == "n1 " + Hex.encode(key.key.publicKey))
        // The documented format, so other tools can read it.
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: String]
        #expect(json == ["kind": "upgradefs-node-key", "node": "n1", "secret": Hex.encode(key.key.secretKey)])
    }

    @Test func anExistingKeyFileIsNotReplacedUnlessForced() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.path + "/n1.key"
        let first = try NodeKeyFile.generate(node: "n1")
        try first.write(to: path)
        let second = try NodeKeyFile.generate(node: "n1")
        #expect(throws: NodeKeyFileError.self) { try second.write(to: path) }
        #expect(try NodeKeyFile.load(from: path).key.publicKey == first.key.publicKey)
        try second.write(to: path, overwrite: true)
        #expect(try NodeKeyFile.load(from: path).key.publicKey == second.key.publicKey)
        // No temporary files left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["n1.key"])
    }

    @Test(arguments: ["", "N1", "-n1", ".n1", "n1/x", "n 1", "n1\n", String(repeating: "a", count: 64), "nö"])
    func badNodeNamesAreRefused(name: String) {
        #expect(!NodeKeyFile.isValidNodeName(name))
        #expect(throws: NodeKeyFileError.self) { try NodeKeyFile.generate(node: name) }
    }

    @Test(arguments: ["n1", "operator", "0", "web-01.eu_west", String(repeating: "a", count: 63)])
    func goodNodeNamesAreAccepted(name: String) throws {
        #expect(NodeKeyFile.isValidNodeName(name))
        #expect(try NodeKeyFile.generate(node: name).node == name)
    }

    @Test func brokenKeyFilesAreRefusedWithAReason() throws {
        let good = try NodeKeyFile.generate(node: "n1")
        let secret = Hex.encode(good.key.secretKey)
        func problem(_ text: String) -> String {
            do {
                _ = try NodeKeyFile.parse(Array(text.utf8), path: "k")
                return "accepted"
            } catch {
                return error.description
            }
        }
        #expect(problem("not json").contains("is not a node key file"))
        #expect(problem(#"{"kind":"upgradefs-server-key","node":"n1","secret":"\#(secret)"}"#).contains("kind is"))
        #expect(problem(#"{"kind":"upgradefs-node-key","node":"N1","secret":"\#(secret)"}"#).contains("node name"))
        #expect(problem(#"{"kind":"upgradefs-node-key","node":"n1","secret":"zz"}"#).contains("not hex"))
        #expect(problem(#"{"kind":"upgradefs-node-key","node":"n1","secret":"\#(secret.dropLast(2))"}"#).contains("64 bytes"))
        // A secret whose public half was tampered with.
        var tampered = good.key.secretKey
        tampered[63] ^= 1
        #expect(problem(#"{"kind":"upgradefs-node-key","node":"n1","secret":"\#(Hex.encode(tampered))"}"#).contains("does not match"))
        #expect(problem(#"{"kind":"upgradefs-node-key","node":"n1","secret":"\#(secret)"}"#) == "accepted")
        do {
            _ = try NodeKeyFile.load(from: "/nonexistent/n1.key")
            Issue.record("loaded a missing file")
        } catch {
            #expect(error.description.contains("/nonexistent/n1.key does not exist"))
        }
    }
}
