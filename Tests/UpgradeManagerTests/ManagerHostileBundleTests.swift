#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// A careless or hostile bundle author (SF, TF, check, payload, upgrade.toml) and a local user against the
/// manager (issue 8, "re-check the classes around it"), on a directory laid out like the mount.
struct ManagerHostileBundleTests {
    static func pid(_ node: TestNode, _ path: String) -> pid_t? {
        node.read(path).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// A manager that has installed version 1, whose app runs.
    static func runningVersion1(_ node: TestNode, _ config: String = "") throws -> NodeManager {
        try node.publish(1)
        let manager = try node.manager(config)
        #expect(try manager.tick() == .running)
        return manager
    }

    // MARK: Processes

    /// `setsid`, a double fork and `nohup … &` leave the SF's process group; they carry its environment's
    /// marker, and are ended when the SF ends.
    @Test func anSFThatEscapesItsProcessGroupIsEndedWithIt() throws {
        let node = try TestNode()
        defer { node.remove() }
        let files = ["setsid", "double", "nohup"].map { node.directory + "/" + $0 }
        try node.publish(1, sf: """
            #!/bin/sh
            setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \(files[0])
            ( sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \(files[1]) ) &
            nohup sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > \(files[2])
            sleep 0.2
            exit 75
            """)
        let manager = try node.manager()
        #expect(try manager.tick() == .waiting)
        let escaped = files.compactMap { Self.pid(node, $0) }
        defer { escaped.forEach { kill($0, SIGKILL) } }
        #expect(escaped.count == 3)
        for pid in escaped { #expect(Harness.waitUntil(5) { !TestNode.isAlive(pid) }, "\(pid) outlived the SF") }
        #expect(node.log.contains("left running by sf 1 outside its process group"), "\(node.log)")
    }

    /// A TF that moves a child into the manager's own process group (`setpgid`, allowed within the session):
    /// neither its group's kill nor a kill of the manager's group (the manager's own) may be used; it is ended
    /// by its pid when the TF ends.
    @Test func aTFThatJoinsTheManagersProcessGroupIsEndedWithIt() throws {
        let node = try TestNode()
        defer { node.remove() }
        let manager = try Self.runningVersion1(node)
        let joined = node.directory + "/joined"
        try node.publish(2, from: 1, tf: """
            #!/bin/sh
            perl -e 'setpgrp(0, getpgrp($ARGV[0])) or die "setpgrp: $!"; open(F, ">", $ARGV[1]); print F "$$\\n"; close(F); exec "sleep", "1000"' $PPID \(joined) </dev/null >/dev/null 2>&1 &
            while [ ! -s \(joined) ]; do sleep 0.05; done
            """)
        #expect(try manager.tick() == .running)
        let pid = try #require(Self.pid(node, joined))
        defer { kill(pid, SIGKILL) }
        #expect(Harness.waitUntil(5) { !TestNode.isAlive(pid) }, "\(pid) in the manager's group outlived the TF")
        #expect(node.log.contains("ended processes \(pid) in the manager's own group (left running by tf 2 outside its process group)"), "\(node.log)")
    }

    /// A hook's child that moved into a group led by a live program that is not the manager's (the shell
    /// script that started the manager) is ended alone: the script and the rest of its group keep running.
    @Test func aMarkedProcessInAForeignGroupIsEndedAloneNotItsGroup() throws {
        let node = try TestNode()
        defer { node.remove() }
        let childFile = node.directory + "/child"
        let leader = try ProcessRunner.start(.shell(
            "\(ProcessTable.markerName)=\(node.root) sleep 1000 & echo $! > \(childFile); exec sleep 1000",
            environment: [:], outputPath: node.directory + "/script.out", timeoutSeconds: .infinity))
        defer {
            kill(-leader, SIGKILL)
            var status: Int32 = 0
            waitpid(leader, &status, 0)
        }
        #expect(Harness.waitUntil(5) { Self.pid(node, childFile) != nil })
        let child = try #require(Self.pid(node, childFile))
        #expect(ProcessTable.stat(child)?.pgrp == leader)
        let manager = try node.manager()
        try manager.recover()
        #expect(Harness.waitUntil(5) { !TestNode.isAlive(child) }, "the marked child still runs")
        #expect(TestNode.isAlive(leader), "the foreign group's leader was killed")
    }

    /// The real daemon killed with -9 while its TF runs, which has left its process group and session
    /// (`setsid`): the next manager ends it before it recovers anything.
    @Test func aTFThatEscapesWithSetsidIsEndedAfterTheManagerIsKilled() throws {
        let node = try TestNode()
        defer { node.remove() }
        let configFile = node.directory + "/node.toml"
        try node.write(node.configText("heartbeat-interval = 0.5\ntf-timeout = 600"), to: configFile)
        try node.publish(1)
        var leftovers: [pid_t] = []
        defer { leftovers.forEach { kill($0, SIGKILL) } }
        var manager = try ManagerProcess(node, config: configFile)
        leftovers.append(manager.pid)
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "running" })
        let escapedFile = node.directory + "/escaped"
        try node.publish(2, from: 1, tf: """
            #!/bin/sh
            [ "$UPGRADEFS_ATTEMPT" = 1 ] || exit 1
            setsid sh -c 'while :; do echo tick >> "$UPGRADEFS_STATE/ticks"; sleep 0.05; done' </dev/null >/dev/null 2>&1 &
            echo $! > \(escapedFile)
            sleep 1000
            """)
        #expect(Harness.waitUntil(30) { Self.pid(node, escapedFile) != nil })
        let escaped = try #require(Self.pid(node, escapedFile))
        leftovers.append(escaped)
        #expect(ProcessTable.stat(escaped)?.session == escaped, "the TF's child did not leave the session")
        kill(manager.pid, SIGKILL)
        _ = manager.wait(seconds: 10)
        #expect(TestNode.isAlive(escaped))

        manager = try ManagerProcess(node, config: configFile)
        leftovers.append(manager.pid)
        #expect(Harness.waitUntil(10) { !TestNode.isAlive(escaped) }, "the escaped TF child outlived the restart")
        // Rolled back; the second attempt fails at once (its TF says so).
        #expect(Harness.waitUntil(30) { node.selfFile("state") == "failed" && node.selfFile("version") == "1" }, "\(node.log)")
        #expect(node.log.contains("unrecorded programs of the previous manager"), "\(node.log)")
        #expect(node.log.contains("manager restarted during upgrade 2 at step staged; rolled back to 1"), "\(node.log)")
        try manager.stop()
    }

