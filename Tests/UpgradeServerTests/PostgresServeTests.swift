#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer
import UpgradeServerPostgres

/// The real `upgradefs serve --udb postgres://…` process over a real PostgreSQL: nodes enrolled with
/// `upgradefs enroll --udb`, writes over HTTP, the server killed with SIGKILL, PostgreSQL stopped under it.
@Suite(.serialized, .postgres) struct PostgresServeTests {
    /// Enrolls `writers` with the real `upgradefs enroll --udb`.
    func enroll(_ writers: [WhiteboardWriter], udb: String) throws {
        for writer in writers {
            let enrolled = try Harness.run(Harness.binary, ["enroll", "--udb", udb, writer.name, Hex.encode(writer.key.publicKey)])
            #expect(enrolled.status == 0 && enrolled.output.contains("enrolled \(writer.name)"), "\(enrolled.output)")
        }
    }

    func snapshot(_ udb: String) async throws -> WhiteboardView {
        try await PostgresWhiteboard.withStore(
            url: try PostgresWhiteboard.ConnectionURL(udb), verifier: SodiumVerifier(), logger: Logger(label: "test.udb")
        ) { try await $0.snapshot() }
    }

    /// Every write the server answered with 200 is in PostgreSQL after a kill -9, three rounds (mirrors UDBKillTests).
    @Test(.enabled(if: Harness.binaryIsBuilt, "the upgradefs binary is not built"))
    func everyAnsweredWriteSurvivesKill9() async throws {
        let udb = try PostgresCluster.shared.get().createDatabase()
        let server = try ServeProcess(arguments: ["--log-level", "error", "--udb", udb], start: false)
        let writers = (1...4).map { WhiteboardWriter("n\($0)") }
        try enroll(writers, udb: udb)
        try await killNineWhileWriting(server, writers: writers) { try await snapshot(udb) }
    }

    /// PostgreSQL crash-stopped under a running server: metadata is still served, a whiteboard write is answered
    /// 503 `unavailable` (which the node's sender retries), reads too; PostgreSQL back, writes work again.
    @Test(.enabled(if: Harness.binaryIsBuilt, "the upgradefs binary is not built"))
    func databaseDownMeansRetryableErrorsAndContentStillServed() async throws {
        let cluster = try PostgresCluster()
        defer { cluster.stop() }
        let udb = try cluster.createDatabase()
        let server = try ServeProcess(arguments: ["--log-level", "error", "--udb", udb], start: false)
        let node = WhiteboardWriter("n1")
        try enroll([node], udb: udb)
        try server.start()
        let port = server.port
        #expect(try await postRequest(port: port, path: "/v1/udb/apply", body: node.request(.put, "nodes/n1/state", "idle").encoded()).status == 200)

        cluster.stop(immediate: true)
        #expect(try await HTTPResult.request(port: port, path: "/metadata/timestamp.json").status == 200)
        let running = node.request(.put, "nodes/n1/state", "running").encoded()
        let refused = try await postRequest(port: port, path: "/v1/udb/apply", body: running)
        #expect(refused.status == 503, "\(String(decoding: refused.body, as: UTF8.self))")
        #expect(WhiteboardErrorBody.decode(refused.body)?.code == .unavailable)
        #expect(refused.headers.first { $0.key.lowercased() == "retry-after" }?.value == "1")
        #expect(try await HTTPResult.request(port: port, path: "/v1/udb/snapshot").status == 503)
        #expect(try await HTTPResult.request(port: port, path: "/metadata/timestamp.json").status == 200)
        #expect(server.isRunning)
        let statusDown = try Harness.run(Harness.binary, ["status", "--udb", udb])
        #expect(statusDown.status == 69 && statusDown.output.contains("unavailable"), "\(statusDown.output)")

        try cluster.start()
        // The same request again, as the node's sender retries it: applied now.
        #expect(await eventually(30) {
            (try? await postRequest(port: port, path: "/v1/udb/apply", body: running))?.status == 200
        })
        #expect(try await snapshot(udb).content("nodes/n1/state") == "running")
        let status = try Harness.run(Harness.binary, ["status", "--udb", udb, "--json"])
        #expect(status.status == 0 && status.output.contains("\"running\""), "\(status.output)")
        server.stop()
    }
}
