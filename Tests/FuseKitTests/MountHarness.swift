import Dispatch
import Foundation
import Logging
import Testing
import TestSupport
@testable import FuseKit

struct POSIXFailure: Error, Equatable, CustomStringConvertible {
    let call: String
    let errno: Int32
    var description: String { "\(call): \(String(cString: strerror(errno))) (errno \(errno))" }
}

/// A `MemoryFileSystem` mounted in a fresh temporary directory, its loop on a dedicated thread.
final class TestMount: @unchecked Sendable {
    // @unchecked: `loopResult` is written by the loop thread before `finished` is signalled.
    let directory: String
    let mount: FuseMount
    let fileSystem: MemoryFileSystem
    private let finished = DispatchSemaphore(value: 0)
    private var loopResult: Int32?

    init(_ fileSystem: MemoryFileSystem, fsName: String = "memory") throws {
        let directory = TemporaryDirectory("fusekit").path
        self.fileSystem = fileSystem
        do {
            mount = try FuseMount(fileSystem: fileSystem, mountpoint: directory, fsName: fsName,
                                  subtype: "fusekit-test", logger: Logger(label: "fusekit.test"))
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        self.directory = mount.mountpoint
        let thread = Thread { [self] in
            loopResult = mount.run()
            finished.signal()
        }
        thread.name = "fuse-loop"
        thread.start()
    }

    func path(_ relative: String) -> String { directory + "/" + relative }

    /// exit() and wait for run() to return; nil on timeout.
    func stop(timeoutSeconds: Double = 10) -> Int32? {
        mount.exit()
        guard finished.wait(timeout: .now() + timeoutSeconds) == .success else { return nil }
        finished.signal()  // later stop() calls return at once
        return loopResult
    }

    /// Waits for run() to return on its own; nil on timeout.
    func waitForLoop(timeoutSeconds: Double) -> Int32? {
        guard finished.wait(timeout: .now() + timeoutSeconds) == .success else { return nil }
        finished.signal()
        return loopResult
    }

    /// Always called: unmounts however the test ended.
    func tearDown() {
        if stop() == nil {
            Issue.record("run() did not return within 10 s after exit()")
            Self.forceUnmount(directory)
        }
        rmdir(directory)
    }

    static func forceUnmount(_ directory: String) {
        for _ in 0..<30 where isMounted(directory) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
            process.arguments = ["-u", directory]
            try? process.run()
            process.waitUntilExit()
            if process.terminationStatus == 0 { return }
            usleep(100_000)  // busy: retry
        }
        if isMounted(directory) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
            process.arguments = ["-u", "-z", directory]
            try? process.run()
            process.waitUntilExit()
        }
    }

    static func isMounted(_ directory: String) -> Bool {
        mountLine(directory) != nil
    }

    static func mountLine(_ directory: String) -> String? {
        let mounts = (try? String(contentsOfFile: "/proc/mounts", encoding: .utf8)) ?? ""
        return mounts.split(separator: "\n").first { line in
            let fields = line.split(separator: " ")
            return fields.count > 1 && fields[1] == directory
        }.map(String.init)
    }
}

func withTestMount(_ fileSystem: MemoryFileSystem = MemoryFileSystem(), fsName: String = "memory",
                   _ body: (TestMount) throws -> Void) throws {
    let mounted = try TestMount(fileSystem, fsName: fsName)
    defer { mounted.tearDown() }
    try body(mounted)
}

// MARK: POSIX helpers (blocking I/O against the mount)

func readWholeFile(_ path: String, chunkSize: Int = 1 << 20) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw POSIXFailure(call: "open \(path)", errno: errno) }
    defer { close(fd) }
    var result: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: chunkSize)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            throw POSIXFailure(call: "read \(path)", errno: errno)
        }
        if count == 0 { return result }
        result += chunk[0..<count]
    }
}

func preadBytes(_ path: String, offset: Int, count: Int) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw POSIXFailure(call: "open \(path)", errno: errno) }
    defer { close(fd) }
    var buffer = [UInt8](repeating: 0, count: count)
    var filled = 0
    while filled < count {
        let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, count - filled, off_t(offset + filled)) }
        if got < 0 { throw POSIXFailure(call: "pread \(path)", errno: errno) }
        if got == 0 { break }
        filled += got
    }
    return Array(buffer[0..<filled])
}

/// errno of a failing stat, 0 if it succeeded.
func statErrno(_ path: String) -> Int32 {
    var info = stat()
    return stat(path, &info) == 0 ? 0 : errno
}

func listDirectory(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else { throw POSIXFailure(call: "opendir \(path)", errno: errno) }
    defer { closedir(dir) }
    var names: [String] = []
    errno = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
            String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
        }
        names.append(name)
    }
    if errno != 0 { throw POSIXFailure(call: "readdir \(path)", errno: errno) }
    return names
}

/// Deterministic bytes for big files.
func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBufferPointer { buffer in
        var index = 0
        while index < count {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            var word = state
            for _ in 0..<8 where index < count {
                buffer[index] = UInt8(truncatingIfNeeded: word >> 56)
                word <<= 8
                index += 1
            }
        }
    }
    return bytes
}

/// A temporary file with `bytes`, unlinked, open for reading.
func descriptorWith(_ bytes: [UInt8]) throws -> Int32 {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("fusekit-blob-\(UUID().uuidString)").path
    guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
        throw POSIXFailure(call: "create \(path)", errno: errno)
    }
    defer { unlink(path) }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw POSIXFailure(call: "open \(path)", errno: errno) }
    return fd
}
