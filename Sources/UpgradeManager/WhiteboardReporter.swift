#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Foundation
import Logging
import Synchronization
import UpgradeCore
import UpgradeFiles

/// Writes the node's own whiteboard files, `MOUNT/self/{state,version,upgrade,heartbeat,log}`.
///
/// Only plain file calls the mount supports: whole files are written with open(O_TRUNC), write, close (the
/// mount commits each write as it comes, and has no rename); `log` is appended with O_APPEND. A failing write is
/// logged and kept to be retried at the next `flush()` (the heartbeat calls it); it never stops the manager.
/// Thread-safe: the heartbeat thread and the manager's loop both call it.
public final class WhiteboardReporter: Sendable {
    public let selfDirectory: String
    private let logger: Logger
    private let pending = Mutex(Pending())
    /// Log lines waiting for a failed append to succeed are capped at this many bytes (oldest dropped).
    static let maxPendingLogBytes = 256 << 10

    private struct Pending {
        /// File name → content still to be written (the latest wins).
        var files: [String: String] = [:]
        /// File name → content last written successfully.
        var written: [String: String] = [:]
        var logLines: [String] = []
        var failing = false
    }

    public init(selfDirectory: String, logger: Logger) {
        self.selfDirectory = selfDirectory
        self.logger = logger
    }

    /// Reports the node's state, version and the upgrade the state concerns (empty when none).
    public func report(state: NodeState, version: Int64, upgrade: Int64?) {
        pending.withLock { p in
            for (name, content) in [("state", state.rawValue + "\n"), ("version", "\(version)\n"),
                                    ("upgrade", upgrade.map { "\($0)\n" } ?? "")]
            where p.written[name] != content {
                p.files[name] = content
            }
        }
        flush()
    }

    /// `class`: the node's class (node.toml), one line; written when the manager starts.
    public func report(class name: String) {
        pending.withLock { $0.files["class"] = name + "\n" }
        flush()
    }

    public func heartbeat(now: Double = Date().timeIntervalSince1970) {
        pending.withLock { $0.files["heartbeat"] = "\(Int64(now))\n" }
        flush()
    }

    /// Appends one event to `log`, each line as `2026-11-23T03:50:00Z text`.
    public func log(_ text: String, prefix: String = "") {
        let stamp = Self.timestamp()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
            .map { "\(stamp) \(prefix)\(Self.oneLine(String($0)))\n" }
        guard !lines.isEmpty else { return }
        pending.withLock { p in
            p.logLines += lines
            var total = p.logLines.reduce(0) { $0 + $1.utf8.count }
            while total > Self.maxPendingLogBytes, !p.logLines.isEmpty { total -= p.logLines.removeFirst().utf8.count }
        }
        flush()
    }

    /// Writes what is pending; what fails stays pending.
    public func flush() {
        pending.withLock { p in
            var failures: [String] = []
            for (name, content) in p.files.sorted(by: { $0.key < $1.key }) {
                do {
                    try write(name, Array(content.utf8), append: false)
                    p.files[name] = nil
                    p.written[name] = content
                } catch {
                    failures.append("\(error)")
                }
            }
            if !p.logLines.isEmpty {
                do {
                    try write("log", Array(p.logLines.joined().utf8), append: true)
                    p.logLines.removeAll()
                } catch {
                    failures.append("\(error)")
                }
            }
            if failures.isEmpty {
                if p.failing { logger.notice("whiteboard writes succeed again") }
                p.failing = false
            } else if !p.failing {
                // Once per outage, not once per heartbeat.
                logger.warning("cannot write the whiteboard (will retry): \(failures.joined(separator: "; "))")
                p.failing = true
            }
        }
    }

    /// True when nothing waits to be written.
    public var isFlushed: Bool { pending.withLock { $0.files.isEmpty && $0.logLines.isEmpty } }

    private func write(_ name: String, _ bytes: [UInt8], append: Bool) throws(FileError) {
        let path = selfDirectory + "/" + name
        let flags = O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC)
        let fd = try POSIXFiles.open(path, flags, 0o644)
        do throws(FileError) {
            try POSIXFiles.writeAll(fd, bytes, path: path)
        } catch {
            close(fd)
            throw error
        }
        // An empty file is committed at close (the mount commits every other write as it comes): its result counts.
        guard close(fd) == 0 else { throw FileError("close", path) }
    }

    static func timestamp(_ date: Date = Date()) -> String { TUFDate.format(date) }

    /// Control characters (but tab) made visible, so one event stays one line.
    static func oneLine(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if (scalar.value < 0x20 && scalar != "\t") || scalar.value == 0x7F {
                out += "\\x" + String(scalar.value, radix: 16)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
