#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// SOs under `upgradefs layer`, as a user ships them: a real layer process starts the bundle's `so/past`
/// (Tests/layer/past-so.py, a direct SO that translates old paths and delegates to the application), routes
/// the old version's calls through it, restarts it after kill -9 and stops it when the node no longer needs it.
@Suite(.serialized) struct LayerSimulationObjectTests {
    /// Installs Tests/layer/past-so.py as version `bundle`'s `so/past` in the node's mount directory.
    static func shipPastSO(_ node: LayerNode, in bundle: Int = 2) throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appending(path: "layer/past-so.py").path
        try FileManager.default.createDirectory(atPath: "\(node.mount)/versions/\(bundle)/so", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: script, toPath: "\(node.mount)/versions/\(bundle)/so/past")
        #expect(chmod("\(node.mount)/versions/\(bundle)/so/past", 0o755) == 0)
    }

    @Test func anOldVersionsCallIsAnsweredThroughThePastSOWhichIsRestartedAfterKillAndStoppedWhenNotNeeded() throws {
        let node = try LayerNode()
        defer { node.stop() }
        try Self.shipPastSO(node)
        let state = node.directory.appending(path: "root/so/past-1").path
        func pid() -> pid_t? {
            (try? String(contentsOfFile: state + "/pid", encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespaces)) }
        }
        let port = node.publicPort
        @Sendable func oldCall() -> HTTPTestConnection.Reply? {
            guard let client = try? HTTPTestConnection(port: port) else { return nil }
            defer { client.close() }
            return try? client.request("POST", "/old/echo?x=1", headers: [("Upgradefs-Version", "1")], body: Array("hi".utf8))
        }

        // At version 1 the node needs no SO: nothing starts, version-1 calls go to the application.
        Thread.sleep(forTimeInterval: 1)
        #expect(pid() == nil)

        // The manager commits version 2: the layer starts 1's past SO (shipped in 2's bundle) and routes through it.
        try node.setVersion(2)
        #expect(Harness.waitUntil(15) { oldCall()?.headers["x-served-by"] != nil })
        let answer = try #require(oldCall())
        #expect(answer.headers["x-served-by"] == "past SO of version 1")
        #expect(answer.headers["upgradefs-version"] == "2")
        #expect(answer.json["path"] as? String == "/echo?x=1" && answer.json["length"] as? Int == 2)
        #expect(answer.json["version"] as? String == "1")
        // The current version's calls still go to the application, not through the SO.
        let client = try HTTPTestConnection(port: node.publicPort)
        defer { client.close() }
        let current = try client.request("GET", "/echo", headers: [("Upgradefs-Version", "2")])
        #expect(current.status == 200 && current.headers["x-served-by"] == nil)
        let output = node.directory.appending(path: "root/ldb/out/so-past-1.out").path
        #expect((try? String(contentsOfFile: output, encoding: .utf8))?.contains("delegating to http://127.0.0.1:\(node.appPort)") == true)

        // kill -9 of the SO mid-traffic (4 callers calling without pause): every call gets 200 or a clean 503,
        // none hangs, and a new SO answers again.
        let first = try #require(pid())
        let answers = LockedBox<[(status: Int, error: String?, seconds: Double)]>([])
        let stop = LockedBox(false), running = LockedBox(0)
        for _ in 0..<4 {
            running.withValue { $0 += 1 }
            Thread {
                while !stop.value {
                    let started = Date()
                    var entry: (status: Int, error: String?, seconds: Double) = (0, nil, 0)
                    do {
                        let client = try HTTPTestConnection(port: port)
                        defer { client.close() }
                        let answer = try client.request("POST", "/old/echo?x=1", headers: [("Upgradefs-Version", "1")],
                                                        body: Array("hi".utf8))
                        entry = (answer.status, answer.json["error"] as? String, 0)
                    } catch {
                        entry = (0, "\(error)", 0)
                    }
                    entry.seconds = Date().timeIntervalSince(started)
                    answers.withValue { $0.append(entry) }
                }
                running.withValue { $0 -= 1 }
            }.start()
        }
        Thread.sleep(forTimeInterval: 0.5)
        #expect(kill(first, SIGKILL) == 0)
        #expect(Harness.waitUntil(15) { pid().map { $0 != first } == true && oldCall()?.headers["x-served-by"] != nil })
        Thread.sleep(forTimeInterval: 0.5)
        stop.value = true
        #expect(Harness.waitUntil(10) { running.value == 0 })
        let seen = answers.value
        // An answer the SO had begun when it died is cut (the layer has sent its head: it can only close the
        // connection), so at most the calls in flight at the kill, one per caller, end that way.
        let cut = seen.filter { $0.status == 0 && $0.error?.contains("connection closed") == true }
        let bad = seen.filter { !($0.status == 200 || ($0.status == 503 && $0.error == "simulation-object-unavailable")) }
            .filter { !($0.status == 0 && $0.error?.contains("connection closed") == true) }
        #expect(seen.count > 20 && bad.isEmpty, "\(seen.count) calls, not 200, a clean 503 or cut: \(bad.prefix(5))")
        #expect(cut.count <= 4, "\(cut.count) answers cut")
        #expect((seen.map(\.seconds).max() ?? 0) < 3)
        #expect(FileManager.default.fileExists(atPath: output + ".previous"))
        // The node goes back to version 1: the past SO is no longer needed and is stopped.
        let second = try #require(pid())
        try node.setVersion(1)
        #expect(Harness.waitUntil(10) { kill(second, 0) != 0 })
        let direct = try #require(oldCall())
        #expect(direct.status == 200 && direct.headers["x-served-by"] == nil && direct.json["path"] as? String == "/old/echo?x=1")
    }

    @Test func aVersionTwoBehindIsServedThroughAChainOfPastSOs() throws {
        let node = try LayerNode(versions: 3)
        defer { node.stop() }
        try Self.shipPastSO(node, in: 2)
        try Self.shipPastSO(node, in: 3)
        try node.setVersion(3)
        let client = try HTTPTestConnection(port: node.publicPort)
        defer { client.close() }
        func call(_ version: Int, _ path: String) throws -> HTTPTestConnection.Reply {
            try client.request("GET", path, headers: [("Upgradefs-Version", "\(version)")])
        }
        // Version 1: 1's past SO turns /old/old/echo into /old/echo for 2's, which turns it into /echo for the app.
        #expect(Harness.waitUntil(15) { (try? call(1, "/old/old/echo"))?.headers["x-served-by"] != nil })
        let one = try call(1, "/old/old/echo")
        #expect(one.status == 200 && one.headers["x-served-by"] == "past SO of version 1" && one.json["path"] as? String == "/echo")
        let two = try call(2, "/old/echo")
        #expect(two.status == 200 && two.headers["x-served-by"] == "past SO of version 2" && two.json["path"] as? String == "/echo")
        let three = try call(3, "/echo")
        #expect(three.status == 200 && three.headers["x-served-by"] == nil)
        // Each SO kept its own count in its own state directory: 1's served its calls, 2's those and version 2's.
        func calls(_ version: Int) -> Int {
            let path = node.directory.appending(path: "root/so/past-\(version)/calls").path
            return (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0) } ?? 0
        }
        #expect(calls(1) >= 2 && calls(2) >= calls(1) + 1)
    }
}
