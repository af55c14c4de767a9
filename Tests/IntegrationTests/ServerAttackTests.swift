import Foundation
import Testing
import UpgradeCore

/// Attacks on `upgradefs serve` by a careless or hostile bundle author, a
/// client that misbehaves on the network, and operator mistakes, played
/// against the real binary: real processes, real HTTP, real signals.
@Suite(.serialized)
struct ServerAttackTests {
    // MARK: - Bundles

    @Test func hardLinkToFileOutsidePublishDirIsRejected() throws {
        let server = try ServeProcess()
        let secret = server.directory.appending(path: "outside/shadow")
        try FileManager.default.createDirectory(at: secret.deletingLastPathComponent(), withIntermediateDirectories: true)
        let secretBytes = Array("root:$6$not-for-nodes:19000:0:99999:7:::\n".utf8)
        try Data(secretBytes).write(to: secret)
        let (published, marker) = try server.drop("v1") { bundle in
            try ServeProcess.writeBundle(bundle, version: 1)
            guard link(secret.path, bundle.appending(path: "payload/shadow").path) == 0 else { throw HarnessError("link failed") }
        }
        #expect(!published)
        #expect(marker == "payload/shadow: file has 2 hard links (another name may be outside the bundle); copy it instead\n")
        #expect(!FileManager.default.fileExists(atPath: server.blobPath(sha256: TargetFile(describing: secretBytes).sha256)))
        #expect(Harness.get("\(server.baseURL)/healthz")?.status == 200)
    }

    /// `payload = "a/b/c/d/e/f"` with `etc -> ../../../../../../etc` in it stays inside the bundle,
    /// but a node installs the payload: there the link is the host's /etc.
    @Test func payloadLinkThatLeavesTheInstalledReleaseIsRejected() throws {
        let server = try ServeProcess()
        let (published, marker) = try server.drop("v1") { bundle in
            try ServeProcess.writeBundle(bundle, version: 1, manifestExtra: "payload = \"a/b/c/d/e/f\"\n", payload: "a/b/c/d/e/f")
            try FileManager.default.createDirectory(at: bundle.appending(path: "etc"), withIntermediateDirectories: true)
            try FileManager.default.createSymbolicLink(
                atPath: bundle.appending(path: "a/b/c/d/e/f/etc").path, withDestinationPath: "../../../../../../etc")
        }
        #expect(!published)
        #expect(marker == "a/b/c/d/e/f/etc: symlink target \"../../../../../../etc\" leaves the payload directory \"a/b/c/d/e/f\" (the installed release)\n")
    }

    /// A 1 TiB sparse `upgrade.toml` used to abort the server while allocating, again on every restart.
    @Test func sparseTerabyteManifestCrashesNeitherTheServerNorItsRestart() throws {
        let server = try ServeProcess()
        let (published, marker) = try server.drop("huge") { bundle in
            try ServeProcess.writeBundle(bundle, version: 1)
            guard truncate(bundle.appending(path: "upgrade.toml").path, 1 << 40) == 0 else { throw HarnessError("truncate failed") }
        }
        #expect(!published)
        #expect(marker == "upgrade.toml: the manifest is larger than 65536 bytes\n")
        #expect(server.isRunning && Harness.get("\(server.baseURL)/healthz")?.status == 200)
        // The bundle is still there on restart; without its marker it is judged again, the same way.
        #expect(server.stop() == 0)
        try FileManager.default.removeItem(at: server.publish.appending(path: "huge.rejected"))
        try server.start()
        #expect(Harness.waitUntil(20) { FileManager.default.fileExists(atPath: server.publish.appending(path: "huge.rejected").path) })
        #expect(server.isRunning && Harness.get("\(server.baseURL)/healthz")?.status == 200)
        let (good, _) = try server.drop("v1") { try ServeProcess.writeBundle($0, version: 1) }
        #expect(good, "\(server.log)")
    }

