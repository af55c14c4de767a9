import Foundation
import Testing
import UpgradeCore
import UpgradeManager

/// `upgradefs manager` on real mounts: a fleet of nodes upgrading the example app with the example SFs.
@Suite(.serialized) struct ManagerFleetTests {
    /// Installs counter 1 everywhere (fast-reboot) and gives every node some requests to remember.
    func installVersion1(_ fleet: ManagedFleet, requests: Int = 3) throws {
        try fleet.startManagers()
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 1), "\(fleet.names.map { ($0, fleet.state($0), fleet.version($0)) })")
        for node in fleet.names { try fleet.request(node, count: requests) }
    }

    /// The largest number of recorded [TF began, check passed] intervals that overlap.
    func maxOverlap(_ intervals: [(node: String, begin: Double, end: Double)]) -> Int {
        var events: [(time: Double, delta: Int)] = []
        for interval in intervals {
            events.append((interval.begin, 1))
            events.append((interval.end, -1))
        }
        // At equal times an end comes before a begin: touching intervals do not overlap.
        events.sort { $0.time != $1.time ? $0.time < $1.time : $0.delta < $1.delta }
        var current = 0, peak = 0
        for (_, delta) in events {
            current += delta
            peak = max(peak, current)
        }
        return peak
    }

    @Test(.realMounts) func aRollingUpgradeNeverHasMoreThanKNodesUpgradingAtOnce() throws {
        let fleet = try ManagedFleet(nodes: (1...6).map { "n\($0)" })
        try installVersion1(fleet)
        #expect(Posix.write(fleet.operator.path("udb/locks/counter-rolling/capacity"), "2\n") == 0)
        try "".write(toFile: fleet.recorder, atomically: true, encoding: .utf8)

        // Clients keep sending requests to every node while the rollout runs; each answered one must survive.
        let answered = LockedBox<[String: Int]>([:])
        let done = LockedBox(false), finished = LockedBox(false)
        let clients = Thread {
            while !done.value {
                for node in fleet.names where (try? fleet.request(node)) != nil {
                    answered.withValue { $0[node, default: 0] += 1 }
                }
            }
            finished.value = true
        }
        clients.start()
        // The server's fleet page during the rollout, kept as a test artifact (where there is a browser; under
        // CI=true there must be one).
        let browser = Browser.executable != nil || Browser.required ? try Browser() : nil
        try browser?.navigate(fleet.server.baseURL + "/")
        try fleet.publish(try fleet.bundle("counter-v2", sf: "rolling", tfSeconds: 1))
        if let browser {
            #expect(browser.waitUntil(60, "!!document.querySelector('#lock-counter-rolling li code')"), "a holder shown while nodes upgrade")
            try FleetPageBrowserTests.keepScreenshot(browser, name: "fleet-page-rolling.png")
        }
        #expect(fleet.waitFor(state: "running", version: 2, seconds: 120))
        done.value = true
        #expect(Harness.waitUntil(30) { finished.value })
        let intervals = fleet.recordedIntervals()
        #expect(intervals.count == 6)
        // Never more than K = 2 at once, and the lock did let two go together.
        #expect(maxOverlap(intervals) == 2, "\(intervals)")
        for node in fleet.names {
            #expect(fleet.appStatus(node)?["version"] == "2")
            #expect(fleet.current(node) == "gen/2")
        }
        // Every slot was given back.
        #expect(Harness.waitUntil(10) { Posix.list(fleet.operator.path("udb/locks/counter-rolling")) == ["capacity"] })
        // Requests were served while versions were mixed, and every answered one is in the transformed state.
        let served = answered.value
        #expect(served.values.reduce(0, +) > 0)
        for node in fleet.names {
            #expect(fleet.appStatus(node)?["count"] == "\(3 + served[node, default: 0])", "\(node): \(served)")
        }
    }

    @Test(.realMounts) func aFailingTFAndAFailingCheckRollBackAndTheFailureBudgetStopsTheRollout() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2", "n3", "n4"])
        try installVersion1(fleet)
        // n3 and n4 ask only once n1 and n2 have failed (a gate in shared/), so the budget decides for them.
        let bundle = try fleet.bundle("counter-v2", sf: "healthy", settings: ["HEALTHY_BUDGET=1"],
                                      tfFailsOn: ["n1"], checkFailsOn: ["n2"])
        let sf = bundle.appending(path: "sf")
        let healthy = try String(contentsOf: sf, encoding: .utf8)
        try healthy.replacingOccurrences(of: "#!/bin/sh\n", with: """
            #!/bin/sh
            case $UPGRADEFS_NODE in n3|n4) [ "${UPGRADEFS_PHASE:-before}" = after ] || [ -e "$UPGRADEFS_UDB/shared/gate" ] || exit 75 ;; esac

            """).write(to: sf, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: sf.path)
        try fleet.publish(bundle)

        #expect(Harness.waitUntil(90) { fleet.state("n1") == "failed" && fleet.state("n2") == "failed" })
        #expect(Posix.write(fleet.operator.path("udb/shared/gate"), "open\n") == 0)
        usleep(3_000_000)
        for node in ["n1", "n2"] {
            // Rolled back: the old release and the old state, the app at version 1 with its count.
            #expect(fleet.version(node) == 1)
            #expect(fleet.current(node) == "gen/1")
            #expect(fleet.appStatus(node)?["version"] == "1")
            #expect(fleet.appStatus(node)?["count"] == "3")
            #expect(FileManager.default.fileExists(atPath: fleet.root(node) + "/gen/1/state/count"))
            #expect(!FileManager.default.fileExists(atPath: fleet.root(node) + "/gen/2"))
        }
        #expect(fleet.whiteboard("n1", "log")?.contains("injected tf failure on n1") == true)
        #expect(fleet.whiteboard("n2", "log")?.contains("injected check failure on n2") == true)
        // Two failures > budget 1: the rest of the fleet holds at version 1.
        for node in ["n3", "n4"] {
            #expect(fleet.state(node) == "waiting")
            #expect(fleet.version(node) == 1)
            #expect(fleet.appStatus(node)?["version"] == "1")
        }
        let summary = Posix.read(fleet.operator.path("udb/upgrades/2/summary")) ?? ""
        #expect(summary.contains("failed 2"), "\(summary)")
    }

    @Test(.realMounts) func theOperatorPausesApprovesAndAborts() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2", "n3"])
        try installVersion1(fleet)

        // Paused before it is published: nobody starts it until the operator says go.
        #expect(Posix.write(fleet.operator.path("udb/upgrades/2/control"), "pause\n") == 0)
        try fleet.publish(try fleet.bundle("counter-v2", sf: "fast-reboot"))
        #expect(Harness.waitUntil(30) { fleet.names.allSatisfy { fleet.state($0) == "paused" } })
        usleep(2_000_000)
        #expect(fleet.names.allSatisfy { fleet.version($0) == 1 && fleet.current($0) == "gen/1" })
        #expect(Posix.write(fleet.operator.path("udb/upgrades/2/control"), "go\n") == 0)
        #expect(fleet.waitFor(state: "running", version: 2))

        // Canary: n1 first, the others wait for the operator's approve.
        try fleet.publish(try fleet.bundle("counter-v3", sf: "canary", settings: ["CANARY_NODES=n1"]))
        #expect(fleet.waitFor(["n1"], state: "running", version: 3))
        usleep(2_000_000)
        #expect(fleet.version("n2") == 2 && fleet.version("n3") == 2)
        #expect(fleet.state("n2") == "waiting")
        #expect(Posix.write(fleet.operator.path("udb/upgrades/3/control"), "approve\n") == 0)
        #expect(fleet.waitFor(state: "running", version: 3))
        for node in fleet.names { #expect(fleet.appStatus(node)?["count"] == "3") }

        // Abort while the first node is transforming: it rolls back, nobody else starts, everyone stays at 3.
        #expect(Posix.write(fleet.operator.path("udb/locks/counter-rolling/capacity"), "1\n") == 0)
        try fleet.publish(try fleet.bundle("counter-v3", sf: "rolling", version: 4, from: 3, tfSeconds: 5))
        #expect(Harness.waitUntil(30) { fleet.names.contains { fleet.state($0) == "upgrading" } })
        #expect(Posix.write(fleet.operator.path("udb/upgrades/4/control"), "abort\n") == 0)
        #expect(Harness.waitUntil(60) { fleet.names.allSatisfy { fleet.state($0) == "aborted" } },
                "\(fleet.names.map { ($0, fleet.state($0)) })")
        for node in fleet.names {
            #expect(fleet.version(node) == 3)
            #expect(fleet.current(node) == "gen/3")
            #expect(fleet.appStatus(node)?["version"] == "3")
        }
        #expect(Harness.waitUntil(10) { Posix.list(fleet.operator.path("udb/locks/counter-rolling")) == ["capacity"] })
    }

    /// kill -9 of the manager right after each step of an upgrade, then a restart: the node is wholly at the old
    /// version or wholly at the new one at every point, and ends at the new one with its state transformed.
    @Test(.realMounts, arguments: UpgradeStep.oneCallInstall.map(\.rawValue))
    func aManagerKilledAtAnyStepEndsConsistent(step: String) throws {
        let fleet = try ManagedFleet(nodes: ["n1"])
        try installVersion1(fleet, requests: 5)
        fleet.stopManager("n1")
        try fleet.startManager("n1", environment: ["UPGRADEFS_MANAGER_CRASH_AT": step])
        try fleet.publish(try fleet.bundle("counter-v2", sf: "fast-reboot"))
        let status = fleet.waitForManagerExit("n1", seconds: 60)
        #expect(status == 128 + SIGKILL, "the manager should have killed itself after \(step)")

        // Right after the crash: one version, wholly.
        let current = fleet.current("n1")
        #expect(current == "gen/1" || current == "gen/2")
        if current == "gen/1" {
            #expect(FileManager.default.fileExists(atPath: fleet.root("n1") + "/gen/1/state/count"))
        } else {
            #expect(FileManager.default.fileExists(atPath: fleet.root("n1") + "/gen/2/state/counter.conf"))
        }

        try fleet.startManager("n1")
        #expect(fleet.waitFor(state: "running", version: 2, seconds: 60), "after a crash at \(step): \(fleet.state("n1") ?? "-")")
        #expect(fleet.current("n1") == "gen/2")
        #expect(fleet.appStatus("n1")?["version"] == "2")
        #expect(fleet.appStatus("n1")?["count"] == "5")
        #expect(try fleet.request("n1") == 6)
    }

    @Test(.realMounts) func aNodeThatWasDownDuringARolloutCatchesUpWhenItReturns() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2", "n3"])
        try installVersion1(fleet)
        // n3 goes down: its manager and its mount stop (its app keeps its state on disk).
        fleet.stopManager("n3")
        fleet["n3"].unmount()
        try fleet.publish(try fleet.bundle("counter-v2", sf: "fast-reboot"))
        try fleet.publish(try fleet.bundle("counter-v3", sf: "fast-reboot"))
        #expect(fleet.waitFor(["n1", "n2"], state: "running", version: 3))
        #expect(fleet.version("n3") == 1)

        // Back: the mount comes up, the manager applies 2 then 3, each with its own TF.
        #expect(try fleet["n3"].start(fleet.server.source, nodeKey: fleet.fleet.keys["n3"]) == nil)
        try fleet.startManager("n3")
        #expect(fleet.waitFor(["n3"], state: "running", version: 3))
        #expect(fleet.appStatus("n3")?["count"] == "3")
        #expect(FileManager.default.fileExists(atPath: fleet.root("n3") + "/gen/3/state/counter.state"))
        // Three upgrades ran on n3, each with its own TF: 1, then 2 and 3 after its return.
        #expect(fleet.recordedIntervals().filter { $0.node == "n3" }.count == 3)
    }
}
