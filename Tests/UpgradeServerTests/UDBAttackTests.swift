#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer

/// What the attacks below send, shared with the store-level half (`WhiteboardStoreConformanceTests+Attacks`).
enum WhiteboardAttacks {
    /// n1 writing what is not its own: another node's files, control files, summaries, capacities.
    static let foreignWrites: [(WhiteboardOp, String, String?)] = [
        (.put, "nodes/n2/state", "failed"), (.put, "nodes/n2/class", "other"), (.delete, "nodes/n2/class", nil),
        (.put, "nodes/n2/heartbeat", "1"), (.put, "nodes/operator/state", "idle"), (.put, "upgrades/3/control", "abort"),
        (.put, "upgrades/3/summary", "done 9"), (.delete, "upgrades/3/summary", nil), (.put, "locks/roll/capacity", "100"),
        (.delete, "locks/roll/capacity", nil),
    ]
    /// Paths n1 puts to reach n2's files, or that are not paths at all.
    static let pathTricks = [
        "nodes/n1/../n2/state", "nodes/n1/./state", "nodes/./n2/state", "/nodes/n2/state", "nodes//n2/state",
        "nodes/n1%2F..%2Fn2/state", "nodes/n1/state/../../n2/state", "nodes/n2/state\u{0}", "nodes/n1/st\u{1B}ate",
        "nodes/n1/state\u{85}", "nodes/N2/state", "nodes/n\u{FF12}/state", "nodes/n1/" + String(repeating: "x", count: 256),
        "shared/" + String(repeating: "a/", count: 130) + "b", "shared/..", "shared",
    ]
    static let badCapacities = ["-1", "+1", "1.5", "0x10", "99999999999999999999", "1 ", "01", ""]
}

/// Issue 8, "re-check the classes around it": a hostile enrolled node, and an attacker on the network path,
/// against a live server's whiteboard (real HTTP, real signatures). Each test is named after the attack.
@Suite(.serialized) struct UDBAttackTests {
    // MARK: - A node writing what is not its own

    @Test func nodeWritingAnotherNodesFilesControlFilesOrSummariesIsRefused() async throws {
        let wb = try await WhiteboardServer.start()
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/class", "kvstore"))
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/state", "running"))
        _ = try await wb.applyOK(wb["operator"].request(.put, "locks/roll/capacity", "1"))
        let before = try await wb.read("snapshot")
        let n1 = wb["n1"]
        for (op, path, content) in WhiteboardAttacks.foreignWrites {
            let result = try await wb.apply(n1.request(op, path, content))
            #expect(result.status == 403, "\(op) \(path): \(result.status) \(result.text)")
        }
        // The operator may set a node's state, not forge its heartbeat or log.
        #expect(try await wb.apply(wb["operator"].request(.put, "nodes/n2/heartbeat", "1")).status == 403)
        #expect(try await wb.apply(wb["operator"].request(.put, "nodes/n2/log", "forged")).status == 403)
        let after = try await wb.read("snapshot")
        #expect(after.files == before.files)
        await wb.stop()
    }

    /// A node's own `class` and `state` are its own report: a node that claims another upgrade's class counts once, as
    /// itself, in that summary (it cannot count twice, nor as another node, nor as a node not enrolled).
    @Test func nodeClaimingAClassCountsOnlyOnceInThatUpgradesSummary() async throws {
        let wb = try await WhiteboardServer.start(nodes: ["n1", "n2"])
        let store = try SQLiteWhiteboardStore(directory: wb.fixture.configuration.stateDirectory, verifier: SodiumVerifier())
        try await store.registerUpgrade(3, class: "kvstore")
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/class", "kvstore\n"))
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/state", "running"))
        let n1 = wb["n1"]
        for content in ["kvstore", "kvstore\n", "kvstore"] { _ = try await wb.applyOK(n1.request(.put, "nodes/n1/class", content)) }
        _ = try await wb.applyOK(n1.request(.put, "nodes/n1/state", "failed"))
        _ = try await wb.applyOK(n1.request(.put, "nodes/n1/n2", "failed"))
        #expect(try await wb.read("snapshot").content("upgrades/3/summary") == "failed 1\nrunning 1\n")
        // A name that is not enrolled counts nowhere, whatever it sends.
        #expect(try await wb.apply(WhiteboardWriter("n3").request(.put, "nodes/n3/class", "kvstore")).status == 401)
        #expect(try await wb.read("snapshot").content("upgrades/3/summary") == "failed 1\nrunning 1\n")
        await wb.stop()
    }

