import Foundation
import Testing
@testable import UpgradeManager

/// The install of one upgrade as pure transitions: no process, no disk, no mount.
struct InstallMachineTests {
    /// Upgrade 2 from installed version 1 (or from nothing).
    func machine(from f: Int64 = 1) -> InstallMachine { InstallMachine(upgrade: 2, fromInstalledVersion: f) }

    /// Feeds `first`, then each action's outcome as `outcome` says, until the machine rests; the actions asked for.
    func drive(_ machine: inout InstallMachine, _ first: InstallEvent,
               outcome: (InstallAction) -> InstallEvent = { _ in .succeeded }) throws -> [InstallAction] {
        var actions: [InstallAction] = []
        var next = try machine.handle(first)
        while let action = next {
            actions.append(action)
            #expect(machine.state == .carryingOut(action))
            next = try machine.handle(outcome(action))
        }
        return actions
    }

    static let straightThrough: [InstallAction] = [
        .record(.intent), .stopApp(version: 1), .record(.stopped), .stage, .record(.staged), .transform(seal: true),
        .record(.transformed), .switchCurrent(to: 2), .record(.switched), .startApp(version: 2), .record(.started),
        .check, .record(.checked), .record(.committed), .finishCommit,
    ]

    @Test func theOneCallInstallGoesStraightThroughEveryStepToTheCommit() throws {
        var m = machine()
        #expect(try drive(&m, .begin(stopAtPrepared: false)) == Self.straightThrough)
        #expect(m.state == .committed)
        // The steps it records are the one-call install's, in order: never `prepared`.
        let recorded = Self.straightThrough.compactMap { if case .record(let step) = $0 { step } else { nil } }
        #expect(recorded == UpgradeStep.oneCallInstall)
        #expect(UpgradeStep.allCases.filter { !UpgradeStep.oneCallInstall.contains($0) } == [.prepared])
    }

    @Test func withNothingInstalledNoAppIsStopped() throws {
        var m = machine(from: 0)
        let actions = try drive(&m, .begin(stopAtPrepared: false))
        #expect(Array(actions.prefix(3)) == [.record(.intent), .record(.stopped), .stage])
        #expect(!actions.contains { if case .stopApp = $0 { true } else { false } })
        #expect(m.state == .committed)
    }

    /// Every action but the journal's ends, the commit's reports and the rollback itself: a failure rolls back.
    @Test(arguments: straightThrough.filter { $0 != .record(.intent) && $0 != .record(.committed) && $0 != .finishCommit })
    func aFailedStepRollsBackToTheInstalledVersion(failing: InstallAction) throws {
        var m = machine()
        let actions = try drive(&m, .begin(stopAtPrepared: false)) { $0 == failing ? .failed("it broke") : .succeeded }
        #expect(actions.last == .rollBack(.failed, reason: "upgrade 2 failed: it broke; rolled back to version 1"))
        #expect(!actions.contains(.finishCommit))
        #expect(m.state == .rolledBack(.failed))
    }

