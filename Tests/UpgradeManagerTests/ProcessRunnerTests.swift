#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// Programs the manager runs: output captured, cwd and environment set, and a timeout that leaves nothing behind.
struct ProcessRunnerTests {
    @Test func capturesStdoutAndStderrAndRunsInTheGivenDirectoryWithTheGivenEnvironment() throws {
        let node = try TestNode()
        defer { node.remove() }
        let result = try ProcessRunner.run(.shell("echo out; echo err >&2; pwd; echo $GREETING; exit 3",
                                                  environment: ["GREETING": "hello"], workingDirectory: node.mount,
                                                  outputPath: node.directory + "/out", timeoutSeconds: 10))
        #expect(result.ending == .exited(3))
        #expect(String(decoding: result.output, as: UTF8.self) == "out\nerr\n\(node.mount)\nhello\n")
    }

    @Test func aMissingProgramIsReportedNotRun() throws {
        let node = try TestNode()
        defer { node.remove() }
        #expect(throws: ProcessRunnerError.self) {
            try ProcessRunner.run(Command(executable: node.directory + "/nope", outputPath: node.directory + "/out", timeoutSeconds: 1))
        }
    }

    /// A grandchild that ignores SIGTERM dies too: the whole group gets SIGKILL after the grace time.
    @Test func aTimeoutKillsTheWholeProcessGroup() throws {
        let node = try TestNode()
        defer { node.remove() }
        let pidFile = node.directory + "/grandchild"
        let start = Date()
        let result = try ProcessRunner.run(.shell("trap '' TERM; sleep 1000 & echo $! > \(pidFile); wait",
                                                  environment: [:], outputPath: node.directory + "/out", timeoutSeconds: 0.5))
        #expect(result.ending == .timedOut(seconds: 0.5))
        #expect(result.endingDescription == "timed out after 0.5 s (process group killed)")
        let grandchild = try #require(node.read(pidFile).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) })
        #expect(Harness.waitUntil(2) { !TestNode.isAlive(grandchild) }, "grandchild \(grandchild) outlived the timeout")
        #expect(Date().timeIntervalSince(start) < 5)
    }

    /// Dispatch's threads block SIGTERM; a child must not inherit that, or a timeout's SIGTERM would not reach it.
    @Test func childrenGetAnEmptySignalMaskEvenFromAThreadThatBlocksSIGTERM() throws {
        let node = try TestNode()
        defer { node.remove() }
        var blocked = sigset_t(), previous = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGTERM)
        pthread_sigmask(SIG_BLOCK, &blocked, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        let start = Date()
        let result = try ProcessRunner.run(.shell("grep SigBlk /proc/self/status; exec sleep 1000", environment: [:],
                                                  outputPath: node.directory + "/out", timeoutSeconds: 0.3))
        #expect(result.ending == .timedOut(seconds: 0.3))
        #expect(String(decoding: result.output, as: UTF8.self) == "SigBlk:\t0000000000000000\n")
        // SIGTERM ended it at once, not the SIGKILL 2 s later.
        #expect(Date().timeIntervalSince(start) < ProcessRunner.killGraceSeconds)
    }
}
