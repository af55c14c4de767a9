#if canImport(Glibc)
import Glibc
#endif
import Testing

/// A process a test started (`Harness.spawn`: no signal blocked, stdin /dev/null, output appended to a log) and
/// waits for, stops or kills; its exit status as a shell shows it (the exit code, or 128 + the signal) once it ended.
public final class ChildProcess {
    public let pid: pid_t
    private var status: Int32?

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], log: String) throws {
        pid = try Harness.spawn(executable, arguments, environment: environment, log: log)
    }

    /// The exit status once the process has ended (it is then reaped), nil while it runs.
    public var exitStatus: Int32? {
        if status == nil { status = Harness.reap(pid) }
        return status
    }

    public var isRunning: Bool { exitStatus == nil }

    /// Waits at most `seconds` for the process to end by itself: its exit status, or nil if it still runs.
    public func wait(seconds: Double) -> Int32? {
        _ = Harness.waitUntil(seconds) { !isRunning }
        return exitStatus
    }

    /// Sends `signal` and waits at most `seconds`: the exit status. A process still running then is recorded as an
    /// issue (naming `what`), killed with SIGKILL, and its status is nil.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM, within seconds: Double, _ what: String) -> Int32? {
        if isRunning { Glibc.kill(pid, signal) }
        if let status = wait(seconds: seconds) { return status }
        Issue.record("\(what) did not stop on signal \(signal) within \(Int(seconds)) s")
        kill()
        return nil
    }

    /// SIGKILL, and waits (at most 5 s: a process stuck on a dead FUSE mount may never end) until it has ended.
    public func kill() {
        guard isRunning else { return }
        Glibc.kill(pid, SIGKILL)
        _ = wait(seconds: 5)
    }
}
