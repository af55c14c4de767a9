import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeWhiteboardClient

/// Delivery of the outbox: what each answer of the server means, and the back-off while it is away.
struct WhiteboardSenderTests {
    @Test func backoffDoublesFrom250MillisecondsTo10SecondsAndResets() {
        var backoff = WhiteboardBackoff()
        let delays = (0..<9).map { _ in backoff.next() }
        #expect(delays == [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8),
                           .seconds(10), .seconds(10), .seconds(10)])
        backoff.reset()
        #expect(backoff.next() == .milliseconds(250))
    }

    let serverKey = Ed25519KeyPair.generate()
    let nonce = Sodium.randomBytes(16)
    /// The signed request body the answers below answer.
    let sent = Array(#"{"request":{},"signature":"00"}"#.utf8)

    func answer(_ result: WhiteboardResponse.Result, nonce: [UInt8]? = nil, key: Ed25519KeyPair? = nil) -> [UInt8] {
        WhiteboardResponse(revision: 42, result: result, nonce: nonce ?? self.nonce).signed(by: key ?? serverKey).encoded()
    }

    func classify(_ status: Int, _ body: [UInt8], signatureHeader: String? = nil) -> WhiteboardDeliveryOutcome {
        WhiteboardDeliveryOutcome.classify(
            WhiteboardHTTPAnswer(status: status, body: body, signatureHeader: signatureHeader), sent: sent, nonce: nonce,
            serverKey: serverKey.publicKey)
    }

    /// A refusal as the server sends it: the body with the request's nonce and the status, signed by `key`.
    func refusal(_ code: WhiteboardErrorBody.Code, _ message: String, nonce: [UInt8]? = nil, key: Ed25519KeyPair? = nil,
                 sent: [UInt8]? = nil) -> (body: [UInt8], header: String) {
        let body = WhiteboardErrorBody(
            error: message, code: code, nonce: Hex.encode(nonce ?? self.nonce), request: WhiteboardErrorBody.requestHash(sent ?? self.sent)
        ).encoded()
        let signature = WhiteboardServerSignature.sign(canonicalBody: body, key: key ?? serverKey)
        return (body, WhiteboardServerSignature.header(keyID: "k", signature: signature))
    }

    @Test func okAndDuplicateAnswersDeliverTheEntry() {
        #expect(classify(200, answer(.ok)) == .delivered(revision: 42, duplicate: false))
        // A retry of a request the server applied before the node heard the answer.
        #expect(classify(200, answer(.duplicate)) == .delivered(revision: 42, duplicate: true))
    }

    @Test func anAnswerForAnotherRequestOrFromAnotherKeyDeliversNothing() {
        guard case .retry = classify(200, answer(.ok, nonce: Sodium.randomBytes(16))) else {
            Issue.record("an answer with another nonce was taken")
            return
        }
        guard case .retry = classify(200, answer(.ok, key: Ed25519KeyPair.generate())) else {
            Issue.record("an answer signed by another key was taken")
            return
        }
        guard case .retry = classify(200, Array("ok".utf8)) else {
            Issue.record("a garbled answer was taken")
            return
        }
    }

    /// The signature is checked over the bytes received: an answer the server signed, with a member added or
    /// spelled another way on the path, is not the server's answer even though it parses to the same response.
    @Test func aSignedAnswerChangedOnTheWayDeliversNothing() {
        let genuine = String(decoding: answer(.ok), as: UTF8.self)
        #expect(classify(200, Array(genuine.utf8)) == .delivered(revision: 42, duplicate: false))
        let changed = [
            genuine.replacingOccurrences(of: #"{"response":{"#, with: #"{"response":{"extra":1,"#),
            genuine.replacingOccurrences(of: #"{"response":"#, with: #"{"response": "#),
            genuine.replacingOccurrences(of: #""revision":42"#, with: #""revision":42.0"#),
            genuine + "\n",
        ]
        for body in changed {
            #expect(body != genuine)
            guard case .retry = classify(200, Array(body.utf8)) else {
                Issue.record("a changed answer was taken: \(body)")
                continue
            }
        }
    }

    @Test(arguments: [500, 502, 503, 504, 408, 429, 401])
    func serverTroubleAndAnUnenrolledKeyAreRetried(status: Int) {
        guard case .retry = classify(status, WhiteboardErrorBody(error: "busy", code: .internalError).encoded()) else {
            Issue.record("HTTP \(status) was not retried")
            return
        }
    }

    @Test(arguments: [(400, WhiteboardErrorBody.Code.malformed), (403, .forbidden), (409, .replayed), (409, .conflict)])
    func signedRefusalsAreVerdictsWithTheServersReason(status: Int, code: WhiteboardErrorBody.Code) {
        let signed = refusal(code, "n1 may not write upgrades/3/control")
        #expect(classify(status, signed.body, signatureHeader: signed.header)
            == .refused(status: status, reason: "n1 may not write upgrades/3/control"))
    }

    /// Anybody on the path can answer 403 or 409: only a refusal signed by the server's key over this request's
    /// nonce and this status is a verdict; anything else is retried, so nobody else can set a write aside.
    @Test(arguments: [(403, WhiteboardErrorBody.Code.forbidden), (409, .conflict), (400, .malformed)])
    func forgedOrReplayedRefusalsAreRetriedNotVerdicts(status: Int, code: WhiteboardErrorBody.Code) {
        let unsigned = WhiteboardErrorBody(error: "forged", code: code, nonce: Hex.encode(nonce)).encoded()
        let otherKey = refusal(code, "forged", key: Ed25519KeyPair.generate())
        let otherRequest = refusal(code, "an old verdict", nonce: Sodium.randomBytes(16))
        let otherStatus = refusal(code == .forbidden ? .conflict : .forbidden, "another status")
        // The server's genuine verdict on a request altered on the way (same nonce, another body or signature).
        let altered = refusal(code, "a verdict on an altered request", sent: sent + [0x20])
        for (body, header) in [(unsigned, nil), (otherKey.body, otherKey.header), (otherRequest.body, otherRequest.header),
                               (otherStatus.body, otherStatus.header), (altered.body, altered.header),
                               (Array("plain text\n".utf8), nil)] as [([UInt8], String?)] {
            guard case .retry = classify(status, body, signatureHeader: header) else {
                Issue.record("HTTP \(status) \(String(decoding: body, as: UTF8.self)) was taken as a verdict")
                continue
            }
        }
    }

    @Test func whileTheServerIsUnreachableEverythingStaysInTheOutboxInOrder() async throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let journal = try WhiteboardJournal(path: dir.path + "/udb.sqlite", node: "n1", key: Ed25519KeyPair.generate(), firstSeq: 1)
        let seqs = try ["idle", "waiting", "running"].map { try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array($0.utf8)) }
        // As the mount's whiteboard client: a refused connection is reported at once, not retried until the deadline.
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        let http = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        // Nothing listens on port 1 of the loopback address: every attempt is refused at once.
        let sender = WhiteboardSender(journal: journal, baseURL: "http://127.0.0.1:1", http: http,
                                      serverKey: Ed25519KeyPair.generate().publicKey,
                                      backoff: WhiteboardBackoff(initial: .milliseconds(10), maximum: .milliseconds(40)),
                                      requestTimeout: .milliseconds(100),
                                      logger: Logger(label: "test"))
        let task = Task { await sender.run() }
        var state = await sender.state
        for _ in 0..<500 {
            if case .retrying(_, let attempt, _) = state, attempt >= 4 { break }
            try await Task.sleep(for: .milliseconds(10))
            state = await sender.state
        }
        task.cancel()
        await task.value
        try await http.shutdown()
        guard case .retrying(let seq, let attempt, let reason) = state else {
            Issue.record("sender state \(state)")
            return
        }
        // It keeps trying the oldest entry, and only that one.
        #expect(seq == seqs[0])
        #expect(attempt >= 4)
        // Said for people, naming the address (not the HTTP library's internals).
        #expect(reason == "cannot reach 127.0.0.1:1: connection refused", "\(reason)")
        #expect(try journal.pending().map(\.seq) == seqs)
        #expect(await sender.deliveredCount == 0)
    }
}
