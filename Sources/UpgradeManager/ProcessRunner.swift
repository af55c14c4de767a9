#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import UpgradeFiles

/// One program to run: what, where, with which environment, where its output goes, and for how long.
public struct Command: Sendable {
    public var executable: String
    public var arguments: [String]
    /// Added to (and overriding) the manager's own environment, or the whole environment when
    /// `inheritsEnvironment` is false.
    public var environment: [String: String]
    public var inheritsEnvironment = true
    /// Run as this user (through util-linux's `setpriv`: its uid and primary gid, no supplementary groups).
    public var user: RunAsUser?
    public var workingDirectory: String?
    /// stdout and stderr both go to this file (truncated first, appended to; emptied again whenever it grows past
    /// `ProcessRunner.maxOutputBytes` while the command runs).
    public var outputPath: String
    public var timeoutSeconds: Double

    public init(executable: String, arguments: [String] = [], environment: [String: String] = [:],
                workingDirectory: String? = nil, outputPath: String, timeoutSeconds: Double) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.outputPath = outputPath
        self.timeoutSeconds = timeoutSeconds
    }

    /// `/bin/sh -c SCRIPT`.
    public static func shell(_ script: String, environment: [String: String], workingDirectory: String? = nil,
                             outputPath: String, timeoutSeconds: Double) -> Command {
        Command(executable: "/bin/sh", arguments: ["-c", script], environment: environment,
                workingDirectory: workingDirectory, outputPath: outputPath, timeoutSeconds: timeoutSeconds)
    }
}

/// The user `run-as` names, as the password database has it.
public struct RunAsUser: Sendable, Equatable {
    public let name: String
    public let uid: uid_t
    public let gid: gid_t
    public let home: String

    public init(name: String, uid: uid_t, gid: gid_t, home: String) {
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home
    }

    /// `getpwnam`; nil when there is no such user.
    public static func lookup(_ name: String) -> RunAsUser? {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16 << 10)
        guard getpwnam_r(name, &entry, &buffer, buffer.count, &result) == 0, let found = result?.pointee else { return nil }
        return RunAsUser(name: name, uid: found.pw_uid, gid: found.pw_gid, home: String(cString: found.pw_dir))
    }

    /// The user the manager runs as.
    public static func current() -> RunAsUser {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>?
        var buffer = [CChar](repeating: 0, count: 16 << 10)
        let uid = geteuid()
        guard getpwuid_r(uid, &entry, &buffer, buffer.count, &result) == 0, let found = result?.pointee else {
            return RunAsUser(name: String(uid), uid: uid, gid: getegid(), home: "/")
        }
        return RunAsUser(name: String(cString: found.pw_name), uid: uid, gid: found.pw_gid, home: String(cString: found.pw_dir))
    }
}

/// How a command ended, and what it printed.
public struct CommandResult: Sendable, Equatable {
    public enum Ending: Sendable, Equatable {
        case exited(Int32)
        case signaled(Int32)
        /// Ran past its timeout; its whole process group was killed.
        case timedOut(seconds: Double)
        /// The manager is shutting down; its whole process group was killed.
        case cancelled
        /// posix_spawn failed (no such file, not executable, …).
        case notStarted(String)
    }

    public let ending: Ending
    /// The last (at most 64 KiB) bytes of stdout+stderr.
    public let output: [UInt8]
    /// Bytes of output dropped because the command wrote more than `ProcessRunner.maxOutputBytes`.
    public var droppedBytes: Int64 = 0

    public init(ending: Ending, output: [UInt8], droppedBytes: Int64 = 0) {
        self.ending = ending
        self.output = output
        self.droppedBytes = droppedBytes
    }

    public var succeeded: Bool { ending == .exited(0) }

    /// For logs: "exit status 3", "killed by signal 9", "timed out after 60 s".
    public var endingDescription: String {
        switch ending {
        case .exited(let status): "exit status \(status)"
        case .signaled(let signal): "killed by signal \(signal)"
        case .timedOut(let seconds): "timed out after \(formatSeconds(seconds)) s (process group killed)"
        case .cancelled: "stopped: the manager is shutting down"
        case .notStarted(let reason): reason
        }
    }
}

