import Foundation
import Testing
import UpgradeCore

/// `upgradefs status --watch` against real rollouts of the example app on a small managed fleet: it follows
/// the upgrade as it happens and ends with the exit status scripts wait on.
@Suite(.serialized) struct StatusWatchTests {
    /// `upgradefs status --watch` running in the background, on the server's state or (`remote`) its change feed.
    final class Watcher {
        let pid: pid_t
        let log: String
        private var status: Int32?

        init(_ fleet: ManagedFleet, _ arguments: [String], remote: Bool = false, timeoutSeconds: Int = 120) throws {
            log = fleet.directory.appending(path: "watch-\(UUID().uuidString).log").path
            let source = remote ? ["--server", fleet.server.source] : ["--state", fleet.server.state.path]
            pid = try Harness.spawn(
                Harness.binary, ["status", "--watch", "--timeout", "\(timeoutSeconds)"] + source + arguments, log: log)
        }

        /// The exit status once it ends by itself within `seconds`; nil (and killed) otherwise.
        func exitStatus(within seconds: Double) -> Int32? {
            _ = Harness.waitUntil(seconds) {
                status = status ?? Harness.reap(pid)
                return status != nil
            }
            if status == nil {
                kill(pid, SIGKILL)
                _ = Harness.waitUntil(5) { Harness.reap(pid) != nil }
            }
            return status
        }

        var lines: [String] {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        deinit {
            if status == nil, Harness.reap(pid) == nil {
                kill(pid, SIGKILL)
                _ = Harness.waitUntil(5) { Harness.reap(pid) != nil }
            }
        }
    }