    /// 2,045 directories deep (longer than PATH_MAX): it used to be "cannot scan bundle" forever.
    @Test func bundle2045DirectoriesDeepIsRejected() throws {
        let server = try ServeProcess()
        defer { _ = try? Harness.run("/bin/rm", ["-rf", server.publish.appending(path: "deep").path]) }
        let (published, marker) = try server.drop("deep") { bundle in
            try ServeProcess.writeBundle(bundle, version: 1)
            var fd = open(bundle.appending(path: "payload").path, O_RDONLY | O_DIRECTORY)
            for _ in 0..<2045 {
                guard mkdirat(fd, "d", 0o755) == 0 else { throw HarnessError("mkdirat failed") }
                let next = openat(fd, "d", O_RDONLY | O_DIRECTORY)
                close(fd)
                fd = next
            }
            close(fd)
        }
        #expect(!published)
        let tooLong = "payload/" + Array(repeating: "d", count: 509).joined(separator: "/")
        #expect(marker == "\(tooLong): unsafe path: is 1025 bytes long, at most 1024 allowed\n")
        #expect(!server.log.contains("cannot scan bundle"), "\(server.log.suffix(2000))")
    }

    /// `version = 9223372036854775807` used to be published and to block every later bundle.
    @Test func versionInt64MaxIsRejectedAndLaterVersionsStillPublish() throws {
        let server = try ServeProcess()
        let (published, marker) = try server.drop("max") { try ServeProcess.writeBundle($0, version: Int64.max) }
        #expect(!published)
        #expect(marker == "upgrade.toml: version 9223372036854775807 is more than 1000 above the latest published version 0 (at most 1000)\n")
        let (next, _) = try server.drop("v1") { try ServeProcess.writeBundle($0, version: 1) }
        #expect(next)
        let (gap, _) = try server.drop("v1001") { try ServeProcess.writeBundle($0, version: 1001) }
        #expect(gap, "a gap within the bound is allowed")
    }

    // MARK: - Secrets

    /// A full start and publish at debug level: no byte sequence of any of the four secret keys (hex,
    /// base64, or Swift's array form) is in the log.
    @Test func debugLogOfStartAndPublishHoldsNoSecretKeyBytes() throws {
        let server = try ServeProcess(arguments: ["--log-level", "debug"])
        let (published, _) = try server.drop("v1") { try ServeProcess.writeBundle($0, version: 1) }
        #expect(published)
        _ = Harness.get("\(server.baseURL)/metrics")
        _ = Harness.get("\(server.baseURL)/metadata/timestamp.json")
        #expect(server.stop() == 0)
        let log = server.log
        #expect(log.contains(" debug "), "not a debug log: \(log.prefix(500))")
        let keyFile = try JSONSerialization.jsonObject(with: Data(contentsOf: server.keyFile)) as? [String: Any]
        let keys = try #require(keyFile?["keys"] as? [String: String])
        #expect(keys.count == 4)
        for (role, hex) in keys {
            let secret = try #require(Hex.decode(hex))
            let leaks = Self.secretForms(secret).filter { log.contains($0) }
            #expect(leaks.isEmpty, "the \(role) key's secret is in the debug log as \(leaks)")
        }
    }

    /// Windows of the 32-byte seed in hex (both cases) and as Swift prints an array, and base64 of
    /// the seed and of the whole secret.
    static func secretForms(_ secret: [UInt8]) -> [String] {
        let seed = Array(secret[..<32])
        var forms: [String] = []
        for start in stride(from: 0, through: 24, by: 4) {
            let window = Array(seed[start..<(start + 8)])
            let hex = Hex.encode(window)
            forms += [hex, hex.uppercased(), window.map(String.init).joined(separator: ", ")]
        }
        forms.append(String(Data(seed).base64EncodedString().prefix(16)))
        forms.append(String(Data(secret).base64EncodedString().prefix(16)))
        return forms
    }

