import Foundation
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer

@Suite struct UDBStatusTests {
    @Test func statusShowsNodesLocksAndSummaries() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let clock = ManualClock()
        let store = try SQLiteWhiteboardStore(directory: directory.path, verifier: SodiumVerifier(), now: { clock.now })
        let n1 = WhiteboardWriter("n1"), n2 = WhiteboardWriter("n2"), op = WhiteboardWriter("operator")
        for writer in [n1, n2, op] { try await store.enroll(node: writer.name, publicKey: writer.key.publicKey) }
        _ = try await store.apply(n1.request(.put, "nodes/n1/class", "app\n"))
        try await store.registerUpgrade(3, class: "app")
        _ = try await store.apply(n1.request(.put, "nodes/n1/state", "running\n"))
        _ = try await store.apply(n1.request(.put, "nodes/n1/version", "3"))
        _ = try await store.apply(n1.request(.put, "nodes/n1/heartbeat", "1"))
        _ = try await store.apply(op.request(.put, "locks/roll/capacity", "2"))
        _ = try await store.apply(n1.request(.acquire, "locks/roll/n1"))
        _ = try await store.apply(op.request(.put, "upgrades/3/control", "go"))
        clock.advance(12)
        let status = WhiteboardStatus(enrolled: try await store.enrolledNodes(), view: try await store.snapshot(), now: clock.now)
        #expect(status.nodes.map(\.name) == ["n1", "n2"])
        #expect(status.nodes[0].state == "running" && status.nodes[0].version == 3 && status.nodes[0].heartbeatAgeSeconds == 12)
        #expect(status.nodes[1].state == nil && status.nodes[1].heartbeatAgeSeconds == nil)
        #expect(status.locks.map(\.name) == ["roll"] && status.locks[0].capacity == 2 && status.locks[0].holders.map(\.holder) == ["n1"])
        #expect(status.upgrades.map(\.version) == [3] && status.upgrades[0].control == "go")
        // n2 never reported a class: it is not counted under upgrade 3.
        #expect(status.upgrades[0].summary == ["done": 1])
        let text = status.text()
        #expect(text.contains("n1    app           running  3        12s ago    -"))
        #expect(text.contains("n2    unclassified  -"))
        #expect(text.contains("roll  1/2   n1"))
        #expect(text.contains("3        go       done 1"))
        let json = String(decoding: status.toJSON().canonicalBytes(), as: UTF8.self)
        #expect(json.contains(#"{"class":"app","heartbeat_age_seconds":12,"last_refusal":null,"name":"n1","refused":false,"refused_writes":0,"state":"running","version":3}"#))
    }
}
