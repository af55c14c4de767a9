import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

// Exported so that every file of this target sees the shared helpers (Harness, TemporaryDirectory, .realMounts).
@_exported import TestSupport

/// End-to-end fixtures over the shared `Harness`: real HTTP, FUSE mounts in temp dirs.
extension Harness {
    /// GET over real HTTP; nil if the server cannot be reached.
    static func get(_ url: String) -> (status: Int, body: Data)? { request(url) }

    /// POST over real HTTP; nil if the server cannot be reached.
    static func post(_ url: String, _ body: [UInt8]) -> (status: Int, body: Data)? { request(url, post: body) }

    private static func request(_ url: String, post body: [UInt8]? = nil) -> (status: Int, body: Data)? {
        let result = LockedBox<(Int, Data)?>(nil)
        let done = DispatchSemaphore(value: 0)
        var request = URLRequest(url: URL(string: url)!)
        if let body {
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = Data(body)
        }
        request.timeoutInterval = 5
        URLSession.shared.dataTask(with: request) { data, response, _ in
            if let http = response as? HTTPURLResponse { result.value = (http.statusCode, data ?? Data()) }
            done.signal()
        }.resume()
        done.wait()
        return result.value
    }

    static func isMounted(_ path: String) -> Bool {
        let mounts = (try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)) ?? ""
        let resolved = (path as NSString).resolvingSymlinksInPath
        return mounts.split(separator: "\n").contains { $0.split(separator: " ").dropFirst().first.map(String.init) == resolved }
    }

    /// Aborts the FUSE connection of the mount at `path` (`/sys/fs/fuse/connections/N/abort`), so processes blocked
    /// on a dead or stuck daemon get ENOTCONN instead of hanging in D state. Reads the device number from
    /// /proc/self/mountinfo (a stat of the mount point could itself hang).
    static func abortConnection(_ path: String) {
        let resolved = (path as NSString).resolvingSymlinksInPath
        let info = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        guard let line = info.split(separator: "\n").first(where: { $0.split(separator: " ")[4] == resolved }),
              let minor = line.split(separator: " ")[2].split(separator: ":").last
        else { return }
        let connections = "/sys/fs/fuse/connections"
        if (try? FileManager.default.contentsOfDirectory(atPath: connections))?.isEmpty ?? true {
            _ = try? run("/bin/mount", ["-t", "fusectl", "fusectl", connections])
        }
        try? "1".write(toFile: "\(connections)/\(minor)/abort", atomically: false, encoding: .utf8)
    }

    static func dropPageCache() {
        sync()
        try? "3".write(toFile: "/proc/sys/vm/drop_caches", atomically: false, encoding: .utf8)
    }

    /// Reads a whole file with POSIX calls; on failure returns the errno.
    static func readFile(_ path: String) -> Result<[UInt8], Errno> {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return .failure(Errno(code: errno)) }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 { return .failure(Errno(code: errno)) }
            if n == 0 { return .success(out) }
            out += buffer[0..<n]
        }
    }
}

final class LockedBox<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }

    func withValue<T>(_ body: (inout Value) -> T) -> T { lock.withLock { body(&stored) } }
}

/// A bundle directory written by a test.
struct TestBundle {
    let directory: URL

    /// `files` maps bundle-relative paths to contents; `upgrade.toml` is added
    /// unless `files` has one.
    init(in parent: URL, name: String, version: Int, class className: String = "demo",
         files: [String: [UInt8]], executables: Set<String> = []) throws {
        directory = parent.appending(path: name)
        try FileManager.default.createDirectory(at: directory.appending(path: "payload"), withIntermediateDirectories: true)
        var all = files
        if all["upgrade.toml"] == nil {
            all["upgrade.toml"] = Array("class = \"\(className)\"\nversion = \(version)\ndescription = \"test bundle \(version)\"\n".utf8)
        }
        for (path, bytes) in all {
            let url = directory.appending(path: path)
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(bytes).write(to: url)
            if executables.contains(path) {
                try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: url.path)
            }
        }
    }

    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
    }
}

/// What the end-to-end tests do with a server (the shared `ServeProcess` fixture).
extension ServeProcess {
    /// Makes a node key (`keygen --node NAME`) in the server's temp dir and enrolls it; returns the key file.
    func enroll(_ name: String, udb: String? = nil) throws -> String {
        let keyFile = directory.appending(path: "\(name).key").path
        let keygen = try Harness.run(Harness.binary, ["keygen", "--node", name, "--out", keyFile])
        let fields = keygen.output.split(whereSeparator: \.isWhitespace).map(String.init)
        guard keygen.status == 0, fields.count >= 2, fields[0] == name else {
            throw HarnessError("keygen --node \(name) failed: \(keygen.output)")
        }
        let database = udb.map { ["--udb", $0] } ?? ["--state", state.path]
        let enroll = try Harness.run(Harness.binary, ["enroll"] + database + [name, fields[1]])
        guard enroll.status == 0 else { throw HarnessError("enroll \(name) failed: \(enroll.output)") }
        return keyFile
    }

