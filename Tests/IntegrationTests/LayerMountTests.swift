import Foundation
import Testing

/// The layer on a real mount beside a real manager: it routes by the version the manager commits.
struct LayerMountTests {
    @Test(.realMounts) func theLayerRoutesByTheVersionTheManagerCommitsOnARealMount() throws {
        let fleet = try ManagedFleet(nodes: ["n1"])
        try fleet.startManagers()
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 1))

        let publicPort = Harness.freePort(), appPort = Harness.freePort()
        let config = fleet.directory.appending(path: "layer-n1.toml").path
        try """
            node = "n1"
            class = "counter"
            root = "\(fleet.root("n1"))"
            [layer]
            listen = "127.0.0.1:\(publicPort)"
            app = "127.0.0.1:\(appPort)"
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let app = try LayerNode.echoApp(port: appPort, proxyPort: Harness.freePort(),
                                        log: fleet.directory.appending(path: "app.log").path)
        defer { app.stop(within: 5, "the test app") }
        let layer = try ChildProcess(Harness.binary, ["layer", "--mount", fleet["n1"].mountpoint.path, "--config", config],
                                     log: fleet.directory.appending(path: "layer.log").path)
        defer { layer.stop(within: 10, "upgradefs layer") }
        #expect(Harness.waitUntil(20) { Harness.httpStatus(port: publicPort, path: "/echo") == 200 })

        func call(_ version: Int) -> HTTPTestConnection.Reply? {
            try? HTTPTestConnection(port: publicPort).request("GET", "/echo", headers: [("Upgradefs-Version", "\(version)")])
        }
        #expect(call(1)?.status == 200)
        #expect(call(2)?.json["error"] as? String == "unknown-version")

        // Version 2 published; the node waits for the operator's approval: version-2 calls have no future SO here.
        try fleet.publish(try fleet.bundle("counter-v2", sf: "canary"))
        #expect(Harness.waitUntil(20) { call(2)?.json["error"] as? String == "no-simulation-object" })
        #expect(fleet.state("n1") == "waiting" && call(1)?.status == 200)

        #expect(Posix.write(fleet.operator.path("udb/upgrades/2/control"), "approve\n") == 0)
        #expect(fleet.waitFor(state: "running", version: 2))
        #expect(Harness.waitUntil(10) { call(2)?.status == 200 })
        let old = call(1)
        #expect(old?.status == 421 && old?.json["error"] as? String == "no-simulation-object")
        #expect(old?.headers["upgradefs-version"] == "2")
    }
}
