import UpgradeCore

/// The steps of one upgrade, named once: each is recorded in the LDB's intent journal (`intent.step`, these raw
/// values) once done, `UPGRADEFS_MANAGER_CRASH_AT` names one of them (tests only), `InstallMachine.recovery(at:)`
/// says what a restart does when the journal names it, and docs/DESIGN.md's table lists them.
public enum UpgradeStep: String, Sendable, CaseIterable {
    /// The upgrade is begun: N, the installed version F and the node version recorded, the attempt counted.
    case intent
    /// Release N staged and its links judged, the TF run on a copy of F's state, the app still serving F:
    /// the install waits for a commit or an abort decided elsewhere.
    case prepared
    /// The app of F stopped (or nothing installed).
    case stopped
    /// `gen/N.staging` holds release N and a copy of F's state.
    case staged
    /// The TF ran on the staged state; the generation is sealed as `gen/N`.
    case transformed
    /// `current` names `gen/N`.
    case switched
    /// The app of N started.
    case started
    /// N's check passed.
    case checked
    /// The node's version and installed version are N.
    case committed

    /// The steps the one-call install records, in order: all but `prepared`.
    public static let oneCallInstall: [UpgradeStep] =
        [.intent, .stopped, .staged, .transformed, .switched, .started, .checked, .committed]
}

/// What a manager that starts with the journal at a step does (`InstallMachine.recovery(at:)`).
public enum Recovery: Sendable, Equatable {
    /// The node may be between F and N: put F back; the upgrade is pending again.
    case rollBack
    /// The app still serves F and nothing of F was touched: the install stays prepared.
    case stayPrepared
    /// The commit is durable: the reports after it are made (again).
    case finishCommit
}

/// How an install that did not commit ended (the record's status after the rollback).
public enum RollbackOutcome: Sendable, Equatable {
    /// A step failed: `failed`, until the operator writes `retry`.
    case failed
    /// The operator's `abort` (or an abort decided for a prepared install): `aborted`.
    case aborted
    /// The manager died during the upgrade: `pending` again.
    case restarted

    /// The status the upgrade's record is left in.
    public var recordStatus: UpgradeStatus {
        switch self {
        case .failed: .failed
        case .aborted: .aborted
        case .restarted: .pending
        }
    }

    /// What the node reports and its SF is told (`UPGRADEFS_RESULT`) once rolled back; nil after a restart (the
    /// upgrade is simply tried again, nothing ended).
    public var ending: (state: NodeState, schedulerResult: String)? {
        switch self {
        case .failed: (.failed, "failed")
        case .aborted: (.aborted, "aborted")
        case .restarted: nil
        }
    }
}

/// What the manager carries out for the machine; each one's outcome is fed back as an `InstallEvent`.
public enum InstallAction: Sendable, Equatable {
    /// Writes the step to the journal (`intent`: the intent itself; `committed`: the commit, node version and
    /// installed version = N), honours crash injection, then reads the operator's control word.
    case record(UpgradeStep)
    /// Runs the app's `stop` for this version.
    case stopApp(version: Int64)
    /// Copies release N and F's state to `gen/N.staging`, then judges the staged release's links.
    case stage
    /// Runs N's TF (if any) on the staged state; `seal`: then fsyncs it and renames it to `gen/N`
    /// (without: a dry run, the staged copy is left as it is).
    case transform(seal: Bool)
    /// Points `current` at this version's generation.
    case switchCurrent(to: Int64)
    /// Runs the app's `start` for this version.
    case startApp(version: Int64)
    /// Runs N's check until it passes or `check-timeout` passes.
    case check
    /// After the commit: reports `running`, tells the SF `done`, prunes old generations, forgets the intent.
    case finishCommit
    /// Puts F back (new app stopped, `current` switched back, old app started, `gen/N*` removed), saves the
    /// record as `outcome` says with `reason`, forgets the intent and reports; `reason` is also logged.
    case rollBack(RollbackOutcome, reason: String)
}

/// The outcome of the last action, or a decision taken elsewhere.
public enum InstallEvent: Sendable, Equatable {
    /// Starts an install; `stopAtPrepared`: stop in `prepared` and wait for a decision.
    case begin(stopAtPrepared: Bool)
    /// The manager started and the journal names this step (`recovery(at:)` says what follows).
    case recovered(at: UpgradeStep)
    /// The action did what it should (a `record`: the operator's word is not `abort`).
    case succeeded
    /// The action failed, for this reason.
    case failed(String)
    /// A `record` was written and the operator's control word is `abort`.
    case operatorAborted
    /// A prepared install is to go on to its commit.
    case commitDecided
    /// A prepared install is to be given up, for this reason.
    case abortDecided(String)
}

/// Where an install stands.
public enum InstallState: Sendable, Equatable {
    /// Nothing begun (or recovered) yet.
    case notBegun
    /// The manager carries this action out; its outcome is awaited.
    case carryingOut(InstallAction)
    /// Staged, dry-run, app still serving F, the journal at `prepared`: waits for `commitDecided` or `abortDecided`.
    case prepared
    /// Done: the node runs N and the intent is forgotten.
    case committed
    /// Done: F was put back and the intent forgotten.
    case rolledBack(RollbackOutcome)
}