    /// The value of a Prometheus sample on `/metrics` (the line starting with `sample`), nil if absent.
    func metric(_ sample: String) -> Double? {
        guard let (status, body) = Harness.get("\(baseURL)/metrics"), status == 200 else { return nil }
        let text = String(decoding: body, as: UTF8.self)
        return text.split(separator: "\n").first { $0.hasPrefix(sample + " ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    /// Copies a bundle into the publish dir and waits for its marker; returns
    /// (published?, marker text).
    @discardableResult
    func publish(_ bundle: TestBundle) throws -> (published: Bool, marker: String) {
        let name = bundle.directory.lastPathComponent
        let copy = try Harness.run("/bin/cp", ["-a", bundle.directory.path, publish.appending(path: name).path])
        guard copy.status == 0 else { throw HarnessError("cp failed: \(copy.output)") }
        return try marker(for: name)
    }

    /// Publishes version `version` (class demo) made of `files`, built as the bundle `vVERSION` in the staging
    /// directory: the bundle most end-to-end tests start from.
    @discardableResult
    func publish(version: Int, files: [String: [UInt8]]) throws -> (published: Bool, marker: String) {
        try publish(TestBundle(in: staging, name: "v\(version)", version: version, files: files))
    }
}

/// `upgradefs mount` in the background on a temp mount point.
final class TestMount {
    let mountpoint: URL
    let cache: URL
    let logFile: URL
    private(set) var process: Process?
    private let ownsCache: Bool

    init(cache: URL? = nil) throws {
        let dir = try Harness.temporaryDirectory("node")
        mountpoint = dir.appending(path: "mnt")
        logFile = dir.appending(path: "mount.log")
        try FileManager.default.createDirectory(at: mountpoint, withIntermediateDirectories: true)
        ownsCache = cache == nil
        self.cache = cache ?? dir.appending(path: "cache")
    }

    /// Starts the mount; returns nil once mounted, or the exit status and log
    /// if the process ended without mounting.
    @discardableResult
    func start(_ source: String, nodeKey: String? = nil) throws -> (status: Int32, log: String)? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Harness.binary)
        process.arguments = ["mount", source, mountpoint.path, "--cache", cache.path] + (nodeKey.map { ["--node-key", $0] } ?? [])
        if !FileManager.default.fileExists(atPath: logFile.path) {
            FileManager.default.createFile(atPath: logFile.path, contents: nil)
        }
        let log = try FileHandle(forWritingTo: logFile)
        log.seekToEndOfFile()
        process.standardError = log
        process.standardOutput = log
        try process.run()
        self.process = process
        _ = Harness.waitUntil(60) { Harness.isMounted(mountpoint.path) || !process.isRunning }
        if Harness.isMounted(mountpoint.path) { return nil }
        if process.isRunning {
            // Neither mounted nor ended in time: stop it, so the caller gets an answer instead of a hang.
            kill(process.processIdentifier, SIGKILL)
            _ = Harness.waitUntil(10) { !process.isRunning }
            self.process = nil
            return (-1, self.log + "\n(the mount did not come up within 60 s and was killed)")
        }
        process.waitUntilExit()
        self.process = nil
        return (process.terminationStatus, self.log)
    }

    func path(_ relative: String) -> String { mountpoint.appending(path: relative).path }

    func text(_ relative: String) -> String? {
        try? String(contentsOfFile: path(relative), encoding: .utf8)
    }

    var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// Kills the mount process with SIGKILL (no clean unmount), then detaches what it left: the kernel connection is
    /// aborted so nothing touching the mount point hangs on the dead daemon.
    func kill9() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
        Harness.abortConnection(mountpoint.path)
        _ = try? Harness.run("/bin/fusermount3", ["-uz", mountpoint.path])
    }

    func unmount() {
        if Harness.isMounted(mountpoint.path) {
            _ = Harness.waitUntil(10) {
                (try? Harness.run("/bin/fusermount3", ["-u", mountpoint.path]).status) == 0
                    || !Harness.isMounted(mountpoint.path)
            }
            if Harness.isMounted(mountpoint.path) {
                Issue.record("\(mountpoint.path) would not unmount; aborting its FUSE connection")
                Harness.abortConnection(mountpoint.path)
                _ = try? Harness.run("/bin/fusermount3", ["-uz", mountpoint.path])
            }
        }
        if let process {
            _ = Harness.waitUntil(10) { !process.isRunning }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        process = nil
    }

    deinit {
        unmount()
        try? FileManager.default.removeItem(at: mountpoint.deletingLastPathComponent())
    }
}

/// A frozen copy of a server's metadata served by a plain static HTTP server:
/// what an attacker controlling a mirror (or the network) can show a node.
final class StaticMirror {
    let root: URL
    let port: Int
    private let process: Process

