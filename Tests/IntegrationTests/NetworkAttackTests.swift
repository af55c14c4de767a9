import Foundation
import Testing
import Sodium
import UpgradeCore
import UpgradeServer

/// The classes around issue 8's network attacks, played by an attacker on the path between a real mount and a
/// real server: a relay that passes most requests on and, for the paths it is told, sends endless data (or
/// headers), drips a byte a second, stalls after the answer's head, redirects elsewhere, or answers a body of its
/// own.
@Suite(.serialized)
struct NetworkAttackTests {
    /// Endless data on each metadata file the refresh fetches: cut off at its limit, refused, and the node goes
    /// on showing (and serving) what it verified.
    @Test(.realMounts, arguments: ["/metadata/2.root.json", "/metadata/timestamp.json", ".snapshot.json", ".targets.json"])
    func endlessMetadataIsCutOffAtItsLimitAndTheCacheStillServed(path: String) throws {
        let node = try RelayedNode(rules: [[path, "endless"]], cached: true)
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        #expect(node.mount.log.contains("endless-data defence"), "\(node.mount.log)")
        #expect(node.mount.text("latest") == "1\n")
        #expect(try Harness.readFile(node.mount.path("versions/1/payload/x")).get() == node.content)
    }

    /// Endless headers before the timestamp's body: refused by the HTTP decoder at its header limit (80 KiB),
    /// at once; the node goes on showing what it verified.
    @Test(.realMounts) func endlessHeadersAreRefusedAndTheCacheStillServed() throws {
        let node = try RelayedNode(rules: [["/metadata/timestamp.json", "endless-headers"]], cached: true)
        let started = Date()
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        #expect(Date().timeIntervalSince(started) < 15, "the mount waited \(Date().timeIntervalSince(started)) s")
        #expect(node.mount.log.contains("showing the last verified state"), "\(node.mount.log)")
        #expect(node.mount.log.contains("too many header bytes"), "\(node.mount.log)")
        #expect(node.mount.text("latest") == "1\n")
    }

    /// Endless data in place of a target: refused once it passes the signed length; the read fails with EIO.
    @Test(.realMounts) func endlessTargetIsCutOffAtItsSignedLength() throws {
        let node = try RelayedNode(rules: [["/targets/", "endless"]], cached: false)
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        #expect(Harness.readFile(node.mount.path("versions/1/payload/x")) == .failure(.EIO))
        #expect(node.mount.log.contains("expected 4 bytes"), "\(node.mount.log)")
    }

    /// Slow retrieval of metadata: a timestamp dripped a byte a second. The refresh gives up in bounded time,
    /// the mount comes up with what it verified, and says why.
    @Test(.realMounts) func slowRetrievalOfTheTimestampTimesOutAndTheCacheIsServed() throws {
        let node = try RelayedNode(rules: [["/metadata/timestamp.json", "drip"]], cached: true)
        let started = Date()
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        #expect(Date().timeIntervalSince(started) < 40, "the mount waited \(Date().timeIntervalSince(started)) s")
        #expect(node.mount.log.contains("slow-retrieval defence"), "\(node.mount.log)")
        #expect(node.mount.text("latest") == "1\n")
        #expect(try Harness.readFile(node.mount.path("versions/1/payload/x")).get() == node.content)
    }

    /// Slow retrieval of a target not yet cached: the read fails with EIO in bounded time, never hangs, and the
    /// rest of the mount answers meanwhile.
    @Test(.realMounts) func slowRetrievalOfATargetFailsTheReadWithEIOInBoundedTime() throws {
        let node = try RelayedNode(rules: [["/targets/", "drip"]], content: TestBundle.randomBytes(1000), cached: false)
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        let result = LockedBox<Result<[UInt8], Errno>?>(nil)
        let started = Date()
        let path = node.mount.path("versions/1/payload/x")
        Thread { let read = Harness.readFile(path); result.withValue { $0 = read } }.start()
        sleep(2)
        #expect(node.mount.text("latest") == "1\n", "the mount stopped answering while a download drips")
        #expect(Harness.waitUntil(60) { result.withValue { $0 != nil } }, "the read still hangs after 60 s")
        #expect(result.withValue { $0 } == .failure(.EIO))
        #expect(Date().timeIntervalSince(started) < 50)
        #expect(node.mount.log.contains("slow-retrieval defence"), "\(node.mount.log)")
    }

