#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Testing
import UpgradeCore
import UpgradeFiles
@testable import UpgradeManager

/// What a hostile bundle, gaps in the published versions, a failed upgrade the operator gives up and a
/// mistyped class do to a node (issue 8), against a directory laid out like the mount.
struct ManagerDefenceTests {
    // MARK: Links that leave the installed release

    @Test func aLinkClimbingOutOfADeepPayloadLeavesTheRelease() {
        // payload = "a/b/c/d/e/f": the link stays inside the bundle but not inside what is installed.
        #expect(ReleaseLinks.problems([.init(path: "etc", target: "../../../../../../etc")])
            == ["symbolic link etc -> ../../../../../../etc leaves the release (symlink target \"../../../../../../etc\" leaves the bundle)"])
        #expect(ReleaseLinks.problems([.init(path: "bin/sh", target: "/bin/sh")]).count == 1)
        #expect(ReleaseLinks.problems([.init(path: "x", target: "..")]).count == 1)
        // Two links each harmless alone: `up` is the release's top, `up/..` is above it.
        #expect(ReleaseLinks.problems([.init(path: "a/up", target: ".."), .init(path: "b", target: "a/up/../etc")]).count == 1)
        // Links that stay inside are fine.
        #expect(ReleaseLinks.problems([.init(path: "bin/tool", target: "../lib/tool"), .init(path: "current", target: "bin"),
                                       .init(path: "lib/self", target: ".")]).isEmpty)
    }

    @Test func aReleaseWithALinkToTheHostsEtcIsNotInstalled() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        let manager = try node.manager()
        #expect(try manager.tick() == .running)

        try node.publish(2, from: 1)
        try POSIXFiles.makeDirectories(node.mount + "/versions/2/payload/conf")
        #expect(symlink("../../../../../../../../../../etc", node.mount + "/versions/2/payload/conf/etc") == 0)
        #expect(try manager.tick() == .failed)
        #expect(node.log.contains("upgrade 2 failed: refusing to install release 2: symbolic link conf/etc -> ../../../../../../../../../../etc leaves the release"),
                "\(node.log)")
        // The old version is untouched and runs; nothing of 2 is left.
        #expect(node.current == "gen/1" && node.stateData(1) == "v1 1" && node.appVersion == 1)
        #expect(!node.generationExists(2) && !POSIXFiles.exists(node.root + "/gen/2.staging"))
        #expect(node.selfFile("state") == "failed" && node.selfFile("version") == "1")
    }

    // MARK: Versions never published

    @Test func aGapInThePublishedVersionsIsPassedOver() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(6)
        try node.publish(8, from: 6) // 7 was never published
        let manager = try node.manager()
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/8" && node.appVersion == 8)
        #expect(try manager.ldb.nodeVersion() == 8)
        #expect(try manager.ldb.record(7)?.status == .skipped)
        #expect(node.log.contains("version 7 was never published (versions/ has newer ones but not 7): passed over, now at version 7"))
        #expect(!node.log.contains("cannot read upgrade 7"))
    }

    @Test func aPublishedBundleThatCannotBeReadStillHoldsTheNode() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try node.publish(2, from: 1)
        try node.publish(3, from: 2)
        unlink(node.mount + "/versions/2/upgrade.toml") // listed in versions/, but unreadable: not a gap
        let manager = try node.manager()
        #expect(try manager.tick() == .running)
        #expect(try node.current == "gen/1" && manager.ldb.nodeVersion() == 1)
        #expect(node.log.contains("cannot read upgrade 2"))
    }

    @Test func theNewestVersionMissingFromVersionsIsNotAGap() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try node.write("2\n", to: node.mount + "/latest") // latest says 2, versions/ has no 2 yet (nor anything newer)
        let manager = try node.manager()
        #expect(try manager.tick() == .running)
        #expect(try manager.ldb.nodeVersion() == 1 && manager.ldb.record(2) == nil)
    }

    @Test func plannerPassesOverAnUnpublishedVersionButNotBehindAnAbort() {
        func decide(_ upgrades: [PublishedUpgrade], records: [UpgradeRecord] = []) -> Decision {
            UpgradePlanner.decide(class: "counter", installed: 1, upgrades: upgrades,
                                  records: Dictionary(uniqueKeysWithValues: records.map { ($0.version, $0) }), now: 0)
        }
        #expect(decide([.unpublished(2), .init(version: 3, class: "counter")]) == .skipUnpublished(2))
        let aborted = UpgradeRecord(version: 2, status: .aborted)
        #expect(decide([.init(version: 2, class: "counter", control: .abort), .unpublished(3), .init(version: 4, class: "counter")],
                       records: [aborted]) == .schedule(4))
    }

    // MARK: Giving a failed upgrade up

    @Test func abortOfAFailedUpgradeLetsTheNodeMoveOnFromItsOldVersion() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try node.publish(2, from: 1, tf: "#!/bin/sh\necho 'cannot transform this state'\nexit 1\n")
        let manager = try node.manager()
        #expect(try manager.tick() == .failed)
        try node.publish(3) // no from-version: it may be applied to 1
        #expect(try manager.tick() == .failed) // 3 waits behind the failed 2

        try node.control(2, "abort")
        #expect(try manager.tick() == .running)
        #expect(try manager.ldb.record(2)?.status == .aborted)
        #expect(node.log.contains("upgrade 2 aborted by the operator; staying at version 1"))
        // 3 was applied from version 1's state, and its TF was told so.
        #expect(node.current == "gen/3" && node.stateData(3) == "v3 2" && node.appVersion == 3)
        #expect(node.selfFile("state") == "running" && node.selfFile("version") == "3")
    }

    @Test func abortOfAFailedUpgradeWithNothingNewerSaysAborted() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try node.publish(2, tf: "#!/bin/sh\nexit 1\n")
        let manager = try node.manager()
        #expect(try manager.tick() == .failed)
        try node.control(2, "abort")
        #expect(try manager.tick() == .aborted)
        #expect(node.selfFile("state") == "aborted" && node.selfFile("upgrade") == "2" && node.selfFile("version") == "1")
        #expect(node.current == "gen/1" && node.appVersion == 1)
        let planned = UpgradePlanner.decide(class: "counter", installed: 1,
                                            upgrades: [.init(version: 2, class: "counter", control: .abort)],
                                            records: [2: UpgradeRecord(version: 2, status: .failed, controlAtFailure: "go")], now: 0)
        #expect(planned == .abort(2))
    }

    // MARK: Class

    @Test func aMistypedClassIsWarnedAboutOnce() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        try node.publish(2, from: 1)
        let manager = try node.manager("class = \"countr\"")
        try manager.recover()
        #expect(try manager.tick() == .idle)
        #expect(try manager.tick() == .idle)
        let warning = "no published upgrade (versions 1 to 2) is of class \"countr\" (they are of class counter): is class in node.toml right?"
        #expect(node.log.components(separatedBy: warning).count == 2, "\(node.log)")
        #expect(node.selfFile("class") == "countr")
    }
}
