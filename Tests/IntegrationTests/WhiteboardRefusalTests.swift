import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
import UpgradeNode
import UpgradeServer
import UpgradeWhiteboardClient

/// Issue 8, item 13: one node must not be able to silence another, and nobody on the path can forge the server's
/// verdicts. A write the server refuses (signed) is set aside and the writes behind it go on; an unsigned refusal is
/// retried, never taken as a verdict.
@Suite(.serialized) struct WhiteboardRefusalTests {
    static let fastBackoff = WhiteboardBackoff(initial: .milliseconds(20), maximum: .milliseconds(200))

    /// The issue's scenario: n1 creates `shared/a` as a file while n3 has `shared/a/b` queued, then n3 writes its
    /// heartbeat, state, version and more. The first answer to n3's `shared/a/b` is lost (the mount died), so the
    /// restarted mount sends the same bytes again: it must hear the same verdict (not "replayed"), set the write
    /// aside, say so in n3's log, and deliver all five writes behind it.
    @Test func aRefusedWriteIsSetAsideAndTheFiveWritesBehindItAreDelivered() async throws {
        let fixture = try await WhiteboardFixture.start("udb-refused")
        defer { fixture.remove() }
        let n1 = try await fixture.enrolledNode("n1")
        let n3 = try await fixture.enrolledNode("n3")
        let j1 = try WhiteboardJournal(path: fixture.path + "/n1.sqlite", node: "n1", key: n1.key)
        let j3 = try WhiteboardJournal(path: fixture.path + "/n3.sqlite", node: "n3", key: n3.key)
        try j1.enqueue(op: .put, path: "shared/a", content: Array("n1's file\n".utf8))
        let blocked = try j3.enqueue(op: .put, path: "shared/a/b", content: Array("n3's plan\n".utf8))
        let behind = ["nodes/n3/heartbeat": "1700000000", "nodes/n3/state": "running", "nodes/n3/version": "2",
                      "shared/n3-note": "hello", "nodes/n3/extra": "x"]
        for path in behind.keys.sorted() { try j3.enqueue(op: .put, path: path, content: Array(behind[path]!.utf8)) }

        let s1 = fixture.sender(for: j1, backoff: Self.fastBackoff)
        let t1 = Task { await s1.run() }
        #expect(try await WhiteboardFixture.waitFor(30) { try j1.pending().isEmpty })

        // n3's first attempt reaches the server, which refuses it; the answer never reaches the journal.
        var request = HTTPClientRequest(url: fixture.baseURL + "/v1/udb/apply")
        request.method = .POST
        request.body = .bytes(try #require(try j3.pending().first { $0.seq == blocked }).body)
        #expect(try await HTTPClient.shared.execute(request, timeout: .seconds(5)).status.code == 409)

        // The restarted mount's sender retries it.
        let s3 = fixture.sender(for: j3, backoff: Self.fastBackoff)
        let t3 = Task { await s3.run() }
        #expect(try await WhiteboardFixture.waitFor(30) { try j3.pending().isEmpty })
        let refused = try j3.refused()
        #expect(refused.map(\.seq) == [blocked])
        #expect(refused.first?.status == 409)
        #expect(refused.first?.reason.contains("shared/a is a file") == true, "\(refused)")
        let view = try await fixture.store.snapshot()
        for (path, content) in behind {
            #expect(view.content(path) == content, "\(path) was not delivered")
        }
        #expect(view.content("shared/a") == "n1's file\n")
        #expect(view.content("nodes/n3/log")?.contains("refused the write of shared/a/b") == true)
        #expect(await s3.refusedCount == 1)
        // The server shows that n3 had a write refused, and that its later writes went through.
        let n3Refusals = try await fixture.store.refusals().first { $0.node == "n3" }
        #expect(n3Refusals?.refusing == false && (n3Refusals?.total ?? 0) >= 1)
        for task in [t1, t3] { task.cancel(); await task.value }
        await fixture.stopServer()
    }

    /// A relay on the path answers every write with an unsigned 409 or 403 (after passing the request on to the
    /// server, so the write may even be applied). The node must neither set anything aside nor stop: once the relay
    /// stops forging, every write arrives exactly once.
    @Test func anOnPathForgerCannotSetWritesAsideOrParkThem() async throws {
        let fixture = try await WhiteboardFixture.start("udb-forger")
        defer { fixture.remove() }
        let node = try await fixture.enrolledNode("n1")
        let relay = try ForgingRelay(upstream: fixture.baseURL, directory: fixture.path)
        defer { relay.stop() }
        let journal = try WhiteboardJournal(path: fixture.path + "/udb.sqlite", node: "n1", key: node.key)
        let sender = WhiteboardSender(journal: journal, baseURL: relay.baseURL, http: .shared, serverKey: fixture.serverKey,
                                      backoff: Self.fastBackoff, requestTimeout: .seconds(10), logger: WhiteboardFixture.logger)
        let task = Task { await sender.run() }
        let start = try await fixture.store.revision()
        for i in 1...4 { try journal.enqueue(op: .put, path: "nodes/n1/f\(i)", content: Array("write \(i)".utf8)) }
        sender.wake()
        #expect(await WhiteboardFixture.waitFor(30) { relay.forged >= 6 })
        #expect(try journal.refused().isEmpty)
        #expect(try journal.pending().count == 4)
        #expect(await sender.refusedCount == 0)

        relay.forging = false
        #expect(try await WhiteboardFixture.waitFor(30) { try journal.pending().isEmpty })
        #expect(try journal.refused().isEmpty)
        let view = try await fixture.store.snapshot()
        #expect((1...4).map { view.content("nodes/n1/f\($0)") } == (1...4).map { "write \($0)" })
        #expect(try await fixture.store.revision() == start + 4)
        task.cancel()
        await task.value
        await fixture.stopServer()
    }

    /// A node's clock was once far ahead when its journal was made (seqs start at the time in µs), then its cache was
    /// wiped and its clock fixed: the new journal's seqs are below the server's last seq from the node, so every write
    /// and lock operation was refused as a replay and set aside. The signed answer to the mount's session claim names
    /// the server's last seqs, and the new journal's writes start above them.
    @Test func aNewJournalBelowTheServersLastSeqAfterAClockOnceAheadIsNotSilenced() async throws {
        let fixture = try await WhiteboardFixture.start("udb-clock")
        defer { fixture.remove() }
        let n1 = try await fixture.enrolledNode("n1")
        let ahead = Int64(Date().timeIntervalSince1970 * 1_000_000) + 10 * 365 * 86_400 * 1_000_000
        let old = try WhiteboardJournal(path: fixture.path + "/old.sqlite", node: "n1", key: n1.key, firstSeq: ahead)
        try old.enqueue(op: .put, path: "nodes/n1/state", content: Array("running".utf8))
        let oldSender = fixture.sender(for: old, backoff: Self.fastBackoff)
        let oldTask = Task { await oldSender.run() }
        #expect(try await WhiteboardFixture.waitFor(30) { try old.pending().isEmpty })
        oldTask.cancel()
        await oldTask.value
        let oldLocks = WhiteboardLockClient(
            journal: old, baseURL: fixture.baseURL, http: HTTPClient.shared, serverKey: fixture.serverKey,
            logger: WhiteboardFixture.logger)
        let oldRelease = await Task.detached {
            _ = oldLocks.perform(.acquire, path: "locks/roll/n1")
            return oldLocks.perform(.release, path: "locks/roll/n1")
        }.value
        #expect((try? oldRelease.get()) != nil, "\(oldRelease)")

        let journal = try WhiteboardJournal(path: fixture.path + "/new.sqlite", node: "n1", key: n1.key)
        let locks = WhiteboardLockClient(
            journal: journal, baseURL: fixture.baseURL, http: HTTPClient.shared, serverKey: fixture.serverKey,
            logger: WhiteboardFixture.logger)
        #expect(await locks.claimSession() == .granted)
        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("failed".utf8))
        let sender = fixture.sender(for: journal, backoff: Self.fastBackoff)
        let task = Task { await sender.run() }
        #expect(try await WhiteboardFixture.waitFor(30) { try journal.pending().isEmpty })
        #expect(try journal.refused().isEmpty)
        #expect(try await fixture.store.snapshot().content("nodes/n1/state") == "failed")
        let acquired = await Task.detached { locks.perform(.acquire, path: "locks/roll/n1") }.value
        #expect((try? acquired.get()) != nil, "\(acquired)")
        task.cancel()
        await task.value
        await fixture.stopServer()
    }
}

