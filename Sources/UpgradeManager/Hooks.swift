#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import UpgradeCore
import UpgradeFiles

/// The SF's answer in the `before` phase.
public enum SchedulingAnswer: Sendable, Equatable {
    /// Exit 0: upgrade now.
    case go
    /// Exit 75 (EX_TEMPFAIL): ask again after this many seconds.
    case notYet(seconds: Double)
    /// Any other ending: an SF failure, retried with back-off.
    case failed(String)
    /// The manager is shutting down.
    case cancelled
}

/// Running the bundle's SF, TF and check and the app's start and stop commands, with the environment the
/// contract promises them (docs/DESIGN.md, "SF contract", "TF, install, check"). Output is captured to
/// `root/ldb/out/` and appended to `self/log` with a prefix such as `sf 3: `.
struct Hooks {
    let config: NodeConfig
    let view: MountView
    let installer: Installer
    let reporter: WhiteboardReporter
    /// `run-as`: programs run as this user; nil = as the manager.
    var user: RunAsUser?
    /// Where each program's process group is recorded while it runs, so that a manager killed with -9 can end
    /// it at its next start.
    var ldb: LocalDatabase?

    /// The fixed `PATH` every program gets.
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    static let tempFailStatus: Int32 = 75
    static let maxRetrySeconds = 3600.0

    var outputDirectory: String { config.root + "/ldb/out" }
    func sfScratch(_ version: Int64) -> String { config.root + "/ldb/sf/\(version)" }
    func retryFile(_ version: Int64) -> String { outputDirectory + "/sf-\(version).retry" }

    /// What every bundle program sees: who, which upgrade, where.
    func baseEnvironment(to version: Int64, from nodeVersion: Int64, attempt: Int, control: String) -> [String: String] {
        [
            "UPGRADEFS_NODE": config.node,
            "UPGRADEFS_CLASS": config.class,
            "UPGRADEFS_FROM": String(nodeVersion),
            "UPGRADEFS_TO": String(version),
            "UPGRADEFS_MOUNT": view.mount,
            "UPGRADEFS_UDB": view.udb,
            "UPGRADEFS_SELF": view.udb + "/nodes/" + config.node,
            "UPGRADEFS_BUNDLE": view.bundle(version),
            "UPGRADEFS_LDB": sfScratch(version),
            "UPGRADEFS_CONTROL": control,
            "UPGRADEFS_ATTEMPT": String(attempt),
        ]
    }

    /// The whole environment of a program (docs/REFERENCE.md, "The environment of SFs, TFs, checks, start and stop"):
    /// a fixed base, the manager's variables node.toml's `pass-env` names, node.toml's `[env]`, then
    /// `upgradefs` (the UPGRADEFS_ variables). Nothing else of the manager's environment.
    func environment(_ upgradefs: [String: String]) -> [String: String] {
        let identity = user ?? RunAsUser.current()
        var environment = ["PATH": Self.defaultPath, "LANG": "C.UTF-8", "HOME": identity.home,
                           "USER": identity.name, "LOGNAME": identity.name]
        let own = ProcessRunner.currentEnvironment()
        for name in config.passEnvironment { if let value = own[name] { environment[name] = value } }
        environment.merge(config.environment) { $1 }
        environment.merge(upgradefs) { $1 }
        return environment
    }

    /// Hands `path` to the `run-as` user (nothing to do without one); with `tree`, what is in it too. Only for
    /// paths whose parent the user cannot write. A tree is handed over children first: a directory becomes the
    /// user's only once everything under it has, so the user can never swap a directory the walk is yet to enter
    /// for a link (links themselves are never followed).
    func giveToUser(_ path: String, tree: Bool = false) {
        guard let user else { return }
        guard let st = try? POSIXFiles.lstatOrNil(path) else { return }
        if tree && POSIXFiles.isDirectory(st) {
            for name in (try? POSIXFiles.listDirectory(path)) ?? [] { giveToUser(path + "/" + name, tree: true) }
        }
        _ = lchown(path, user.uid, user.gid)
    }

