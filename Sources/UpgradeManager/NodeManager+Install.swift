import Logging
import UpgradeCore
import UpgradeFiles

/// The install of one upgrade (docs/DESIGN.md, "The install machine"): `InstallMachine` decides every step,
/// this extension carries its actions out and feeds their outcomes back.
extension NodeManager {
    /// What the actions of one install need besides the machine.
    struct InstallJob {
        var machine: InstallMachine
        /// The node version before the install (the SF's `UPGRADEFS_FROM`).
        let fromNodeVersion: Int64
        /// Bundle N's manifest; nil when only recovery actions can follow (a restart reads no bundle).
        let manifest: UpgradeManifest?
        /// The environment of the TF and the check (set when the intent is recorded).
        var environment: [String: String] = [:]
        /// The record saved with the intent (attempt counted).
        var record: UpgradeRecord

        var n: Int64 { machine.upgrade }
        var f: Int64 { machine.fromInstalledVersion }
    }

    /// The one-call install of N: straight through from `intent` to `committed`, or rolled back.
    func upgrade(_ n: Int64, manifest: UpgradeManifest, nodeVersion: Int64, record: UpgradeRecord) throws(LocalDatabaseError) {
        try install(n, manifest: manifest, nodeVersion: nodeVersion, record: record, stopAtPrepared: false)
    }

    /// Begins the install of N from the installed version (`stopAtPrepared`: it rests in `prepared`) and
    /// carries it out; the state it ends in.
    @discardableResult
    func install(_ n: Int64, manifest: UpgradeManifest, nodeVersion: Int64, record: UpgradeRecord,
                 stopAtPrepared: Bool) throws(LocalDatabaseError) -> InstallState {
        var job = InstallJob(machine: InstallMachine(upgrade: n, fromInstalledVersion: try ldb.installedVersion()),
                             fromNodeVersion: nodeVersion, manifest: manifest, record: record)
        return try drive(&job, .begin(stopAtPrepared: stopAtPrepared))
    }

    /// Goes on with the install the journal names: recovered as `InstallMachine.recovery(at:)` says, then, when it
    /// is prepared and a `decision` (commit or abort) is given, on from there.
    func resumeInstall(_ intent: UpgradeIntent, deciding decision: InstallEvent? = nil) throws(LocalDatabaseError) -> InstallState {
        let n = intent.version
        var job = InstallJob(machine: InstallMachine(upgrade: n, fromInstalledVersion: intent.fromInstalledVersion),
                             fromNodeVersion: intent.fromNodeVersion,
                             manifest: decision == nil ? nil : try? view.manifest(n), // recovery reads no bundle
                             record: try ldb.record(n) ?? UpgradeRecord(version: n))
        let state = try drive(&job, .recovered(at: intent.step))
        guard let decision, state == .prepared else { return state }
        job.environment = hooks.baseEnvironment(to: n, from: job.fromNodeVersion, attempt: max(job.record.attempts, 1),
                                                control: view.control(n).word.rawValue)
        return try drive(&job, decision)
    }

    /// The loop: ask the machine, carry the action out, feed the outcome back, until it rests.
    private func drive(_ job: inout InstallJob, _ first: InstallEvent) throws(LocalDatabaseError) -> InstallState {
        var event = first
        while true {
            let action: InstallAction?
            do {
                action = try job.machine.handle(event)
            } catch {
                // Only the outcomes of the machine's own actions are fed back: a refusal is a bug here.
                preconditionFailure("\(error)")
            }
            guard let action else { return job.machine.state }
            event = try carryOut(action, &job)
        }
    }

    // MARK: The prepared install (for the two-phase install to come)

    /// Prepares upgrade N and stops in `prepared`: release N staged and its links judged, the TF run on a copy
    /// of the installed version's state while its app still serves, the journal at `prepared`. A restart leaves
    /// it so (`recover()`), and `tick()` begins nothing meanwhile; `commitPrepared()` or `abortPrepared(reason:)`
    /// ends it. The caller decides that N is due (the planner's `schedule`); no other install may be in flight.
    /// - Returns: `.prepared`, or `.rolledBack` when a step failed or the operator aborted N.
    public func prepare(_ n: Int64) throws(ManagerError) -> InstallState {
        do {
            if let intent = try ldb.intent() {
                throw ManagerError("cannot prepare \(n): upgrade \(intent.version) is in flight (step \(intent.step.rawValue))")
            }
            let manifest = try view.manifest(n)
            return try install(n, manifest: manifest, nodeVersion: try ldb.nodeVersion(),
                               record: try ldb.record(n) ?? UpgradeRecord(version: n), stopAtPrepared: true)
        } catch let error as ManagerError {
            throw error
        } catch {
            throw ManagerError("\(error)")
        }
    }