    // MARK: - Path tricks

    @Test func pathTricksDotDotPercentControlBytesAndOverlongNamesAreRefused() async throws {
        let wb = try await WhiteboardServer.start()
        _ = try await wb.applyOK(wb["n2"].request(.put, "nodes/n2/state", "running"))
        let before = try await wb.read("snapshot")
        let n1 = wb["n1"]
        for path in WhiteboardAttacks.pathTricks {
            let result = try await wb.apply(n1.request(.put, path, "failed"))
            #expect(result.status == 400, "\(path.debugDescription): \(result.status) \(result.text)")
        }
        // A literal "%2e%2e" or a look-alike is just a name of the node's own: it changes nothing of n2's.
        _ = try await wb.applyOK(n1.request(.put, "nodes/n1/%2e%2e", "x"))
        _ = try await wb.applyOK(n1.request(.put, "nodes/n1/\u{0455}tate", "failed"))
        let after = try await wb.read("snapshot")
        #expect(after.content("nodes/n2/state") == "running")
        #expect(after.files.filter { !$0.path.hasPrefix("nodes/n1/") } == before.files)
        await wb.stop()
    }

    /// Node names are ASCII (`[a-z0-9][a-z0-9._-]{0,62}`): a look-alike of `n1` (Cyrillic, full-width, zero-width
    /// space) cannot be enrolled, nor named by a request.
    @Test func unicodeLookAlikesOfANodeNameAreNotNodeNames() async throws {
        for name in ["п1", "n\u{FF11}", "n1\u{200B}", "\u{0578}1", "N1", "n1 ", ".n1"] {
            #expect(!WhiteboardPath.isNodeName(name), "\(name.debugDescription)")
        }
        let wb = try await WhiteboardServer.start()
        var request = wb["n1"].request(.put, "nodes/n1/state", "idle").request
        request.node = "n1\u{200B}"
        #expect(try await wb.apply(request.signed(by: wb["n1"].key)).status == 400)
        await wb.stop()
    }

    // MARK: - Sizes

    @Test func contentJustAbove64KiBIsRefusedAndA100MBBodyIsRefusedBeforeItIsSent() async throws {
        let wb = try await WhiteboardServer.start()
        let limit = WhiteboardRules.maxFileBytes
        _ = try await wb.applyOK(wb["n1"].request(.put, "shared/x", String(repeating: "a", count: limit)))
        #expect(try await wb.apply(wb["n1"].request(.put, "shared/y", String(repeating: "a", count: limit + 1))).status == 400)
        #expect(try await wb.apply(wb["n1"].request(.put, "nodes/n1/other", String(repeating: "a", count: limit + 1))).status == 400)
        // A body announced as 100 MB: the answer comes once the limit is passed, not after 100 MB.
        let status = try await partialPost(port: wb.server.port, path: "/v1/udb/apply", declaredLength: 100_000_000, sending: 3_000_000)
        #expect(status == 400)
        #expect(try await wb.server.get("/healthz").status == 200)
        await wb.stop()
    }

