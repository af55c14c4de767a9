#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Logging
import Synchronization
import UpgradeCore
import UpgradeFiles

public struct ManagerError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The node's upgrade manager (docs/DESIGN.md, "The upgrade manager"): learns of upgrades from the mount,
/// asks their SFs when, installs them with their TFs, and keeps the node wholly at one version.
///
/// `UpgradePlanner` decides; this type carries the decisions out. Every method runs on the caller's thread
/// and blocks (programs, fsync); `run()` is the daemon's loop, `recover()` + `tick()` what tests drive.
public final class NodeManager: @unchecked Sendable {
    public let config: NodeConfig
    public let view: MountView
    public let installer: Installer
    public let ldb: LocalDatabase
    public let reporter: WhiteboardReporter
    let hooks: Hooks
    let logger: Logger
    /// Tests only: SIGKILL right after recording this step.
    let crashAt: UpgradeStep?
    let shouldStop: @Sendable () -> Bool
    private let lockDescriptor: Int32
    /// The last problem reading the mount, so one outage is logged once.
    private var lastProblem: String?
    /// Whether the warning that no published upgrade is of the node's class was given (once per run).
    private var warnedAboutClass = false

    public init(config: NodeConfig, mount: String, logger: Logger, crashAt: UpgradeStep? = nil,
                shouldStop: @escaping @Sendable () -> Bool = { false }) throws(ManagerError) {
        self.config = config
        self.view = MountView(mount: mount)
        self.installer = Installer(root: config.root)
        self.reporter = WhiteboardReporter(selfDirectory: view.selfDirectory, logger: logger)
        var hooks = Hooks(config: config, view: view, installer: installer, reporter: reporter)
        if let name = config.runAs {
            guard let user = RunAsUser.lookup(name) else { throw ManagerError("run-as: there is no user \"\(name)\"") }
            guard user.uid == geteuid() || ProcessRunner.setpriv != nil else {
                throw ManagerError("run-as: setpriv (util-linux) is needed to run programs as \(name), and was not found")
            }
            hooks.user = user
        }
        self.logger = logger
        self.crashAt = crashAt
        self.shouldStop = shouldStop
        // The mount's self/ is the node whose key it holds; the manager must report as that node.
        if let link = try? POSIXFiles.readLink(view.selfDirectory) {
            let target = String(decoding: link, as: UTF8.self)
            let name = target.split(separator: "/").last.map(String.init) ?? target
            guard name == config.node else {
                throw ManagerError("\(view.selfDirectory) points at \(target), but node.toml says node = \"\(config.node)\"")
            }
        }
        let ldbDirectory = config.root + "/ldb"
        do {
            for directory in [ldbDirectory + "/sf", ldbDirectory + "/out", installer.generations] {
                try POSIXFiles.makeDirectories(directory)
            }
            lockDescriptor = try POSIXFiles.open(ldbDirectory + "/lock", O_RDWR | O_CREAT, 0o600)
        } catch {
            throw ManagerError("cannot prepare \(config.root): \(error)")
        }
        guard flock(lockDescriptor, LOCK_EX | LOCK_NB) == 0 else {
            close(lockDescriptor)
            throw ManagerError("another manager runs on \(config.root) (\(ldbDirectory)/lock is locked)")
        }
        do {
            ldb = try LocalDatabase(path: ldbDirectory + "/" + LocalDatabase.fileName)
        } catch {
            close(lockDescriptor)
            throw ManagerError("\(error)")
        }
        hooks.ldb = ldb
        self.hooks = hooks
    }

    deinit {
        try? ldb.close()
        close(lockDescriptor)
    }

    // MARK: The daemon

    /// Recovers, then looks at the mount every `poll-interval` until `shouldStop`; a heartbeat thread writes
    /// `self/heartbeat` meanwhile (and retries failed whiteboard writes). `ready` is called once, after recovery
    /// (the intent journal is read and acted on).
    public func run(ready: () -> Void = {}) throws(ManagerError) {
        let stopped = StopFlag()
        let heartbeat = Thread { [reporter, config, shouldStop] in
            while !stopped.isSet && !shouldStop() {
                reporter.heartbeat()
                Self.sleep(config.heartbeatIntervalSeconds) { stopped.isSet || shouldStop() }
            }
        }
        heartbeat.start()
        defer { stopped.set() }
        logger.info("manager started", metadata: ["node.id": "\(config.node)", "node.class": "\(config.class)"])
        do {
            try recover()
            ready()
            while !shouldStop() {
                try tick()
                Self.sleep(config.pollIntervalSeconds, until: shouldStop)
            }
        } catch {
            event("manager stops: \(error)", level: .critical)
            throw ManagerError("\(error)")
        }
        logger.info("manager stopped")
    }

