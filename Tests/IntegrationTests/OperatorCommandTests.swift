#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeCore

/// The everyday commands around publishing and running a server: `check`, `publish --wait`, `version`,
/// `serve --config` with drop-ins, `--log-format json`.
@Suite(.serialized) struct OperatorCommandTests {
    /// One bundle of each kind the server rejects, and what makes it so (files; executables; a FIFO's path).
    static func badBundles(in dir: URL) throws -> [TestBundle] {
        let payload = ["payload/app": Array("v1\n".utf8)]
        var bundles = [
            try TestBundle(in: dir, name: "no-manifest", version: 1, files: payload.merging(["upgrade.toml": []]) { $1 }),
            try TestBundle(in: dir, name: "not-toml", version: 1, files: payload.merging(["upgrade.toml": Array("class = \n".utf8)]) { $1 }),
            try TestBundle(in: dir, name: "not-utf8", version: 1, files: payload.merging(["upgrade.toml": [0x63, 0xff, 0xfe]]) { $1 }),
            try TestBundle(in: dir, name: "unknown-key", version: 1,
                           files: payload.merging(["upgrade.toml": Array("class = \"demo\"\nversion = 1\ncolour = 1\n".utf8)]) { $1 }),
            try TestBundle(in: dir, name: "version-zero", version: 0, files: payload),
            try TestBundle(in: dir, name: "too-big", version: 1, files: ["payload/big": [UInt8](repeating: 7, count: 2000)]),
            try TestBundle(in: dir, name: "sf-not-executable", version: 1,
                           files: payload.merging(["sf": Array("#!/bin/sh\nexit 0\n".utf8),
                                                   "upgrade.toml": Array("class = \"demo\"\nversion = 1\nsf = \"sf\"\n".utf8)]) { $1 }),
            try TestBundle(in: dir, name: "escaping-link", version: 1, files: payload),
            try TestBundle(in: dir, name: "fifo", version: 1, files: payload),
        ]
        // An empty upgrade.toml is still a manifest: take it away.
        try FileManager.default.removeItem(at: bundles[0].directory.appending(path: "upgrade.toml"))
        try FileManager.default.createSymbolicLink(atPath: bundles[7].directory.appending(path: "payload/out").path,
                                                   withDestinationPath: "../../../etc/passwd")
        #expect(mkfifo(bundles[8].directory.appending(path: "payload/pipe").path, 0o644) == 0)
        bundles.sort { $0.directory.lastPathComponent < $1.directory.lastPathComponent }
        return bundles
    }

    @Test func checkJudgesBundlesAsTheServerDoes() throws {
        let dir = try Harness.temporaryDirectory("check")
        defer { try? FileManager.default.removeItem(at: dir) }
        let limits = ["--max-file-size", "1000"]
        let server = try ServeProcess(arguments: limits)

        let good = try TestBundle(in: dir, name: "good", version: 1, files: ["payload/app": Array("v1\n".utf8)])
        let ok = try Harness.run(Harness.binary, ["check", good.directory.path] + limits)
        #expect(ok.status == 0, "\(ok.output)")
        #expect(ok.output.contains("ok: version 1, class demo"), "\(ok.output)")

        for bundle in try Self.badBundles(in: dir) {
            let name = bundle.directory.lastPathComponent
            let checked = try Harness.run(Harness.binary, ["check", bundle.directory.path] + limits)
            let verdict = try server.publish(bundle)
            #expect(!verdict.published, "\(name): the server published it")
            #expect(checked.status == 65, "\(name): \(checked.output)")
            let reason = verdict.marker.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(checked.output == "upgradefs check: rejected: \(reason)\n", "\(name): server said \(reason)")
        }

        // The version rule against what is published: 1 is not above --latest 1.
        let stale = try Harness.run(Harness.binary, ["check", good.directory.path, "--latest", "1"])
        #expect(stale.status == 65)
        #expect(stale.output.contains("version 1 is not above the latest published version 1"), "\(stale.output)")
        let missing = try Harness.run(Harness.binary, ["check", dir.appending(path: "nonexistent").path])
        #expect(missing.status == 66, "\(missing.output)")
    }

    @Test func publishWaitReturnsTheServersVerdict() throws {
        let dir = try Harness.temporaryDirectory("publish-wait")
        defer { try? FileManager.default.removeItem(at: dir) }
        let server = try ServeProcess()
        let good = try TestBundle(in: dir, name: "app-v1", version: 1, files: ["payload/app": Array("v1\n".utf8)])
        let published = try Harness.run(Harness.binary, ["publish", "--wait", good.directory.path, "--to", server.publish.path])
        #expect(published.status == 0, "\(published.output)")
        #expect(published.output.contains("published app-v1: version 1"), "\(published.output)")
        #expect(Harness.get("\(server.baseURL)/metadata/timestamp.json")?.status == 200)

        // The same version again: rejected, with the server's reason, exit 65.
        let again = try TestBundle(in: dir, name: "app-v1-again", version: 1, files: ["payload/app": Array("v1\n".utf8)])
        let rejected = try Harness.run(Harness.binary, ["publish", "--wait", again.directory.path, "--to", server.publish.path])
        #expect(rejected.status == 65, "\(rejected.output)")
        let marker = try String(contentsOf: server.publish.appending(path: "app-v1-again.rejected"), encoding: .utf8)
        #expect(rejected.output == "upgradefs publish: rejected: \(marker)", "\(rejected.output)")

        // Dropped already: refused without touching what is there.
        let twice = try Harness.run(Harness.binary, ["publish", "--wait", good.directory.path, "--to", server.publish.path])
        #expect(twice.status == 73, "\(twice.output)")

        // No server watching: the wait times out (75) and the bundle stays.
        let nobody = dir.appending(path: "unwatched")
        try FileManager.default.createDirectory(at: nobody, withIntermediateDirectories: true)
        let timedOut = try Harness.run(Harness.binary, ["publish", "--wait", "--timeout", "0.5", good.directory.path,
                                                        "--to", nobody.path])
        #expect(timedOut.status == 75, "\(timedOut.output)")
        #expect(FileManager.default.fileExists(atPath: nobody.appending(path: "app-v1/upgrade.toml").path))
    }