    /// Every node reads the whole whiteboard (a snapshot at each mount, the change feed after; a mount takes at most
    /// 64 MiB per answer): one node writing thousands of files, or megabytes, would stop every node's follower.
    @Test func nodeFillingTheWhiteboardWithFilesOrBytesStopsAtItsQuota() async throws {
        let wb = try await WhiteboardServer.start(nodes: ["n1", "n2", "n3"])
        let n1 = wb["n1"]
        var statuses: [Int: Int] = [:]
        for index in 0..<1100 { statuses[try await wb.apply(n1.request(.put, "shared/f\(index)", "x")).status, default: 0] += 1 }
        #expect(statuses == [200: WhiteboardRules.maxFilesPerWriter, 403: 1100 - WhiteboardRules.maxFilesPerWriter])
        // Overwriting one of its files, and writing after deleting one, still works.
        _ = try await wb.applyOK(n1.request(.put, "shared/f0", "y"))
        _ = try await wb.applyOK(n1.request(.delete, "shared/f1"))
        _ = try await wb.applyOK(n1.request(.put, "nodes/n1/state", "running"))
        // Bytes: 64 KiB files up to 1 MiB in all.
        let big = String(repeating: "b", count: WhiteboardRules.maxFileBytes)
        statuses = [:]
        for index in 0..<20 { statuses[try await wb.apply(wb["n2"].request(.put, "shared/big\(index)", big)).status, default: 0] += 1 }
        #expect(statuses == [200: 16, 403: 4])
        let refused = try await wb.apply(wb["n2"].request(.put, "nodes/n2/log", big))
        #expect(WhiteboardErrorBody.decode(refused.body)?.error
            == "n2 may not write nodes/n2/log: its files would hold \(16 * 65536 + 65536) bytes, at most \(1 << 20)")
        // Other nodes and the operator are not held back by it.
        _ = try await wb.applyOK(wb["n3"].request(.put, "shared/mine", "z"))
        _ = try await wb.applyOK(wb["operator"].request(.put, "upgrades/3/control", "pause"))
        await wb.stop()
    }

    // MARK: - Signature tricks

    @Test func signatureOverAnotherCanonicalisationOrWithTrailingGarbageIsRefused() async throws {
        let wb = try await WhiteboardServer.start()
        let key = wb["n1"].key
        let nonce = Hex.encode(Sodium.randomBytes(16))
        let content = Data("failed".utf8).base64EncodedString()
        // Signed over bytes that are not the canonical JSON of the request the server reads.
        for text in [
            #"{"seq":1,"node":"n1","channel":"outbox","op":"put","path":"nodes/n1/state","content":"\#(content)","nonce":"\#(nonce)"}"#,
            #"{"channel": "outbox", "content": "\#(content)", "node": "n1", "nonce": "\#(nonce)", "op": "put", "path": "nodes/n1/state", "seq": 1}"#,
            #"{"channel":"outbox","content":"\#(content)","node":"n1","nonce":"\#(nonce)","op":"put","path":"nodes/n1/\u0073tate","seq":1}"#,
        ] {
            let signature = key.sign(WhiteboardRequest.domain + Array(text.utf8))
            let body = Array(#"{"request":\#(text),"signature":"\#(Hex.encode(signature))"}"#.utf8)
            #expect(try await postRequest(port: wb.server.port, path: "/v1/udb/apply", body: body).status == 401, "\(text)")
        }
        // A valid signed body followed by anything is not JSON: refused (unsigned 400), nothing applied.
        let valid = wb["n1"].request(.put, "nodes/n1/state", "failed", seq: 5)
        for garbage in ["x", " {}", "\u{0}", "{\"request\":{}}"] {
            let result = try await postRequest(port: wb.server.port, path: "/v1/udb/apply", body: valid.encoded() + Array(garbage.utf8))
            #expect(result.status == 400, "\(garbage.debugDescription)")
            #expect(result.headers["upgradefs-signature"] == nil)
        }
        // A request signed by n1 naming n2, or n1's signature on n2's request: not authenticated.
        var named = wb["n1"].request(.put, "nodes/n2/state", "failed").request
        named.node = "n2"
        #expect(try await wb.apply(named.signed(by: key)).status == 401)
        #expect(try await wb.read("snapshot").files.isEmpty)
        // The seq, not the nonce, tells requests apart: a second request reusing a nonce is a new request (the nonce
        // only binds the server's answer); the first, sent again, is a retry answered once.
        let first = wb["n1"].request(.put, "nodes/n1/state", "idle")
        var second = wb["n1"].request(.put, "nodes/n1/state", "running").request
        second.nonce = first.request.nonce
        _ = try await wb.applyOK(first)
        _ = try await wb.applyOK(second.signed(by: key))
        #expect(try await wb.apply(first).status == 409)
        #expect(try await wb.read("snapshot").content("nodes/n1/state") == "running")
        await wb.stop()
    }

    // MARK: - Seq tricks

    @Test func seqAtInt64MaxOrNegativeWithoutTheKeyCannotLockANodeOut() async throws {
        let wb = try await WhiteboardServer.start()
        let attacker = Ed25519KeyPair.generate()
        for seq in [Int64.max, 1 << 62] {
            let forged = WhiteboardRequest(
                node: "n1", channel: .outbox, seq: seq, op: .put, path: "nodes/n1/state", content: Array("idle".utf8),
                nonce: Sodium.randomBytes(16))
            #expect(try await wb.apply(forged.signed(by: attacker)).status == 401)
        }
        for seq in ["0", "-1", "-9223372036854775808", "9223372036854775808", "1.5", "1e3", "\"7\""] {
            let text = #"{"channel":"outbox","content":"aWRsZQ==","node":"n1","nonce":"\#(Hex.encode(Sodium.randomBytes(16)))","op":"put","path":"nodes/n1/state","seq":\#(seq)}"#
            let body = Array(#"{"request":\#(text),"signature":"\#(String(repeating: "00", count: 64))"}"#.utf8)
            #expect(try await postRequest(port: wb.server.port, path: "/v1/udb/apply", body: body).status == 400, "seq \(seq)")
        }
        // The node's own next write still goes through: nothing above moved its replay counter.
        _ = try await wb.applyOK(wb["n1"].request(.put, "nodes/n1/state", "running", seq: 1))
        _ = try await wb.applyOK(wb["n1"].request(.put, "nodes/n1/state", "idle", seq: 2))
        await wb.stop()
    }

    // MARK: - Lock abuse

    /// SFs take a lock with `mkdir locks/L/$UPGRADEFS_NODE` and read EEXIST as "I hold it": a holder named after
    /// another enrolled node, or one another node holds, must not answer EEXIST to a node that does not hold it.
    @Test func holderNamedAfterAnotherNodeOrHeldByAnotherNodeIsNotHandedOut() async throws {
        let wb = try await WhiteboardServer.start(nodes: ["n1", "n2", "n3"])
        _ = try await wb.applyOK(wb["operator"].request(.put, "locks/roll/capacity", "5"))
        let squat = try await wb.apply(wb["n1"].request(.acquire, "locks/roll/n2"))
        #expect(squat.status == 403)
        #expect(WhiteboardErrorBody.decode(squat.body)?.error == "n1 may not acquire locks/roll/n2: holder n2 is node n2's name")
        _ = try await wb.applyOK(wb["n2"].request(.acquire, "locks/roll/n2"))
        // A free-text holder another node holds: forbidden to others, EEXIST (409) only to its holder.
        _ = try await wb.applyOK(wb["n3"].request(.acquire, "locks/roll/slot"))
        #expect(try await wb.apply(wb["n1"].request(.acquire, "locks/roll/slot")).status == 403)
        #expect(WhiteboardErrorBody.decode(try await wb.apply(wb["n3"].request(.acquire, "locks/roll/slot")).body)?.code == .exists)
        // Releasing another node's holder is refused; the operator may.
        #expect(try await wb.apply(wb["n1"].request(.release, "locks/roll/n2")).status == 403)
        #expect(try await wb.apply(wb["n1"].request(.release, "locks/roll/slot")).status == 403)
        #expect(try await wb.read("snapshot").holders.map(\.holder) == ["n2", "slot"])
        _ = try await wb.applyOK(wb["operator"].request(.release, "locks/roll/slot"))
        await wb.stop()
    }

    @Test func acquiringThousandsOfHoldersStopsAtCapacityAndPerNodeLimitAndBadCapacitiesAreRefused() async throws {
        let wb = try await WhiteboardServer.start()
        let op = wb["operator"]
        for capacity in WhiteboardAttacks.badCapacities {
            #expect(try await wb.apply(op.request(.put, "locks/roll/capacity", capacity)).status == 400, "\(capacity.debugDescription)")
        }
        _ = try await wb.applyOK(op.request(.put, "locks/roll/capacity", "3"))
        var statuses: [Int: Int] = [:]
        for index in 0..<1000 {
            statuses[try await wb.apply(wb["n1"].request(.acquire, "locks/roll/h\(index)")).status, default: 0] += 1
        }
        #expect(statuses == [200: 3, 423: 997])
        #expect(try await wb.read("snapshot").holders.count == 3)
        // Across locks (each with its own capacity of 1): at most `maxHoldersPerNode` holders per node.
        let limit = WhiteboardRules.maxHoldersPerNode
        statuses = [:]
        for index in 0..<1000 {
            statuses[try await wb.apply(wb["n2"].request(.acquire, "locks/l\(index)/n2")).status, default: 0] += 1
        }
        #expect(statuses == [200: limit, 403: 1000 - limit])
        #expect(try await wb.read("snapshot").holders.filter { $0.node == "n2" }.count == limit)
        _ = try await wb.applyOK(wb["n2"].request(.release, "locks/l0/n2"))
        _ = try await wb.applyOK(wb["n2"].request(.acquire, "locks/l999/n2"))
        // A huge capacity is the operator's word; it parses and bounds nothing else.
        _ = try await wb.applyOK(op.request(.put, "locks/roll/capacity", "999999999999999999"))
        await wb.stop()
    }

    // MARK: - Long polls

    @Test func thousandLongPollsFromOneClientLeaveWritesAndHealthzWorking() async throws {
        let wb = try await WhiteboardServer.start(changesTimeoutMilliseconds: 20_000)
        let revision = try await wb.read("snapshot").revision
        var sockets: [Int32] = []
        for _ in 0..<1000 {
            let fd = try connectLoopback(port: wb.server.port)
            sockets.append(fd)
            let request = "GET /v1/udb/changes?after=\(revision)&nonce=a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            _ = request.utf8CString.withUnsafeBufferPointer { send(fd, $0.baseAddress, $0.count - 1, 0) }
        }
        try await Task.sleep(for: .milliseconds(500))
        let started = Date()
        #expect(try await wb.server.get("/healthz").status == 200)
        _ = try await wb.applyOK(wb["n1"].request(.put, "nodes/n1/state", "running"))
        #expect(try await wb.read("snapshot").content("nodes/n1/state") == "running")
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed < 5, "healthz and a write took \(elapsed) s beside 1000 long polls")
        for fd in sockets { close(fd) }
        await wb.stop()
    }

    // MARK: - Read answers replayed or swapped

    /// An attacker on the path answers the node's read with a signed answer of the same server fetched with the
    /// node's nonce but another question (`changes?after=HIGH`: empty, at the current revision), an earlier answer,
    /// or another server's answer: none passes (else a node would wipe its view or skip changes, e.g. an `abort`).
    @Test func readAnswerForAnotherQuestionOrNonceOrServerIsRefused() async throws {
        let wb = try await WhiteboardServer.start(changesTimeoutMilliseconds: 300)
        _ = try await wb.applyOK(wb["operator"].request(.put, "upgrades/3/control", "abort"))
        let key = wb.fixture.keys.timestamp.publicKey
        func decode(_ result: HTTPResult, nonce: String, after: Int64?, key: [UInt8] = key) throws -> WhiteboardView {
            try WhiteboardView.verifiedDecode(
                body: result.body, signatureHeader: result.headers["upgradefs-signature"], expectedNonce: nonce,
                expectedAfter: after, publicKey: key, verifier: SodiumVerifier())
        }
        let nonce = Hex.encode(Sodium.randomBytes(16))
        let skipping = try await wb.server.get("/v1/udb/changes?after=1000&nonce=\(nonce)")
        #expect(skipping.status == 200)
        #expect(throws: WhiteboardProtocolError.self) { try decode(skipping, nonce: nonce, after: nil) }
        #expect(throws: WhiteboardProtocolError.self) { try decode(skipping, nonce: nonce, after: 0) }
        #expect(try decode(skipping, nonce: nonce, after: 1000).files.isEmpty)
        // A snapshot does not pass as changes either.
        let snapshot = try await wb.server.get("/v1/udb/snapshot?nonce=\(nonce)")
        #expect(throws: WhiteboardProtocolError.self) { try decode(snapshot, nonce: nonce, after: 0) }
        #expect(try decode(snapshot, nonce: nonce, after: nil).content("upgrades/3/control") == "abort")
        // An earlier answer (another nonce), and another server's answer with this nonce.
        #expect(throws: WhiteboardProtocolError.self) { try decode(snapshot, nonce: Hex.encode(Sodium.randomBytes(16)), after: nil) }
        let other = try await WhiteboardServer.start()
        let foreign = try await other.server.get("/v1/udb/snapshot?nonce=\(nonce)")
        #expect(throws: WhiteboardProtocolError.self) { try decode(foreign, nonce: nonce, after: nil) }
        #expect(try decode(foreign, nonce: nonce, after: nil, key: other.fixture.keys.timestamp.publicKey).files.isEmpty)
        await other.stop()
        await wb.stop()
    }
}

