import Foundation
import Testing
import UpgradeCore

/// The command line as an operator types it.
struct CommandLineTests {
    @Test func keygenWritesAPrivateKeyFileAndPrintsTheServerID() throws {
        let dir = try Harness.temporaryDirectory("keygen")
        defer { try? FileManager.default.removeItem(at: dir) }
        // A bare relative file name, as typed in the directory where the key should go.
        let result = try Harness.run("/bin/sh", ["-c", "cd '\(dir.path)' && exec '\(Harness.binary)' keygen --out server.key"])
        #expect(result.status == 0, "\(result.output)")
        let id = result.output.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(ServerID.isWellFormed(id), "printed '\(id)'")
        let attributes = try FileManager.default.attributesOfItem(atPath: dir.appending(path: "server.key").path)
        #expect(attributes[.posixPermissions] as? Int == 0o600)
        #expect(try Harness.run(Harness.binary, ["id", "--key", dir.appending(path: "server.key").path]).output == id + "\n")

        // A second keygen must not silently replace the fleet's identity.
        let again = try Harness.run(Harness.binary, ["keygen", "--out", dir.appending(path: "server.key").path])
        #expect(again.status == 73)
        #expect(again.output.contains("server.key"), "\(again.output)")
        #expect(try Harness.run(Harness.binary, ["id", "--key", dir.appending(path: "server.key").path]).output == id + "\n")
    }

    @Test func keygenNodeWritesAPrivateNodeKeyAndPrintsTheEnrollmentLine() throws {
        let dir = try Harness.temporaryDirectory("keygen-node")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appending(path: "n1.key").path
        let result = try Harness.run(Harness.binary, ["keygen", "--node", "n1", "--out", path])
        #expect(result.status == 0, "\(result.output)")
        let words = result.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ")
        #expect(words.count == 2 && words[0] == "n1", "printed '\(result.output)'")
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect(attributes[.posixPermissions] as? Int == 0o600)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: String]
        #expect(json?["kind"] == "upgradefs-node-key" && json?["node"] == "n1")
        // The printed public key is the second half of the 64-byte libsodium secret.
        #expect(json?["secret"].map { String($0.suffix(64)) } == words.last.map(String.init))

        let again = try Harness.run(Harness.binary, ["keygen", "--node", "n1", "--out", path])
        #expect(again.status == 73)
        #expect(again.output.contains("already exists"), "\(again.output)")
        let forced = try Harness.run(Harness.binary, ["keygen", "--node", "n1", "--out", path, "--force"])
        #expect(forced.status == 0 && forced.output != result.output, "\(forced.output)")

        let badName = try Harness.run(Harness.binary, ["keygen", "--node", "Bad/Name", "--out", dir.appending(path: "x.key").path])
        #expect(badName.status == 64)
        #expect(badName.output.contains("is not a node name"), "\(badName.output)")
        #expect(!FileManager.default.fileExists(atPath: dir.appending(path: "x.key").path))
    }

    @Test func badFlagsAreRefusedWithAReason() throws {
        let listen = try Harness.run(Harness.binary, ["serve", "--state", "/tmp/x", "--publish", "/tmp/y", "--listen", "nonsense"])
        #expect(listen.status == 64)
        #expect(listen.output.contains("--listen 'nonsense' is not ADDRESS:PORT"), "\(listen.output)")
        let source = try Harness.run(Harness.binary, ["mount", "example.net,notanid", "/mnt"])
        #expect(source.status == 64)
        #expect(source.output.contains("bad mount source"), "\(source.output)")
        let missingKey = try Harness.run(Harness.binary, ["id", "--key", "/nonexistent/server.key"])
        #expect(missingKey.status == 66)
        #expect(missingKey.output.contains("/nonexistent/server.key"), "\(missingKey.output)")
    }

    /// Node names are ASCII: a look-alike of `n1` (Cyrillic, full-width, zero-width space, capital) is refused at
    /// enrolment, before anything is written, so no second identity can pass for n1 in `status` or the tree.
    @Test func enrollingAUnicodeLookAlikeOfANodeNameIsRefused() throws {
        let dir = try Harness.temporaryDirectory("cli-lookalike")
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = String(repeating: "ab", count: 32)
        for name in ["\u{043F}1", "n\u{FF11}", "n1\u{200B}", "N1", "n1/../n2"] {
            let result = try Harness.run(Harness.binary, ["enroll", "--state", dir.path, "--create", name, key])
            #expect(result.status == 64, "\(name.debugDescription): \(result.output)")
            #expect(result.output.contains("is not a node name"), "\(result.output)")
            let keygen = try Harness.run(Harness.binary, ["keygen", "--node", name, "--out", dir.appending(path: "node.key").path])
            #expect(keygen.status == 64, "\(name.debugDescription): \(keygen.output)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.appending(path: "udb.sqlite").path))
        #expect(!FileManager.default.fileExists(atPath: dir.appending(path: "node.key").path))
    }
}