func formatSeconds(_ seconds: Double) -> String {
    seconds == seconds.rounded() ? String(Int64(seconds)) : String(seconds)
}

public struct ProcessRunnerError: Error, CustomStringConvertible, Sendable {
    public let executable: String
    public let message: String
    /// The errno behind it (ENOENT, EACCES, ENOEXEC …).
    public let code: Int32
    public var description: String { "cannot run \(executable): \(message)" }
}

/// Runs programs with posix_spawn, each in its own process group, with a clean signal state.
///
/// Not Foundation's `Process`: its `waitUntilExit` hangs when the child leaves a daemon behind (the app's
/// start command daemonizes). The child gets an empty signal mask and default dispositions: threads started
/// by Dispatch block SIGTERM, and a child would otherwise inherit that. On timeout the whole group gets
/// SIGTERM, then SIGKILL 2 s later, so a grandchild the command started cannot outlive it.
///
/// Output is bounded: the file is opened for appending, and while the command runs it is emptied whenever it
/// grows past `maxOutputBytes` (the bytes dropped are counted and noted at its end); only its last 64 KiB are
/// ever read back into memory.
public enum ProcessRunner {
    public static let killGraceSeconds = 2.0
    static let pollMicroseconds: UInt32 = 10_000
    static let outputTailBytes = 64 << 10
    public static let maxOutputBytes: Int64 = 8 << 20

    /// Runs `command` to its end. `shouldStop` is polled while it runs; when it says so, the group is killed.
    /// `started` is called with the pid (= the group's id) right after the spawn, before anything waits.
    public static func run(_ command: Command, shouldStop: () -> Bool = { false },
                           started: (pid_t) -> Void = { _ in }) throws(ProcessRunnerError) -> CommandResult {
        let output = try openOutput(command)
        defer { close(output) }
        let pid = try spawn(command, output: output)
        started(pid)
        let start = monotonicSeconds()
        var status: Int32 = 0
        var dropped: Int64 = 0
        func finish(_ ending: CommandResult.Ending) -> CommandResult {
            // The last bytes are kept: they say how it ended.
            let last = tail(output)
            let grown = bound(output)
            if grown > 0 {
                dropped += grown - Int64(last.count)
                _ = last.withUnsafeBytes { write(output, $0.baseAddress, $0.count) }
            }
            if dropped > 0 {
                let note = "\n[upgradefs: \(dropped) bytes of output dropped: more than \(maxOutputBytes) bytes written]\n"
                _ = note.utf8CString.withUnsafeBytes { write(output, $0.baseAddress, $0.count - 1) }
            }
            return CommandResult(ending: ending, output: tail(output), droppedBytes: dropped)
        }
        while true {
            let reaped = waitpid(pid, &status, WNOHANG)
            if reaped == pid { break }
            if reaped < 0 && errno != EINTR {
                throw ProcessRunnerError(executable: command.executable, message: "waitpid: \(String(cString: strerror(errno)))", code: errno)
            }
            dropped += bound(output)
            let timedOut = monotonicSeconds() - start >= command.timeoutSeconds
            if timedOut || shouldStop() {
                killGroup(pid)
                return finish(timedOut ? .timedOut(seconds: command.timeoutSeconds) : .cancelled)
            }
            usleep(pollMicroseconds)
        }
        return finish((status & 0x7f) == 0 ? .exited((status >> 8) & 0xff) : .signaled(status & 0x7f))
    }

    /// The command's output file, created or emptied, open for appending (the child's stdout and stderr are
    /// this description: its writes land at the end even after the file is emptied).
    private static func openOutput(_ command: Command) throws(ProcessRunnerError) -> Int32 {
        let fd = open(command.outputPath, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw ProcessRunnerError(executable: command.executable,
                                     message: "open \(command.outputPath): \(String(cString: strerror(errno)))", code: errno)
        }
        return fd
    }

    /// Empties the output file when it has grown past `maxOutputBytes`; returns the bytes dropped.
    private static func bound(_ output: Int32) -> Int64 {
        var st = stat()
        guard fstat(output, &st) == 0, Int64(st.st_size) > maxOutputBytes, ftruncate(output, 0) == 0 else { return 0 }
        return Int64(st.st_size)
    }