    /// Like ssh: a key file its group or others may read is refused, with a message naming the file,
    /// its mode and the fix — the server's key and a node's key alike.
    @Test func keyFilesWithLooseModesAreRefusedWithTheFix() throws {
        let dir = try Harness.temporaryDirectory("loose-keys")
        defer { try? FileManager.default.removeItem(at: dir) }
        let serverKey = dir.appending(path: "server.key").path
        let keygen = try Harness.run(Harness.binary, ["keygen", "--out", serverKey])
        let id = keygen.output.trimmingCharacters(in: .whitespacesAndNewlines)
        chmod(serverKey, 0o644)
        let serve = try Harness.runBounded([
            "serve", "--key", serverKey, "--state", dir.appending(path: "state").path,
            "--publish", dir.appending(path: "publish").path, "--listen", "127.0.0.1:\(Harness.freePort())",
        ])
        #expect(serve.status == 65)
        #expect(serve.output.contains("\(serverKey) has mode 0644"), "\(serve.output)")
        #expect(serve.output.contains("chmod 600 \(serverKey)"), "\(serve.output)")
        let idLoose = try Harness.run(Harness.binary, ["id", "--key", serverKey])
        #expect(idLoose.status == 65 && idLoose.output.contains("chmod 600"), "\(idLoose.output)")

        let nodeKey = dir.appending(path: "n1.key").path
        #expect(try Harness.run(Harness.binary, ["keygen", "--node", "n1", "--out", nodeKey]).status == 0)
        chmod(nodeKey, 0o640)
        try FileManager.default.createDirectory(at: dir.appending(path: "mnt"), withIntermediateDirectories: true)
        defer { _ = try? Harness.run("/bin/fusermount3", ["-uz", dir.appending(path: "mnt").path]) }
        let mount = try Harness.runBounded([
            "mount", "127.0.0.1:\(Harness.freePort()),\(id)", dir.appending(path: "mnt").path,
            "--cache", dir.appending(path: "cache").path, "--node-key", nodeKey,
        ])
        #expect(mount.status == 66)
        #expect(mount.output.contains("\(nodeKey) has mode 0640"), "\(mount.output)")
        #expect(mount.output.contains("chmod 600 \(nodeKey)"), "\(mount.output)")
        #expect(!Harness.isMounted(dir.appending(path: "mnt").path))
    }

    // MARK: - Connections

    /// Many connections that never finish their request head (more than the connection limit):
    /// /healthz still answers at once, a bundle is still published, and every half-sent connection
    /// is closed by the idle timeout.
    @Test func halfSentHeaderConnectionsStarveNeitherHealthzNorThePublisher() throws {
        let server = try ServeProcess(arguments: ["--max-connections", "64", "--idle-timeout", "3"])
        let sockets = try HalfSentConnections(port: server.port, count: 150)
        defer { sockets.closeAll() }
        let start = Date()
        #expect(Harness.get("\(server.baseURL)/healthz")?.status == 200)
        #expect(Date().timeIntervalSince(start) < 2, "healthz waited for the half-sent connections")
        let (published, _) = try server.drop("v1") { try ServeProcess.writeBundle($0, version: 1) }
        #expect(published, "\(server.log.suffix(2000))")
        #expect(Harness.waitUntil(10) { sockets.openCount() == 0 }, "\(sockets.openCount()) half-sent connections still open")
        #expect(Harness.get("\(server.baseURL)/healthz")?.status == 200)
    }

    /// The same flood with a small descriptor limit (256: `ulimit -n`): the connection limit is
    /// lowered to leave descriptors to the publisher, which goes on publishing.
    @Test func publisherKeepsWorkingWhenConnectionsWouldUseUpTheDescriptors() throws {
        let server = try ServeProcess(openFilesLimit: 256)
        #expect(server.log.contains("connection limit lowered"), "\(server.log)")
        let sockets = try HalfSentConnections(port: server.port, count: 400)
        defer { sockets.closeAll() }
        #expect(Harness.get("\(server.baseURL)/healthz")?.status == 200)
        let (published, marker) = try server.drop("v1") { bundle in
            try ServeProcess.writeBundle(bundle, version: 1)
            for i in 0..<50 { try Data("file \(i)\n".utf8).write(to: bundle.appending(path: "payload/f\(i)")) }
        }
        #expect(published, "\(marker)\n\(server.log.suffix(2000))")
        #expect(!server.log.contains("Too many open files"), "\(server.log.suffix(2000))")
        #expect(Harness.get("\(server.baseURL)/metadata/timestamp.json")?.status == 200)
    }

    // MARK: - Operator paths

    /// `systemctl stop` sends SIGTERM (Ctrl-C: SIGINT): an orderly stop, exit 0, nothing alarming logged.
    @Test(arguments: [SIGTERM, SIGINT])
    func signalStopsTheServerQuietlyWithExit0(signal: Int32) throws {
        let server = try ServeProcess()
        let (published, _) = try server.drop("v1") { try ServeProcess.writeBundle($0, version: 1) }
        #expect(published)
        // A long poll in flight while the signal arrives.
        let url = "\(server.baseURL)/v1/notify?after=999"
        let poll = Thread { _ = Harness.get(url) }
        poll.start()
        usleep(300_000)
        #expect(server.stop(signal: signal) == 0, "\(server.log)")
        #expect(!server.log.contains("CancellationError"), "\(server.log)")
        #expect(!server.log.contains(" error "), "\(server.log)")
    }

