#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Sodium
import Synchronization
import Testing
import UpgradeCore
@testable import UpgradeServer

/// The real `upgradefs serve` process, killed with SIGKILL while nodes write:
/// every write it answered with 200 must be in the database afterwards.
@Suite(.serialized) struct UDBKillTests {
    @Test(.enabled(if: Harness.binaryIsBuilt, "the upgradefs binary is not built"))
    func everyAnsweredWriteSurvivesKill9() async throws {
        let server = try ServeProcess(arguments: ["--log-level", "error"], start: false)
        let state = server.state.path
        let writers = (1...4).map { WhiteboardWriter("n\($0)") }
        do {
            let store = try SQLiteWhiteboardStore(directory: state, verifier: SodiumVerifier())
            for writer in writers { try await store.enroll(node: writer.name, publicKey: writer.key.publicKey) }
        }
        try await killNineWhileWriting(server, writers: writers) {
            try await SQLiteWhiteboardStore(directory: state, verifier: SodiumVerifier()).snapshot()
        }
    }
}

/// Three rounds of: `server` started (the same key, state and port each round: a restart after kill -9), `writers`
/// writing over HTTP, SIGKILL once writes flow; then every write it answered with 200 must be in `snapshot()`.
func killNineWhileWriting(
    _ server: ServeProcess, writers: [WhiteboardWriter], snapshot: @Sendable () async throws -> WhiteboardView
) async throws {
    for round in 1...3 {
        try server.start()
        let port = server.port
        #expect(await eventually(30) { (try? await HTTPResult.request(port: port, path: "/healthz"))?.status == 200 })

        let answered = AnsweredWrites()
        let writing = Task {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in writers {
                    group.addTask {
                        for i in 1...10_000 {
                            let path = "shared/\(writer.name)/r\(round)-\(i)"
                            let value = "\(writer.name) \(round) \(i)"
                            guard let result = try? await postRequest(
                                port: port, path: "/v1/udb/apply", body: writer.request(.put, path, value).encoded())
                            else { return }
                            if result.status == 200 { answered.record(path, value) }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        // Kill at some moment after writes are flowing (however slow this machine is).
        #expect(await eventually(30) { answered.all.count >= 20 * round })
        try await Task.sleep(for: .milliseconds(37 * round))
        server.stop(signal: SIGKILL)
        _ = try? await writing.value

        let expected = answered.all
        #expect(expected.count >= 20, "round \(round): too few writes answered before the kill to prove anything")
        let snapshot = try await snapshot()
        var lost: [String] = []
        for (path, value) in expected where snapshot.content(path) != value { lost.append(path) }
        #expect(lost.isEmpty, "round \(round): \(lost.count) of \(expected.count) answered writes lost, e.g. \(lost.prefix(3))")
    }
}

/// Writes the server answered with 200, by path.
final class AnsweredWrites: Sendable {
    private let writes = Mutex<[String: String]>([:])
    func record(_ path: String, _ value: String) { writes.withLock { $0[path] = value } }
    var all: [String: String] { writes.withLock { $0 } }
}
