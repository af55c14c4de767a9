#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer

/// POSTs `body` (JSON) over a fresh connection.
func postRequest(port: Int, path: String, body: [UInt8]) async throws -> HTTPResult {
    try await HTTPResult.request(port: port, method: "POST", path: path, body: body)
}

/// A live server with a whiteboard, and identities enrolled the way `upgradefs enroll` does it.
final class WhiteboardServer: Sendable {
    let fixture: ServerFixture
    let server: InProcessServer
    let writers: [String: WhiteboardWriter]

    static func start(nodes: [String] = ["n1", "n2"], lockTTLSeconds: Int = 60, changesTimeoutMilliseconds: Int = 5000) async throws
        -> WhiteboardServer
    {
        let fixture = ServerFixture()
        fixture.configuration.lockTTLSeconds = lockTTLSeconds
        fixture.configuration.changesTimeoutMilliseconds = changesTimeoutMilliseconds
        let server = try await InProcessServer.start(fixture.configuration)
        // Enrolled while the server runs, through the database file directly (as `upgradefs enroll` does).
        let store = try SQLiteWhiteboardStore(directory: fixture.configuration.stateDirectory, verifier: SodiumVerifier())
        var writers: [String: WhiteboardWriter] = [:]
        for name in nodes + ["operator"] {
            let writer = WhiteboardWriter(name)
            try await store.enroll(node: name, publicKey: writer.key.publicKey)
            writers[name] = writer
        }
        return WhiteboardServer(fixture: fixture, server: server, writers: writers)
    }

    private init(fixture: ServerFixture, server: InProcessServer, writers: [String: WhiteboardWriter]) {
        self.fixture = fixture
        self.server = server
        self.writers = writers
    }

    subscript(name: String) -> WhiteboardWriter { writers[name]! }

    func apply(_ signed: SignedWhiteboardRequest) async throws -> HTTPResult {
        try await postRequest(port: server.port, path: "/v1/udb/apply", body: signed.encoded())
    }

    /// Applies and checks the answer is signed by the server's timestamp key and echoes the nonce.
    func applyOK(_ signed: SignedWhiteboardRequest) async throws -> WhiteboardResponse {
        let result = try await apply(signed)
        guard result.status == 200 else { throw HarnessError("apply answered \(result.status): \(result.text)") }
        let answer = try SignedWhiteboardResponse.decode(result.body)
        #expect(answer.verify(publicKey: fixture.keys.timestamp.publicKey, verifier: SodiumVerifier()))
        #expect(answer.response.nonce == signed.request.nonce)
        return answer.response
    }

    func read(_ path: String, nonce: String = Hex.encode(Sodium.randomBytes(16))) async throws -> WhiteboardView {
        let separator = path.contains("?") ? "&" : "?"
        let result = try await server.get("/v1/udb/\(path)\(separator)nonce=\(nonce)")
        guard result.status == 200 else { throw HarnessError("\(path) answered \(result.status): \(result.text)") }
        return try WhiteboardView.verifiedDecode(
            body: result.body, signatureHeader: result.headers["upgradefs-signature"], expectedNonce: nonce,
            expectedAfter: WhiteboardView.after(inRoute: path), publicKey: fixture.keys.timestamp.publicKey, verifier: SodiumVerifier())
    }

    func stop() async { await server.stop() }
}

@Suite(.serialized) struct UDBHTTPTests {
    @Test func signedWriteIsAppliedAndVisibleInTheSignedSnapshot() async throws {
        let wb = try await WhiteboardServer.start()
        let response = try await wb.applyOK(wb["n1"].request(.put, "nodes/n1/state", "running\n"))
        #expect(response.result == .ok)
        let snapshot = try await wb.read("snapshot")
        #expect(snapshot.content("nodes/n1/state") == "running\n")
        #expect(snapshot.revision == response.revision)
        await wb.stop()
    }

    @Test func forbiddenWriteIs403AndChangesNothing() async throws {
        let wb = try await WhiteboardServer.start()
        let before = try await wb.read("snapshot")
        let result = try await wb.apply(wb["n1"].request(.put, "upgrades/3/control", "go"))
        #expect(result.status == 403)
        #expect(WhiteboardErrorBody.decode(result.body)?.error == "n1 may not write upgrades/3/control")
        #expect(try await wb.apply(wb["n1"].request(.put, "nodes/n2/state", "failed")).status == 403)
        let after = try await wb.read("snapshot")
        #expect(after.revision == before.revision)
        #expect(after.files == before.files)
        await wb.stop()
    }

