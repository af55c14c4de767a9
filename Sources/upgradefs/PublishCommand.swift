#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Foundation
import UpgradeServer

struct PublishCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Drop a bundle into a server's publish directory; with --wait, wait for the verdict.",
        discussion: """
        Copies DIR (cp -a) to a hidden name in the publish directory and renames it to NAME (DIR's last \
        component, or --name), as operators do by hand, so the server never sees half a bundle. With --wait it \
        returns once the server wrote NAME.published (exit 0, prints it) or NAME.rejected (exit 65, prints the \
        reason), or after --timeout seconds (exit 75; the bundle stays). Exit 73 when NAME, NAME.published or \
        NAME.rejected is in the publish directory already, 66 when DIR or the publish directory is missing.
        """
    )

    @Argument(help: "The bundle directory.")
    var directory: String

    @Option(help: "The server's publish directory (serve --publish).")
    var to: String

    @Option(help: "The name the bundle gets in the publish directory (default: DIR's last component).")
    var name: String?

    @Flag(help: "Wait until the server has published or rejected the bundle.")
    var wait = false

    @Option(help: "With --wait: give up after this many seconds.")
    var timeout: Double = 300

    var bundleName: String { name ?? URL(fileURLWithPath: directory).standardizedFileURL.lastPathComponent }

    func validate() throws {
        guard !bundleName.isEmpty, !bundleName.hasPrefix("."), !bundleName.contains("/") else {
            throw ValidationError("'\(bundleName)' cannot name a bundle: it must not be empty, start with '.' or hold '/'")
        }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        var isDirectory: ObjCBool = false
        for path in [directory, to] {
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                printError("upgradefs publish: \(path) is not a directory")
                throw ExitCodes.noInput
            }
        }
        let target = to + "/" + bundleName
        let published = target + Publisher.publishedSuffix, rejected = target + Publisher.rejectedSuffix
        if let existing = [target, published, rejected].first(where: { FileManager.default.fileExists(atPath: $0) }) {
            printError("upgradefs publish: \(existing) exists already (delete the bundle and its marker to drop it again)")
            throw ExitCodes.cannotCreate
        }
        try drop(at: target)
        guard wait else {
            print("dropped \(target)")
            return
        }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: published, encoding: .utf8) {
                print("published \(bundleName): \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
                return
            }
            if let text = try? String(contentsOfFile: rejected, encoding: .utf8) {
                printError("upgradefs publish: rejected: \(text.trimmingCharacters(in: .whitespacesAndNewlines))")
                throw ExitCodes.dataError
            }
            usleep(100_000)
        }
        printError("upgradefs publish: \(bundleName) was neither published nor rejected within \(timeout) s; it stays in \(to)")
        throw ExitCodes.timedOut
    }

    /// Copies the bundle to a hidden name beside `target` (ignored by the server), then renames it into place.
    private func drop(at target: String) throws {
        let hidden = to + "/.\(bundleName).tmp-\(getpid())"
        let copy = Process()
        copy.executableURL = URL(fileURLWithPath: "/bin/cp")
        copy.arguments = ["-a", "--", directory, hidden]
        try copy.run()
        copy.waitUntilExit()
        guard copy.terminationStatus == 0 else {
            _ = try? FileManager.default.removeItem(atPath: hidden)
            printError("upgradefs publish: cannot copy \(directory) to \(hidden) (cp exited \(copy.terminationStatus))")
            throw ExitCodes.osError
        }
        guard rename(hidden, target) == 0 else {
            let reason = String(cString: strerror(errno))
            _ = try? FileManager.default.removeItem(atPath: hidden)
            printError("upgradefs publish: cannot rename \(hidden) to \(target): \(reason)")
            throw ExitCodes.osError
        }
    }
}
