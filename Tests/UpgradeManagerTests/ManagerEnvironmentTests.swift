#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import UpgradeFiles
@testable import UpgradeManager

/// What programs the manager runs get (issue 8): node.toml's `env`, `pass-env` and `run-as`, and the process
/// table as the manager reads it to end what a killed manager left.
struct ManagerEnvironmentTests {
    @Test(.enabled(if: geteuid() == 0 && RunAsUser.lookup("nobody") != nil && ProcessRunner.setpriv != nil,
                   "run-as needs root, a user nobody and setpriv (util-linux)"))
    func runAsRunsTheSFTheTFAndTheAppAsThatUserWithoutGroups() throws {
        let node = try TestNode()
        defer { node.remove() }
        let nobody = try #require(RunAsUser.lookup("nobody"))
        chmod(node.directory, 0o1777) // the app's pid file lives there; nobody must reach the bundle
        let outside = node.directory + "/outside"
        try node.write("root's\n", to: outside)
        try node.publish(1, sf: "#!/bin/sh\nid -u > \"$UPGRADEFS_LDB/uid\"\nid -G > \"$UPGRADEFS_LDB/groups\"\necho $HOME > \"$UPGRADEFS_LDB/home\"\n",
                         tf: "#!/bin/sh\nid -u > \"$UPGRADEFS_STATE/tf-uid\"\nln -sf \(outside) \"$UPGRADEFS_STATE/link\"\n"
                             + TestNode.counterTF.replacingOccurrences(of: "#!/bin/sh\n", with: ""))
        let manager = try node.manager("run-as = \"nobody\"")
        #expect(try manager.tick() == .running, "\(node.log)")
        let scratch = node.root + "/ldb/sf/1/"
        #expect(node.read(scratch + "uid") == "\(nobody.uid)\n")
        #expect(node.read(scratch + "groups") == "\(nobody.gid)\n")
        #expect(node.read(scratch + "home") == nobody.home + "\n")
        #expect(node.read(node.root + "/gen/1/state/tf-uid") == "\(nobody.uid)\n")
        var st = stat()
        #expect(stat(node.root + "/gen/1/state/data", &st) == 0 && st.st_uid == nobody.uid)
        // The app's pid file was written by its start, run as nobody.
        #expect(stat(node.pidFile, &st) == 0 && st.st_uid == nobody.uid)
        #expect(node.appVersion == 1)

        // The next staged state (with the link the TF left) is handed over without following the link.
        try node.publish(2, from: 1)
        #expect(try manager.tick() == .running, "\(node.log)")
        #expect(stat(node.root + "/gen/2/state/data", &st) == 0 && st.st_uid == nobody.uid)
        #expect(lstat(node.root + "/gen/2/state/link", &st) == 0 && st.st_uid == nobody.uid)
        #expect(stat(outside, &st) == 0 && st.st_uid == 0, "a link in the state gave its target away")
    }

    @Test func nodeTomlEnvAndPassEnvAreCheckedAndParsed() throws {
        let config = try NodeConfig.parse("""
            node = "n1"
            class = "counter"
            pass-env = ["HTTP_PROXY", "TZ"]
            run-as = "app-user"

            [env]
            GREETING = "hello"
            """)
        #expect(config.environment == ["GREETING": "hello"] && config.passEnvironment == ["HTTP_PROXY", "TZ"] && config.runAs == "app-user")
        #expect(throws: NodeConfigError.self) { try NodeConfig.parse("node = \"n1\"\nclass = \"c\"\n[env]\nUPGRADEFS_NODE = \"n2\"\n") }
        #expect(throws: NodeConfigError.self) { try NodeConfig.parse("node = \"n1\"\nclass = \"c\"\npass-env = [\"A B\"]\n") }
        #expect(throws: NodeConfigError.self) { try NodeConfig.parse("node = \"n1\"\nclass = \"c\"\n[env]\nN = 3\n") }
        #expect(throws: NodeConfigError.self) { try NodeConfig.parse("node = \"n1\"\nclass = \"c\"\nrun-as = \"-x\"\n") }
    }

    @Test func procStatIsParsedPastACommandNameWithSpacesAndParentheses() throws {
        let text = "4242 (a b) c)) S 1 4242 4200 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615\n"
        let stat = try #require(ProcessStat.parse(text))
        #expect(stat == ProcessStat(pid: 4242, state: "S", pgrp: 4242, session: 4200, startTicks: 987654))
        #expect(ProcessStat.parse("garbage") == nil)
    }
}