    /// A TF that ignores SIGTERM and never exits: SIGKILL after the grace time; the upgrade fails and rolls back.
    @Test func aTFThatIgnoresSIGTERMAndNeverExitsIsKilledAtItsTimeout() throws {
        let node = try TestNode()
        defer { node.remove() }
        let manager = try Self.runningVersion1(node, "tf-timeout = 0.5")
        let pidFile = node.directory + "/tf.pid"
        try node.publish(2, from: 1, tf: "#!/bin/sh\ntrap '' TERM\necho $$ > \(pidFile)\nwhile :; do sleep 1; done\n")
        let began = Date()
        #expect(try manager.tick() == .failed)
        #expect(Date().timeIntervalSince(began) < 0.5 + ProcessRunner.killGraceSeconds + 5)
        let tf = try #require(Self.pid(node, pidFile))
        #expect(!TestNode.isAlive(tf))
        #expect(node.log.contains("upgrade 2 failed: tf: timed out after 0.5 s (process group killed)"), "\(node.log)")
        #expect(node.current == "gen/1" && node.appVersion == 1)
    }

    /// Hundreds of MB on stdout: the output file stays bounded, the log gets only the tail, and the note.
    @Test func anSFThatFloodsItsOutputKeepsTheFileAndTheLogBounded() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1, sf: "#!/bin/sh\nhead -c 300000000 /dev/zero | tr '\\\\0' x\necho\necho last words\nexit 75\n")
        let manager = try node.manager("sf-timeout = 120")
        #expect(try manager.tick() == .waiting)
        var st = stat()
        #expect(stat(node.root + "/ldb/out/sf-1.out", &st) == 0)
        #expect(Int64(st.st_size) <= 2 * ProcessRunner.maxOutputBytes, "output file is \(st.st_size) bytes")
        let log = node.log
        #expect(log.utf8.count < 256 << 10, "log is \(log.utf8.count) bytes")
        #expect(log.contains("last words"))
        #expect(log.contains("bytes of output dropped: more than \(ProcessRunner.maxOutputBytes) bytes written]"), "\(log.suffix(300))")
    }

    // MARK: Files

    /// The old state holds a link to a directory outside (as to /etc): it is copied as a link, and neither
    /// staging, the TF's run, sealing, rollback nor pruning writes, chowns or removes through it.
    @Test func aLinkInTheOldStateToOutsideIsCopiedAsALinkAndNeverFollowed() throws {
        let node = try TestNode()
        defer { node.remove() }
        let outside = node.directory + "/etc"
        try node.write("root:x:0:0\n", to: outside + "/passwd", mode: 0o600)
        let manager = try Self.runningVersion1(node)
        #expect(symlink(outside, node.root + "/gen/1/state/etc") == 0)

        try node.publish(2, from: 1)
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/2")
        #expect(try POSIXFiles.readLink(node.root + "/gen/2/state/etc") == Array(outside.utf8))
        try node.publish(3, from: 2, tf: "#!/bin/sh\nexit 1\n") // staged, then removed
        #expect(try manager.tick() == .failed)
        try node.control(3, "abort")
        try node.publish(4, from: 2) // commits and prunes generation 2
        #expect(try manager.tick() == .running)
        #expect(!node.generationExists(1) && !node.generationExists(3) && node.current == "gen/4")
        #expect(node.read(outside + "/passwd") == "root:x:0:0\n")
        var st = stat()
        #expect(stat(outside + "/passwd", &st) == 0 && st.st_mode & 0o7777 == 0o600 && st.st_uid == geteuid())
        #expect(try POSIXFiles.listDirectory(outside) == ["passwd"])
    }

    /// Set-uid and set-gid bits, world-writable directories and files, and files owned by another user in the
    /// payload; a set-uid file the app left in its state.
    @Test func aPayloadWithSetuidFilesWorldWritableDirsAndForeignOwnersIsInstalledWithSafeModes() throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        let payload = node.mount + "/versions/1/payload"
        try node.write("#!/bin/sh\n", to: payload + "/bin/suid", mode: 0o755)
        chmod(payload + "/bin/suid", 0o6755)
        lchown(payload + "/bin/suid", 65534, 65534)
        try node.write("anyone\n", to: payload + "/pub/open", mode: 0o666)
        chmod(payload + "/pub/open", 0o666)
        chmod(payload + "/pub", 0o1777)
        let manager = try node.manager()
        #expect(try manager.tick() == .running)
        func mode(_ path: String) -> (mode_t, uid_t)? {
            var st = stat()
            return lstat(node.root + "/gen/1/" + path, &st) == 0 ? (st.st_mode & 0o7777, st.st_uid) : nil
        }
        #expect(mode("release/bin/suid")?.0 == 0o755 && mode("release/bin/suid")?.1 == geteuid())
        #expect(mode("release/pub")?.0 == 0o755)
        #expect(mode("release/pub/open")?.0 == 0o644)
        #expect(mode("release/VERSION")?.0 == 0o640)

        try node.write("#!/bin/sh\n", to: node.root + "/gen/1/state/tool", mode: 0o755)
        chmod(node.root + "/gen/1/state/tool", 0o4755)
        try node.publish(2, from: 1)
        #expect(try manager.tick() == .running)
        var st = stat()
        #expect(stat(node.root + "/gen/2/state/tool", &st) == 0 && st.st_mode & 0o7777 == 0o755)
    }

    /// A FIFO in the payload (as one smuggled into the node's cache would show) is refused: the upgrade fails,
    /// nothing hangs, the old version runs.
    @Test func aFIFOInThePayloadIsRefused() throws {
        let node = try TestNode()
        defer { node.remove() }
        let manager = try Self.runningVersion1(node)
        try node.publish(2, from: 1)
        #expect(mkfifo(node.mount + "/versions/2/payload/pipe", 0o666) == 0)
        #expect(try manager.tick() == .failed)
        #expect(node.log.contains("upgrade 2 failed: stage: copy (not a file, directory or symlink)"), "\(node.log)")
        #expect(node.current == "gen/1" && node.appVersion == 1 && !node.generationExists(2))
    }

    // MARK: upgrade.toml

    /// `tf = "../../x"` or an absolute path: the manifest is refused, naming the key; the node stays.
    @Test(arguments: ["../../../../bin/sh", "/bin/sh", "bin/../../tf"])
    func aManifestNamingItsTFOutsideTheBundleIsRefused(tf: String) throws {
        let node = try TestNode()
        defer { node.remove() }
        let manager = try Self.runningVersion1(node)
        try node.publish(2, from: 1)
        try node.write("class = \"counter\"\nversion = 2\nfrom-version = 1\ntf = \"\(tf)\"\n",
                       to: node.mount + "/versions/2/upgrade.toml")
        _ = try manager.tick()
        #expect(node.log.contains("upgrade.toml"), "\(node.log)")
        #expect(node.log.contains("tf"), "\(node.log)")
        #expect(node.current == "gen/1" && node.appVersion == 1 && !node.generationExists(2))
        #expect(try manager.ldb.nodeVersion() == 1)
    }

    /// `tf` (or `sf`, `check`) is a link to /bin/sh: it is not run; the TF fails and the node rolls back.
    @Test func aTFThatIsALinkToBinShIsNotRun() throws {
        let node = try TestNode()
        defer { node.remove() }
        let manager = try Self.runningVersion1(node)
        try node.publish(2, from: 1, tf: nil)
        #expect(symlink("/bin/sh", node.mount + "/versions/2/tf") == 0)
        #expect(try manager.tick() == .failed)
        #expect(node.log.contains("tf 2: refusing to run \(node.mount)/versions/2/tf: it resolves to"), "\(node.log)")
        #expect(node.log.contains("outside the bundle"))
        #expect(node.current == "gen/1" && node.appVersion == 1)
        // A link that stays in the bundle runs.
        try node.publish(3, from: 1, tf: nil)
        try node.write(TestNode.counterTF, to: node.mount + "/versions/3/bin/tf", mode: 0o755)
        #expect(symlink("bin/tf", node.mount + "/versions/3/tf") == 0)
        try node.control(2, "abort")
        #expect(try manager.tick() == .running)
        #expect(node.current == "gen/3" && node.stateData(3) == "v3 2")
    }

    /// A bundle published as version 10^12 after 1 (before the server bounded the step): the gap is passed
    /// over in one step, not version by version (which never ended and grew without bound).
    @Test func aGapOfATrillionVersionsIsPassedOverInOneStep() throws {
        let node = try TestNode()
        defer { node.remove() }
        let manager = try Self.runningVersion1(node)
        let far: Int64 = 1_000_000_000_000
        try node.publish(far, from: 1)
        let began = Date()
        #expect(try manager.tick() == .running)
        #expect(Date().timeIntervalSince(began) < 30)
        #expect(node.current == "gen/\(far)" && node.appVersion == far)
        #expect(node.log.contains("versions 2 to \(far - 1) were never published (versions/ has newer ones but not these): passed over, now at version \(far - 1)"), "\(node.log)")
    }

    // MARK: The local database

    /// A corrupt or unreadable LDB: the manager refuses to start, naming it, and touches nothing.
    @Test(arguments: ["garbage", "directory"])
    func aCorruptLocalDatabaseIsRefusedAndNothingIsTouched(damage: String) throws {
        let node = try TestNode()
        defer { node.remove() }
        try node.publish(1)
        do {
            let manager = try node.manager()
            #expect(try manager.tick() == .running)
        }
        let app = try #require(node.appProcess())
        let ldb = node.root + "/ldb/" + LocalDatabase.fileName
        for suffix in ["", "-wal", "-shm"] { unlink(ldb + suffix) }
        if damage == "garbage" {
            try node.write(String(repeating: "not a database ", count: 1000), to: ldb)
        } else {
            try POSIXFiles.makeDirectories(ldb)
        }
        try node.publish(2, from: 1)
        #expect {
            _ = try node.manager()
        } throws: { error in
            "\(error)".contains("local database \(ldb): open:")
        }
        // The daemon: exit 71, the message names the file.
        let configFile = node.directory + "/node.toml"
        try node.write(node.configText(), to: configFile)
        let process = try ManagerProcess(node, config: configFile, waitForHeartbeat: false)
        defer { if process.wait(seconds: 0) == .running { kill(process.pid, SIGKILL); _ = process.wait(seconds: 10) } }
        #expect(process.wait(seconds: 30) == .exited(71))
        #expect(process.output.contains("upgradefs manager: local database \(ldb): open:"), "\(process.output)")
        #expect(node.current == "gen/1" && node.appProcess()?.0 == app.0 && !node.generationExists(2))
    }

    /// The intent journal edited behind the manager's back: a step it does not know, a version that is not a
    /// number. The daemon exits 71 naming the database, and the node stays as it was.
    @Test(arguments: ["step = 'bogus'", "version = 'abc'", "from_generation = -5"])
    func aCorruptIntentJournalIsRefusedAndNothingIsTouched(corruption: String) throws {
        let node = try TestNode()
        defer { node.remove() }
        do { _ = try Self.runningVersion1(node) }
        let app = try #require(node.appProcess())
        let ldb = node.root + "/ldb/" + LocalDatabase.fileName
        let sql = "INSERT INTO intent(id, version, from_generation, from_version, step) VALUES (1, 2, 1, 1, 'staged'); UPDATE intent SET \(corruption);"
        let edit = try ProcessRunner.run(Command(executable: "/usr/bin/sqlite3", arguments: [ldb, sql],
                                                 outputPath: node.directory + "/sqlite.out", timeoutSeconds: 30))
        #expect(edit.succeeded, "\(String(decoding: edit.output, as: UTF8.self))")
        let configFile = node.directory + "/node.toml"
        try node.write(node.configText(), to: configFile)
        let process = try ManagerProcess(node, config: configFile, waitForHeartbeat: false)
        defer { if process.wait(seconds: 0) == .running { kill(process.pid, SIGKILL); _ = process.wait(seconds: 10) } }
        #expect(process.wait(seconds: 30) == .exited(71), "\(process.output)")
        #expect(process.output.contains("upgradefs manager: local database \(ldb): read "), "\(process.output)")
        #expect(node.current == "gen/1" && node.appProcess()?.0 == app.0)
    }
}