    /// The prepared install goes on to its commit: the app stopped, N staged again from the state it leaves,
    /// transformed, switched, started and checked, as the one-call install does from `stopped`.
    /// - Returns: `.committed`, or `.rolledBack` when a step failed or the operator aborted N.
    public func commitPrepared() throws(ManagerError) -> InstallState {
        // The bundle is read before the app is stopped: when it cannot be, the install stays prepared.
        if let intent = try? ldb.intent(), intent.step == .prepared {
            do { _ = try view.manifest(intent.version) } catch {
                throw ManagerError("cannot commit upgrade \(intent.version), it stays prepared: \(error)")
            }
        }
        return try decide(.commitDecided)
    }

    /// The prepared install is given up: `gen/N*` removed, the upgrade `aborted` with `reason`; the rollback
    /// starts the installed version's app, which still serves (start is idempotent, docs/DESIGN.md).
    public func abortPrepared(reason: String) throws(ManagerError) -> InstallState {
        try decide(.abortDecided(reason))
    }

    private func decide(_ decision: InstallEvent) throws(ManagerError) -> InstallState {
        do {
            guard let intent = try ldb.intent(), intent.step == .prepared else { throw ManagerError("no upgrade is prepared") }
            return try resumeInstall(intent, deciding: decision)
        } catch let error as ManagerError {
            throw error
        } catch {
            throw ManagerError("\(error)")
        }
    }

    // MARK: The actions

    private func carryOut(_ action: InstallAction, _ job: inout InstallJob) throws(LocalDatabaseError) -> InstallEvent {
        let n = job.n, f = job.f
        switch action {
        case .record(let step):
            return try record(step, &job)

        case .stopApp(let version):
            let result = hooks.app("stop", version: version)
            return result.succeeded ? .succeeded : .failed("stop of version \(version): \(result.endingDescription)")

        case .stage:
            guard let manifest = job.manifest else { return .failed("stage: cannot read upgrade.toml of \(n)") }
            var linkProblems: [String] = []
            do {
                try installer.stage(version: n, payload: view.bundle(n) + "/" + manifest.payload, from: f)
                // What is installed is judged, not the bundle: a link may stay in the bundle and leave the payload.
                linkProblems = try installer.stagedLinkProblems(version: n)
            } catch {
                return .failed("stage: \(error)")
            }
            guard linkProblems.isEmpty else { return .failed("refusing to install release \(n): " + linkProblems.joined(separator: "; ")) }
            hooks.giveToUser(installer.staging(n) + "/state", tree: true) // run-as: the TF and the app write it
            return .succeeded

        case .transform(let seal):
            if let tf = view.hook(job.manifest?.tf, default: "tf", in: n) {
                job.environment["UPGRADEFS_OLD_STATE"] = f > 0 ? installer.state(f) : nil
                job.environment["UPGRADEFS_STATE"] = installer.staging(n) + "/state"
                job.environment["UPGRADEFS_RELEASE"] = installer.staging(n) + "/release"
                let result = hooks.runBundleProgram(tf, label: "tf \(n)", version: n, environment: job.environment,
                                                    timeout: config.tfTimeoutSeconds)
                guard result.succeeded else { return .failed("tf: \(result.endingDescription)") }
            }
            do {
                // A prepared install's staging is made durable before `prepared` is recorded; sealing does that too.
                if seal { try installer.seal(version: n) } else { try installer.fsyncTree(installer.staging(n)) }
            } catch {
                return .failed("\(seal ? "seal" : "sync"): \(error)")
            }
            return .succeeded

        case .switchCurrent(let version):
            do { try installer.switchCurrent(to: version) } catch { return .failed("switch: \(error)") }
            return .succeeded

        case .startApp(let version):
            let result = hooks.app("start", version: version)
            return result.succeeded ? .succeeded : .failed("start of version \(version): \(result.endingDescription)")

        case .check:
            guard let check = view.hook(job.manifest?.check, default: "check", in: n) else { return .succeeded }
            job.environment["UPGRADEFS_OLD_STATE"] = f > 0 ? installer.state(f) : nil
            job.environment["UPGRADEFS_STATE"] = installer.state(n)
            job.environment["UPGRADEFS_RELEASE"] = installer.release(n)
            return runCheck(check, upgrade: n, environment: job.environment).map { .failed($0) } ?? .succeeded

        case .finishCommit:
            try finishCommit(n, fromNodeVersion: job.fromNodeVersion)
            return .succeeded

        case .rollBack(let outcome, let reason):
            try rollBack(n, from: f, outcome: outcome, reason: reason)
            return .succeeded
        }
    }

