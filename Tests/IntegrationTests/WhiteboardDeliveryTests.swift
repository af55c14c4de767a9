import AsyncHTTPClient
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
import UpgradeNode
import UpgradeServer
import UpgradeWhiteboardClient

/// The node's journal and sender against a live in-process server: the SPEC's "delivered to the server in
/// order, exactly once in effect, also across a server outage or a node restart".
@Suite(.serialized) struct WhiteboardDeliveryTests {
    @Test func writesArriveExactlyOnceInOrderAcrossAServerOutageAndANodeRestart() async throws {
        var fixture = try await WhiteboardFixture.start("udb-delivery")
        defer { fixture.remove() }
        try FileManager.default.createDirectory(atPath: fixture.path + "/cache", withIntermediateDirectories: true)
        let node = try await fixture.enrolledNode("n1")
        let store = fixture.store
        let startRevision = try await store.revision()

        let journalPath = fixture.path + "/cache/" + WhiteboardJournal.fileName
        var journal = try WhiteboardJournal(path: journalPath, node: "n1", key: node.key)
        let http = WhiteboardFixture.makeHTTPClient()
        func makeSender(_ journal: WhiteboardJournal) -> WhiteboardSender {
            fixture.sender(for: journal, http: http,
                           backoff: WhiteboardBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)),
                           requestTimeoutSeconds: 20)
        }
        var sender = makeSender(journal)
        var task = Task { [sender] in await sender.run() }

        // Written while the server is up.
        for i in 1...3 {
            try journal.enqueue(op: .put, path: "nodes/n1/f\(i)", content: Array("write \(i)\n".utf8))
            sender.wake()
        }
        let deliveredWhileUp = try await WhiteboardFixture.waitFor(30) { try journal.pending().isEmpty }
        let stateWhileUp = await sender.state
        #expect(deliveredWhileUp, "sender: \(stateWhileUp)")
        #expect(try journal.view(path: "nodes/n1/f3") == Array("write 3\n".utf8))

        // The server goes away; writes still succeed at once and wait in the journal.
        await fixture.stopServer()
        for i in 4...6 {
            try journal.enqueue(op: .put, path: "nodes/n1/f\(i)", content: Array("write \(i)\n".utf8))
            sender.wake()
        }
        #expect(try journal.view(path: "nodes/n1/f6") == Array("write 6\n".utf8))
        #expect(await WhiteboardFixture.waitFor(30) {
            if case .retrying(_, let attempt, _) = await sender.state { return attempt >= 3 }
            return false
        })
        #expect(try journal.pending().count == 3)

        // The mount process restarts with those writes pending; then the server comes back.
        task.cancel()
        await task.value
        try journal.close()
        journal = try WhiteboardJournal(path: journalPath, node: "n1", key: node.key)
        #expect(try journal.pending().map(\.path) == (4...6).map { "nodes/n1/f\($0)" })
        try await fixture.restartServer()
        sender = makeSender(journal)
        task = Task { [sender] in await sender.run() }
        #expect(try await WhiteboardFixture.waitFor(30) { try journal.pending().isEmpty })

        // Exactly once: six writes, six revisions, each file applied once, in the order written.
        let view = try await store.snapshot()
        let files = (1...6).map { i in view.files.first { $0.path == "nodes/n1/f\(i)" } }
        #expect(files.map { $0?.content.map { String(decoding: $0, as: UTF8.self) } } == (1...6).map { "write \($0)\n" })
        let revisions = files.compactMap { $0?.revision }
        #expect(revisions == revisions.sorted() && Set(revisions).count == 6)
        #expect(try await store.revision() == startRevision + 6)

        task.cancel()
        await task.value
        try journal.close()
        await fixture.stopServer()
        try await http.shutdown()
    }

    @Test func aWriteTheServerAppliedButTheNodeNeverHeardOfIsAppliedOnce() async throws {
        let fixture = try await WhiteboardFixture.start("udb-duplicate")
        defer { fixture.remove() }
        let node = try await fixture.enrolledNode("n1")
        let journal = try WhiteboardJournal(path: fixture.path + "/udb.sqlite", node: "n1", key: node.key)
        try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("running".utf8))
        let entry = try #require(try journal.pending().first)

        // The request reaches the server, but the answer is lost (the mount died before acknowledging).
        var request = HTTPClientRequest(url: fixture.baseURL + "/v1/udb/apply")
        request.method = .POST
        request.body = .bytes(entry.body)
        let lost = try await HTTPClient.shared.execute(request, timeout: .seconds(5))
        #expect(lost.status == .ok)
        let applied = try await fixture.store.revision()

        let sender = fixture.sender(for: journal)
        let task = Task { await sender.run() }
        #expect(try await WhiteboardFixture.waitFor(30) { try journal.pending().isEmpty })
        #expect(await sender.deliveredCount == 1)
        #expect(try await fixture.store.revision() == applied)
        #expect(try journal.view(path: "nodes/n1/state") == Array("running".utf8))
        task.cancel()
        await task.value
        await fixture.stopServer()
    }

    /// Issue 8, item 18: a mount whose key is not enrolled yet keeps its writes (the server's 401 is retried with
    /// back-off, never a verdict) and delivers them by itself once the operator enrolls the node, with no remount.
    @Test func writesOfANodeNotYetEnrolledAreDeliveredOnceItIsEnrolled() async throws {
        let fixture = try await WhiteboardFixture.start("udb-unenrolled")
        defer { fixture.remove() }
        // n1 is not enrolled yet: the server answers 401.
        let node = try NodeKeyFile.generate(node: "n1")
        let journal = try WhiteboardJournal(path: fixture.path + "/udb.sqlite", node: "n1", key: node.key)
        let sender = fixture.sender(for: journal, backoff: WhiteboardBackoff(initial: .milliseconds(20), maximum: .milliseconds(200)))
        let task = Task { await sender.run() }
        let first = try journal.enqueue(op: .put, path: "nodes/n1/state", content: Array("idle".utf8))
        let second = try journal.enqueue(op: .put, path: "nodes/n1/version", content: Array("1".utf8))
        sender.wake()
        #expect(await WhiteboardFixture.waitFor(30) {
            if case .retrying(first, let attempt, let reason) = await sender.state { return attempt >= 3 && reason.contains("401") }
            return false
        })
        #expect(try journal.pending().map(\.seq) == [first, second])
        #expect(try journal.refused().isEmpty)
        // The server shows the name whose writes it refuses.
        #expect(try await fixture.store.refusals().first { $0.node == "n1" }?.enrolled == false)

        // The operator enrolls the node; delivery resumes by itself.
        try await fixture.enroll(node)
        #expect(try await WhiteboardFixture.waitFor(30) { try journal.pending().isEmpty })
        let view = try await fixture.store.snapshot()
        #expect(view.files.first { $0.path == "nodes/n1/version" }?.content == Array("1".utf8))
        #expect(try journal.refused().isEmpty)
        task.cancel()
        await task.value
        await fixture.stopServer()
    }
}
