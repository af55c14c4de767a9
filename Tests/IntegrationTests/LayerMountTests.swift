#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

/// The layer on a real mount beside a real manager: it routes by the version the manager commits.
struct LayerMountTests {
    @Test(.realMounts) func theLayerRoutesByTheVersionTheManagerCommitsAndAnswersThroughTheStopStartWindow() throws {
        let fleet = try ManagedFleet(nodes: ["n1"])
        let publicPort = Harness.freePort(), appPort = Harness.freePort()
        // One node.toml for the manager and the layer: the manager starts and stops the HTTP app (on the address
        // it is given, UPGRADEFS_APP_ADDRESS) beside the counter, so the upgrade's stop–start window is real.
        let pidFile = fleet.directory.appending(path: "echo.pid").path
        let echo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appending(path: "layer/echo-app.py").path
        let appLog = fleet.directory.appending(path: "app.log").path
        let config = try String(contentsOfFile: fleet.configFile("n1"), encoding: .utf8) + """
            start = '"$UPGRADEFS_RELEASE/bin/start" && (setsid python3 \(echo) "${UPGRADEFS_APP_ADDRESS##*:}" </dev/null >>\(appLog) 2>&1 & echo $! > \(pidFile)) && until curl -s -o /dev/null "http://$UPGRADEFS_APP_ADDRESS/echo"; do sleep 0.05; done'
            stop = 'if [ -s \(pidFile) ]; then kill $(cat \(pidFile)); while kill -0 $(cat \(pidFile)) 2>/dev/null; do sleep 0.05; done; fi; "$UPGRADEFS_RELEASE/bin/stop"'
            [layer]
            listen = "127.0.0.1:\(publicPort)"
            app = "127.0.0.1:\(appPort)"

            """
        try config.write(toFile: fleet.configFile("n1"), atomically: true, encoding: .utf8)
        defer {
            if let pid = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap({ Int32($0.trimmingCharacters(in: .whitespacesAndNewlines)) }) {
                kill(pid, SIGKILL)
            }
        }
        try fleet.startManagers()
        try fleet.publish(try fleet.bundle("counter-v1", sf: "fast-reboot"))
        #expect(fleet.waitFor(state: "running", version: 1))

        let layer = try ChildProcess(Harness.binary, ["layer", "--mount", fleet["n1"].mountpoint.path,
                                                      "--config", fleet.configFile("n1")],
                                     log: fleet.directory.appending(path: "layer.log").path)
        defer { layer.stop(within: 10, "upgradefs layer") }
        #expect(Harness.waitUntil(20) { Harness.httpStatus(port: publicPort, path: "/echo") == 200 })

        @Sendable func call(_ version: Int?) -> HTTPTestConnection.Reply? {
            try? HTTPTestConnection(port: publicPort).request("GET", "/echo", headers: version.map { [("Upgradefs-Version", "\($0)")] } ?? [])
        }
        #expect(call(1)?.status == 200)
        #expect(call(2)?.json["error"] as? String == "unknown-version")

        // Version 2 published; the node waits for the operator's approval: version-2 calls have no future SO here.
        try fleet.publish(try fleet.bundle("counter-v2", sf: "canary", tfSeconds: 1))
        #expect(Harness.waitUntil(20) { call(2)?.json["error"] as? String == "no-simulation-object" })
        // (The operator's mount shows n1's state within about a second.)
        #expect(Harness.waitUntil(20) { fleet.state("n1") == "waiting" })
        #expect(call(1)?.status == 200 && call(2)?.json["error"] as? String == "no-simulation-object")

        // Through the upgrade, a client without the header calls all the time: every call is answered, by the app
        // (a call in the stop–start window waits for it up to the connect bound, 5 s) or with a retryable 503.
        let answers = LockedBox<[String]>([]), slowest = LockedBox(0.0), done = LockedBox(false), finished = LockedBox(false)
        Thread {
            while !done.value {
                let start = Date()
                let reply = call(nil)
                slowest.withValue { $0 = max($0, Date().timeIntervalSince(start)) }
                let answer = reply.map { "\($0.status) \($0.headers["upgradefs-error"] ?? "-")" } ?? "no answer"
                answers.withValue { $0.append(answer) }
            }
            finished.value = true
        }.start()
        #expect(Posix.write(fleet.operator.path("udb/upgrades/2/control"), "approve\n") == 0)
        #expect(fleet.waitFor(state: "running", version: 2))
        #expect(Harness.waitUntil(10) { call(2)?.status == 200 })
        done.value = true
        #expect(Harness.waitUntil(10) { finished.value })
        let seen = Set(answers.value)
        #expect(seen.isSubset(of: ["200 -", "503 upgrading"]), "\(seen)")
        let bound: Double = 7.5 // the connect bound (5 s), two polls, and slack for a loaded machine
        #expect(slowest.value < bound, "the slowest call took \(slowest.value) s")
        print("through the upgrade: \(answers.value.count) calls, \(answers.value.filter { $0.hasPrefix("503") }.count) answered 503 upgrading, the slowest in \(slowest.value) s")

        let old = call(1)
        #expect(old?.status == 421 && old?.json["error"] as? String == "no-simulation-object")
        #expect(old?.headers["upgradefs-version"] == "2")
    }
}