    /// Issue 8, item 13: a refusal is signed by the server's timestamp key over the request's nonce and the status,
    /// so the node can tell the server's verdict from an on-path forgery.
    @Test func refusalsAreSignedOverTheRequestsNonceAndStatus() async throws {
        let wb = try await WhiteboardServer.start()
        let request = wb["n1"].request(.put, "upgrades/3/control", "go")
        let result = try await wb.apply(request)
        #expect(result.status == 403)
        func verdict(_ result: HTTPResult, status: Int = 403, sent: SignedWhiteboardRequest = request, nonce: [UInt8]? = nil)
            -> WhiteboardErrorBody? {
            try? WhiteboardErrorBody.verifiedRefusal(
                status: status, body: result.body, signatureHeader: result.headers["upgradefs-signature"], sent: sent.encoded(),
                nonce: nonce ?? sent.request.nonce, publicKey: wb.fixture.keys.timestamp.publicKey, verifier: SodiumVerifier()).get()
        }
        #expect(verdict(result)?.code == .forbidden)
        // The same body does not pass as the verdict on another request, or with another status.
        #expect(verdict(result, nonce: Sodium.randomBytes(16)) == nil)
        #expect(verdict(result, status: 409) == nil)
        // On the path, someone flips a bit of the node's signature: the server's signed 401 is not a verdict on what
        // the node sent (else an on-path attacker could make a mount believe its key is not enrolled).
        var tampered = wb["n1"].request(.put, "nodes/n1/state", "idle")
        let original = tampered
        tampered.signature[0] ^= 1
        let unauthenticated = try await wb.apply(tampered)
        #expect(unauthenticated.status == 401)
        #expect(verdict(unauthenticated, status: 401, sent: tampered)?.code == .unauthenticated)
        #expect(verdict(unauthenticated, status: 401, sent: original) == nil)
        await wb.stop()
    }

    @Test func unknownNodeAndBadSignatureAre401() async throws {
        let wb = try await WhiteboardServer.start()
        let stranger = try await wb.apply(WhiteboardWriter("n9").request(.put, "nodes/n9/state", "idle"))
        #expect(stranger.status == 401)
        #expect(WhiteboardErrorBody.decode(stranger.body)?.error.contains("unknown node n9") == true)
        var forged = wb["n1"].request(.put, "nodes/n1/state", "idle")
        forged.request.path = "nodes/n1/version"
        #expect(try await wb.apply(forged).status == 401)
        // Signed by n2's key but claiming to be n1.
        var impostor = wb["n2"].request(.put, "nodes/n1/state", "idle")
        impostor.request.node = "n1"
        impostor = impostor.request.signed(by: wb["n2"].key)
        #expect(try await wb.apply(impostor).status == 401)
        #expect(try await wb.read("snapshot").files.isEmpty)
        await wb.stop()
    }

    @Test func replayIs409AndRetryOfTheLastRequestIsAppliedOnce() async throws {
        let wb = try await WhiteboardServer.start()
        let first = wb["n1"].request(.put, "shared/counter", "1")
        let second = wb["n1"].request(.put, "shared/counter", "2")
        #expect(try await wb.applyOK(first).result == .ok)
        let applied = try await wb.applyOK(second)
        let retry = try await wb.applyOK(second)
        #expect(retry.result == .duplicate)
        #expect(retry.revision == applied.revision)
        let replay = try await wb.apply(first)
        #expect(replay.status == 409)
        #expect(WhiteboardErrorBody.decode(replay.body)?.code == .replayed)
        let changes = try await wb.read("changes?after=0")
        #expect(changes.files.filter { $0.path == "shared/counter" }.map(\.revision) == [applied.revision])
        await wb.stop()
    }

