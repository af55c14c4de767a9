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
/// `UpgradePlanner` decides which upgrade is next and `InstallMachine` every step of its install; this type
/// carries their decisions out (the install: `NodeManager+Install.swift`). Every method runs on the caller's thread
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

    /// On start: an upgrade found in flight is recovered as `InstallMachine.recovery(at:)` says (rolled back,
    /// which starts the old app; finished, when committed; left prepared); then the app of `current` is started
    /// (start is idempotent; the machine may have rebooted).
    public func recover() throws(LocalDatabaseError) {
        // Who counts this node under an upgrade: its class, as the whiteboard's summaries read it.
        reporter.report(class: config.class)
        // Programs a manager killed with -9 left running would go on changing what is recovered here.
        try endLeftoverPrograms()
        if let intent = try ldb.intent() {
            if case .rolledBack = try resumeInstall(intent) { return }
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
        // A prepared install waits for a decision taken elsewhere: nothing new is begun meanwhile.
        if let intent = try ldb.intent(), intent.step == .prepared {
            reporter.report(state: .upgrading, version: intent.fromNodeVersion, upgrade: intent.version)
            return .upgrading
        }
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

    func tellScheduler(_ n: Int64, nodeVersion: Int64, attempt: Int, result: String) {
        guard let manifest = try? view.manifest(n), let sf = view.hook(manifest.sf, default: "sf", in: n) else { return }
        let environment = hooks.baseEnvironment(to: n, from: nodeVersion, attempt: max(attempt, 1),
                                                control: view.control(n).word.rawValue)
        hooks.tellScheduler(sf, version: n, environment: environment, result: result)
    }

    // MARK: Helpers

    /// An event for people: one line in `self/log` and in the manager's own log.
    func event(_ text: String, level: Logger.Level = .info) {
        logger.log(level: level, "\(text)")
        reporter.log(text)
    }

    /// Fault injection for tests (`UPGRADEFS_MANAGER_CRASH_AT`): dies at once, as a power cut would.
    func reached(_ step: UpgradeStep) {
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
