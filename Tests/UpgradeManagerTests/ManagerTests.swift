#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// The manager against a directory laid out like the mount, with a real (tiny) app, SFs, TFs and checks.
struct ManagerTests {
    @Test func aChainOfUpgradesIsAppliedInOrderEachTFTransformingTheState() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try node.publish(2, from: 1)
        try node.publish(3, from: 2)
        let manager = try node.manager()
        try manager.recover()
        #expect(try manager.tick() == .running)

        #expect(node.current == "gen/3")
        #expect(node.stateData(3) == "v3 3")
        #expect(node.stateData(2) == "v2 2") // the old state is untouched (the newest two generations are kept)
        #expect(!node.generationExists(1))
        #expect(node.read(node.root + "/gen/3/release/VERSION") == "release 3\n")
        var st = stat()
        #expect(stat(node.root + "/gen/3/release/bin/start", &st) == 0 && st.st_mode & 0o777 == 0o755)
        #expect(stat(node.root + "/gen/3/release/VERSION", &st) == 0 && st.st_mode & 0o777 == 0o640)
        #expect(node.appVersion == 3)
        #expect(try manager.ldb.nodeVersion() == 3 && manager.ldb.installedVersion() == 3)
        #expect(try manager.ldb.intent() == nil)
        #expect(try manager.ldb.records().map(\.status) == [.done, .done, .done])
        #expect(node.selfFile("state") == "running")
        #expect(node.selfFile("version") == "3")
        #expect(node.selfFile("upgrade") == "")
        let log = node.log
        #expect(log.contains("tf 2: transformed to v2"))
        #expect(log.contains("upgrade 3: done, running version 3"))
        // Lines are `2026-11-23T03:50:00Z text`.
        let line = try #require(log.split(separator: "\n").first)
        #expect(line.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "#, options: .regularExpression) != nil)
    }

    @Test func anotherClassesUpgradeAdvancesTheVersionWithoutInstallingAnything() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1, class: "web")
        let manager = try node.manager()
        #expect(try manager.tick() == .idle)
        #expect(node.current == nil && node.appVersion == nil)
        #expect(node.selfFile("version") == "1" && node.selfFile("state") == "idle")

        try node.publish(2)
        try node.publish(3, class: "web")
        try node.publish(4, from: 2)
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/4" && node.stateData(4) == "v4 2")
        #expect(try manager.ldb.nodeVersion() == 4 && manager.ldb.installedVersion() == 4)
        #expect(try manager.ldb.record(3)?.status == .skipped)
        #expect(node.log.contains("upgrade 3 is for another class: passed over, now at version 3"))
    }

    @Test func aFromVersionMismatchFailsWithTheReason() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try node.publish(2, class: "web")
        try node.publish(3, from: 2)
        let manager = try node.manager()
        #expect(try manager.tick() == .failed)
        #expect(node.current == "gen/1" && node.appVersion == 1)
        #expect(node.selfFile("state") == "failed" && node.selfFile("version") == "2" && node.selfFile("upgrade") == "3")
        #expect(node.log.contains("upgrade 3 failed: upgrade 3 is from version 2 but version 1 of class counter is installed"))
        #expect(try manager.ldb.record(3)?.status == .failed)
    }

    @Test func sfNotYetThenGoHonoursTheRetryFileAndSeesTheDocumentedEnvironment() throws {
        let node = try TestNode()
        defer { node.remove() }
        let envLog = node.directory + "/sf-env"
        try node.publish(1, sf: """
            #!/bin/sh
            echo "$UPGRADEFS_PHASE $UPGRADEFS_RESULT node=$UPGRADEFS_NODE class=$UPGRADEFS_CLASS from=$UPGRADEFS_FROM to=$UPGRADEFS_TO attempt=$UPGRADEFS_ATTEMPT control=$UPGRADEFS_CONTROL cwd=$(pwd) self=$UPGRADEFS_SELF ldb=$UPGRADEFS_LDB" >> \(envLog)
            [ "$UPGRADEFS_PHASE" = after ] && exit 0
            if [ ! -f "$UPGRADEFS_LDB/asked" ]; then
                touch "$UPGRADEFS_LDB/asked"
                echo 1.5 > "$UPGRADEFS_RETRY_FILE"
                echo "not yet"
                exit 75
            fi
            echo "go"
            """)
        let manager = try node.manager("poll-interval = 30")
        let before = Date().timeIntervalSince1970
        #expect(try manager.tick() == .waiting)
        #expect(node.selfFile("state") == "waiting" && node.selfFile("upgrade") == "1")
        let record = try #require(try manager.ldb.record(1))
        // The SF's 1.5 s, not the 30 s poll-interval.
        #expect(record.nextRunAt >= before + 1.5 && record.nextRunAt < before + 10)
        #expect(try manager.tick() == .waiting) // too early: the SF is not asked again
        #expect(node.read(envLog)?.split(separator: "\n").count == 1)
        usleep(1_600_000)
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/1" && node.appVersion == 1)

        let runs = try #require(node.read(envLog)).split(separator: "\n").map(String.init)
        let common = "node=n1 class=counter from=0 to=1 attempt=1 control=go cwd=\(node.mount)/versions/1 self=\(node.mount)/udb/nodes/n1 ldb=\(node.root)/ldb/sf/1"
        #expect(runs == ["before  " + common, "before  " + common, "after done " + common])
        #expect(node.log.contains("sf 1: not yet"))
    }

    @Test func aFailingSFIsRetriedWithBackOff() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1, sf: "#!/bin/sh\necho no way\nexit 3\n")
        let manager = try node.manager()
        let before = Date().timeIntervalSince1970
        #expect(try manager.tick() == .waiting)
        var record = try #require(try manager.ldb.record(1))
        #expect(record.sfFailures == 1 && record.nextRunAt >= before + 1 && record.nextRunAt < before + 2)
        #expect(node.log.contains("sf 1 failed (exit status 3); asking again in 1 s"))
        #expect(node.log.contains("sf 1: no way"))
        usleep(1_100_000)
        #expect(try manager.tick() == .waiting)
        record = try #require(try manager.ldb.record(1))
        #expect(record.sfFailures == 2 && record.lastError == "sf: exit status 3")
        #expect(node.log.contains("asking again in 2 s"))
        #expect(node.current == nil)
    }

    @Test func anSFWithoutAShebangLineRunsWithTheShell() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1, sf: "echo \"plain script, phase $UPGRADEFS_PHASE\"\nexit 75\n")
        let manager = try node.manager()
        #expect(try manager.tick() == .waiting)
        #expect(node.log.contains("sf 1: plain script, phase before"))
        #expect(try manager.ldb.record(1)?.sfFailures == 0)
    }

    @Test func anSFPastItsTimeoutIsKilledWithEverythingItStarted() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1, sf: "#!/bin/sh\nsleep 1000 &\necho $! > \"$UPGRADEFS_LDB/grandchild\"\nwait\n")
        let manager = try node.manager("sf-timeout = 0.5")
        #expect(try manager.tick() == .waiting)
        #expect(node.log.contains("sf 1 failed (timed out after 0.5 s (process group killed)); asking again in 1 s"))
        let grandchild = try #require(node.read(node.root + "/ldb/sf/1/grandchild").flatMap { pid_t($0.trimmingCharacters(in: .newlines)) })
        #expect(Harness.waitUntil(3) { !TestNode.isAlive(grandchild) })
    }

    @Test func aFailingTFRollsBackToTheOldReleaseAndState() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        let manager = try node.manager()
        #expect(try manager.tick() == .running)
        let oldPid = try #require(node.appProcess()).0

        try node.publish(2, tf: """
            #!/bin/sh
            echo garbage > "$UPGRADEFS_STATE/data"
            echo "cannot convert the state" >&2
            exit 1
            """)
        #expect(try manager.tick() == .failed)
        #expect(node.current == "gen/1" && node.stateData(1) == "v1 1")
        #expect(node.read(node.root + "/gen/1/release/VERSION") == "release 1\n")
        #expect(!node.generationExists(2) && !POSIXFiles.exists(node.root + "/gen/2.staging"))
        // Stopped before the state was copied, started again at the old version by the rollback.
        let restarted = try #require(node.appProcess())
        #expect(restarted.0 != oldPid && restarted.1 == 1)
        #expect(try manager.ldb.nodeVersion() == 1 && manager.ldb.installedVersion() == 1)
        #expect(node.selfFile("state") == "failed" && node.selfFile("version") == "1" && node.selfFile("upgrade") == "2")
        #expect(node.log.contains("tf 2: cannot convert the state"))
        #expect(node.log.contains("upgrade 2 failed: tf: exit status 1; rolled back to version 1"))
        #expect(try manager.ldb.record(2)?.status == .failed)
    }

    @Test func aFailingCheckRollsBackAfterTheSwitch() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        let manager = try node.manager("check-timeout = 1.5")
        #expect(try manager.tick() == .running)
        try node.publish(2, check: "#!/bin/sh\necho unhealthy\nexit 1\n")
        #expect(try manager.tick() == .failed)
        #expect(node.current == "gen/1" && node.stateData(1) == "v1 1" && !node.generationExists(2))
        #expect(node.read(node.root + "/gen/1/release/VERSION") == "release 1\n")
        #expect(node.appVersion == 1) // version 2 was started, stopped again, and 1 started
        #expect(node.selfFile("state") == "failed" && node.selfFile("version") == "1")
        #expect(try manager.ldb.installedVersion() == 1 && manager.ldb.nodeVersion() == 1)
        #expect(node.log.contains("check 2: unhealthy"))
        #expect(node.log.contains("upgrade 2 failed: check did not pass within 1.5 s"))
        #expect(node.log.contains("rolled back to version 1"))
    }

    @Test func aFailedUpgradeWaitsForRetryAndHoldsNewerOnesBack() throws {
        let node = try TestNode()
        defer { node.remove() }
        let broken = node.directory + "/broken"
        try node.write("", to: broken)
        try node.publish(1)
        try node.publish(2, tf: "#!/bin/sh\n[ -f \(broken) ] && exit 1\n" + TestNode.counterTF.replacingOccurrences(of: "#!/bin/sh\n", with: ""))
        let manager = try node.manager()
        #expect(try manager.tick() == .failed)
        unlink(broken)
        try node.publish(3, from: 2)
        #expect(try manager.tick() == .failed) // not retried by itself, and 3 waits behind it
        #expect(node.current == "gen/1")
        try node.control(2, "retry")
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/3" && node.stateData(3) == "v3 3")
        #expect(try manager.ldb.record(2)?.attempts == 2)
        #expect(node.log.contains("upgrade 2: the operator asked for a retry"))
    }

    @Test func pauseHoldsAbortStaysAtTheOldVersionGoResumes() throws {
        let node = try TestNode()
        defer { node.remove() }
        let asked = node.directory + "/asked"
        try node.publish(1)
        try node.publish(2, sf: "#!/bin/sh\necho \"$UPGRADEFS_PHASE $UPGRADEFS_RESULT\" >> \(asked)\n")
        let manager = try node.manager()
        try node.control(2, "pause")
        #expect(try manager.tick() == .paused)
        #expect(node.current == "gen/1" && node.read(asked) == nil) // the SF was not even asked
        #expect(node.selfFile("state") == "paused" && node.selfFile("upgrade") == "2")

        try node.control(2, "abort")
        #expect(try manager.tick() == .aborted)
        #expect(node.current == "gen/1" && node.appVersion == 1 && node.selfFile("version") == "1")
        #expect(node.read(asked) == "after aborted\n") // told to release what it might hold
        #expect(node.log.contains("upgrade 2 aborted by the operator; staying at version 1"))
        #expect(try manager.tick() == .aborted) // and stays so

        try node.control(2, "go")
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/2" && node.appVersion == 2)
        #expect(node.read(asked) == "after aborted\nbefore \nafter done\n")
    }

    @Test func anAbortDuringTheUpgradeRollsBack() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        let manager = try node.manager()
        #expect(try manager.tick() == .running)
        // The operator aborts while the TF runs.
        try node.publish(2, tf: "#!/bin/sh\necho abort > \(node.mount)/udb/upgrades/2/control\n")
        try node.control(2, "go")
        #expect(try manager.tick() == .aborted)
        #expect(node.current == "gen/1" && node.appVersion == 1 && !node.generationExists(2))
        #expect(node.log.contains("upgrade 2 aborted by the operator: after step transformed; rolled back to version 1"))
    }

    @Test func aFailingWhiteboardWriteIsRetriedNotFatal() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try FileManager.default.removeItem(atPath: node.selfDirectory) // self/ dangles: every write fails
        let manager = try node.manager()
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/1")
        #expect(!manager.reporter.isFlushed)
        try POSIXFiles.makeDirectories(node.selfDirectory)
        manager.reporter.flush()
        #expect(manager.reporter.isFlushed)
        #expect(node.selfFile("state") == "running" && node.selfFile("version") == "1")
        #expect(node.log.contains("upgrade 1: done, running version 1"))
    }

    @Test func logIsAppendedNotReplaced() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.write("2026-01-01T00:00:00Z written by someone before\n", to: node.selfDirectory + "/log")
        try node.publish(1)
        let manager = try node.manager()
        try manager.tick()
        #expect(node.log.hasPrefix("2026-01-01T00:00:00Z written by someone before\n"))
        #expect(node.log.contains("upgrade 1: done"))
    }

    @Test func aMountWhoseSelfIsAnotherNodeIsRefused() throws {
        let node = try TestNode()
        defer { node.remove() }
        let config = try node.config("node = \"n2\"")
        do throws(ManagerError) {
            _ = try NodeManager(config: config, mount: node.mount, logger: Logger(label: "test"))
            Issue.record("a manager for n2 started on n1's mount")
        } catch {
            #expect(error.description == "\(node.mount)/self points at udb/nodes/n1, but node.toml says node = \"n2\"")
        }
    }

    @Test func aSecondManagerOnTheSameRootIsRefused() throws {
        let node = try TestNode()
        defer { node.remove() }
        let first = try node.manager()
        #expect(throws: ManagerError.self) { try node.manager() }
        _ = first
    }
}