    @Test func malformedRequestsAre400() async throws {
        let wb = try await WhiteboardServer.start()
        #expect(try await postRequest(port: wb.server.port, path: "/v1/udb/apply", body: Array("{}".utf8)).status == 400)
        #expect(try await wb.apply(wb["n1"].request(.put, "nodes/n1/state", "two words")).status == 400)
        #expect(try await wb.apply(wb["n1"].request(.put, "nowhere/x", "1")).status == 400)
        #expect(try await wb.server.get("/v1/udb/changes").status == 400)
        #expect(try await wb.server.get("/v1/udb/changes?after=x").status == 400)
        #expect(try await wb.server.get("/v1/udb/apply").status == 405)
        await wb.stop()
    }

    @Test func fullSemaphoreIs423() async throws {
        let wb = try await WhiteboardServer.start()
        _ = try await wb.applyOK(wb["operator"].request(.put, "locks/roll/capacity", "1"))
        _ = try await wb.applyOK(wb["n1"].request(.acquire, "locks/roll/n1"))
        let full = try await wb.apply(wb["n2"].request(.acquire, "locks/roll/n2"))
        #expect(full.status == 423)
        #expect(WhiteboardErrorBody.decode(full.body)?.error == "lock roll is full (1 of 1)")
        _ = try await wb.applyOK(wb["n1"].request(.release, "locks/roll/n1"))
        _ = try await wb.applyOK(wb["n2"].request(.acquire, "locks/roll/n2"))
        #expect(try await wb.read("snapshot").holders.map(\.node) == ["n2"])
        await wb.stop()
    }

    @Test func lockCapacityHoldsUnderConcurrentAcquiresFromManyNodes() async throws {
        let nodes = (1...10).map { "n\($0)" }
        let wb = try await WhiteboardServer.start(nodes: nodes)
        let capacity = 3
        _ = try await wb.applyOK(wb["operator"].request(.put, "locks/roll/capacity", "\(capacity)"))
        for round in 1...20 {
            let statuses = try await withThrowingTaskGroup(of: (String, Int).self) { group in
                for node in nodes {
                    let request = wb[node].request(.acquire, "locks/roll/\(node)")
                    group.addTask { (node, try await wb.apply(request).status) }
                }
                var statuses: [String: Int] = [:]
                for try await (node, status) in group { statuses[node] = status }
                return statuses
            }
            let winners = statuses.filter { $0.value == 200 }.map(\.key).sorted()
            #expect(winners.count == capacity, "round \(round): \(statuses)")
            #expect(statuses.values.allSatisfy { $0 == 200 || $0 == 423 }, "round \(round): \(statuses)")
            #expect(try await wb.read("snapshot").holders.map(\.node).sorted() == winners)
            for node in winners { _ = try await wb.applyOK(wb[node].request(.release, "locks/roll/\(node)")) }
        }
        await wb.stop()
    }

    @Test func holderOfANodeWhoseHeartbeatStoppedIsReleased() async throws {
        let wb = try await WhiteboardServer.start(lockTTLSeconds: 1)
        _ = try await wb.applyOK(wb["n1"].request(.put, "nodes/n1/heartbeat", "1"))
        _ = try await wb.applyOK(wb["n1"].request(.acquire, "locks/roll/n1"))
        #expect(try await wb.apply(wb["n2"].request(.acquire, "locks/roll/n2")).status == 423)
        try await Task.sleep(for: .milliseconds(1300))
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/heartbeat", "2"))
        _ = try await wb.applyOK(wb["n2"].request(.acquire, "locks/roll/n2"))
        let changes = try await wb.read("changes?after=0")
        #expect(changes.holders.contains { $0.holder == "n1" && $0.released })
        #expect(try await wb.read("snapshot").holders.map(\.holder) == ["n2"])
        await wb.stop()
    }