    /// SIGTERM to the group led by `pid`, SIGKILL to it after the grace time, and the leader reaped.
    /// The group id stays reserved while any member lives, so the second kill cannot hit a stranger.
    public static func killGroup(_ pid: pid_t) {
        kill(-pid, SIGTERM)
        let deadline = monotonicSeconds() + killGraceSeconds
        var status: Int32 = 0
        var reaped = false
        while monotonicSeconds() < deadline {
            // Members of the group other than the leader may still run; wait the grace time for all of them.
            if !reaped, waitpid(pid, &status, WNOHANG) == pid { reaped = true }
            if reaped, kill(-pid, 0) != 0 { return }
            usleep(pollMicroseconds)
        }
        kill(-pid, SIGKILL)
        if !reaped { while waitpid(pid, &status, 0) < 0 && errno == EINTR {} }
    }

    /// Starts `command` (its own process group, clean signal state, output to its file) and returns its pid
    /// at once; the caller reaps it. The timeout is not applied.
    public static func start(_ command: Command) throws(ProcessRunnerError) -> pid_t {
        let output = try openOutput(command)
        defer { close(output) }
        return try spawn(command, output: output)
    }

    private static func spawn(_ command: Command, output: Int32) throws(ProcessRunnerError) -> pid_t {
        func fail(_ what: String, _ code: Int32) -> ProcessRunnerError {
            ProcessRunnerError(executable: command.executable, message: "\(what): \(String(cString: strerror(code)))", code: code)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output, 1)
        posix_spawn_file_actions_adddup2(&actions, output, 2)
        if let directory = command.workingDirectory {
            guard let addChdir = Self.addChdir else { throw fail("chdir \(directory)", ENOSYS) }
            let rc = addChdir(&actions, directory)
            if rc != 0 { throw fail("chdir \(directory)", rc) }
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var environment = command.inheritsEnvironment ? currentEnvironment() : [:]
        environment.merge(command.environment) { $1 }
        var executable = command.executable
        var arguments = [command.executable] + command.arguments
        if let user = command.user {
            guard let setpriv = Self.setpriv else { throw fail("run as \(user.name): setpriv (util-linux) not found", ENOENT) }
            executable = setpriv
            arguments = [setpriv, "--reuid=\(user.uid)", "--regid=\(user.gid)", "--clear-groups", "--"] + arguments
        }
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0)=\($1)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }

        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard rc == 0 else { throw fail("posix_spawn", rc) }
        return pid
    }

    /// The manager's own environment.
    public static func currentEnvironment() -> [String: String] {
        var environment: [String: String] = [:]
        var entry = environ
        while let pointer = entry.pointee {
            let text = String(cString: pointer)
            if let equals = text.firstIndex(of: "=") {
                environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            entry += 1
        }
        return environment
    }

    /// util-linux's `setpriv`, which changes the user between exec and the program (posix_spawn cannot).
    static let setpriv: String? = ["/usr/bin/setpriv", "/bin/setpriv"].first { access($0, X_OK) == 0 }

    /// glibc's `posix_spawn_file_actions_addchdir_np` (2.29+), which Swift's Glibc module does not show
    /// (it is declared only under _GNU_SOURCE): the child changes directory between fork and exec.
    private typealias AddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
    private static let addChdir: AddChdir? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addchdir_np") else { return nil }
        return unsafeBitCast(symbol, to: AddChdir.self)
    }()

    /// The last (at most `outputTailBytes`) bytes of the output file: never more is read.
    static func tail(_ output: Int32) -> [UInt8] {
        var st = stat()
        guard fstat(output, &st) == 0 else { return [] }
        let size = Int64(st.st_size)
        let offset = max(0, size - Int64(outputTailBytes))
        var bytes = [UInt8](repeating: 0, count: Int(size - offset))
        let n = bytes.withUnsafeMutableBytes { pread(output, $0.baseAddress, $0.count, off_t(offset)) }
        return n > 0 ? Array(bytes.prefix(n)) : []
    }
}

public func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}