    /// The change notification (long poll) answers its head and then stalls: the node must not wait on it for
    /// ever (every later upgrade would be hidden, and nothing said). It gives up and finds the new version.
    @Test(.realMounts) func stalledChangeNotificationDoesNotHideANewUpgrade() throws {
        let node = try RelayedNode(rules: [["/v1/notify", "stall"]], cached: false)
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        #expect(node.mount.text("latest") == "1\n")
        try node.server.publish(version: 2, files: ["payload/x": Array("two\n".utf8)])
        #expect(Harness.waitUntil(70) { node.mount.text("latest") == "2\n" }, "still hidden: \(node.mount.log)")
    }

    /// A large target (4 MiB: 158 s allowed) whose download stalls after the answer's head: the read fails with
    /// EIO once no byte has come for 45 s, not after the whole bound.
    @Test(.realMounts) func stalledDownloadOfALargeTargetFailsTheReadWithEIOAfterTheStallTimeout() throws {
        let node = try RelayedNode(rules: [["/targets/", "stall"]], content: TestBundle.randomBytes(4 << 20), cached: false)
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        let started = Date()
        #expect(Harness.readFile(node.mount.path("versions/1/payload/x")) == .failure(.EIO))
        let waited = Date().timeIntervalSince(started)
        #expect(waited > 40 && waited < 60, "the read failed after \(waited) s")
    }

    /// A redirect (302) to another server is not followed: the answer is refused as it stands.
    @Test(.realMounts) func redirectToAnotherServerIsNotFollowed() throws {
        let elsewhere = LockedBox<StaticMirror?>(nil)
        let node = try RelayedNode(cached: true) { server in
            let mirror = try StaticMirror(copying: server.state.appending(path: "metadata"))
            elsewhere.withValue { $0 = mirror }
            return [["/metadata/timestamp.json", "redirect", "http://127.0.0.1:\(mirror.port)/metadata/timestamp.json"]]
        }
        let mirror = try #require(elsewhere.withValue { $0 })
        let before = mirror.requests.count
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        #expect(node.mount.log.contains("HTTP status 302"), "\(node.mount.log)")
        #expect(mirror.requests.count == before, "followed: \(mirror.requests)")
        #expect(node.mount.text("latest") == "1\n")
    }

