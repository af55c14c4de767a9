import Sodium
import Testing
import UpgradeCore

@Suite struct WhiteboardPathTests {
    @Test func parsesEveryKindOfPath() throws {
        #expect(try WhiteboardPath("nodes/n1/state").kind == .nodeFile(node: "n1", name: "state"))
        #expect(try WhiteboardPath("upgrades/3/control").kind == .upgradeControl(version: 3))
        #expect(try WhiteboardPath("upgrades/12/summary").kind == .upgradeSummary(version: 12))
        #expect(try WhiteboardPath("locks/roll/capacity").kind == .lockCapacity(lock: "roll"))
        #expect(try WhiteboardPath("locks/roll/Host_1.a-b").kind == .lockHolder(lock: "roll", holder: "Host_1.a-b"))
        #expect(try WhiteboardPath("shared/a/b.txt").kind == .shared(path: "a/b.txt"))
    }

    @Test(arguments: [
        "", "/nodes/n1/state", "nodes/n1", "nodes/n1/a/b", "nodes/N1/state", "nodes/-x/state", "nodes/../state",
        "upgrades/0/control", "upgrades/01/control", "upgrades/x/control", "upgrades/3/other", "upgrades/3",
        "locks/roll", "locks/roll/a/b", "locks/roll/bad holder", "locks/roll/..", "locks/Roll/capacity",
        "shared", "shared/", "shared/a//b", "shared/./a", "shared/../x", "other/x", "nodes/n1/st\nate",
    ])
    func refusesBadPaths(_ path: String) {
        #expect(throws: WhiteboardPathError.self) { try WhiteboardPath(path) }
    }

    @Test func refusesOverlongPathsAndHolders() {
        #expect(throws: WhiteboardPathError.self) { try WhiteboardPath("shared/" + String(repeating: "a", count: 249)) }
        #expect((try? WhiteboardPath("shared/" + String(repeating: "a", count: 248))) != nil)
        #expect(throws: WhiteboardPathError.self) { try WhiteboardPath("locks/l/" + String(repeating: "h", count: 65)) }
        #expect(!WhiteboardPath.isNodeName(String(repeating: "a", count: 64)))
        #expect(WhiteboardPath.isNodeName(String(repeating: "a", count: 63)))
    }
}

@Suite struct WhiteboardRulesTests {
    func denial(_ node: String, _ op: WhiteboardOp, _ path: String) throws -> WhiteboardDenial? {
        WhiteboardRules.authorize(node: node, op: op, path: try WhiteboardPath(path))
    }

    @Test func nodeWritesItsOwnDirectoryAndShared() throws {
        for name in ["state", "version", "heartbeat", "log", "notes"] {
            #expect(try denial("n1", .put, "nodes/n1/\(name)") == nil)
            #expect(try denial("n1", .delete, "nodes/n1/\(name)") == nil)
        }
        #expect(try denial("n1", .put, "shared/plan/x") == nil)
    }

    @Test func nodeMayNotWriteAnotherNodesDirectory() throws {
        let d = try denial("n1", .put, "nodes/n2/state")
        #expect(d?.kind == .forbidden)
        #expect(d?.message == "n1 may not write nodes/n2/state")
        #expect(try denial("n1", .delete, "nodes/n2/log")?.kind == .forbidden)
    }

    @Test func onlyTheOperatorWritesControlAndCapacity() throws {
        #expect(try denial("n1", .put, "upgrades/3/control")?.message == "n1 may not write upgrades/3/control")
        #expect(try denial("n1", .put, "locks/roll/capacity")?.kind == .forbidden)
        #expect(try denial("n1", .delete, "locks/roll/capacity")?.kind == .forbidden)
        #expect(try denial("operator", .put, "upgrades/3/control") == nil)
        #expect(try denial("operator", .put, "locks/roll/capacity") == nil)
    }

    @Test func operatorWritesNodeStatusButNotHeartbeatOrLog() throws {
        #expect(try denial("operator", .put, "nodes/n1/state") == nil)
        #expect(try denial("operator", .put, "nodes/n1/version") == nil)
        #expect(try denial("operator", .put, "nodes/n1/heartbeat")?.kind == .forbidden)
        #expect(try denial("operator", .put, "nodes/n1/log")?.kind == .forbidden)
    }