    static func sleep(_ seconds: Double, until stop: () -> Bool) {
        let deadline = monotonicSeconds() + seconds
        while monotonicSeconds() < deadline && !stop() { usleep(50_000) }
    }

    /// On start: an upgrade found in flight is rolled back (which starts the old app) or, when committed,
    /// finished; then the app of `current` is started (start is idempotent; the machine may have rebooted).
    public func recover() throws(LocalDatabaseError) {
        // Who counts this node under an upgrade: its class, as the whiteboard's summaries read it.
        reporter.report(class: config.class)
        // Programs a manager killed with -9 left running would go on changing what is recovered here.
        try endLeftoverPrograms()
        if let intent = try ldb.intent() {
            if intent.step != .committed {
                let f = intent.fromGeneration
                try rollBack(intent.version, from: f, outcome: .restarted,
                             reason: "manager restarted during upgrade \(intent.version) at step \(intent.step.rawValue); rolled back to \(f)")
                return
            }
            try finishCommit(intent.version, fromVersion: intent.fromVersion)
        }
        let installed = try ldb.installedVersion()
        if installed > 0 {
            let result = hooks.app("start", version: installed)
            if !result.succeeded { event("start of version \(installed) failed: \(result.endingDescription)", level: .error) }
        }
    }

    /// Ends the process groups of SFs, TFs, checks, start and stop that the previous run recorded and did
    /// not see end (it was killed), each only while it is still that program's group; waits until they are
    /// gone. The running app is never one of them (a `start` that returned is left alone).
    func endLeftoverPrograms() throws(LocalDatabaseError) {
        for hook in try ldb.hooks() {
            if let done = ProcessTable.end(hook) { event(done, level: .warning) }
            try ldb.forgetHook(hook.pgid)
        }
        // One spawned just before the kill may not have been recorded yet: found by its environment's marker.
        if let done = ProcessTable.endMarked(root: config.root) { event(done, level: .warning) }
    }

    // MARK: One pass

    /// Looks at the mount once and does what the planner says, until it says rest. Returns the state reported
    /// (nil when the manager is stopping: nothing new is begun then).
    @discardableResult
    public func tick() throws(LocalDatabaseError) -> NodeState? {
        while !shouldStop() {
            let nodeVersion = try ldb.nodeVersion()
            let installed = try ldb.installedVersion()
            let upgrades = publishedUpgrades(above: nodeVersion)
            var records: [Int64: UpgradeRecord] = [:]
            for record in try ldb.records() where record.version > nodeVersion { records[record.version] = record }
            let decision = UpgradePlanner.decide(class: config.class, installed: installed, upgrades: upgrades,
                                                 records: records, now: Date().timeIntervalSince1970)
            guard let state = try carryOut(decision, nodeVersion: nodeVersion, records: records) else { continue }
            return state
        }
        return nil
    }

    /// The published upgrades above the node's version, up to the first one of its class the planner must
    /// act on (the rest cannot matter yet). Stops early at a bundle it cannot read.
    private func publishedUpgrades(above nodeVersion: Int64) -> [PublishedUpgrade] {
        var upgrades: [PublishedUpgrade] = []
        var problem: String?
        defer { noteProblem(problem) }
        let latest: Int64
        do {
            latest = try view.latest()
        } catch {
            problem = "cannot read the published version: \(error)"
            return []
        }
        guard latest > nodeVersion else { return [] }
        var listed: Set<Int64>?? // versions/ as listed once in this pass (nil inside: it could not be listed)
        var version = nodeVersion
        while version < latest {
            version += 1
            let manifest: UpgradeManifest
            do {
                manifest = try view.manifest(version)
            } catch {
                // Never published (versions/ lists newer ones but not this one) is a gap to step over; anything
                // else (an unreadable bundle, versions/ not listable) may pass, and stops here. A gap is passed
                // over in one step up to the next listed version, however wide (1, then 10^12).
                if listed == nil { listed = .some(try? view.publishedVersions()) }
                if let versions = listed ?? nil, !versions.contains(version),
                   let next = versions.filter({ $0 > version }).min() {
                    version = next - 1
                    upgrades.append(.unpublished(version))
                    continue
                }
                problem = "cannot read upgrade \(version): \(error)"
                break
            }
            var control = ControlWord.go
            if manifest.class == config.class {
                let read = view.control(version)
                control = read.word
                if let readProblem = read.problem { problem = readProblem }
            }
            upgrades.append(PublishedUpgrade(version: version, class: manifest.class, fromVersion: manifest.fromVersion, control: control))
            if manifest.class == config.class && control != .abort { break }
        }
        return upgrades
    }

