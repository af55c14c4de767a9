#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import Testing

/// A throwaway PostgreSQL cluster of Debian's `postgresql` package: `initdb` in a temporary directory (as the
/// `postgres` user when run as root: PostgreSQL refuses root), `pg_ctl start` on a free port of 127.0.0.1 with its
/// Unix socket in that directory, trust authentication for the user `ufs`. `stop()` (or the end of the test process,
/// for `shared`) stops it and removes the directory. docs/TESTING.md, "PostgreSQL".
public final class PostgresCluster: Sendable {
    public let directory: String
    public let port: Int
    private let databases = Mutex(0)

    /// The newest `/usr/lib/postgresql/N/bin` holding `pg_ctl`, if any.
    public static let binDirectory: String? = {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        return versions.reversed().map { "\(root)/\($0)/bin" }.first { FileManager.default.isExecutableFile(atPath: $0 + "/pg_ctl") }
    }()

    /// PostgreSQL's server is installed (`make deps` installs it).
    public static var installed: Bool { binDirectory != nil }
    /// Under CI=true the PostgreSQL tests always run: a machine without PostgreSQL fails them instead of skipping them.
    public static let required = ProcessInfo.processInfo.environment["CI"] == "true"

    /// One cluster for the whole test process (each test takes a fresh database of it), stopped at exit.
    public static let shared: Result<PostgresCluster, any Error> = {
        let cluster = Result { try PostgresCluster() }
        if case .success = cluster { atexit { if case .success(let cluster) = PostgresCluster.shared { cluster.stop() } } }
        return cluster
    }()

    /// Creates and starts a new cluster (about 2 s).
    public init() throws {
        guard let bin = Self.binDirectory else { throw HarnessError("PostgreSQL is not installed (package postgresql; `make deps`)") }
        directory = TemporaryDirectory("postgres").path
        port = Harness.freePort()
        if getuid() == 0 {
            guard let user = getpwnam("postgres") else { throw HarnessError("no postgres user to run PostgreSQL as") }
            chown(directory, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        try asPostgres(bin + "/initdb", ["-D", directory + "/data", "-A", "trust", "-U", "ufs", "-E", "UTF8", "--no-locale", "--no-sync"])
        try start()
    }

    /// Starts the cluster (again, after `stop(immediate:)`), on the same port and data.
    public func start() throws {
        try asPostgres(Self.binDirectory! + "/pg_ctl", [
            "-D", directory + "/data", "-l", directory + "/postgres.log", "-w", "-t", "60",
            "-o", "-k \(directory) -p \(port) -c listen_addresses=127.0.0.1", "start",
        ])
    }

    /// Stops the cluster: `immediate` is PostgreSQL's crash stop (like kill -9; recovery at the next start).
    /// Without `immediate` the directory is removed too.
    public func stop(immediate: Bool = false) {
        _ = try? asPostgres(Self.binDirectory! + "/pg_ctl", ["-D", directory + "/data", "-m", immediate ? "immediate" : "fast", "-w", "stop"])
        if !immediate { try? FileManager.default.removeItem(atPath: directory) }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the cluster's processes, the postmaster and its children: a database
    /// that stops answering without closing its connections.
    public func signal(_ signal: Int32) {
        guard let first = try? String(contentsOfFile: directory + "/data/postmaster.pid", encoding: .utf8)
            .split(separator: "\n").first, let postmaster = pid_t(first) else { return }
        var pids = [postmaster]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // pid (comm) state ppid …
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, pid_t(fields[1]) == postmaster { pids.append(pid) }
        }
        for pid in pids { kill(pid, signal) }
    }

    /// A URL of the cluster for `upgradefs serve --udb` (no TLS: loopback).
    public func url(database: String) -> String { "postgres://ufs@127.0.0.1:\(port)/\(database)?sslmode=disable" }

    /// A new, empty database; its URL.
    public func createDatabase() throws -> String {
        let name = "t" + String(databases.withLock { $0 += 1; return $0 }) + "_" + String(getpid())
        try psql("CREATE DATABASE \(name)")
        return url(database: name)
    }

    /// Runs one SQL command in the database `postgres` (or `database`); its output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let psql = FileManager.default.isExecutableFile(atPath: Self.binDirectory! + "/psql") ? Self.binDirectory! + "/psql" : "/usr/bin/psql"
        let result = try Harness.run(psql, ["-h", directory, "-p", String(port), "-U", "ufs", "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
        guard result.status == 0 else { throw HarnessError("psql \(sql): \(result.output)") }
        return result.output
    }

    /// What the server logged.
    public var log: String { (try? String(contentsOfFile: directory + "/postgres.log", encoding: .utf8)) ?? "" }

    private func asPostgres(_ executable: String, _ arguments: [String]) throws {
        let result = getuid() == 0
            ? try Harness.run("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments, closeDescriptors: true)
            : try Harness.run(executable, arguments, closeDescriptors: true)
        guard result.status == 0 else {
            throw HarnessError("\((executable as NSString).lastPathComponent) \(arguments.joined(separator: " ")): \(result.output)\n\(log)")
        }
    }
}

extension Trait where Self == PostgresTrait {
    /// The test runs a real PostgreSQL (`PostgresCluster`): disabled, with the reason, where PostgreSQL is not
    /// installed — except under CI=true, where it runs and fails.
    public static var postgres: Self { PostgresTrait() }
}

/// `.enabled(if: PostgresCluster.installed || PostgresCluster.required, reason)`.
public struct PostgresTrait: TestTrait, SuiteTrait {
    private let condition = ConditionTrait.enabled(
        if: PostgresCluster.installed || PostgresCluster.required,
        "PostgreSQL is not installed (package postgresql, `make deps`; under CI=true these tests must run)")

    public var comments: [Comment] { condition.comments }
    public var isRecursive: Bool { true }

    public func prepare(for test: Test) async throws {
        try await condition.prepare(for: test)
    }
}