    @Test func nobodyWritesTheSummary() throws {
        #expect(try denial("operator", .put, "upgrades/3/summary")?.kind == .forbidden)
        #expect(try denial("n1", .put, "upgrades/3/summary")?.kind == .forbidden)
        #expect(try denial("operator", .delete, "upgrades/3/summary")?.kind == .forbidden)
    }

    @Test func locksTakeOnlyAcquireAndRelease() throws {
        #expect(try denial("n1", .acquire, "locks/roll/n1") == nil)
        #expect(try denial("n1", .release, "locks/roll/n1") == nil)
        #expect(try denial("n1", .put, "locks/roll/n1")?.kind == .malformed)
        #expect(try denial("n1", .acquire, "nodes/n1/state")?.kind == .malformed)
    }

    func validated(_ path: String, _ text: String) throws -> [UInt8]? {
        try? WhiteboardRules.validate(content: Array(text.utf8), for: WhiteboardPath(path)).get()
    }

    @Test func validatesContentByFileKind() throws {
        #expect(try validated("nodes/n1/state", "running\n") == Array("running\n".utf8))
        #expect(try validated("nodes/n1/state", "waiting-for-go") != nil)
        #expect(try validated("nodes/n1/state", "two words") == nil)
        #expect(try validated("nodes/n1/state", "Running") == nil)
        #expect(try validated("nodes/n1/state", "") == nil)
        #expect(try validated("nodes/n1/state", String(repeating: "a", count: 33)) == nil)
        #expect(try validated("nodes/n1/version", "3\n") != nil)
        #expect(try validated("nodes/n1/version", "0") != nil)
        #expect(try validated("nodes/n1/version", "-3") == nil)
        #expect(try validated("nodes/n1/version", "03") == nil)
        #expect(try validated("nodes/n1/heartbeat", "1700000000") != nil)
        #expect(try validated("nodes/n1/heartbeat", "soon") == nil)
        #expect(try validated("locks/roll/capacity", "2\n") != nil)
        #expect(try validated("locks/roll/capacity", "two") == nil)
        #expect(try validated("upgrades/3/control", "go\n") != nil)
        #expect(try validated("upgrades/3/control", "approve") != nil)
        #expect(try validated("upgrades/3/control", "retry\n") != nil) // the manager retries a failed upgrade
        #expect(try validated("upgrades/3/control", "yolo") == nil)
    }

    @Test func limitsFilesTo64KiBAndKeepsTheEndOfLogs() throws {
        let big = String(repeating: "x", count: WhiteboardRules.maxFileBytes)
        #expect(try validated("shared/x", big) != nil)
        #expect(try validated("shared/x", big + "y") == nil)
        #expect(try validated("nodes/n1/notes", big + "y") == nil)
        let log = try validated("nodes/n1/log", "head" + big)
        #expect(log?.count == WhiteboardRules.maxFileBytes)
        #expect(log?.first == UInt8(ascii: "x"))
    }
}

@Suite struct WhiteboardSigningTests {
    let key = Ed25519KeyPair.generate()
    let verifier = SodiumVerifier()

    func request(seq: Int64 = 1) -> WhiteboardRequest {
        WhiteboardRequest(
            node: "n1", channel: .outbox, seq: seq, op: .put, path: "nodes/n1/state",
            content: Array("running\n".utf8), nonce: Array(repeating: 7, count: 16))
    }

    @Test func signedRequestRoundTripsAndVerifies() throws {
        let signed = request().signed(by: key)
        let decoded = try SignedWhiteboardRequest.decode(signed.encoded())
        #expect(decoded == signed)
        #expect(decoded.verify(publicKey: key.publicKey, verifier: verifier))
        let text = String(decoding: signed.encoded(), as: UTF8.self)
        #expect(text.contains("\"content\":\"cnVubmluZwo=\""))
        #expect(request().signingBytes().starts(with: Array("upgradefs-udb-request-v1\n{".utf8)))
    }

    @Test func tamperedRequestIsRefused() throws {
        var signed = request().signed(by: key)
        signed.request.path = "nodes/n1/version"
        #expect(!signed.verify(publicKey: key.publicKey, verifier: verifier))
        var other = request().signed(by: key)
        other.request.seq = 2
        #expect(!other.verify(publicKey: key.publicKey, verifier: verifier))
        #expect(!request().signed(by: key).verify(publicKey: Ed25519KeyPair.generate().publicKey, verifier: verifier))
    }