    /// Two servers on one --state would both sign and publish: the second exits 71 and names the first.
    @Test func secondServeOnTheSameStateIsRefused() throws {
        let first = try ServeProcess()
        let second = try Harness.runBounded([
            "serve", "--key", first.keyFile.path, "--state", first.state.path, "--publish", first.publish.path,
            "--listen", "127.0.0.1:\(Harness.freePort())",
        ])
        #expect(second.status == 71)
        #expect(second.output.contains(
            "another upgradefs serve (pid \(first.pid)) is using the state directory \(first.state.path)"), "\(second.output)")
        #expect(first.isRunning && Harness.get("\(first.baseURL)/healthz")?.status == 200)
        let (published, _) = try first.drop("v1") { try ServeProcess.writeBundle($0, version: 1) }
        #expect(published)
        // Once the first has stopped, a server on the same state starts.
        #expect(first.stop() == 0)
        try first.start()
        #expect(first.isRunning)
    }

    @Test func addressInUseIsSaidInWords() throws {
        let dir = try Harness.temporaryDirectory("in-use")
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = dir.appending(path: "server.key").path
        #expect(try Harness.run(Harness.binary, ["keygen", "--out", key]).status == 0)
        let listener = try Listener()
        defer { close(listener.fd) }
        let result = try Harness.runBounded([
            "serve", "--key", key, "--state", dir.appending(path: "state").path, "--publish", dir.appending(path: "publish").path,
            "--listen", "127.0.0.1:\(listener.port)",
        ])
        #expect(result.status == 71)
        #expect(result.output.contains("upgradefs serve: cannot listen on 127.0.0.1:\(listener.port): address in use"), "\(result.output)")
        #expect(!result.output.contains("errno"), "\(result.output)")
        #expect(!result.output.contains("bind("), "\(result.output)")
    }
}

/// Bundles as a careless or hostile author drops them into the publish directory.
extension ServeProcess {
    /// Builds a bundle in the staging directory, moves it into the publish directory in one rename,
    /// and waits for its marker: (published?, marker text).
    func drop(_ name: String, _ build: (URL) throws -> Void) throws -> (published: Bool, marker: String) {
        let bundle = staging.appending(path: name)
        try FileManager.default.createDirectory(at: bundle, withIntermediateDirectories: true)
        try build(bundle)
        guard rename(bundle.path, publish.appending(path: name).path) == 0 else { throw HarnessError("rename failed") }
        return try marker(for: name)
    }

    /// A valid bundle in `bundle`: manifest, a payload file, an executable sf.
    static func writeBundle(_ bundle: URL, version: Int64, manifestExtra: String = "", payload: String = "payload") throws {
        try Data("class = \"demo\"\nversion = \(version)\n\(manifestExtra)".utf8).write(to: bundle.appending(path: "upgrade.toml"))
        try FileManager.default.createDirectory(at: bundle.appending(path: payload), withIntermediateDirectories: true)
        try Data("app \(version)\n".utf8).write(to: bundle.appending(path: "\(payload)/app"))
        try Data("#!/bin/sh\nexit 0\n".utf8).write(to: bundle.appending(path: "sf"))
        chmod(bundle.appending(path: "sf").path, 0o755)
    }
}

/// Connections to 127.0.0.1:PORT that each send an unfinished request head (no blank line) and
/// then nothing: a slowloris.
final class HalfSentConnections {
    private var sockets: [Int32] = []

    init(port: Int, count: Int) throws {
        for _ in 0..<count {
            let fd = try connectLoopback(port: port)
            let head = Array("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8)
            _ = head.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            sockets.append(fd)
        }
    }

    /// How many the server has not closed yet (a closed one reads end-of-file or a reset).
    func openCount() -> Int {
        sockets.filter { fd in
            var byte: UInt8 = 0
            let n = recv(fd, &byte, 1, Int32(MSG_DONTWAIT) | Int32(MSG_PEEK))
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
        }.count
    }

    func closeAll() {
        sockets.forEach { close($0) }
        sockets = []
    }
}

/// A listening socket on a free loopback port, held by the test.
struct Listener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw HarnessError("cannot listen") }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }
}