extension WhiteboardView {
    func content(_ path: String) -> String? {
        files.first { $0.path == path }?.content.map { String(decoding: $0, as: UTF8.self) }
    }
}

/// An HTTP relay (python3) in front of the server that, while the file `forge` exists beside it, passes each request
/// on and replaces the answer with an unsigned refusal (409 conflict or 403 forbidden, alternately) echoing the
/// request's nonce. It counts forged answers in the file `forged`.
final class ForgingRelay: @unchecked Sendable {
    let port = Harness.freePort()
    private let directory: String
    private let process = Process()

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var forged: Int { Int((try? String(contentsOfFile: directory + "/forged", encoding: .utf8)) ?? "0") ?? 0 }
    var forging: Bool {
        get { FileManager.default.fileExists(atPath: directory + "/forge") }
        set {
            if newValue { _ = FileManager.default.createFile(atPath: directory + "/forge", contents: nil) } else {
                try? FileManager.default.removeItem(atPath: directory + "/forge")
            }
        }
    }

    static let script = #"""
        import http.server, json, os, sys, urllib.request, urllib.error
        upstream, directory, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        class Relay(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args): pass
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = urllib.request.Request(upstream + self.path, data=body, headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        status, payload, headers = answer.status, answer.read(), answer.headers
                except urllib.error.HTTPError as error:
                    status, payload, headers = error.code, error.read(), error.headers
                if os.path.exists(os.path.join(directory, "forge")):
                    path = os.path.join(directory, "forged")
                    count = int(open(path).read()) if os.path.exists(path) else 0
                    open(path, "w").write(str(count + 1))
                    nonce = json.loads(body)["request"]["nonce"]
                    status = 409 if count % 2 == 0 else 403
                    code = "conflict" if status == 409 else "forbidden"
                    payload = json.dumps({"code": code, "error": "forged", "nonce": nonce, "status": status}).encode()
                    headers = {}
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if "Upgradefs-Signature" in headers:
                    self.send_header("Upgradefs-Signature", headers["Upgradefs-Signature"])
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
        http.server.ThreadingHTTPServer(("127.0.0.1", port), Relay).serve_forever()
        """#

    init(upstream: String, directory: String) throws {
        self.directory = directory
        _ = FileManager.default.createFile(atPath: directory + "/forge", contents: nil)
        try Self.script.write(toFile: directory + "/relay.py", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", directory + "/relay.py", upstream, directory, String(port)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        guard Harness.waitUntil(20, { Harness.get("http://127.0.0.1:\(port)/healthz") != nil }) else {
            throw HarnessError("the forging relay did not come up")
        }
    }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