    @Test func requestDigestDiffersWithContent() {
        var changed = request()
        changed.content = Array("failed\n".utf8)
        #expect(changed.digest() != request().digest())
        #expect(request().digest() == request().digest())
    }

    @Test(arguments: [
        #"{"request":{"node":"n1","channel":"outbox","seq":1,"op":"put","path":"x","nonce":"07070707070707070707070707070707"},"signature":"00"}"#,
        #"{"request":{"node":"n1","channel":"direct","seq":1,"op":"put","path":"x","content":"","nonce":"07070707070707070707070707070707"},"signature":""}"#,
        #"{"request":{"node":"n1","channel":"outbox","seq":0,"op":"delete","path":"x","nonce":"07070707070707070707070707070707"},"signature":""}"#,
        #"{"request":{"node":"n1","channel":"outbox","seq":1,"op":"delete","path":"x","nonce":"0707"},"signature":""}"#,
        #"{"request":{"node":"n1","channel":"outbox","seq":1,"op":"delete","path":"x","nonce":"07070707070707070707070707070707","extra":1},"signature":""}"#,
        "not json",
    ])
    func malformedBodiesAreRefused(_ body: String) {
        #expect(throws: WhiteboardProtocolError.self) { try SignedWhiteboardRequest.decode(Array(body.utf8)) }
    }

    @Test func responseRoundTripsAndVerifies() throws {
        let signed = WhiteboardResponse(revision: 9, result: .duplicate, nonce: Array(repeating: 1, count: 16)).signed(by: key)
        let decoded = try SignedWhiteboardResponse.decode(signed.encoded())
        #expect(decoded == signed)
        #expect(decoded.verify(publicKey: key.publicKey, verifier: verifier))
        var forged = decoded
        forged.response.result = .ok
        #expect(!forged.verify(publicKey: key.publicKey, verifier: verifier))
    }

    @Test func viewSignatureAndNonceAreChecked() throws {
        let view = WhiteboardView(
            revision: 4,
            files: [WhiteboardFile(path: "shared/x", content: [1, 2], revision: 3, modifiedAt: 100),
                    WhiteboardFile(path: "shared/y", content: nil, revision: 4, modifiedAt: 101)],
            holders: [WhiteboardHolder(lock: "roll", holder: "n1", node: "n1", acquiredAt: 5, revision: 2, released: true)],
            nonce: "abc")
        let body = view.encoded()
        let header = WhiteboardServerSignature.header(
            keyID: "k", signature: WhiteboardServerSignature.sign(view.toJSON(), key: key))
        let decoded = try WhiteboardView.verifiedDecode(
            body: body, signatureHeader: header, expectedNonce: "abc", expectedAfter: nil, publicKey: key.publicKey, verifier: verifier)
        #expect(decoded == view)
        #expect(throws: WhiteboardProtocolError.self) {
            try WhiteboardView.verifiedDecode(
                body: body, signatureHeader: header, expectedNonce: "other", expectedAfter: nil, publicKey: key.publicKey, verifier: verifier)
        }
        var tampered = body
        tampered[tampered.count - 3] ^= 1
        #expect(throws: WhiteboardProtocolError.self) {
            try WhiteboardView.verifiedDecode(
                body: tampered, signatureHeader: header, expectedNonce: "abc", expectedAfter: nil, publicKey: key.publicKey, verifier: verifier)
        }
    }

    /// A read answer whose bytes were changed on the way into other JSON text of the same value (here a space) is
    /// refused: the signature is checked over the bytes received, not over a canonical re-encoding of what they parse to.
    @Test func answerReencodedOnTheWayIsRefused() throws {
        let view = WhiteboardView(revision: 1, files: [], holders: [], nonce: "abc")
        let header = WhiteboardServerSignature.header(
            keyID: "k", signature: WhiteboardServerSignature.sign(view.toJSON(), key: key))
        let respaced = Array(" ".utf8) + view.encoded()
        #expect(try JSONValue.parse(respaced) == view.toJSON())
        #expect(throws: WhiteboardProtocolError.self) {
            try WhiteboardView.verifiedDecode(
                body: respaced, signatureHeader: header, expectedNonce: "abc", expectedAfter: nil, publicKey: key.publicKey, verifier: verifier)
        }
    }
}
