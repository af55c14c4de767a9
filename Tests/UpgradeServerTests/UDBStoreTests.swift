import Foundation
import GRDB
import Sodium
import Testing
import UpgradeCore
@testable import UpgradeServer

/// What only the SQLite storage has to show: its files on disk (migrations of an older database, commits that
/// survive a reopen or kill -9). Its behaviour as a store is `WhiteboardStoreConformanceTests`'.
@Suite struct UDBStoreTests {
    let directory = TemporaryDirectory()
    let clock = ManualClock()
    let n1 = WhiteboardWriter("n1")
    let n2 = WhiteboardWriter("n2")
    let op = WhiteboardWriter("operator")

    func open(ttl: Double = 60) throws -> SQLiteWhiteboardStore {
        let clock = self.clock
        return try SQLiteWhiteboardStore(directory: directory.path, verifier: SodiumVerifier(), lockTTLSeconds: ttl, now: { clock.now })
    }

    func enrolled(ttl: Double = 60) async throws -> SQLiteWhiteboardStore {
        let store = try open(ttl: ttl)
        for writer in [n1, n2, op] { try await store.enroll(node: writer.name, publicKey: writer.key.publicKey) }
        return store
    }

    /// Issue 8, item 23, for a database the previous release left: its summaries (one for a mistyped control file's
    /// upgrade 22 among them) are dropped when it is opened; only published upgrades get theirs again.
    @Test func summariesOfAnOlderDatabaseAreMadeAgainOnlyForPublishedUpgrades() async throws {
        defer { directory.remove() }
        do {
            let pool = try DatabasePool(path: directory.path + "/" + SQLiteWhiteboardStorage.fileName)
            try SQLiteWhiteboardStorage.migrator.migrate(pool, upTo: "v1")
            try await pool.write { db in
                try db.execute(sql: """
                    INSERT INTO files(path, content, revision, modified_at, writer) VALUES
                        ('upgrades/2/summary', x'', 1, 0, 'server'), ('upgrades/22/summary', x'', 1, 0, 'server'),
                        ('upgrades/22/control', CAST('go' AS BLOB), 1, 0, 'operator')
                    """)
            }
            try pool.close()
        }
        let store = try open()
        var snapshot = try await store.snapshot()
        #expect(snapshot.content("upgrades/22/summary") == nil && snapshot.content("upgrades/2/summary") == nil)
        #expect(snapshot.content("upgrades/22/control") == "go")
        try await store.registerUpgrade(2, class: "app")
        snapshot = try await store.snapshot()
        #expect(snapshot.content("upgrades/2/summary") == "")
        #expect(WhiteboardStatus(enrolled: [], view: snapshot).upgrades.map(\.version) == [2])
    }

    @Test func everythingCommittedSurvivesReopeningWithoutCheckpoint() async throws {
        defer { directory.remove() }
        do {
            let store = try await enrolled()
            for i in 1...20 { _ = try await store.apply(n1.request(.put, "nodes/n1/version", String(i))) }
            #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).result == .ok)
            // The store is dropped here without a checkpoint: the WAL holds the commits.
        }
        #expect(FileManager.default.fileExists(atPath: directory.path + "/udb.sqlite"))
        let reopened = try open()
        let snapshot = try await reopened.snapshot()
        #expect(snapshot.content("nodes/n1/version") == "20")
        #expect(snapshot.holders.map(\.holder) == ["n1"])
        #expect(try await reopened.enrolledNodes().map(\.name) == ["n1", "n2", "operator"])
        // Replay state survived too.
        #expect(try await reopened.apply(n1.request(.put, "nodes/n1/version", "1", seq: 3)).code == .replayed)
    }

    /// kill -9 leaves only what is on disk: the database file and its WAL as
    /// they are at that moment. Copying them while the store is still open
    /// (no close, no checkpoint) and opening the copy shows what survives.
    @Test func filesOnDiskWhileOpenHoldEveryCommit() async throws {
        defer { directory.remove() }
        let store = try await enrolled()
        for i in 1...50 { _ = try await store.apply(n1.request(.put, "shared/k\(i)", String(i))) }
        #expect(try await store.apply(n1.request(.acquire, "locks/roll/n1")).result == .ok)
        let crashed = TemporaryDirectory()
        defer { crashed.remove() }
        for suffix in ["", "-wal"] {
            let source = directory.path + "/udb.sqlite" + suffix
            if FileManager.default.fileExists(atPath: source) {
                try FileManager.default.copyItem(atPath: source, toPath: crashed.path + "/udb.sqlite" + suffix)
            }
        }
        let recovered = try SQLiteWhiteboardStore(directory: crashed.path, verifier: SodiumVerifier())
        let snapshot = try await recovered.snapshot()
        #expect(snapshot.files.filter { $0.path.hasPrefix("shared/") }.count == 50)
        #expect(snapshot.content("shared/k50") == "50")
        #expect(snapshot.holders.map(\.holder) == ["n1"])
        _ = store
    }
}