    /// Runs `executable` in the bundle directory and appends its output to the log as `label: …` (with
    /// `quietWhenRepeated`, only when it differs from what the last run under `label` said).
    func runBundleProgram(_ executable: String, label: String, version: Int64, environment: [String: String],
                          timeout: Double, quietWhenRepeated: Bool = false, shouldStop: () -> Bool = { false }) -> CommandResult {
        if let problem = Self.leavesBundle(executable, bundle: view.bundle(version)) {
            reporter.log(problem, prefix: label + ": ")
            return CommandResult(ending: .notStarted(problem), output: [])
        }
        var command = Command(executable: executable, environment: self.environment(environment),
                              workingDirectory: view.bundle(version),
                              outputPath: outputDirectory + "/\(label.replacingSpaces()).out", timeoutSeconds: timeout)
        command.environment[ProcessTable.markerName] = config.root
        command.inheritsEnvironment = false
        command.user = user
        return run(command, label: label, quietWhenRepeated: quietWhenRepeated, shouldStop: shouldStop)
    }

    /// Why `executable` may not be run as the bundle's program: it resolves (through links) outside the bundle,
    /// e.g. a link `tf -> /bin/sh`; nil when it stays inside (or does not exist: running it then says so).
    static func leavesBundle(_ executable: String, bundle: String) -> String? {
        guard let resolved = realpath(executable, nil) else { return nil }
        defer { free(resolved) }
        let target = String(cString: resolved)
        guard let top = realpath(bundle, nil) else { return "refusing to run \(executable): cannot resolve \(bundle)" }
        defer { free(top) }
        let prefix = String(cString: top) + "/"
        return target.hasPrefix(prefix) ? nil : "refusing to run \(executable): it resolves to \(target), outside the bundle"
    }

    private func run(_ command: Command, label: String, isAppStart: Bool = false, quietWhenRepeated: Bool = false,
                     shouldStop: () -> Bool) -> CommandResult {
        let previous = quietWhenRepeated ? try? POSIXFiles.readFile(command.outputPath, limit: ProcessRunner.outputTailBytes) : nil
        do {
            let result: CommandResult
            do {
                result = try runRecorded(command, label: label, isAppStart: isAppStart, shouldStop: shouldStop)
            } catch where error.code == ENOEXEC {
                // A script without a #! line: run it as `sh -c ./sf` would, with /bin/sh.
                var script = command
                script.executable = "/bin/sh"
                script.arguments = [command.executable] + command.arguments
                result = try runRecorded(script, label: label, isAppStart: isAppStart, shouldStop: shouldStop)
            }
            if previous != result.output { reporter.log(String(decoding: result.output, as: UTF8.self), prefix: label + ": ") }
            return result
        } catch {
            reporter.log(error.description, prefix: label + ": ")
            return CommandResult(ending: .notStarted(error.description), output: [])
        }
    }

    /// Runs the command with its process group recorded in the LDB from its start to its end, so that a
    /// manager killed meanwhile ends it at its next start (`NodeManager.endLeftoverPrograms`).
    private func runRecorded(_ command: Command, label: String, isAppStart: Bool,
                             shouldStop: () -> Bool) throws(ProcessRunnerError) -> CommandResult {
        var spawned: pid_t?
        defer {
            // What left the group (setsid, a double fork, nohup … &) still carries the marker: it must not
            // outlive the program (its timeout, the manager's stop) and go on changing what comes next.
            if spawned != nil, command.environment[ProcessTable.markerName] != nil,
               let done = ProcessTable.endMarked(root: config.root, whose: "left running by \(label) outside its process group") {
                reporter.log(done, prefix: label + ": ")
            }
            if let pid = spawned, let ldb {
                do { try ldb.forgetHook(pid) } catch { reporter.log("cannot forget process \(pid): \(error)", prefix: label + ": ") }
            }
        }
        return try ProcessRunner.run(command, shouldStop: shouldStop) { pid in
            spawned = pid
            guard let ldb, let record = ProcessTable.record(pid: pid, label: label, isAppStart: isAppStart) else { return }
            do { try ldb.recordHook(record) } catch { reporter.log("cannot record process \(pid): \(error)", prefix: label + ": ") }
        }
    }