    init(copying metadataDirectory: URL, edit: (URL) throws -> Void = { _ in }) throws {
        root = try Harness.temporaryDirectory("mirror")
        let copy = try Harness.run("/bin/cp", ["-a", metadataDirectory.path, root.appending(path: "metadata").path])
        guard copy.status == 0 else { throw HarnessError("cp failed: \(copy.output)") }
        try edit(root.appending(path: "metadata"))
        port = Harness.freePort()
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", root.path, String(port)]
        process.standardOutput = FileHandle.nullDevice
        let log = root.appending(path: "requests.log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
        try process.run()
        guard Harness.waitUntil(20, { Harness.get("http://127.0.0.1:\(port)/metadata/1.root.json")?.status == 200 }) else {
            throw HarnessError("static mirror did not come up")
        }
    }

    func source(id: String) -> String { "127.0.0.1:\(port),\(id)" }

    /// The server's request log (one line per request).
    var requestLog: URL { root.appending(path: "requests.log") }
    /// The requests served so far, as logged: `"GET /metadata/timestamp.json HTTP/1.1" 200 -`.
    var requests: [String] {
        let text = (try? String(contentsOf: requestLog, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in line.firstIndex(of: "\"").map { String(line[$0...]) } }
    }

    deinit {
        // SIGKILL: a child spawned from a Dispatch worker inherits its blocked signal mask, SIGTERM included.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: root)
    }
}

/// An errno as a test result.
struct Errno: Error, Equatable, CustomStringConvertible {
    let code: Int32
    static let EIO = Errno(code: Glibc.EIO)
    var description: String { String(cString: strerror(code)) }
}

/// A TCP relay on 127.0.0.1 in front of a server, for fault injection: `cut()` stops every byte in both directions
/// (existing connections stall, new ones are accepted and stall) until `heal()` — a network partition as the node
/// sees it, without touching the host's firewall.
final class CutProxy: @unchecked Sendable {
    let port: Int
    private let target: Int
    private let listener: Int32
    private let lock = NSLock()
    private var isCut = false
    private var sockets: [Int32] = []
    private var stopped = false

    init(to targetPort: Int) throws {
        target = targetPort
        port = Harness.freePort()
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(listener, 64) == 0 else { throw HarnessError("proxy cannot listen on \(port)") }
        Thread { [self] in acceptLoop() }.start()
    }

    func cut() { lock.withLock { isCut = true } }
    func heal() { lock.withLock { isCut = false } }

    /// While set, each chunk the client sends is passed through it (as text) before it goes on: an attacker on the
    /// path rewriting requests.
    var rewriteRequests: (@Sendable (String) -> String)? {
        get { lock.withLock { rewriter } }
        set { lock.withLock { rewriter = newValue } }
    }
    private var rewriter: (@Sendable (String) -> String)?

    private static func loopback(_ port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return address
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 { return }
            let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = Self.loopback(target)
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if connected != 0 {
                close(client)
                close(upstream)
                continue
            }
            lock.withLock { sockets += [client, upstream] }
            Thread { [self] in relay(from: client, to: upstream, rewriting: true) }.start()
            Thread { [self] in relay(from: upstream, to: client) }.start()
        }
    }

    private func relay(from source: Int32, to destination: Int32, rewriting: Bool = false) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var count = read(source, &buffer, buffer.count)
            if count <= 0 { break }
            while lock.withLock({ isCut && !stopped }) { usleep(10_000) }
            if rewriting, let rewrite = rewriteRequests {
                let chunk = Array(rewrite(String(decoding: buffer[0..<count], as: UTF8.self)).utf8)
                buffer = chunk + [UInt8](repeating: 0, count: max(0, 65536 - chunk.count))
                count = chunk.count
            }
            var sent = 0
            while sent < count {
                let n = buffer[sent..<count].withUnsafeBytes { write(destination, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                sent += n
            }
            if sent < count { break }
        }
        shutdown(destination, Int32(SHUT_WR))
        shutdown(source, Int32(SHUT_RD))
    }

    deinit {
        lock.withLock { stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
        for socket in lock.withLock({ sockets }) { shutdown(socket, Int32(SHUT_RDWR)) }
    }
}