/// The app's user owns a generation's state: while the manager (often root) copies it to the next generation
/// or removes it, that user swaps a directory in it for a link to a directory outside, again and again.
struct ManagerTreeRaceTests {
    /// Swaps `path` (a directory) for a link to `outside` and back, until stopped.
    final class Swapper: @unchecked Sendable {
        let path: String, outside: String
        private let stopped = Mutex(false)
        private var thread: Thread?
        init(path: String, outside: String) { self.path = path; self.outside = outside }
        func start() {
            let thread = Thread { [self] in
                let aside = path + ".aside"
                while !stopped.withLock({ $0 }) {
                    guard rename(path, aside) == 0 else { continue }
                    symlink(outside, path)
                    usleep(100)
                    unlink(path)
                    rename(aside, path)
                    usleep(100)
                }
            }
            self.thread = thread
            thread.start()
        }
        func stop() {
            stopped.withLock { $0 = true }
            usleep(20_000)
        }
    }

    @Test func aStateDirectorySwappedForALinkWhileCopiedSyncedOrRemovedIsNeverFollowed() throws {
        let node = try TestNode()
        defer { node.remove() }
        let outside = node.directory + "/etc"
        try node.write("secret\n", to: outside + "/shadow", mode: 0o640)
        #expect(mkfifo(outside + "/f1", 0o600) == 0) // opened through the link, it would hang the manager
        chmod(outside, 0o751)
        let installer = Installer(root: node.root)
        let deadline = Date().addingTimeInterval(3)
        var rounds = 0
        while Date() < deadline {
            rounds += 1
            let state = node.root + "/state-\(rounds)"
            for file in ["shadow"] + (0..<50).map({ "f\($0)" }) { try node.write("mine\n", to: state + "/d/\(file)") }
            let swapper = Swapper(path: state + "/d", outside: outside)
            swapper.start()
            let copy = node.root + "/copy-\(rounds)"
            _ = try? installer.copyTree(from: state, to: copy, modeMask: Installer.stateModeMask)
            try? installer.fsyncTree(state)
            try? installer.removeTree(state)
            swapper.stop()
            try? installer.removeTree(state)
            try? installer.removeTree(state + "/d.aside")
            try? installer.removeTree(state)
            #expect(node.read(outside + "/shadow") == "secret\n", "round \(rounds): the manager removed through the link")
            var st = stat()
            #expect(stat(outside, &st) == 0 && st.st_mode & 0o7777 == 0o751, "round \(rounds): the manager chmodded through the link")
            if node.read(outside + "/shadow") != "secret\n" || st.st_mode & 0o7777 != 0o751 { break }
            // The copy may hold `d` as the link it was at that instant (copied as a link); a directory `d` with
            // the outside's file in it would be the manager reading through the link.
            if let copied = try? POSIXFiles.lstatOrNil(copy + "/d"), POSIXFiles.isDirectory(copied) {
                #expect(node.read(copy + "/d/shadow") != "secret\n", "round \(rounds): the manager copied through the link")
            }
            try? installer.removeTree(copy)
        }
        #expect(rounds > 10)
    }
}