    // MARK: SF

    func askScheduler(_ sf: String, version: Int64, environment: [String: String], shouldStop: () -> Bool) -> SchedulingAnswer {
        try? POSIXFiles.makeDirectories(sfScratch(version))
        giveToUser(sfScratch(version))
        try? POSIXFiles.makeDirectories(outputDirectory)
        let retry = retryFile(version)
        unlink(retry)
        if let user {
            // The SF may write its wish here; ldb/out itself stays the manager's.
            let fd = open(retry, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600)
            if fd >= 0 {
                _ = fchown(fd, user.uid, user.gid)
                close(fd)
            }
        }
        var env = environment
        env["UPGRADEFS_PHASE"] = "before"
        env["UPGRADEFS_RETRY_FILE"] = retry
        // An SF that waits is asked again every poll: its log line is written when what it says changes.
        let result = runBundleProgram(sf, label: "sf \(version)", version: version, environment: env,
                                      timeout: config.sfTimeoutSeconds, quietWhenRepeated: true, shouldStop: shouldStop)
        switch result.ending {
        case .exited(0):
            return .go
        case .exited(Self.tempFailStatus):
            return .notYet(seconds: retrySeconds(retry))
        case .cancelled:
            return .cancelled
        default:
            return .failed(result.endingDescription)
        }
    }

    /// The SF's wish (seconds) from the retry file; `poll-interval` when absent or unreadable; at most an hour.
    func retrySeconds(_ path: String) -> Double {
        guard let bytes = try? POSIXFiles.readFile(path, limit: 4096),
              let seconds = Double(String(decoding: bytes, as: UTF8.self).trimmingWhitespace()),
              seconds.isFinite, seconds >= 0
        else { return config.pollIntervalSeconds }
        return min(seconds, Self.maxRetrySeconds)
    }

    /// The `after` phase: the upgrade ended (`done`, `failed`, `aborted`); the exit status is ignored.
    func tellScheduler(_ sf: String, version: Int64, environment: [String: String], result: String) {
        var env = environment
        env["UPGRADEFS_PHASE"] = "after"
        env["UPGRADEFS_RESULT"] = result
        env["UPGRADEFS_RETRY_FILE"] = retryFile(version)
        _ = runBundleProgram(sf, label: "sf \(version)", version: version, environment: env, timeout: config.sfTimeoutSeconds)
    }

    // MARK: App

    /// `start` or `stop` of generation `version`, as `/bin/sh -c` in the generation's directory.
    func app(_ which: String, version: Int64) -> CommandResult {
        let script = which == "start" ? config.start : config.stop
        let env = environment([
            "UPGRADEFS_NODE": config.node,
            "UPGRADEFS_CLASS": config.class,
            "UPGRADEFS_VERSION": String(version),
            "UPGRADEFS_RELEASE": installer.release(version),
            "UPGRADEFS_STATE": installer.state(version),
        ].merging(config.layer?.applicationEnvironment ?? [:]) { $1 })
        try? POSIXFiles.makeDirectories(outputDirectory)
        var command = Command.shell(script, environment: env, workingDirectory: installer.generation(version),
                                    outputPath: outputDirectory + "/\(which)-\(version).out",
                                    timeoutSeconds: which == "start" ? config.startTimeoutSeconds : config.stopTimeoutSeconds)
        // Not for start: what it starts (the app) inherits its environment, and must keep running.
        if which != "start" { command.environment[ProcessTable.markerName] = config.root }
        command.inheritsEnvironment = false
        command.user = user
        return run(command, label: "\(which) \(version)", isAppStart: which == "start", shouldStop: { false })
    }
}

extension String {
    func replacingSpaces() -> String { String(map { $0 == " " ? "-" : $0 }) }
}