    /// The journal's first and last writes, the reports after the commit and the rollback cannot fail as an
    /// event: the install stops there and the next start recovers it from the journal.
    @Test(arguments: [InstallAction.record(.intent), .record(.committed), .finishCommit])
    func aFailureOfTheJournalsEndsIsNoEvent(failing: InstallAction) throws {
        var m = machine()
        #expect(throws: InstallMachine.Misuse.self) {
            _ = try drive(&m, .begin(stopAtPrepared: false)) { $0 == failing ? .failed("disk full") : .succeeded }
        }
        #expect(m.state == .carryingOut(failing))
    }

    /// The operator's `abort` counts after every step recorded before the commit, not after the intent or the commit.
    @Test(arguments: UpgradeStep.oneCallInstall)
    func theOperatorsAbortCountsUntilTheCommit(after step: UpgradeStep) throws {
        var m = machine()
        let actions = try drive(&m, .begin(stopAtPrepared: false)) { $0 == .record(step) ? .operatorAborted : .succeeded }
        if step == .intent || step == .committed {
            #expect(actions == Self.straightThrough)
            #expect(m.state == .committed)
        } else {
            let rollBack = InstallAction.rollBack(.aborted, reason: "upgrade 2 aborted by the operator: after step \(step.rawValue); rolled back to version 1")
            #expect(actions == Array(Self.straightThrough.prefix { $0 != .record(step) }) + [.record(step), rollBack])
            #expect(m.state == .rolledBack(.aborted))
        }
    }

    // MARK: Prepared

    @Test func preparingStagesAndDryRunsWithTheOldAppServingThenWaits() throws {
        var m = machine()
        #expect(try drive(&m, .begin(stopAtPrepared: true)) == [.record(.intent), .stage, .transform(seal: false), .record(.prepared)])
        #expect(m.state == .prepared)
        #expect(m.stopsAtPrepared)
    }

    @Test func aCommitDecidedForAPreparedInstallGoesOnAsTheOneCallInstallDoes() throws {
        var m = machine()
        _ = try drive(&m, .begin(stopAtPrepared: true))
        #expect(try drive(&m, .commitDecided) == Array(Self.straightThrough.dropFirst()))
        #expect(m.state == .committed)
    }

    @Test func anAbortDecidedForAPreparedInstallRollsBack() throws {
        var m = machine()
        _ = try drive(&m, .begin(stopAtPrepared: true))
        #expect(try drive(&m, .abortDecided("the fleet gave it up"))
            == [.rollBack(.aborted, reason: "upgrade 2 aborted: the fleet gave it up; rolled back to version 1")])
        #expect(m.state == .rolledBack(.aborted))
    }

    @Test func aFailureOrTheOperatorsAbortWhilePreparingRollsBack() throws {
        var m = machine()
        let failed = try drive(&m, .begin(stopAtPrepared: true)) { $0 == .transform(seal: false) ? .failed("tf: exit 3") : .succeeded }
        #expect(failed.last == .rollBack(.failed, reason: "upgrade 2 failed: tf: exit 3; rolled back to version 1"))
        var n = machine()
        let aborted = try drive(&n, .begin(stopAtPrepared: true)) { $0 == .record(.prepared) ? .operatorAborted : .succeeded }
        #expect(aborted.last == .rollBack(.aborted, reason: "upgrade 2 aborted by the operator: after step prepared; rolled back to version 1"))
    }

    @Test func decisionsAreTakenOnlyByAPreparedInstall() throws {
        for decision in [InstallEvent.commitDecided, .abortDecided("no")] {
            var fresh = machine()
            #expect(throws: InstallMachine.Misuse.self) { try fresh.handle(decision) }
            var straight = machine()
            _ = try straight.handle(.begin(stopAtPrepared: false))
            #expect(throws: InstallMachine.Misuse.self) { try straight.handle(decision) }
            var done = machine()
            _ = try drive(&done, .begin(stopAtPrepared: false))
            #expect(throws: InstallMachine.Misuse.self) { try done.handle(decision) }
        }
        var begun = machine()
        _ = try begun.handle(.begin(stopAtPrepared: false))
        #expect(throws: InstallMachine.Misuse.self) { try begun.handle(.begin(stopAtPrepared: false)) }
    }

    // MARK: Recovery

    /// What a start does when the journal names each step; the table of docs/DESIGN.md.
    static let recoveryTable: [UpgradeStep: Recovery] = [
        .intent: .rollBack, .prepared: .stayPrepared, .stopped: .rollBack, .staged: .rollBack, .transformed: .rollBack,
        .switched: .rollBack, .started: .rollBack, .checked: .rollBack, .committed: .finishCommit,
    ]

    @Test(arguments: UpgradeStep.allCases)
    func theRecoveryTable(step: UpgradeStep) throws {
        let expected = try #require(Self.recoveryTable[step], "no row for \(step)")
        #expect(InstallMachine.recovery(at: step) == expected)
        var m = machine()
        let actions = try drive(&m, .recovered(at: step))
        switch expected {
        case .rollBack:
            #expect(actions == [.rollBack(.restarted, reason: "manager restarted during upgrade 2 at step \(step.rawValue); rolled back to 1")])
            #expect(m.state == .rolledBack(.restarted))
        case .stayPrepared:
            #expect(actions == [] && m.state == .prepared)
        case .finishCommit:
            #expect(actions == [.finishCommit] && m.state == .committed)
        }
    }

    @Test func aPreparedInstallRecoveredAfterARestartStillTakesItsDecision() throws {
        var m = machine()
        _ = try drive(&m, .recovered(at: .prepared))
        #expect(try drive(&m, .commitDecided) == Array(Self.straightThrough.dropFirst()))
        #expect(m.state == .committed)
    }

    /// docs/DESIGN.md lists every step once in its table, with the recovery the machine has for it.
    @Test func theDesignDocumentsTableNamesEveryStepAndItsRecovery() throws {
        let design = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/DESIGN.md")
        let text = try String(contentsOf: design, encoding: .utf8)
        let words: [Recovery: String] = [.rollBack: "roll back", .stayPrepared: "stay prepared", .finishCommit: "finish the commit"]
        for step in UpgradeStep.allCases {
            let rows = text.split(separator: "\n").filter { $0.hasPrefix("| `\(step.rawValue)` |") }
            #expect(rows.count == 1, "docs/DESIGN.md: \(rows.count) table rows for step \(step.rawValue)")
            let recovery = words[InstallMachine.recovery(at: step)]!
            #expect(rows.first?.contains(recovery) == true, "docs/DESIGN.md: the row of \(step.rawValue) should say \"\(recovery)\"")
        }
    }

    /// What each rollback leaves: the record's status, and what the node reports and its SF hears.
    @Test func eachRollbackOutcomeLeavesItsStatusReportAndSchedulerResult() {
        #expect(RollbackOutcome.failed.recordStatus == .failed)
        #expect(RollbackOutcome.failed.ending?.state == .failed && RollbackOutcome.failed.ending?.schedulerResult == "failed")
        #expect(RollbackOutcome.aborted.recordStatus == .aborted)
        #expect(RollbackOutcome.aborted.ending?.state == .aborted && RollbackOutcome.aborted.ending?.schedulerResult == "aborted")
        #expect(RollbackOutcome.restarted.recordStatus == .pending)
        #expect(RollbackOutcome.restarted.ending == nil, "a restart ends nothing: the upgrade is tried again")
    }
}
