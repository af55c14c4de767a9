#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// `upgradefs` and `upgradefs manager` as an operator starts them (issue 8): relative paths, exit codes for a
/// missing config file, a mount without a whiteboard, and no subcommand at all.
@Suite(.serialized)
struct ManagerCommandTests {
    @Test func aRelativeMountAndConfigWorkFromTheManagersWorkingDirectory() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.write(node.configText("heartbeat-interval = 0.5"), to: node.directory + "/node.toml")
        try node.publish(1, sf: "#!/bin/sh\necho \"sf ran in $(pwd)\"\n")
        let manager = try ManagerProcess(node, arguments: ["manager", "--mount", "mnt", "--config", "node.toml"],
                                         workingDirectory: node.directory)
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "running" && node.selfFile("version") == "1" },
                "\(manager.output)\n\(node.log)")
        try manager.stop()
        #expect(node.log.contains("sf 1: sf ran in \(node.mount)/versions/1"))
        #expect(!node.log.contains("posix_spawn"))
    }

    @Test func aMissingConfigFileExitsWith66NamingIt() throws {
        let node = try TestNode()
        defer { node.remove() }
        let missing = node.directory + "/no-such-node.toml"
        let manager = try ManagerProcess(node, config: missing, waitForHeartbeat: false)
        #expect(manager.wait(seconds: 30) == .exited(66))
        #expect(manager.output.contains("upgradefs manager: \(missing) cannot be read"), "\(manager.output)")
    }

    @Test func aMountWithoutAWhiteboardIsRefusedWith69() throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = node.directory + "/node.toml"
        try node.write(node.configText(), to: configFile)
        // A plain directory (the mount is not up).
        let plain = node.directory + "/plain"
        try POSIXFiles.makeDirectories(plain)
        var manager = try ManagerProcess(node, arguments: ["manager", "--mount", plain, "--config", configFile], waitForHeartbeat: false)
        #expect(manager.wait(seconds: 30) == .exited(69))
        #expect(manager.output.contains("\(plain) is not an upgradefs mount (no latest and versions/ in it)"), "\(manager.output)")
        // A mount without a node key: latest and versions/, but no self/.
        unlink(node.mount + "/self")
        manager = try ManagerProcess(node, config: configFile, waitForHeartbeat: false)
        #expect(manager.wait(seconds: 30) == .exited(69))
        #expect(manager.output.contains("\(node.mount) has no whiteboard (no self/ in it)"), "\(manager.output)")
        #expect(!POSIXFiles.exists(node.root + "/ldb"), "nothing is set up for a refused mount")
    }

    @Test func upgradefsWithoutArgumentsPrintsUsageOnStderrAndExits64() throws {
        let node = try TestNode()
        defer { node.remove() }
        let quietErrors = try ProcessRunner.run(.shell("exec \"\(Harness.binary)\" 2>/dev/null",
                                                       environment: [:], outputPath: node.directory + "/stdout", timeoutSeconds: 30))
        #expect(quietErrors.ending == .exited(64))
        #expect(quietErrors.output.isEmpty, "\(String(decoding: quietErrors.output, as: UTF8.self))")
        let quietOutput = try ProcessRunner.run(.shell("exec \"\(Harness.binary)\" >/dev/null", environment: [:],
                                                       outputPath: node.directory + "/stderr", timeoutSeconds: 30))
        #expect(quietOutput.ending == .exited(64))
        #expect(String(decoding: quietOutput.output, as: UTF8.self).contains("USAGE: upgradefs"))
    }
}
