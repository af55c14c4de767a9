import Testing
import UpgradeCore

/// The rule `upgradefs status --watch` follows: given an upgrade's summary, control word and the healthy SF's
/// stop marker, is the rollout done, stopped or still going, and what line says so.
@Suite struct RolloutWatchTests {
    let rule = RolloutWatch(failureBudget: 0)

    func observe(_ summary: [String: Int64]?, control: String? = nil, stop: String? = nil) -> RolloutObservation {
        RolloutObservation(upgrade: 2, summary: summary, control: control, budgetStop: stop)
    }

    @Test func progressCountsEveryStateThatIsNotDoneUpgradingOrFailedAsWaiting() {
        let assessment = rule.assess(observe(["done": 3, "upgrading": 1, "waiting": 1, "pending": 1]))
        #expect(assessment.verdict == .progressing)
        #expect(assessment.line == "upgrade 2: 3/6 at version 2, 1 upgrading, 0 failed, 2 waiting")
    }

    @Test func everyNodeAtTheVersionSucceedsEvenAfterALateAbort() {
        #expect(rule.assess(observe(["done": 3])).verdict == .succeeded)
        #expect(rule.assess(observe(["done": 3], control: "abort")).verdict == .succeeded)
        #expect(rule.assess(observe(["done": 3])).line == "upgrade 2: 3/3 at version 2, 0 upgrading, 0 failed, 0 waiting — rolled out")
    }

    @Test func noNodeOfTheClassYetIsNotASuccess() {
        #expect(rule.assess(observe([:])).verdict == .progressing)
    }

    @Test func anUnpublishedUpgradeIsWaitedForUntilTheDeadline() {
        #expect(rule.assess(observe(nil)).verdict == .unpublished)
        #expect(rule.assess(observe(nil)).line == "upgrade 2: not published yet")
        let late = rule.assess(observe(nil), timedOut: true)
        #expect(late.verdict == .timedOut)
        #expect(late.reason == "upgrade 2 was never published")
        #expect(late.line == "upgrade 2: not published yet — timed out: upgrade 2 was never published")
    }

    @Test func abortStopsTheWatch() {
        let assessment = rule.assess(observe(["done": 1, "aborted": 2], control: "abort\n"))
        #expect(assessment.verdict == .aborted)
        #expect(assessment.line == "upgrade 2: 1/3 at version 2, 0 upgrading, 0 failed, 2 waiting; control abort"
            + " — aborted: the operator wrote abort to upgrades/2/control")
    }

    @Test func failuresPastTheBudgetStopTheWatch() {
        #expect(rule.assess(observe(["failed": 1, "waiting": 3])).verdict == .failed)
        let tolerant = RolloutWatch(failureBudget: 1)
        #expect(tolerant.assess(observe(["failed": 1, "waiting": 3])).verdict == .progressing)
        let over = tolerant.assess(observe(["failed": 2, "waiting": 2]))
        #expect(over.verdict == .failed)
        #expect(over.reason == "2 nodes failed, more than the failure budget of 1")
    }

    @Test func theHealthySFStopMarkerStopsTheWatch() {
        let tolerant = RolloutWatch(failureBudget: 5)
        let stopped = tolerant.assess(observe(["failed": 1, "waiting": 3], stop: "2 nodes failed"))
        #expect(stopped.verdict == .failed)
        #expect(stopped.reason == "the healthy SF stopped it: 2 nodes failed")
        #expect(RolloutObservation.isBudgetStopMarker("shared/healthy-web-2.stopped", upgrade: 2))
        #expect(RolloutObservation.isBudgetStopMarker("shared/healthy-my-app-2.stopped", upgrade: 2))
        #expect(!RolloutObservation.isBudgetStopMarker("shared/healthy-web-12.stopped", upgrade: 2))
        #expect(!RolloutObservation.isBudgetStopMarker("shared/healthy-web-3.stopped", upgrade: 2))
        #expect(!RolloutObservation.isBudgetStopMarker("shared/healthy--2.stopped", upgrade: 2))
    }

    @Test func failedNodesWithinTheBudgetEndTheWatchOnceNothingElseMoves() {
        let tolerant = RolloutWatch(failureBudget: 1)
        #expect(tolerant.assess(observe(["done": 2, "failed": 1, "upgrading": 1])).verdict == .progressing)
        #expect(tolerant.assess(observe(["done": 3, "failed": 1])).verdict == .failed)
    }

    @Test func pausedShowsTheControlWordAndKeepsWaiting() {
        let paused = rule.assess(observe(["paused": 2], control: "pause"))
        #expect(paused.verdict == .progressing)
        #expect(paused.line == "upgrade 2: 0/2 at version 2, 0 upgrading, 0 failed, 2 waiting; control pause")
        #expect(rule.assess(observe(["waiting": 2], control: "go")).line.hasSuffix("2 waiting"))
    }

    @Test func theDeadlineEndsOnlyAWatchThatIsStillGoing() {
        #expect(rule.assess(observe(["waiting": 2]), timedOut: true).verdict == .timedOut)
        #expect(rule.assess(observe(["done": 2]), timedOut: true).verdict == .succeeded)
    }

    @Test func eventsCarryTheCountsAndTheVerdict() throws {
        let event = rule.assess(observe(["done": 1, "upgrading": 1])).toJSON(revision: 7)
        #expect(event["event"]?.stringValue == "progress")
        #expect(event["revision"]?.intValue == 7)
        #expect(event["done"]?.intValue == 1 && event["upgrading"]?.intValue == 1 && event["total"]?.intValue == 2)
        #expect(event["reason"] == .null && event["control"] == .null)
        let final = rule.assess(observe(["failed": 1, "done": 1])).toJSON(revision: 8)
        #expect(final["event"]?.stringValue == "failed")
        #expect(final["reason"]?.stringValue?.isEmpty == false)
        #expect(rule.assess(observe(["done": 1])).toJSON(revision: 9)["event"]?.stringValue == "succeeded")
    }
}
