#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Testing
import UpgradeFiles
@testable import UpgradeManager
// Exported so that every file of this target sees the shared helpers (Harness, TemporaryDirectory).
@_exported import TestSupport

/// A node for tests: a plain directory laid out like the mount (`latest`, `versions/N/`, `udb/upgrades/N/control`,
/// `udb/nodes/n1/`, `self -> udb/nodes/n1`), a root for the manager, and a tiny app: `start` backgrounds a
/// `sleep` and writes `PID VERSION` to `app.pid`; `stop` kills it. The app's state is `state/data`, written by
/// each TF as `vN COUNT` (the format changes with every version).
final class TestNode {
    let directory: String
    var mount: String { directory + "/mnt" }
    var root: String { directory + "/root" }
    var pidFile: String { directory + "/app.pid" }
    var selfDirectory: String { mount + "/udb/nodes/n1" }

    init() throws {
        directory = TemporaryDirectory("manager-test").path
        try POSIXFiles.makeDirectories(mount + "/versions")
        try POSIXFiles.makeDirectories(mount + "/udb/upgrades")
        try POSIXFiles.makeDirectories(selfDirectory)
        symlink("udb/nodes/n1", mount + "/self")
        try write("0\n", to: mount + "/latest")
    }

    /// Stops the app (whatever version runs) and removes everything.
    func remove() {
        if let (pid, _) = appProcess() { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// The test config: `overrides` ("key = value" lines) replace the defaults for their keys.
    func configText(_ overrides: String = "") -> String {
        var lines = ["node = \"n1\"", "class = \"counter\"", "root = \"\(root)\"",
                     "poll-interval = 0.2", "heartbeat-interval = 1", "check-timeout = 3"]
        for line in overrides.split(separator: "\n").map(String.init) {
            let key = line.split(separator: "=").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            lines.removeAll { $0.hasPrefix(key + " ") }
            lines.append(line)
        }
        return lines.joined(separator: "\n") + "\n"
    }

    func config(_ overrides: String = "") throws -> NodeConfig {
        try NodeConfig.parse(configText(overrides))
    }

    func manager(_ extra: String = "") throws -> NodeManager {
        var logger = Logger(label: "test.manager")
        logger.logLevel = .critical
        return try NodeManager(config: try config(extra), mount: mount, logger: logger)
    }

    // MARK: Publishing

    /// The TF of the counter app: reads `vK COUNT` (or nothing), writes `vN COUNT+1`.
    static let counterTF = """
        #!/bin/sh
        set -e
        f="$UPGRADEFS_STATE/data"
        count=0
        if [ -f "$f" ]; then read tag count < "$f"; fi
        echo "v$UPGRADEFS_TO $((count + 1))" > "$f"
        echo "transformed to v$UPGRADEFS_TO"
        """

    /// Passes when the app runs at the version being installed.
    var counterCheck: String {
        """
        #!/bin/sh
        read pid version < "\(pidFile)" || exit 1
        [ "$version" = "$UPGRADEFS_TO" ] && kill -0 "$pid"
        """
    }

    /// Publishes bundle N (class `counter` unless told) and moves `latest` to it.
    func publish(_ version: Int64, class className: String = "counter", from: Int64? = nil,
                 sf: String? = nil, tf: String? = TestNode.counterTF, check: String? = "default") throws {
        let bundle = mount + "/versions/\(version)"
        try POSIXFiles.makeDirectories(bundle + "/payload/bin")
        var manifest = "class = \"\(className)\"\nversion = \(version)\n"
        if let from { manifest += "from-version = \(from)\n" }
        try write(manifest, to: bundle + "/upgrade.toml")
        try write("""
            #!/bin/sh
            if [ -f "\(pidFile)" ] && read pid v < "\(pidFile)" && kill -0 "$pid" 2>/dev/null; then exit 0; fi
            sleep 1000 </dev/null >/dev/null 2>&1 &
            echo "$! $UPGRADEFS_VERSION" > "\(pidFile)"
            echo "app $UPGRADEFS_VERSION started"
            """, to: bundle + "/payload/bin/start", mode: 0o755)
        try write("""
            #!/bin/sh
            if [ -f "\(pidFile)" ]; then read pid v < "\(pidFile)"; kill "$pid" 2>/dev/null; rm -f "\(pidFile)"; fi
            exit 0
            """, to: bundle + "/payload/bin/stop", mode: 0o755)
        try write("release \(version)\n", to: bundle + "/payload/VERSION", mode: 0o640)
        if let sf { try write(sf, to: bundle + "/sf", mode: 0o755) }
        if let tf { try write(tf, to: bundle + "/tf", mode: 0o755) }
        if let check { try write(check == "default" ? counterCheck : check, to: bundle + "/check", mode: 0o755) }
        try write("\(version)\n", to: mount + "/latest")
    }

    func control(_ version: Int64, _ word: String) throws {
        try POSIXFiles.makeDirectories(mount + "/udb/upgrades/\(version)")
        try write(word + "\n", to: mount + "/udb/upgrades/\(version)/control")
    }

    // MARK: Looking

    func selfFile(_ name: String) -> String? { read(selfDirectory + "/" + name)?.trimmingCharacters(in: .newlines) }
    var log: String { read(selfDirectory + "/log") ?? "" }

    /// Where `root/current` points (`gen/N`), nil when there is none.
    var current: String? { try? String(decoding: POSIXFiles.readLink(root + "/current"), as: UTF8.self) }
    func stateData(_ generation: Int64) -> String? { read(root + "/gen/\(generation)/state/data")?.trimmingCharacters(in: .newlines) }
    func generationExists(_ version: Int64) -> Bool { POSIXFiles.exists(root + "/gen/\(version)") }

    /// The app's pid and version when it runs.
    func appProcess() -> (pid_t, Int64)? {
        guard let text = read(pidFile) else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 2, let pid = pid_t(parts[0]), let version = Int64(parts[1]) else { return nil }
        return Self.isAlive(pid) ? (pid, version) : nil
    }
    var appVersion: Int64? { appProcess()?.1 }

    /// Alive and not a zombie (a container's init may be slow to reap).
    static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)]
        return state != "Z" && state != "X"
    }

    // MARK: Files

    func write(_ text: String, to path: String, mode: mode_t = 0o644) throws {
        try POSIXFiles.makeDirectories(POSIXFiles.parentDirectory(of: path))
        unlink(path)
        let fd = try POSIXFiles.open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
        defer { close(fd) }
        try POSIXFiles.writeAll(fd, Array(text.utf8), path: path)
        fchmod(fd, mode)
    }

    func read(_ path: String) -> String? {
        (try? POSIXFiles.readFile(path)).map { String(decoding: $0, as: UTF8.self) }
    }
}