    /// A mistyped `class` passes over every upgrade and looks idle: say so once when upgrades were published
    /// and none has ever been of the node's class.
    private func warnIfNoUpgradeIsOfTheClass(nodeVersion: Int64) throws(LocalDatabaseError) {
        guard !warnedAboutClass, try ldb.records().allSatisfy({ $0.status == .skipped }) else { return }
        warnedAboutClass = true
        let recent = max(1, nodeVersion - 9)...nodeVersion
        let classes = Set(recent.compactMap { try? view.manifest($0).class }).sorted()
        let seen = classes.isEmpty ? "" : " (\(Int64(recent.count) == nodeVersion ? "they are" : "the last \(recent.count) are") of class \(classes.joined(separator: ", ")))"
        event("no published upgrade (versions 1 to \(nodeVersion)) is of class \"\(config.class)\"\(seen): is class in node.toml right?",
              level: .warning)
    }

    private func noteProblem(_ problem: String?) {
        if problem != lastProblem, let problem { event(problem, level: .warning) }
        lastProblem = problem
    }

    /// Does what `decision` says; returns the state to rest in, or nil to decide again at once.
    private func carryOut(_ decision: Decision, nodeVersion: Int64, records: [Int64: UpgradeRecord]) throws(LocalDatabaseError) -> NodeState? {
        func record(_ n: Int64) -> UpgradeRecord { records[n] ?? UpgradeRecord(version: n) }
        switch decision {
        case .rest(let state, let upgrade):
            reporter.report(state: state, version: nodeVersion, upgrade: upgrade)
            if state == .idle && nodeVersion > 0 { try warnIfNoUpgradeIsOfTheClass(nodeVersion: nodeVersion) }
            return state

        case .skip(let n):
            try ldb.skip(version: n)
            event("upgrade \(n) is for another class: passed over, now at version \(n)")
            return nil

        case .skipUnpublished(let n):
            try ldb.skip(version: n)
            if n == nodeVersion + 1 {
                event("version \(n) was never published (versions/ has newer ones but not \(n)): passed over, now at version \(n)")
            } else {
                event("versions \(nodeVersion + 1) to \(n) were never published (versions/ has newer ones but not these): passed over, now at version \(n)")
            }
            return nil

        case .abort(let n):
            var r = record(n)
            r.status = .aborted
            try ldb.save(r)
            event("upgrade \(n) aborted by the operator; staying at version \(nodeVersion)")
            tellScheduler(n, nodeVersion: nodeVersion, attempt: r.attempts, result: "aborted")
            return nil

        case .resume(let n):
            var r = record(n)
            r.status = .pending
            try ldb.save(r)
            event("upgrade \(n): the operator took the abort back; it is pending again")
            return nil

        case .retry(let n):
            let r = UpgradeRecord(version: n, status: .pending, attempts: record(n).attempts)
            try ldb.save(r)
            event("upgrade \(n): the operator asked for a retry")
            return nil

        case .fail(let n, let reason):
            var r = record(n)
            r.status = .failed
            r.lastError = reason
            r.controlAtFailure = view.control(n).word.rawValue
            try ldb.save(r)
            event("upgrade \(n) failed: \(reason)", level: .error)
            return nil

        case .schedule(let n):
            return try schedule(n, nodeVersion: nodeVersion, record: record(n))
        }
    }

    /// Asks N's SF (if it has one) and upgrades on its go.
    private func schedule(_ n: Int64, nodeVersion: Int64, record: UpgradeRecord) throws(LocalDatabaseError) -> NodeState? {
        let manifest: UpgradeManifest
        do { manifest = try view.manifest(n) } catch { return .waiting } // read just before; cannot fail
        let control = view.control(n).word
        guard let sf = view.hook(manifest.sf, default: "sf", in: n) else {
            try upgrade(n, manifest: manifest, nodeVersion: nodeVersion, record: record)
            return nil
        }
        reporter.report(state: .waiting, version: nodeVersion, upgrade: n)
        let environment = hooks.baseEnvironment(to: n, from: nodeVersion, attempt: record.attempts + 1, control: control.rawValue)
        var r = record
        let answer = hooks.askScheduler(sf, version: n, environment: environment, shouldStop: shouldStop)
        let now = Date().timeIntervalSince1970 // waits count from the SF's end
        switch answer {
        case .go:
            r.sfFailures = 0
            try upgrade(n, manifest: manifest, nodeVersion: nodeVersion, record: r)
            return nil
        case .notYet(let seconds):
            r.sfFailures = 0
            r.nextRunAt = now + seconds
            try ldb.save(r)
        case .failed(let reason):
            r.sfFailures += 1
            let delay = UpgradePlanner.backoffSeconds(failures: r.sfFailures)
            r.nextRunAt = now + delay
            r.lastError = "sf: \(reason)"
            try ldb.save(r)
            event("sf \(n) failed (\(reason)); asking again in \(formatSeconds(delay)) s", level: .warning)
        case .cancelled:
            break
        }
        reporter.report(state: .waiting, version: nodeVersion, upgrade: n)
        return .waiting
    }

