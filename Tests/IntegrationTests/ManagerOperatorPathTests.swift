import Foundation
import Testing
import UpgradeCore

/// Operator paths of issue 8 on real mounts: a failed upgrade given up with `abort`, and a version number that
/// was never published, do not leave nodes stuck.
@Suite(.serialized) struct ManagerOperatorPathTests {
    @Test(.realMounts) func abortOfAFailedUpgradeAndAGapLetTheFleetMoveOnToTheFixedRelease() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2"])
        try fleet.startManagers()
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 1))
        for node in fleet.names { try fleet.request(node, count: 3) }

        // Version 2 is broken on n1: n1 rolls back and fails, n2 runs it.
        try fleet.publish(try fleet.bundle("counter-v2", sf: "fast-reboot", tfFailsOn: ["n1"]))
        #expect(fleet.waitFor(["n1"], state: "failed", version: 1))
        #expect(fleet.waitFor(["n2"], state: "running", version: 2))

        // The fixed release is published as 4 (3 is never published), from version 1; n1 waits behind 2.
        try fleet.publish(try fleet.bundle("counter-v2", sf: "fast-reboot", version: 4, from: 1))
        usleep(2_000_000)
        #expect(fleet.state("n1") == "failed" && fleet.version("n1") == 1)

        // The operator gives 2 up: n1 passes over the gap at 3 and applies 4 from its version 1 state.
        #expect(Posix.write(fleet.operator.path("udb/upgrades/2/control"), "abort\n") == 0)
        #expect(fleet.waitFor(["n1"], state: "running", version: 4), "\(fleet.whiteboard("n1", "log") ?? "")")
        #expect(fleet.current("n1") == "gen/4")
        #expect(fleet.appStatus("n1")?["count"] == "3")
        let log = fleet.whiteboard("n1", "log") ?? ""
        #expect(log.contains("upgrade 2 aborted by the operator; staying at version 1"))
        #expect(!log.contains("cannot read upgrade 3")) // behind the aborted 2 its version moved to 4 at once
        #expect(fleet.whiteboard("n1", "class") == "counter")
        // n2, at 2, passed over the gap at 3; 4 is from version 1, which it no longer has: it says so.
        #expect(Harness.waitUntil(30) { fleet.state("n2") == "failed" && fleet.version("n2") == 3 })
        #expect(fleet.whiteboard("n2", "log")?.contains("version 3 was never published (versions/ has newer ones but not 3): passed over, now at version 3") == true)
        #expect(fleet.whiteboard("n2", "log")?.contains("cannot read upgrade 3") == false)
        #expect(fleet.whiteboard("n2", "log")?.contains("upgrade 4 is from version 1 but version 2 of class counter is installed") == true)
        #expect(fleet.appStatus("n2")?["version"] == "2")
    }

    @Test(.realMounts) func aManagerOnAMountWithoutANodeKeyRefusesToStart() throws {
        let server = try ServeProcess()
        let mount = try TestMount()
        defer { mount.unmount() }
        #expect(try mount.start(server.source) == nil, "mount failed: \(mount.log)")
        let work = try Harness.temporaryDirectory("manager-no-key")
        defer { try? FileManager.default.removeItem(at: work) }
        let config = work.appending(path: "node.toml").path
        try "node = \"n1\"\nclass = \"counter\"\nroot = \"\(work.appending(path: "root").path)\"\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        let result = try Harness.run(Harness.binary, ["manager", "--mount", mount.mountpoint.path, "--config", config])
        #expect(result.status == 69, "\(result.output)")
        #expect(result.output.contains("has no whiteboard (no self/ in it): the mount needs the node's key"), "\(result.output)")
    }

    /// An SF that waits is asked again at every poll; the node's log gets its line once per change, not per run.
    @Test(.realMounts) func aWaitingSFIsLoggedOncePerChange() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2"])
        try fleet.startManagers()
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 1))
        try fleet.publish(try fleet.bundle("counter-v2", sf: "canary", settings: ["CANARY_NODES=n1"]))
        #expect(fleet.waitFor(["n1"], state: "running", version: 2))
        // poll-interval 0.2 s: some 20 runs of n2's SF while it waits.
        usleep(4_000_000)
        func count(_ text: String) -> Int {
            (fleet.whiteboard("n2", "log") ?? "").components(separatedBy: "\n").filter { $0.contains(text) }.count
        }
        #expect(count("canary: waiting for the operator") == 1, "\(fleet.whiteboard("n2", "log") ?? "")")
        #expect(Posix.write(fleet.operator.path("udb/upgrades/2/control"), "approve\n") == 0)
        #expect(fleet.waitFor(["n2"], state: "running", version: 2), "\(fleet.whiteboard("n2", "log") ?? "")")
        #expect(count("canary: approved, going") == 1, "\(fleet.whiteboard("n2", "log") ?? "")")
        #expect(count("canary: waiting for the operator") == 1)
    }
}