    /// Writes `step` to the journal and honours crash injection; then the operator's word decides whether
    /// the install goes on (`InstallMachine` says for which steps it counts).
    private func record(_ step: UpgradeStep, _ job: inout InstallJob) throws(LocalDatabaseError) -> InstallEvent {
        let n = job.n
        switch step {
        case .intent:
            job.record.attempts += 1
            job.record.status = .pending
            try ldb.begin(job.record, fromInstalledVersion: job.f, fromNodeVersion: job.fromNodeVersion)
            reached(.intent)
            reporter.report(state: .upgrading, version: job.fromNodeVersion, upgrade: n)
            event("upgrade \(n): starting (attempt \(job.record.attempts)) from version \(job.f)")
            job.environment = hooks.baseEnvironment(to: n, from: job.fromNodeVersion, attempt: job.record.attempts,
                                                    control: view.control(n).word.rawValue)
            return .succeeded
        case .committed:
            try ldb.commit(version: n)
            reached(.committed)
            return .succeeded
        case .prepared, .stopped, .staged, .transformed, .switched, .started, .checked:
            do { try ldb.recordStep(step) } catch { return .failed("\(error)") }
            reached(step)
            if step == .prepared { event("upgrade \(n): prepared, version \(job.f) still runs") }
            return view.control(n).word == .abort ? .operatorAborted : .succeeded
        }
    }

    /// The check, every second until it exits 0 or `check-timeout` passes; nil when it passed, else why not.
    private func runCheck(_ check: String, upgrade n: Int64, environment: [String: String]) -> String? {
        let deadline = monotonicSeconds() + config.checkTimeoutSeconds
        var attempts = 0
        while true {
            attempts += 1
            let remaining = max(0.1, deadline - monotonicSeconds())
            let result = hooks.runBundleProgram(check, label: "check \(n)", version: n, environment: environment, timeout: remaining)
            if result.succeeded { return nil }
            if monotonicSeconds() + 1 >= deadline {
                return "check did not pass within \(formatSeconds(config.checkTimeoutSeconds)) s (\(attempts) runs, last: \(result.endingDescription))"
            }
            Self.sleep(1) { false }
        }
    }

    /// After the commit: report, tell the SF, drop old generations, forget the intent.
    private func finishCommit(_ n: Int64, fromNodeVersion: Int64) throws(LocalDatabaseError) {
        reporter.report(state: .running, version: n, upgrade: nil)
        event("upgrade \(n): done, running version \(n)")
        tellScheduler(n, nodeVersion: fromNodeVersion, attempt: (try ldb.record(n))?.attempts ?? 1, result: "done")
        do { try installer.prune(current: n) } catch { event("cannot remove old generations: \(error)", level: .warning) }
        try ldb.finish()
    }

    /// Puts generation `f` back: the new app stopped if it runs, `current` switched back, the old app
    /// started, generation N removed, the record saved and the intent forgotten in one transaction.
    /// Safe to repeat: a crash in here is recovered by running it again.
    private func rollBack(_ n: Int64, from f: Int64, outcome: RollbackOutcome, reason: String) throws(LocalDatabaseError) {
        let nodeVersion = try ldb.nodeVersion()
        reporter.report(state: .upgrading, version: nodeVersion, upgrade: n)
        do {
            let current = try installer.currentGeneration()
            if current != f {
                if current == n {
                    let stop = hooks.app("stop", version: n)
                    if !stop.succeeded { event("rollback of \(n): stop of version \(n) failed: \(stop.endingDescription)", level: .error) }
                }
                try installer.switchCurrent(to: f)
            }
        } catch {
            // Without `current` back at f the node is in between: stop here, the intent stays for a restart.
            event("rollback of \(n) cannot switch back to version \(f): \(error)", level: .critical)
            throw LocalDatabaseError(path: installer.currentLink, operation: "rollback", message: "\(error)")
        }
        if f > 0 {
            let start = hooks.app("start", version: f)
            if !start.succeeded { event("rollback of \(n): start of version \(f) failed: \(start.endingDescription)", level: .error) }
        }
        do { try installer.discard(version: n) } catch { event("rollback of \(n): \(error)", level: .warning) }

        var r = try ldb.record(n) ?? UpgradeRecord(version: n)
        r.lastError = reason
        r.status = outcome.recordStatus
        if outcome == .failed { r.controlAtFailure = view.control(n).word.rawValue }
        if outcome == .restarted { r.nextRunAt = 0 }
        try ldb.finish(saving: r)
        event(reason, level: outcome == .restarted ? .warning : .error)
        if let ending = outcome.ending {
            reporter.report(state: ending.state, version: nodeVersion, upgrade: n)
            tellScheduler(n, nodeVersion: nodeVersion, attempt: r.attempts, result: ending.schedulerResult)
        }
    }
}
