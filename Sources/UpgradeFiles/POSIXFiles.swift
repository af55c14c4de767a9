#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed file-system operation: what was attempted, on which path, and the errno.
public struct FileError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let path: String
    public let errno: Int32
    /// Said after the path instead of the errno's text, when that says more (e.g. a key file's loose mode).
    public let explanation: String?

    public init(_ operation: String, _ path: String, errno: Int32 = Glibc.errno, explanation: String? = nil) {
        self.operation = operation
        self.path = path
        self.errno = errno
        self.explanation = explanation
    }

    public var description: String {
        if let explanation { return "\(path) \(explanation)" }
        return "\(operation) \(path): \(String(cString: strerror(errno)))"
    }

    public var isNotFound: Bool { errno == ENOENT }
}

/// Which file a descriptor or name reaches: device and inode.
public struct FileIdentity: Hashable, Sendable {
    public let device: UInt64
    public let inode: UInt64

    public init(_ st: stat) {
        device = UInt64(st.st_dev)
        inode = UInt64(st.st_ino)
    }
}

/// Small POSIX file helpers. Everything here retries on EINTR and reports the
/// path in its errors.
public enum POSIXFiles {
    /// `lstat`; `nil` when the path does not exist.
    public static func lstatOrNil(_ path: String) throws(FileError) -> stat? {
        var st = stat()
        if lstat(path, &st) == 0 { return st }
        if errno == ENOENT || errno == ENOTDIR { return nil }
        throw FileError("lstat", path)
    }

    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0
    }

    public static func isDirectory(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFDIR }
    public static func isRegular(_ st: stat) -> Bool { st.st_mode & S_IFMT == S_IFREG }

    /// `mkdir -p` with the given mode for directories it creates.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(FileError) {
        if let st = try lstatOrNil(path) {
            guard isDirectory(st) else { throw FileError("mkdir", path, errno: ENOTDIR) }
            return
        }
        let parent = parentDirectory(of: path)
        if parent != path { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST { throw FileError("mkdir", path) }
    }

    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// Opens a file, retrying on EINTR.
    public static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0) throws(FileError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            throw FileError("open", path)
        }
    }

    /// Reads a secret (a key file). Refuses, like ssh, a file that its group or others may read or
    /// write: the error names the file, its mode and the fix (`chmod 600 FILE`).
    public static func readSecret(_ path: String, limit: Int) throws(FileError) -> [UInt8] {
        let fd = try open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError("fstat", path) }
        if st.st_mode & 0o077 != 0 {
            let mode = String(st.st_mode & 0o7777, radix: 8)
            throw FileError(
                "open", path, errno: EACCES,
                explanation: "has mode 0\(mode): its group or others may read or write it, so it is not used "
                    + "(fix: chmod 600 \(path))")
        }
        return try readToEnd(fd, path: path, limit: limit, secret: true)
    }

    /// Reads a whole (small) file; a file larger than `limit` fails with EFBIG before anything is read
    /// or allocated. Never follows a symbolic link and never blocks on a FIFO.
    public static func readFile(_ path: String, limit: Int = 64 << 20) throws(FileError) -> [UInt8] {
        let fd = try open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK)
        defer { close(fd) }
        return try readToEnd(fd, path: path, limit: limit)
    }

    /// Reads the regular file open on `fd` from its current offset to its end, at most `limit` bytes
    /// (EFBIG beyond). The size `fstat` reports is checked first and only trusted up to `limit`. With
    /// `secret`, the read buffer is wiped before it is freed (the caller wipes the result).
    public static func readToEnd(_ fd: Int32, path: String, limit: Int, secret: Bool = false) throws(FileError) -> [UInt8] {
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw FileError("fstat", path) }
        guard isRegular(st) else { throw FileError("read", path, errno: EINVAL) }
        guard st.st_size <= limit else { throw FileError("read", path, errno: EFBIG) }
        var result: [UInt8] = []
        result.reserveCapacity(Int(st.st_size))
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        defer { if secret { buffer.withUnsafeMutableBytes { explicit_bzero($0.baseAddress!, $0.count) } } }
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError("read", path)
            }
            if n == 0 { return result }
            result.append(contentsOf: buffer[0..<n])
            if result.count > limit { throw FileError("read", path, errno: EFBIG) }
        }
    }

    /// Opens `relative` (`/`-separated, no `.`, `..` or empty component) beneath the directory open on
    /// `directory`, one component at a time with `openat` and `O_NOFOLLOW`: a symbolic link anywhere on
    /// the way fails the open (ELOOP or ENOTDIR), so a directory swapped for a link cannot redirect it.
    /// `flags` apply to the last component; errors name `displayPath`.
    public static func openBeneath(
        _ directory: Int32, _ relative: String, _ flags: Int32, displayPath: String
    ) throws(FileError) -> Int32 {
        let components = relative.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard !components.isEmpty, !components.contains(where: { $0.isEmpty || $0 == "." || $0 == ".." }) else {
            throw FileError("open", displayPath, errno: EINVAL)
        }
        var current = directory
        defer { if current != directory { close(current) } }
        for (index, component) in components.enumerated() {
            let last = index == components.count - 1
            let componentFlags = (last ? flags : (O_RDONLY | O_DIRECTORY)) | O_NOFOLLOW | O_CLOEXEC
            var fd: Int32
            repeat { fd = openat(current, component, componentFlags, 0) } while fd < 0 && errno == EINTR
            guard fd >= 0 else { throw FileError("open", displayPath) }
            if last { return fd }
            if current != directory { close(current) }
            current = fd
        }
        fatalError("unreachable: the last component returns")
    }

    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(FileError) {
        var offset = 0
        while offset < bytes.count {
            let n = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileError("write", path)
            }
            offset += n
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(FileError) {
        let failure: Int32? = bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += n
            }
            return nil
        }
        if let failure { throw FileError("write", path, errno: failure) }
    }

    public static func fsyncPath(_ path: String, directory: Bool = false) throws(FileError) {
        let fd = try open(path, directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY)
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw FileError("fsync", path) }
    }

    /// A name for a temporary file that no other writer will pick.
    public static func temporaryName(_ hint: String) -> String {
        let random = UInt64.random(in: 0...UInt64.max)
        return ".tmp-\(getpid())-\(String(random, radix: 16))-\(hint)"
    }

    /// Writes `bytes` to a new temporary file in `directory` and makes it durable: created with
    /// `open(O_CREAT|O_EXCL)` and `mode` (never wider, not even for a moment; no chmod afterwards),
    /// written whole, fsynced, closed. Returns its path; the caller renames or links it into place.
    /// On failure nothing is left behind. `hint` ends the temporary name (all start with `.tmp-`).
    public static func writeTemporary(
        _ bytes: [UInt8], in directory: String, mode: mode_t, hint: String = "file"
    ) throws(FileError) -> String {
        let temporary = directory + "/" + temporaryName(hint)
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_EXCL, mode)
        do throws(FileError) {
            try writeAll(fd, bytes, path: temporary)
            guard fsync(fd) == 0 else { throw FileError("fsync", temporary) }
            guard close(fd) == 0 else { throw FileError("close", temporary) }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        return temporary
    }

    /// Gives the file at `temporary` the name `path`, and removes the name `temporary` (also on failure):
    /// `rename` over an existing `path` when `replace`; otherwise `link`, which keeps an existing `path`
    /// and fails with EEXIST. The directory is not fsynced here.
    public static func moveIntoPlace(_ temporary: String, at path: String, replace: Bool) throws(FileError) {
        if replace {
            guard rename(temporary, path) == 0 else {
                let failure = FileError("rename to \(path)", temporary)
                unlink(temporary)
                throw failure
            }
        } else {
            let failure: FileError? = link(temporary, path) == 0 ? nil : FileError("link to \(path)", temporary)
            unlink(temporary)
            if let failure { throw failure }
        }
    }

    /// Writes `bytes` to `path` atomically and durably: a temporary file in the
    /// same directory (created with `mode`, see `writeTemporary`), moved into
    /// place (`moveIntoPlace`: rename over `path`, or with `replace: false` a
    /// link that fails with EEXIST if `path` exists), fsync of the directory.
    public static func writeAtomically(
        _ bytes: [UInt8], to path: String, mode: mode_t = 0o644, replace: Bool = true
    ) throws(FileError) {
        let directory = parentDirectory(of: path)
        let name = path.split(separator: "/").last.map(String.init) ?? "file"
        let temporary = try writeTemporary(bytes, in: directory, mode: mode, hint: name)
        try moveIntoPlace(temporary, at: path, replace: replace)
        try fsyncPath(directory, directory: true)
    }

    /// Names in a directory, without `.` and `..`.
    public static func listDirectory(_ path: String) throws(FileError) -> [String] {
        try listDirectoryBytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Names in a directory as raw bytes (file names need not be UTF-8).
    public static func listDirectoryBytes(_ path: String) throws(FileError) -> [[UInt8]] {
        guard let dir = opendir(path) else { throw FileError("opendir", path) }
        defer { closedir(dir) }
        return names(in: dir)
    }

    /// Names in the directory open on `fd` (which stays open), as raw bytes; errors name `path`.
    public static func listDirectoryBytes(_ fd: Int32, path: String) throws(FileError) -> [[UInt8]] {
        let copy = dup(fd)
        guard copy >= 0 else { throw FileError("dup", path) }
        guard let dir = fdopendir(copy) else {
            let failure = FileError("fdopendir", path)
            close(copy)
            throw failure
        }
        defer { closedir(dir) }
        rewinddir(dir)
        return names(in: dir)
    }

    private static func names(in dir: OpaquePointer) -> [[UInt8]] {
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                let bytes = raw.bindMemory(to: UInt8.self)
                let length = bytes.firstIndex(of: 0) ?? bytes.count
                return Array(bytes[0..<length])
            }
            if name == [0x2E] || name == [0x2E, 0x2E] { continue }
            names.append(name)
        }
        return names
    }

    /// The text of the symbolic link `name` in the directory open on `directory`; errors name `path`.
    public static func readLink(at directory: Int32, _ name: [UInt8], path: String) throws(FileError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = (name + [0]).withUnsafeBufferPointer { namePointer in
            namePointer.withMemoryRebound(to: CChar.self) { cName in
                buffer.withUnsafeMutableBufferPointer {
                    readlinkat(directory, cName.baseAddress!, UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count)
                }
            }
        }
        guard n >= 0 else { throw FileError("readlink", path) }
        return Array(buffer[0..<n])
    }

    public static func readLink(_ path: String) throws(FileError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBufferPointer { readlink(path, UnsafeMutableRawPointer($0.baseAddress!).assumingMemoryBound(to: CChar.self), $0.count) }
        guard n >= 0 else { throw FileError("readlink", path) }
        return Array(buffer[0..<n])
    }
}