    /// Malformed metadata (nesting 8,000 deep, a number beyond 64 bits, a duplicate key) is refused with a
    /// reason, without a crash; the node goes on showing what it verified.
    @Test(.realMounts, arguments: [
        (String(repeating: "[", count: 8000) + String(repeating: "]", count: 8000), "nesting deeper than"),
        (#"{"signed": {"version": 99999999999999999999999}, "signatures": []}"#, "does not fit in 64 bits"),
        (#"{"signed": {}, "signed": {}, "signatures": []}"#, "duplicate key"),
    ])
    func malformedTimestampIsRefusedWithAReason(body: String, reason: String) throws {
        let node = try RelayedNode(rules: [["/metadata/timestamp.json", "body", body]], cached: true)
        #expect(try node.start() == nil, "mount failed: \(node.mount.log)")
        #expect(node.mount.log.contains(reason), "\(node.mount.log)")
        #expect(node.mount.text("latest") == "1\n")
        #expect(node.mount.process?.isRunning == true)
    }

    /// A server that published version 1, its keys, and its root (version 1) rotated to `newKey` at `version`.
    static func serverAndRotatedRoot(to newKey: Ed25519KeyPair, version: Int)
        throws -> (server: ServeProcess, keys: ServerKeyFile, root: RootMetadata) {
        let server = try ServeProcess()
        try server.publish(version: 1, files: ["payload/x": Array("one\n".utf8)])
        let initial = try Array(Data(contentsOf: server.state.appending(path: "metadata/1.root.json")))
        let root = try Self.rotated(MetadataCodec.decode(initial, as: RootMetadata.self).payload, to: newKey, version: version)
        return (server, try ServerKeyFile.load(from: server.keyFile.path), root)
    }

    /// `root` with its root key replaced by `newKey`, at `version` (unsigned).
    static func rotated(_ root: RootMetadata, to newKey: Ed25519KeyPair, version: Int) -> RootMetadata {
        var new = root
        let key = TUFKey(ed25519PublicKey: newKey.publicKey)
        new.keys[key.keyID] = key
        new.roles[.root] = RoleKeys(keyIDs: [key.keyID], threshold: 1)
        new.version = version
        return new
    }

    /// A chain of roots with a version jump: after an honest rotation to root 2, `3.root.json` holds root
    /// version 4 (validly signed by root 2's key and its own). Refused; the node keeps root 2 and what it shows.
    @Test(.realMounts) func rootChainWithAVersionJumpFrom2To4IsRefused() throws {
        let key2 = Ed25519KeyPair.generate()
        let key4 = Ed25519KeyPair.generate()
        let (server, serverKey, root2) = try Self.serverAndRotatedRoot(to: key2, version: 2)
        let root4 = Self.rotated(root2, to: key4, version: 4)
        let signed2 = MetadataCodec.sign(root2, keys: [serverKey.root, key2])
        let honest = try StaticMirror(copying: server.state.appending(path: "metadata")) { metadata in
            try Data(signed2).write(to: metadata.appending(path: "2.root.json"))
        }
        let first = try TestMount()
        #expect(try first.start(honest.source(id: server.id)) == nil, "mount failed: \(first.log)")
        first.unmount()
        let jumping = try StaticMirror(copying: server.state.appending(path: "metadata")) { metadata in
            try Data(signed2).write(to: metadata.appending(path: "2.root.json"))
            try Data(MetadataCodec.sign(root4, keys: [key2, key4])).write(to: metadata.appending(path: "3.root.json"))
        }
        let again = try TestMount(cache: first.cache)
        defer { again.unmount() }
        #expect(try again.start(jumping.source(id: server.id)) == nil, "mount from cache failed: \(again.log)")
        #expect(again.log.contains("root version mismatch: expected version 3, got 4"), "\(again.log)")
        let cachedRoot = try Array(Data(contentsOf: first.cache.appending(path: "metadata/root.json")))
        #expect(try MetadataCodec.decode(cachedRoot, as: RootMetadata.self).payload.version == 2)
        #expect(again.text("latest") == "1\n")
    }

    /// A new root signed only by its own new key (an attacker's), or only by the old key (not by the keys it
    /// names): refused, naming the missing signatures. Signed by both (the control: the same code signs), it is
    /// followed.
    @Test(.realMounts, arguments: [("new", "root version 2 is signed by 0 of the 1 required keys of the trusted root"),
                      ("old", "root is signed by 0 of the 1 required keys"), ("both", nil)])
    func newRootSignedByOnlyOneSideOfTheRotationIsRefused(signedBy: String, refusal: String?) throws {
        let newKey = Ed25519KeyPair.generate()
        let (server, serverKey, root2) = try Self.serverAndRotatedRoot(to: newKey, version: 2)
        let signers = ["new": [newKey], "old": [serverKey.root], "both": [serverKey.root, newKey]][signedBy]!
        let mirror = try StaticMirror(copying: server.state.appending(path: "metadata")) { metadata in
            try Data(MetadataCodec.sign(root2, keys: signers)).write(to: metadata.appending(path: "2.root.json"))
        }
        let mount = try TestMount()
        defer { mount.unmount() }
        let failure = try mount.start(mirror.source(id: server.id))
        if let refusal {
            #expect(failure?.status == 65, "\(mount.log)")
            #expect(mount.log.contains(refusal), "\(mount.log)")
        } else {
            #expect(failure == nil, "mount failed: \(mount.log)")
            #expect(mount.log.contains("trusted root rotated"), "\(mount.log)")
            #expect(mount.text("latest") == "1\n")
        }
    }
}

/// A node mounted through a `HostileRelay` in front of a real server that published version 1 (`content`). With
/// `cached`, the node's cache was first filled directly (its file read) and the server then published version 2.
final class RelayedNode {
    let server: ServeProcess
    let content: [UInt8]
    let relay: HostileRelay
    let mount: TestMount
    private let first: TestMount?

    convenience init(rules: [[String]], content: [UInt8] = Array("one\n".utf8), cached: Bool) throws {
        try self.init(content: content, cached: cached) { _ in rules }
    }

    init(content: [UInt8] = Array("one\n".utf8), cached: Bool, rules: (ServeProcess) throws -> [[String]]) throws {
        server = try ServeProcess()
        self.content = content
        try server.publish(version: 1, files: ["payload/x": content])
        if cached {
            let first = try TestMount()
            #expect(try first.start(server.source) == nil, "mount failed: \(first.log)")
            #expect(try Harness.readFile(first.path("versions/1/payload/x")).get() == content)
            first.unmount()
            try server.publish(version: 2, files: ["payload/x": Array("two\n".utf8)])
            self.first = first
        } else {
            first = nil
        }
        relay = try HostileRelay(to: server.port, rules: try rules(server))
        mount = try TestMount(cache: first?.cache)
    }

    func start() throws -> (status: Int32, log: String)? { try mount.start(relay.source(id: server.id)) }

    deinit { mount.unmount() }
}

/// A relay in front of a server, as an attacker on the network path: requests whose path contains a rule's
/// text get `endless` data, a `drip` of the real answer (one byte a second), a `redirect` to the URL given, or
/// the `body` given; everything else is passed on.
final class HostileRelay {
    let port: Int
    private let process: Process
    private let log: URL

    init(to upstreamPort: Int, rules: [[String]]) throws {
        port = Harness.freePort()
        log = try Harness.temporaryDirectory("relay").appending(path: "requests.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        let rulesText = String(decoding: try JSONSerialization.data(withJSONObject: rules), as: UTF8.self)
        process.arguments = ["python3", "-c", Self.script, "http://127.0.0.1:\(upstreamPort)", String(port), rulesText]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        guard Harness.waitUntil(20, { Harness.get("http://127.0.0.1:\(port)/metadata/1.root.json")?.status == 200 }) else {
            throw HarnessError("relay did not come up")
        }
    }

    func source(id: String) -> String { "127.0.0.1:\(port),\(id)" }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: log.deletingLastPathComponent())
    }

    static let script = #"""
import http.server, json, sys, time, urllib.request, urllib.error
upstream, port, rules = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args)); sys.stderr.flush()
    def do_GET(self):
        rule = next((r for r in rules if r[0] in self.path), None)
        if rule and rule[1] == "endless":
            self.send_response(200); self.send_header("Connection", "close"); self.end_headers()
            chunk = b"[" * 65536
            while True: self.wfile.write(chunk)
        if rule and rule[1] == "endless-headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while True: self.wfile.write(b"X-Endless: " + b"a" * 1000 + b"\r\n")
        if rule and rule[1] == "stall":
            self.send_response(200); self.send_header("Content-Length", "8"); self.end_headers(); self.wfile.flush()
            time.sleep(3600); return
        if rule and rule[1] == "redirect":
            self.send_response(302); self.send_header("Location", rule[2]); self.send_header("Content-Length", "0"); self.end_headers(); return
        if rule and rule[1] == "body":
            body = rule[2].encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body); return
        try:
            with urllib.request.urlopen(upstream + self.path, timeout=60) as answer:
                status, body = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        self.send_response(status); self.send_header("Content-Length", str(len(body))); self.end_headers()
        if rule and rule[1] == "drip" and status == 200:
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1]); self.wfile.flush(); time.sleep(1)
        else:
            self.wfile.write(body)
http.server.ThreadingHTTPServer.daemon_threads = True
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""#
}

extension StaticMirror {
    /// Mix-and-match: replaces the newest `N.ROLE.json` in a mirror's metadata by a copy of the one before it
    /// (validly signed, but from another publish).
    static func replaceNewest(_ role: String, withAnOlderOneIn metadata: URL) throws {
        let versions = try FileManager.default.contentsOfDirectory(atPath: metadata.path).compactMap { name -> Int? in
            name.hasSuffix(".\(role).json") ? Int(name.split(separator: ".")[0]) : nil
        }.sorted()
        guard let newest = versions.last, let older = versions.dropLast().last else {
            throw HarnessError("expected two \(role) files, found \(versions)")
        }
        try FileManager.default.removeItem(at: metadata.appending(path: "\(newest).\(role).json"))
        try FileManager.default.copyItem(at: metadata.appending(path: "\(older).\(role).json"),
                                         to: metadata.appending(path: "\(newest).\(role).json"))
    }
}
