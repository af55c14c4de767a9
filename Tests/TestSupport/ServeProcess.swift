#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// `upgradefs serve` as a real child process on a free port of 127.0.0.1, over a temporary directory of its own:
/// `server.key` (made by `upgradefs keygen`), `state/`, `publish/`, `staging/` (where a test builds a bundle before
/// renaming it into `publish/`) and the log `serve.log`.
///
/// `init` starts it and returns once `/healthz` answers 200; `stop(signal:)` then `start()` restarts it on the same
/// key, state, publish directory and port (`stop(signal: SIGKILL)`: a kill -9). The child is spawned with no signal
/// blocked, so its exit status is the test's to see. When the fixture goes away, a server still running is killed
/// with SIGKILL and the directory removed.
public final class ServeProcess {
    public let directory: URL
    public let keyFile: URL
    public let state: URL
    public let publish: URL
    public let staging: URL
    public let logFile: URL
    public let port: Int
    /// The server id (`upgradefs keygen` printed it).
    public let id: String
    /// Added to every `serve` command line after the fixture's own options.
    public let arguments: [String]
    /// `ulimit -n` for the server, when set.
    public let openFilesLimit: Int?
    /// The server started last, until `stop`.
    private var process: ChildProcess?

    /// - Parameters:
    ///   - arguments: more `serve` options (`--log-level debug`, `--timestamp-expiry 3`, …).
    ///   - openFilesLimit: runs the server under this `ulimit -n`.
    ///   - start: false to prepare the directory and key only (a test that fills the state first calls `start()`).
    public init(arguments: [String] = [], openFilesLimit: Int? = nil, start: Bool = true) throws {
        directory = TemporaryDirectory("serve").url
        keyFile = directory.appending(path: "server.key")
        state = directory.appending(path: "state")
        publish = directory.appending(path: "publish")
        staging = directory.appending(path: "staging")
        logFile = directory.appending(path: "serve.log")
        port = Harness.freePort()
        self.arguments = arguments
        self.openFilesLimit = openFilesLimit
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        let keygen = try Harness.run(Harness.binary, ["keygen", "--out", keyFile.path])
        guard keygen.status == 0 else { throw HarnessError("keygen failed: \(keygen.output)") }
        id = keygen.output.trimmingCharacters(in: .whitespacesAndNewlines)
        if start { try self.start() }
    }

    /// `HOST:PORT,ID`, what `upgradefs mount` is given.
    public var source: String { "127.0.0.1:\(port),\(id)" }
    public var baseURL: String { "http://127.0.0.1:\(port)" }
    /// Everything the servers of this fixture have logged so far.
    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// The running server's pid; 0 when stopped.
    public var pid: pid_t { process?.pid ?? 0 }

    /// The server has been started and has not ended.
    public var isRunning: Bool { process?.isRunning ?? false }

    /// Starts the server and waits (at most 30 s) until `/healthz` answers 200; throws, with the log, if it ends or
    /// does not answer.
    public func start() throws {
        let serve = [Harness.binary, "serve", "--key", keyFile.path, "--state", state.path, "--publish", publish.path,
                     "--listen", "127.0.0.1:\(port)", "--settle-ms", "200"] + arguments
        if let openFilesLimit {
            // dash's `ulimit -n` sets the soft and the hard limit.
            let command = "ulimit -n \(openFilesLimit) && exec " + serve.map { "'\($0)'" }.joined(separator: " ")
            process = try ChildProcess("/bin/sh", ["-c", command], log: logFile.path)
        } else {
            process = try ChildProcess(Harness.binary, Array(serve.dropFirst()), log: logFile.path)
        }
        guard Harness.waitUntil(30, { answersHealthz || !isRunning }), answersHealthz else {
            throw HarnessError("serve did not come up: \(log)")
        }
    }

    private var answersHealthz: Bool { Harness.httpStatus(port: port, path: "/healthz") == 200 }

    /// Sends `signal` and returns the exit status; records an issue and kills the server if it has not ended within
    /// 15 s (then nil). Nil too when no server was started.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM) -> Int32? {
        defer { process = nil }
        return process?.stop(signal: signal, within: 15, "serve")
    }

    /// Waits (at most 30 s) for the marker the server leaves beside the bundle `name` in the publish directory:
    /// (published?, the marker's text).
    public func marker(for name: String) throws -> (published: Bool, marker: String) {
        let published = publish.appending(path: "\(name).published").path
        let rejected = publish.appending(path: "\(name).rejected").path
        guard Harness.waitUntil(30, { FileManager.default.fileExists(atPath: published) || FileManager.default.fileExists(atPath: rejected) })
        else { throw HarnessError("bundle \(name) was neither published nor rejected: \(log.suffix(2000))") }
        if let text = try? String(contentsOfFile: published, encoding: .utf8) { return (true, text) }
        return (false, try String(contentsOfFile: rejected, encoding: .utf8))
    }

    /// Where the content store keeps the blob with this SHA-256 (hex): `state/blobs/sha256/xx/hex`.
    public func blobPath(sha256 hex: String) -> String { state.appending(path: "blobs/sha256/\(hex.prefix(2))/\(hex)").path }

    deinit {
        stop(signal: SIGKILL)
        _ = try? Harness.run("/bin/rm", ["-rf", directory.path])
    }
}