    private func tellScheduler(_ n: Int64, nodeVersion: Int64, attempt: Int, result: String) {
        guard let manifest = try? view.manifest(n), let sf = view.hook(manifest.sf, default: "sf", in: n) else { return }
        let environment = hooks.baseEnvironment(to: n, from: nodeVersion, attempt: max(attempt, 1),
                                                control: view.control(n).word.rawValue)
        hooks.tellScheduler(sf, version: n, environment: environment, result: result)
    }

    // MARK: The upgrade itself

    /// Why an upgrade stopped before its commit.
    private struct StepFailure: Error {
        let reason: String
        var aborted = false
    }

    /// The steps of docs/DESIGN.md ("TF, install, check"), recorded as `UpgradeStep`s; on a failure, the rollback.
    private func upgrade(_ n: Int64, manifest: UpgradeManifest, nodeVersion: Int64, record: UpgradeRecord) throws(LocalDatabaseError) {
        let f = try ldb.installedVersion()
        var r = record
        r.attempts += 1
        r.status = .pending
        try ldb.begin(r, fromGeneration: f, fromVersion: nodeVersion)
        reached(.intent)
        reporter.report(state: .upgrading, version: nodeVersion, upgrade: n)
        event("upgrade \(n): starting (attempt \(r.attempts)) from version \(f)")

        var environment = hooks.baseEnvironment(to: n, from: nodeVersion, attempt: r.attempts, control: view.control(n).word.rawValue)
        do throws(StepFailure) {
            // The app stops before its state is copied: a request it answered after the copy would be lost.
            if f > 0 {
                let result = hooks.app("stop", version: f)
                guard result.succeeded else { throw StepFailure(reason: "stop of version \(f): \(result.endingDescription)") }
            }
            try mark(.stopped, upgrade: n)

            try step("stage") { () throws(FileError) in
                try installer.stage(version: n, payload: view.bundle(n) + "/" + manifest.payload, from: f)
            }
            // What is installed is judged, not the bundle: a link may stay in the bundle and leave the payload.
            var linkProblems: [String] = []
            try step("stage") { () throws(FileError) in linkProblems = try installer.stagedLinkProblems(version: n) }
            guard linkProblems.isEmpty else {
                throw StepFailure(reason: "refusing to install release \(n): " + linkProblems.joined(separator: "; "))
            }
            hooks.giveToUser(installer.staging(n) + "/state", tree: true) // run-as: the TF and the app write it
            try mark(.staged, upgrade: n)

            if let tf = view.hook(manifest.tf, default: "tf", in: n) {
                environment["UPGRADEFS_OLD_STATE"] = f > 0 ? installer.state(f) : nil
                environment["UPGRADEFS_STATE"] = installer.staging(n) + "/state"
                environment["UPGRADEFS_RELEASE"] = installer.staging(n) + "/release"
                let result = hooks.runBundleProgram(tf, label: "tf \(n)", version: n, environment: environment,
                                                    timeout: config.tfTimeoutSeconds)
                guard result.succeeded else { throw StepFailure(reason: "tf: \(result.endingDescription)") }
            }
            try step("seal") { () throws(FileError) in try installer.seal(version: n) }
            try mark(.transformed, upgrade: n)

            try step("switch") { () throws(FileError) in try installer.switchCurrent(to: n) }
            try mark(.switched, upgrade: n)

            let start = hooks.app("start", version: n)
            guard start.succeeded else { throw StepFailure(reason: "start of version \(n): \(start.endingDescription)") }
            try mark(.started, upgrade: n)

            if let check = view.hook(manifest.check, default: "check", in: n) {
                environment["UPGRADEFS_OLD_STATE"] = f > 0 ? installer.state(f) : nil
                environment["UPGRADEFS_STATE"] = installer.state(n)
                environment["UPGRADEFS_RELEASE"] = installer.release(n)
                try runCheck(check, upgrade: n, environment: environment)
            }
            try mark(.checked, upgrade: n)
        } catch {
            try rollBack(n, from: f, outcome: error.aborted ? .aborted : .failed,
                         reason: "upgrade \(n) \(error.aborted ? "aborted by the operator" : "failed"): \(error.reason); rolled back to version \(f)")
            return
        }
        try ldb.commit(version: n)
        reached(.committed)
        try finishCommit(n, fromVersion: nodeVersion)
    }

