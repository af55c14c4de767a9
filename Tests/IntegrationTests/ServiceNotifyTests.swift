#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// `Type=notify` services (mount/*.service): the real processes report READY=1 to a fake NOTIFY_SOCKET only once
/// they do their job, and WATCHDOG=1 keeps coming where the unit turns the watchdog on.
@Suite(.serialized) struct ServiceNotifyTests {
    @Test func serveIsReadyOnlyOnceItAnswersAndPingsItsWatchdog() throws {
        let dir = try Harness.temporaryDirectory("notify-serve")
        defer { try? FileManager.default.removeItem(at: dir) }
        let keygen = try Harness.run(Harness.binary, ["keygen", "--out", dir.appending(path: "server.key").path])
        #expect(keygen.status == 0, "\(keygen.output)")
        let port = Harness.freePort()
        let notify = try NotifySocket { Harness.get("http://127.0.0.1:\(port)/healthz")?.status == 200 }
        defer { notify.stop() }
        let log = dir.appending(path: "serve.log").path
        let pid = try Harness.spawn(Harness.binary, [
            "serve", "--key", dir.appending(path: "server.key").path, "--state", dir.appending(path: "state").path,
            "--publish", dir.appending(path: "publish").path, "--listen", "127.0.0.1:\(port)",
        ], environment: notify.environment(watchdogSeconds: 1), log: log)
        defer { Self.stop(pid) }

        let ready = notify.waitForReady(30)
        #expect(ready?.readyCheck == true, "READY=1 came before /healthz answered: \(Self.read(log))")
        #expect(notify.messages.first?.fields.contains("READY=1") == true, "\(notify.messages.map(\.fields))")
        #expect(ready?.fields.contains { $0.hasPrefix("STATUS=listening on 127.0.0.1:\(port)") } == true)
        let since = Date()
        sleep(3)
        // WATCHDOG_USEC=1 s: a ping every half second.
        #expect(notify.pings(after: since) >= 3, "\(notify.messages.map(\.fields))")
    }

    @Test(.realMounts) func mountIsReadyOnlyOnceTheFileSystemAnswers() throws {
        let server = try ServeProcess()
        let mount = try TestMount()
        defer { mount.unmount() }
        let mountpoint = mount.mountpoint.path
        let notify = try NotifySocket {
            (try? FileManager.default.contentsOfDirectory(atPath: mountpoint))?.contains("latest") == true
        }
        defer { notify.stop() }
        let pid = try Harness.spawn(Harness.binary, ["mount", server.source, mountpoint, "--cache", mount.cache.path],
                                    environment: notify.environment(watchdogSeconds: 1), log: mount.logFile.path)
        defer { Self.stop(pid) }

        let ready = notify.waitForReady(30)
        #expect(ready?.readyCheck == true, "READY=1 came before the mount answered: \(mount.log)")
        #expect(notify.messages.first?.fields.contains("READY=1") == true, "\(notify.messages.map(\.fields))")
        let since = Date()
        sleep(3)
        #expect(notify.pings(after: since) >= 3, "\(notify.messages.map(\.fields))")

        // Without WATCHDOG_USEC the watchdog is off: readiness only.
        Self.stop(pid)
        let quiet = try NotifySocket { true }
        defer { quiet.stop() }
        let again = try Harness.spawn(Harness.binary, ["mount", server.source, mountpoint, "--cache", mount.cache.path],
                                      environment: quiet.environment(), log: mount.logFile.path)
        defer { Self.stop(again) }
        #expect(quiet.waitForReady(30) != nil, "\(mount.log)")
        sleep(2)
        #expect(quiet.messages.map(\.fields) == [["READY=1", "STATUS=mounted on \(mountpoint)"]])
    }

    /// READY=1 after the intent journal is read: a manager killed in the middle of an upgrade says it is ready only
    /// once its successor has rolled that upgrade back.
    @Test(.realMounts) func managerIsReadyOnlyOnceItHasReadItsJournal() throws {
        let fleet = try ManagedFleet(nodes: ["n1"])
        try fleet.startManager("n1", environment: ["UPGRADEFS_MANAGER_CRASH_AT": "staged"])
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitForManagerExit("n1", seconds: 60) == 128 + SIGKILL)

        let log = fleet.managerLog("n1")
        let notify = try NotifySocket { Self.read(log).contains("rolled back") }
        defer { notify.stop() }
        try fleet.startManager("n1", environment: notify.environment(watchdogSeconds: 1))
        let ready = notify.waitForReady(60)
        #expect(ready?.readyCheck == true, "READY=1 came before the journal was recovered: \(Self.read(log))")
        // The manager has no watchdog (its loop blocks on programs): WATCHDOG_USEC is ignored.
        sleep(2)
        #expect(notify.messages.allSatisfy { !$0.fields.contains("WATCHDOG=1") }, "\(notify.messages.map(\.fields))")
        #expect(fleet.waitFor(state: "running", version: 1, seconds: 60), "\(Self.read(log))")
        fleet.stopManager("n1")
    }

    /// A mount restarted under a running manager (a crash, or the watchdog's kill, that systemd does not carry over
    /// to the manager): the manager reads the mount by path, rides the gap out and applies the next upgrade.
    @Test(.realMounts) func aManagerRidesOutARestartOfItsMount() throws {
        let fleet = try ManagedFleet(nodes: ["n1"])
        try fleet.startManagers()
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 1))
        fleet["n1"].kill9()
        sleep(2)
        #expect(fleet.waitForManagerExit("n1", seconds: 0.1) == nil, "the manager ended with its mount")
        #expect(try fleet["n1"].start(fleet.server.source, nodeKey: fleet.fleet.keys["n1"]) == nil, "\(fleet["n1"].log)")
        try fleet.publish(try fleet.bundle("counter-v2", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 2, seconds: 60), "\(Self.read(fleet.managerLog("n1")))")
        #expect(fleet.appStatus("n1")?["version"] == "2")
    }

    static func stop(_ pid: pid_t) {
        guard Harness.reap(pid) == nil else { return }
        kill(pid, SIGTERM)
        if !Harness.waitUntil(20, { Harness.reap(pid) != nil }) {
            kill(pid, SIGKILL)
            _ = Harness.waitUntil(5) { Harness.reap(pid) != nil }
        }
    }

    static func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
}
