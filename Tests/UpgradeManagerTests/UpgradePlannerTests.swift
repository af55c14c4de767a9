import Testing
@testable import UpgradeManager

/// The pure state machine: which upgrade is next and what the node says meanwhile.
struct UpgradePlannerTests {
    func decide(installed: Int64 = 1, _ upgrades: [PublishedUpgrade], records: [UpgradeRecord] = [], now: Double = 1000) -> Decision {
        UpgradePlanner.decide(class: "counter", installed: installed, upgrades: upgrades,
                              records: Dictionary(uniqueKeysWithValues: records.map { ($0.version, $0) }), now: now)
    }

    @Test func nothingPublishedIsIdleOrRunning() {
        #expect(decide(installed: 0, []) == .rest(.idle, upgrade: nil))
        #expect(decide(installed: 3, []) == .rest(.running, upgrade: nil))
    }

    @Test func anotherClassesUpgradeIsPassedOverFirst() {
        #expect(decide([.init(version: 2, class: "web"), .init(version: 3, class: "counter")]) == .skip(2))
        #expect(decide([.init(version: 2, class: "counter")]) == .schedule(2))
    }

    @Test func aFromVersionOtherThanTheInstalledOneFails() {
        #expect(decide(installed: 1, [.init(version: 3, class: "counter", fromVersion: 2)])
            == .fail(3, reason: "upgrade 3 is from version 2 but version 1 of class counter is installed"))
        #expect(decide(installed: 2, [.init(version: 3, class: "counter", fromVersion: 2)]) == .schedule(3))
    }

    @Test func aFailedUpgradeHoldsUntilTheWordChangesToRetry() {
        let failed = UpgradeRecord(version: 2, status: .failed, controlAtFailure: "go")
        #expect(decide([.init(version: 2, class: "counter")], records: [failed]) == .rest(.failed, upgrade: 2))
        #expect(decide([.init(version: 2, class: "counter", control: .retry)], records: [failed]) == .retry(2))
        // `retry` already in force when it failed: the operator must write it anew.
        let failedUnderRetry = UpgradeRecord(version: 2, status: .failed, controlAtFailure: "retry")
        #expect(decide([.init(version: 2, class: "counter", control: .retry)], records: [failedUnderRetry]) == .rest(.failed, upgrade: 2))
    }

    @Test func pauseAbortAndBackOff() {
        #expect(decide([.init(version: 2, class: "counter", control: .pause)]) == .rest(.paused, upgrade: 2))
        #expect(decide([.init(version: 2, class: "counter", control: .abort)]) == .abort(2))
        #expect(decide([.init(version: 2, class: "counter", control: .approve)]) == .schedule(2))
        let later = UpgradeRecord(version: 2, nextRunAt: 1005)
        #expect(decide([.init(version: 2, class: "counter")], records: [later]) == .rest(.waiting, upgrade: 2))
        #expect(decide([.init(version: 2, class: "counter")], records: [later], now: 1005) == .schedule(2))
    }

    @Test func anAbortedUpgradeIsSteppedOverButHoldsTheNodesVersion() {
        let aborted = UpgradeRecord(version: 2, status: .aborted)
        #expect(decide([.init(version: 2, class: "counter", control: .abort)], records: [aborted]) == .rest(.aborted, upgrade: 2))
        // A newer upgrade of the class may go; another class's behind the abort does not move the version.
        #expect(decide([.init(version: 2, class: "counter", control: .abort), .init(version: 3, class: "web"),
                        .init(version: 4, class: "counter")], records: [aborted]) == .schedule(4))
        #expect(decide([.init(version: 2, class: "counter", control: .go)], records: [aborted]) == .resume(2))
    }

    @Test func sfBackOffDoublesUpToAMinute() {
        #expect((1...8).map { UpgradePlanner.backoffSeconds(failures: $0) } == [1, 2, 4, 8, 16, 32, 60, 60])
    }
}
