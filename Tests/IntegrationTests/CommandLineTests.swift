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
}