    @Test func changesLongPollReturnsAsSoonAsSomethingIsWritten() async throws {
        let wb = try await WhiteboardServer.start(changesTimeoutMilliseconds: 20_000)
        let revision = try await wb.read("snapshot").revision
        let started = Date()
        let poll = Task { try await wb.read("changes?after=\(revision)") }
        try await Task.sleep(for: .milliseconds(300))
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/state", "waiting"))
        let changes = try await poll.value
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed < 5, "the long poll waited \(elapsed) s")
        #expect(changes.files.map(\.path) == ["nodes/n2/state"])
        #expect(changes.revision > revision)
        await wb.stop()
    }

    @Test func changesLongPollAnswersEmptyAfterTheTimeout() async throws {
        let wb = try await WhiteboardServer.start(changesTimeoutMilliseconds: 300)
        let revision = try await wb.read("snapshot").revision
        let changes = try await wb.read("changes?after=\(revision)")
        #expect(changes.files.isEmpty && changes.holders.isEmpty)
        #expect(changes.revision == revision)
        await wb.stop()
    }

    @Test func whiteboardSurvivesAServerRestart() async throws {
        let wb = try await WhiteboardServer.start()
        let writer = wb["n1"]
        _ = try await wb.applyOK(writer.request(.put, "nodes/n1/version", "7"))
        _ = try await wb.applyOK(writer.request(.acquire, "locks/roll/n1"))
        await wb.stop()
        let again = try await InProcessServer.start(wb.fixture.configuration)
        let nonce = "abc"
        let result = try await again.get("/v1/udb/snapshot?nonce=\(nonce)")
        let view = try WhiteboardView.verifiedDecode(
            body: result.body, signatureHeader: result.headers["upgradefs-signature"], expectedNonce: nonce, expectedAfter: nil,
            publicKey: wb.fixture.keys.timestamp.publicKey, verifier: SodiumVerifier())
        #expect(view.content("nodes/n1/version") == "7")
        #expect(view.holders.map(\.holder) == ["n1"])
        // Replay state survived: the node's next seq is accepted, an old one is not.
        let old = writer.request(.put, "nodes/n1/version", "1", seq: 1)
        #expect(try await postRequest(port: again.port, path: "/v1/udb/apply", body: old.encoded()).status == 409)
        #expect(try await postRequest(port: again.port, path: "/v1/udb/apply", body: writer.request(.put, "nodes/n1/version", "8").encoded()).status == 200)
        await again.stop()
    }
}

@Suite(.serialized) struct UDBMetricsTests {
    @Test func publishedUpgradeGetsASummaryAndMetricsCountNodesAndWrites() async throws {
        let wb = try await WhiteboardServer.start()
        _ = try await wb.applyOK(wb["n1"].request(.put, "nodes/n1/class", "kvstore\n"))
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/class", "kvstore\n"))
        _ = try await wb.applyOK(wb["n1"].request(.put, "nodes/n1/state", "running"))
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/state", "waiting"))
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/version", "1"))
        #expect(try await wb.apply(wb["n1"].request(.put, "nodes/n2/state", "x")).status == 403)
        wb.fixture.bundles.make("v1", version: 1)
        wb.fixture.bundles.drop("v1")
        #expect(try await eventually(10) { try await wb.read("snapshot").content("upgrades/1/summary") != nil })
        #expect(try await wb.read("snapshot").content("upgrades/1/summary") == "done 1\nrunning 1\n")

        // A second bundle claiming version 1 is rejected, and counted.
        wb.fixture.bundles.make("v1-again", version: 1)
        wb.fixture.bundles.drop("v1-again")
        #expect(try await eventually(10) {
            try await wb.server.get("/metrics").text.contains("upgradefs_bundles_total{result=\"rejected\"} 1\n")
        })

        let metrics = try await wb.server.get("/metrics")
        #expect(metrics.status == 200)
        let text = metrics.text
        #expect(text.contains("upgradefs_bundles_total{result=\"published\"} 1\n"))
        #expect(text.contains("upgradefs_published_version 1\n"))
        #expect(text.contains("upgradefs_nodes 2\n"))
        #expect(text.contains("upgradefs_nodes_by_state{state=\"running\"} 1\n"))
        #expect(text.contains("upgradefs_nodes_by_version{version=\"1\"} 1\n"))
        #expect(text.contains("upgradefs_udb_writes_total{op=\"put\"} 5\n"))
        #expect(text.contains("upgradefs_udb_refused_total{reason=\"forbidden\"} 1\n"))
        // n1's latest write was refused: flagged per node until one of its writes is applied.
        #expect(text.contains("upgradefs_udb_node_refused{node=\"n1\"} 1\n"))
        #expect(text.contains("upgradefs_udb_node_refused{node=\"n2\"} 0\n"))
        #expect(text.contains("upgradefs_udb_node_refused_total{node=\"n1\"} 1\n"))
        await wb.stop()
    }
}