    func installVersion1(_ fleet: ManagedFleet) throws {
        try fleet.startManagers()
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 1), "\(fleet.names.map { ($0, fleet.state($0), fleet.version($0)) })")
    }

    @Test(.realMounts) func aRolloutThatReachesEveryNodeExitsZeroAfterShowingProgress() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2", "n3"])
        try installVersion1(fleet)
        #expect(Posix.write(fleet.operator.path("udb/locks/counter-rolling/capacity"), "1\n") == 0)
        // Started before the upgrade is published: both wait for it, then follow it one node at a time; one on
        // the server's database, one on its signed change feed.
        let text = try Watcher(fleet, ["--upgrade", "2"])
        let json = try Watcher(fleet, ["--upgrade", "2", "--json"], remote: true)
        #expect(Harness.waitUntil(20) { !text.lines.isEmpty && !json.lines.isEmpty })
        try fleet.publish(try fleet.bundle("counter-v2", sf: "rolling", tfSeconds: 1))

        #expect(text.exitStatus(within: 90) == 0, "\(text.lines)")
        #expect(json.exitStatus(within: 10) == 0, "\(json.lines)")
        #expect(fleet.names.allSatisfy { fleet.version($0) == 2 })
        let lines = text.lines
        #expect(lines.first == "upgrade 2: not published yet", "\(lines)")
        #expect(lines.last == "upgrade 2: 3/3 at version 2, 0 upgrading, 0 failed, 0 waiting — rolled out", "\(lines)")
        // Progress as it happened: a node upgrading, and partial counts on the way.
        #expect(lines.contains { $0.contains(", 1 upgrading,") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("upgrade 2: 1/3 at version 2") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("upgrade 2: 2/3 at version 2") }, "\(lines)")

        // --json: every line one object; progress events, then one final `succeeded` with the counts.
        let events = try json.lines.map { try JSONValue.parse(Array($0.utf8)) }
        #expect(events.count >= 3, "\(json.lines)")
        #expect(events.dropLast().allSatisfy { ["progress", "unpublished"].contains($0["event"]?.stringValue) }, "\(json.lines)")
        let last = try #require(events.last)
        #expect(last["event"]?.stringValue == "succeeded")
        #expect(last["done"]?.intValue == 3 && last["total"]?.intValue == 3 && last["upgrade"]?.intValue == 2)
        #expect(events.contains { $0["upgrading"]?.intValue == 1 }, "\(json.lines)")
    }

    @Test(.realMounts) func aNodeFailingBeyondTheBudgetStopsTheWatchWithItsCode() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2", "n3"])
        try installVersion1(fleet)
        // n2's TF fails and n2 rolls back: one failed node is past the watch's default budget of 0.
        try fleet.publish(try fleet.bundle("counter-v2", sf: "fast-reboot", tfFailsOn: ["n2"]))
        let watcher = try Watcher(fleet, ["--upgrade", "2"], remote: true)
        #expect(watcher.exitStatus(within: 90) == 80, "\(watcher.lines)")
        #expect(fleet.state("n2") == "failed")
        let last = watcher.lines.last ?? ""
        #expect(last.hasPrefix("upgrade 2: "), "\(watcher.lines)")
        #expect(last.contains(" 1 failed, ") && last.hasSuffix(" — failed: 1 node failed, more than the failure budget of 0"),
                "\(watcher.lines)")
        // Tolerating that one, a watch ends once nothing else moves (the others at 2, n2 waiting for `retry`).
        #expect(fleet.waitFor(["n1", "n3"], state: "running", version: 2))
        let tolerant = try Watcher(fleet, ["--upgrade", "2", "--failure-budget", "1"])
        #expect(tolerant.exitStatus(within: 30) == 80, "\(tolerant.lines)")
        #expect(tolerant.lines.last == "upgrade 2: 2/3 at version 2, 0 upgrading, 1 failed, 0 waiting — failed: 1 node failed "
                    + "(within the budget); the others are at version 2", "\(tolerant.lines)")
    }

    @Test(.realMounts) func anAbortStopsTheWatchWithItsCode() throws {
        let fleet = try ManagedFleet(nodes: ["n1", "n2"])
        try installVersion1(fleet)
        #expect(Posix.write(fleet.operator.path("udb/locks/counter-rolling/capacity"), "1\n") == 0)
        try fleet.publish(try fleet.bundle("counter-v2", sf: "rolling", tfSeconds: 5))
        #expect(Harness.waitUntil(30) { fleet.names.contains { fleet.state($0) == "upgrading" } })
        // Without --upgrade: the newest published, 2.
        let watcher = try Watcher(fleet, ["--json"], remote: true)
        #expect(Posix.write(fleet.operator.path("udb/upgrades/2/control"), "abort\n") == 0)
        #expect(watcher.exitStatus(within: 30) == 81, "\(watcher.lines)")
        let last = try JSONValue.parse(Array((watcher.lines.last ?? "").utf8))
        #expect(last["event"]?.stringValue == "aborted")
        #expect(last["control"]?.stringValue == "abort")
        // The node in flight rolls back; the fleet settles at version 1 before it is taken down.
        #expect(Harness.waitUntil(60) { fleet.names.allSatisfy { fleet.state($0) == "aborted" } },
                "\(fleet.names.map { ($0, fleet.state($0)) })")
        #expect(fleet.names.allSatisfy { fleet.version($0) == 1 })
    }

    @Test(.realMounts) func aRolloutThatDoesNotFinishInTimeExits75AndAServerWithAnotherIdIsRefused() throws {
        let fleet = try ManagedFleet(nodes: ["n1"])
        for remote in [false, true] {
            // The long poll of the feed (up to 25 s) does not hold the deadline up.
            let watcher = try Watcher(fleet, ["--upgrade", "5"], remote: remote, timeoutSeconds: 1)
            #expect(watcher.exitStatus(within: 20) == 75, "\(watcher.lines)")
            #expect(watcher.lines.last == "upgrade 5: not published yet — timed out: upgrade 5 was never published",
                    "\(watcher.lines)")
        }
        // The id is the only trust anchor, as for a mount: another one is refused (77) before anything is read.
        let otherID = ServerID.of(initialRoot: Array("another server's root".utf8))
        let wrong = try Harness.run(Harness.binary, ["status", "--watch", "--server", "127.0.0.1:\(fleet.server.port),\(otherID)"])
        #expect(wrong.status == 77, "\(wrong.output)")
    }
}
