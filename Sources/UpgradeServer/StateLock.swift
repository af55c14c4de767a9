#if canImport(Glibc)
import Glibc
#endif
import Foundation
import UpgradeFiles

/// One `upgradefs serve` per state directory: an exclusive `flock` on
/// `STATE/serve.lock`, held while the server runs (the kernel drops it when
/// the process ends, however it ends). The file holds the holder's pid, for
/// the message the next server prints.
final class StateLock {
    static let fileName = "serve.lock"
    private var fd: Int32

    private init(fd: Int32) { self.fd = fd }

    /// Takes the lock, creating the state directory and lock file if needed; fails at once, naming
    /// the holder, when another process holds it.
    static func acquire(stateDirectory: String) throws -> StateLock {
        let path = stateDirectory + "/" + fileName
        let fd: Int32
        do {
            try POSIXFiles.makeDirectories(stateDirectory, mode: 0o755)
            fd = try POSIXFiles.open(path, O_RDWR | O_CREAT | O_NOFOLLOW, 0o644)
        } catch {
            throw ServerStartError(description: "cannot lock the state directory: \(error)")
        }
        var result: Int32
        repeat { result = flock(fd, LOCK_EX | LOCK_NB) } while result != 0 && errno == EINTR
        guard result == 0 else {
            let code = errno
            let holder = (try? POSIXFiles.readToEnd(fd, path: path, limit: 64))
                .map { String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) } ?? ""
            close(fd)
            if code == EWOULDBLOCK {
                let who = Int(holder).map { "another upgradefs serve (pid \($0))" } ?? "another upgradefs serve"
                throw ServerStartError(description: "\(who) is using the state directory \(stateDirectory) (it holds \(path))")
            }
            throw ServerStartError(description: "cannot lock \(path): \(String(cString: strerror(code)))")
        }
        let pid = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) == 0 { _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
        return StateLock(fd: fd)
    }

    /// Lets the next server in (an in-process server that stopped; a process that exits needs not call it).
    func release() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    deinit { release() }
}