/// POSTs a body announced as `declaredLength` bytes but sends at most `sending` (not blocking when the server stops
/// reading), then waits up to 10 s for the status line: the server must answer without the rest.
private func partialPost(port: Int, path: String, declaredLength: Int, sending: Int) async throws -> Int {
    try await withCheckedThrowingContinuation { continuation in
        Thread {
            continuation.resume(with: Result {
                let fd = try connectLoopback(port: port)
                defer { close(fd) }
                let head = "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(declaredLength)\r\n\r\n"
                let bytes = Array(head.utf8) + Array(repeating: UInt8(ascii: "{"), count: sending)
                var timeout = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
                let deadline = Date().addingTimeInterval(10)
                var offset = 0
                sending: while offset < bytes.count && Date() < deadline {
                    let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, min($0.count, 65536), Int32(MSG_NOSIGNAL)) }
                    if n > 0 {
                        offset += n
                        continue
                    }
                    guard errno == EAGAIN else { break }
                    // The server stopped reading: go on once it reads again, or stop when it answered.
                    var waiting = pollfd(fd: fd, events: Int16(POLLIN | POLLOUT), revents: 0)
                    _ = poll(&waiting, 1, 100)
                    if waiting.revents & Int16(POLLIN) != 0 { break sending }
                }
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
                var response: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while !response.contains(UInt8(ascii: "\n")) {
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    if n <= 0 { break }
                    response.append(contentsOf: buffer[0..<n])
                }
                let line = String(decoding: response.prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
                let parts = line.split(separator: " ")
                guard parts.count >= 2, let status = Int(parts[1]) else { throw HarnessError("no answer to a partial body: \(line)") }
                return status
            })
        }.start()
    }
}