    private func step(_ name: String, _ body: () throws(FileError) -> Void) throws(StepFailure) {
        do { try body() } catch { throw StepFailure(reason: "\(name): \(error)") }
    }

    /// Records a step in the intent journal, honours crash injection, and stops the upgrade if the operator
    /// aborted it meanwhile (only before the commit).
    private func mark(_ step: UpgradeStep, upgrade n: Int64) throws(StepFailure) {
        do { try ldb.recordStep(step) } catch { throw StepFailure(reason: "\(error)") }
        reached(step)
        if step < .committed, view.control(n).word == .abort {
            throw StepFailure(reason: "after step \(step.rawValue)", aborted: true)
        }
    }

    /// The check, every second until it exits 0 or `check-timeout` passes.
    private func runCheck(_ check: String, upgrade n: Int64, environment: [String: String]) throws(StepFailure) {
        let deadline = monotonicSeconds() + config.checkTimeoutSeconds
        var attempts = 0
        while true {
            attempts += 1
            let remaining = max(0.1, deadline - monotonicSeconds())
            let result = hooks.runBundleProgram(check, label: "check \(n)", version: n, environment: environment, timeout: remaining)
            if result.succeeded { return }
            if monotonicSeconds() + 1 >= deadline {
                throw StepFailure(reason: "check did not pass within \(formatSeconds(config.checkTimeoutSeconds)) s (\(attempts) runs, last: \(result.endingDescription))")
            }
            Self.sleep(1) { false }
        }
    }

    /// After the commit: report, tell the SF, drop old generations, forget the intent.
    private func finishCommit(_ n: Int64, fromVersion: Int64) throws(LocalDatabaseError) {
        reporter.report(state: .running, version: n, upgrade: nil)
        event("upgrade \(n): done, running version \(n)")
        tellScheduler(n, nodeVersion: fromVersion, attempt: (try ldb.record(n))?.attempts ?? 1, result: "done")
        do { try installer.prune(current: n) } catch { event("cannot remove old generations: \(error)", level: .warning) }
        try ldb.finish()
    }

    enum Outcome {
        case failed, aborted
        /// The manager died during the upgrade: it goes back to pending.
        case restarted
    }

    /// Puts generation `f` back: the new app stopped if it runs, `current` switched back, the old app
    /// started, generation N removed, the record saved and the intent forgotten in one transaction.
    /// Safe to repeat: a crash in here is recovered by running it again.
    private func rollBack(_ n: Int64, from f: Int64, outcome: Outcome, reason: String) throws(LocalDatabaseError) {
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
        switch outcome {
        case .failed:
            r.status = .failed
            r.controlAtFailure = view.control(n).word.rawValue
        case .aborted:
            r.status = .aborted
        case .restarted:
            r.status = .pending
            r.nextRunAt = 0
        }
        try ldb.finish(saving: r)
        event(reason, level: outcome == .restarted ? .warning : .error)
        switch outcome {
        case .failed:
            reporter.report(state: .failed, version: nodeVersion, upgrade: n)
            tellScheduler(n, nodeVersion: nodeVersion, attempt: r.attempts, result: "failed")
        case .aborted:
            reporter.report(state: .aborted, version: nodeVersion, upgrade: n)
            tellScheduler(n, nodeVersion: nodeVersion, attempt: r.attempts, result: "aborted")
        case .restarted:
            break
        }
    }

    // MARK: Helpers

    /// An event for people: one line in `self/log` and in the manager's own log.
    func event(_ text: String, level: Logger.Level = .info) {
        logger.log(level: level, "\(text)")
        reporter.log(text)
    }

    /// Fault injection for tests (`UPGRADEFS_MANAGER_CRASH_AT`): dies at once, as a power cut would.
    private func reached(_ step: UpgradeStep) {
        guard step == crashAt else { return }
        logger.critical("UPGRADEFS_MANAGER_CRASH_AT=\(step.rawValue): killing myself")
        kill(getpid(), SIGKILL)
    }
}

/// A flag one thread sets and others poll.
public final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    public init() {}
    public var isSet: Bool { value.load(ordering: .acquiring) }
    public func set() { value.store(true, ordering: .releasing) }
}