/// The install of one upgrade N from installed version F, as a pure machine (docs/DESIGN.md, "The install
/// machine"): `handle(_:)` takes an event and returns the next action (nil: nothing to do until another
/// decision, or done). It knows the order of the steps, when the operator's `abort` counts, what a failure
/// rolls back and what a restart does; the manager only carries actions out and feeds their outcomes back.
/// The actions that cannot fail as events (`record` of `intent` and `committed`, `finishCommit`, `rollBack`)
/// stop the install when they fail: the intent stays, and the next start recovers it.
public struct InstallMachine: Sendable, Equatable {
    /// N, the version being installed.
    public let upgrade: Int64
    /// F, the installed version before (0 = nothing installed).
    public let fromInstalledVersion: Int64
    public private(set) var state: InstallState = .notBegun
    /// Whether the install stops in `prepared` (set by `begin`; cleared by `commitDecided`).
    public private(set) var stopsAtPrepared = false

    public init(upgrade: Int64, fromInstalledVersion: Int64) {
        self.upgrade = upgrade
        self.fromInstalledVersion = fromInstalledVersion
    }

    /// An event that the state does not take (a programming error in the caller).
    public struct Misuse: Error, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// What a restart does when the journal is at `step`.
    public static func recovery(at step: UpgradeStep) -> Recovery {
        switch step {
        case .prepared: .stayPrepared
        case .committed: .finishCommit
        case .intent, .stopped, .staged, .transformed, .switched, .started, .checked: .rollBack
        }
    }

    /// The next action after `event`, or nil when the install waits for a decision (`prepared`) or is done.
    public mutating func handle(_ event: InstallEvent) throws(Misuse) -> InstallAction? {
        let next = try transition(event)
        switch next {
        case .action(let action): state = .carryingOut(action); return action
        case .rest(let rest): state = rest; return nil
        }
    }

    private enum Next { case action(InstallAction), rest(InstallState) }

    private mutating func transition(_ event: InstallEvent) throws(Misuse) -> Next {
        let n = upgrade, f = fromInstalledVersion
        switch (state, event) {
        case (.notBegun, .begin(let stopAtPrepared)):
            stopsAtPrepared = stopAtPrepared
            return .action(.record(.intent))

        case (.notBegun, .recovered(let step)):
            switch Self.recovery(at: step) {
            case .rollBack:
                return .action(.rollBack(.restarted, reason: "manager restarted during upgrade \(n) at step \(step.rawValue); rolled back to \(f)"))
            case .stayPrepared:
                stopsAtPrepared = true
                return .rest(.prepared)
            case .finishCommit:
                return .action(.finishCommit)
            }

        case (.prepared, .commitDecided):
            stopsAtPrepared = false
            return .action(stopTheOldApp)
        case (.prepared, .abortDecided(let reason)):
            return .action(.rollBack(.aborted, reason: "upgrade \(n) aborted: \(reason); rolled back to version \(f)"))

        case (.carryingOut(.record(let step)), .operatorAborted) where step != .intent && step != .committed:
            return .action(.rollBack(.aborted, reason: "upgrade \(n) aborted by the operator: after step \(step.rawValue); rolled back to version \(f)"))
        case (.carryingOut(.record(let step)), .succeeded), (.carryingOut(.record(let step)), .operatorAborted):
            return afterRecording(step)

        case (.carryingOut(.finishCommit), .succeeded):
            return .rest(.committed)
        case (.carryingOut(.rollBack(let outcome, _)), .succeeded):
            return .rest(.rolledBack(outcome))
        case (.carryingOut(let action), .succeeded):
            return .action(afterDoing(action))

        case (.carryingOut(let action), .failed(let reason)) where Self.mayFail(action):
            return .action(.rollBack(.failed, reason: "upgrade \(n) failed: \(reason); rolled back to version \(f)"))

        default:
            throw Misuse(description: "install of \(n): event \(event) in state \(state)")
        }
    }

    /// After a step is recorded: the action that begins the next one.
    private func afterRecording(_ step: UpgradeStep) -> Next {
        switch step {
        case .intent: .action(stopsAtPrepared ? .stage : stopTheOldApp)
        case .prepared: .rest(.prepared)
        case .stopped: .action(.stage)
        case .staged: .action(.transform(seal: true))
        case .transformed: .action(.switchCurrent(to: upgrade))
        case .switched: .action(.startApp(version: upgrade))
        case .started: .action(.check)
        case .checked: .action(.record(.committed))
        case .committed: .action(.finishCommit)
        }
    }

    /// After an action other than `record` succeeded.
    private func afterDoing(_ action: InstallAction) -> InstallAction {
        switch action {
        case .stopApp: .record(.stopped)
        case .stage: stopsAtPrepared ? .transform(seal: false) : .record(.staged)
        case .transform(seal: false): .record(.prepared)
        case .transform(seal: true): .record(.transformed)
        case .switchCurrent: .record(.switched)
        case .startApp: .record(.started)
        case .check: .record(.checked)
        case .record, .finishCommit, .rollBack: preconditionFailure("handled by transition(_:)")
        }
    }

    /// The app is stopped before its state is copied: a request it answered after the copy would be lost.
    /// With nothing installed there is nothing to stop, and the step is recorded at once.
    private var stopTheOldApp: InstallAction {
        fromInstalledVersion > 0 ? .stopApp(version: fromInstalledVersion) : .record(.stopped)
    }

    /// Whether a failure of `action` is an event (rolled back); the others stop the install (see the type).
    private static func mayFail(_ action: InstallAction) -> Bool {
        switch action {
        case .record(.intent), .record(.committed), .finishCommit, .rollBack: false
        default: true
        }
    }
}