    @Test func versionIsASubcommandToo() throws {
        let flag = try Harness.run(Harness.binary, ["--version"])
        let command = try Harness.run(Harness.binary, ["version"])
        #expect(flag.status == 0 && command.status == 0)
        #expect(!flag.output.isEmpty && command.output == flag.output, "\(flag.output) / \(command.output)")
    }

    /// What `make install` puts in bash-completion's directory.
    @Test func bashCompletionKnowsTheSubcommands() throws {
        let script = try Harness.run(Harness.binary, ["--generate-completion-script", "bash"])
        #expect(script.status == 0)
        for command in ["serve", "mount", "manager", "check", "publish", "version"] {
            #expect(script.output.contains(command), "\(command) missing")
        }
    }

    /// The main file, then its drop-ins in name order, then the flags: the last word wins.
    @Test func serveConfigFileDropInsAndFlagsOverrideInOrder() throws {
        let dir = try Harness.temporaryDirectory("serve-config")
        defer { try? FileManager.default.removeItem(at: dir) }
        let main = dir.appending(path: "serve.toml").path
        try """
            state = "/srv/state"
            publish = "/srv/publish"
            listen = "127.0.0.1:1001"
            max-files = 5
            settle-ms = 100
            """.write(toFile: main, atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(at: dir.appending(path: "serve.d"), withIntermediateDirectories: true)
        try "listen = \"127.0.0.1:1002\"\nmax-files = 6\n".write(toFile: dir.appending(path: "serve.d/20-b.toml").path,
                                                                  atomically: true, encoding: .utf8)
        try "listen = \"127.0.0.1:1003\"\nlog-format = \"json\"\n".write(
            toFile: dir.appending(path: "serve.d/10-a.toml").path, atomically: true, encoding: .utf8)
        try "listen = \"127.0.0.1:9999\"\n".write(toFile: dir.appending(path: "serve.d/ignored.conf").path,
                                                  atomically: true, encoding: .utf8)

        let merged = try Harness.run(Harness.binary, ["serve", "--config", main, "--print-config", "--max-files", "7"])
        #expect(merged.status == 0, "\(merged.output)")
        let lines = Set(merged.output.split(separator: "\n").map(String.init))
        #expect(lines.contains("state = \"/srv/state\""), "\(merged.output)")
        #expect(lines.contains("listen = \"127.0.0.1:1002\""), "20-b.toml comes after 10-a.toml: \(merged.output)")
        #expect(lines.contains("max-files = 7"), "the flag wins: \(merged.output)")
        #expect(lines.contains("settle-ms = 100") && lines.contains("log-format = \"json\""), "\(merged.output)")
        #expect(lines.contains("timestamp-expiry = 86400"), "defaults stay: \(merged.output)")

        // A wrong file is a config error (78) naming the file and key; a missing one is 66.
        try "listen = 7420\n".write(toFile: dir.appending(path: "serve.d/30-bad.toml").path, atomically: true, encoding: .utf8)
        let wrongType = try Harness.run(Harness.binary, ["serve", "--config", main, "--print-config"])
        #expect(wrongType.status == 78, "\(wrongType.output)")
        #expect(wrongType.output.contains("30-bad.toml: key \"listen\" must be a string"), "\(wrongType.output)")
        try "colour = \"red\"\n".write(toFile: dir.appending(path: "serve.d/30-bad.toml").path, atomically: true, encoding: .utf8)
        let unknown = try Harness.run(Harness.binary, ["serve", "--config", main, "--print-config"])
        #expect(unknown.status == 78 && unknown.output.contains("key \"colour\" is not a known key"), "\(unknown.output)")
        try "listen = \"nonsense\"\n".write(toFile: dir.appending(path: "serve.d/30-bad.toml").path, atomically: true, encoding: .utf8)
        let invalid = try Harness.run(Harness.binary, ["serve", "--config", main, "--print-config"])
        #expect(invalid.status == 78 && invalid.output.contains("is not ADDRESS:PORT"), "\(invalid.output)")
        let missing = try Harness.run(Harness.binary, ["serve", "--config", dir.appending(path: "none.toml").path])
        #expect(missing.status == 66, "\(missing.output)")
    }

    /// `--log-format json`: every line serve writes is one JSON object with the level, label and message.
    @Test func serveLogsJSONLines() throws {
        let server = try ServeProcess(arguments: ["--log-format", "json"])
        let bundle = try TestBundle(in: server.directory, name: "json-v1", version: 1, files: ["payload/a": Array("a".utf8)])
        #expect(try server.publish(bundle).published)
        server.stop()
        let lines = server.log.split(separator: "\n")
        #expect(lines.count >= 2, "\(server.log)")
        for line in lines {
            let object = try? JSONValue.parse(Array(line.utf8))
            #expect(object?["level"]?.stringValue != nil && object?["message"]?.stringValue != nil, "not a JSON log line: \(line)")
            #expect(object?["label"]?.stringValue != nil && object?["time"]?.stringValue != nil, "\(line)")
        }
        #expect(lines.contains { $0.contains("\"message\":\"published bundle\"") }, "\(server.log)")
    }
}
