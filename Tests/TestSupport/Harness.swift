#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Real processes for tests: the `upgradefs` binary built next to the test bundle, free ports on 127.0.0.1,
/// children spawned and reaped with POSIX calls. Test targets extend it with their own fixtures.
public enum Harness {
    /// `upgradefs`, from UPGRADEFS_BIN or beside the test executable.
    public static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["UPGRADEFS_BIN"] { return path }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        // The test executable sits inside upgradefsPackageTests.xctest on some toolchains.
        while !FileManager.default.isExecutableFile(atPath: dir.appending(path: "upgradefs").path), dir.path != "/" {
            dir.deleteLastPathComponent()
        }
        return dir.appending(path: "upgradefs").path
    }()

    /// Whether `binary` has been built.
    public static var binaryIsBuilt: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    /// A fresh directory under the temporary directory (the caller removes it).
    public static func temporaryDirectory(_ label: String) throws -> URL {
        TemporaryDirectory(label).url
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    public static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Runs a command to completion; returns its status and combined output.
    /// posix_spawn + waitpid rather than Foundation's Process: Process misses
    /// the exit of a child that leaves a daemon behind (the mount helper) and
    /// waits forever.
    @discardableResult
    /// `closeDescriptors`: the child gets only stdin, stdout and stderr, none of the test process's other descriptors
    /// (a daemon it leaves behind, like PostgreSQL's, would otherwise hold other tests' sockets open).
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], closeDescriptors: Bool = false
    ) throws -> (status: Int32, output: String) {
        let outputPath = FileManager.default.temporaryDirectory.appending(path: "upgradefs-run-\(UUID().uuidString)").path
        defer { unlink(outputPath) }
        let pid = try spawn(executable, arguments, environment: environment, log: outputPath, closeDescriptors: closeDescriptors)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        return (exitStatus(status), output)
    }

    /// Runs `upgradefs ARGUMENTS` that should end by itself; one still running after `seconds` is
    /// killed and its status is -1 (a test fails rather than hangs).
    public static func runBounded(_ arguments: [String], seconds: Double = 20) throws -> (status: Int32, output: String) {
        let log = FileManager.default.temporaryDirectory.appending(path: "upgradefs-bounded-\(UUID().uuidString)").path
        defer { unlink(log) }
        let child = try ChildProcess(binary, arguments, log: log)
        let status = child.wait(seconds: seconds)
        if status == nil { child.kill() }
        return (status ?? -1, (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
    }

    /// Starts a process in the background with no signal blocked (Dispatch workers block most, and children
    /// inherit the mask), stdin from /dev/null, stdout and stderr appended to `log`. `descriptors`: more descriptors
    /// the child gets, its number → this process's descriptor (which must not be one of those numbers).
    /// `closeDescriptors`: the child inherits none of this process's other descriptors.
    public static func spawn(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                             log: String, descriptors: [Int32: Int32] = [:], closeDescriptors: Bool = false) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        for (child, parent) in descriptors { posix_spawn_file_actions_adddup2(&actions, parent, child) }
        if closeDescriptors {
            // (posix_spawn_file_actions_addclosefrom_np is not visible from Swift; glibc ignores closing one that
            // was closed meanwhile.)
            let open = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).compactMap(Int32.init)
            for descriptor in open where descriptor > 2 && descriptors[descriptor] == nil {
                posix_spawn_file_actions_addclose(&actions, descriptor)
            }
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK))
        let env = ProcessInfo.processInfo.environment.merging(environment) { $1 }.map { "\($0)=\($1)" }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard spawned == 0 else { throw HarnessError("cannot run \(executable): \(String(cString: strerror(spawned)))") }
        return pid
    }

    /// The exit status of `pid` if it has ended (and reaps it), nil while it runs.
    public static func reap(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        let result = waitpid(pid, &status, WNOHANG)
        guard result == pid else { return result < 0 ? -1 : nil }
        return exitStatus(status)
    }

    /// A wait status as a shell shows it: the exit code, or 128 + the signal.
    public static func exitStatus(_ status: Int32) -> Int32 {
        status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Polls until `condition` holds or `seconds` pass.
    public static func waitUntil(_ seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            usleep(50_000)
        }
        return try condition()
    }
}

public struct HarnessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
