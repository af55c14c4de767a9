import Foundation
import GRDB
import UpgradeCore

/// The whiteboard's rows in `DIR/udb.sqlite` (WAL, `synchronous = FULL`: a commit is on disk before the answer
/// leaves, so kill -9 loses nothing answered). Storage only: the rules are `WhiteboardLedger`'s. Schema:
/// docs/DESIGN.md, "Storage (server)".
public final class SQLiteWhiteboardStorage: WhiteboardStorage {
    public static let fileName = "udb.sqlite"

    public let path: String
    private let pool: DatabasePool

    /// Opens (creating and migrating if needed) `directory/udb.sqlite`.
    public init(directory: String) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/" + Self.fileName
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
    }

    public func write<T: Sendable>(_ body: @escaping @Sendable (inout SQLiteWhiteboardTransaction) throws -> T) async throws -> T {
        try await pool.write { db in
            var transaction = SQLiteWhiteboardTransaction(db: db)
            return try body(&transaction)
        }
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (SQLiteWhiteboardTransaction) throws -> T) async throws -> T {
        try await pool.read { db in try body(SQLiteWhiteboardTransaction(db: db)) }
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE nodes(name TEXT PRIMARY KEY, public_key BLOB NOT NULL, enrolled_at REAL NOT NULL);
                    CREATE TABLE channels(node TEXT NOT NULL, channel TEXT NOT NULL, last_seq INTEGER NOT NULL,
                                          last_digest BLOB, PRIMARY KEY(node, channel));
                    CREATE TABLE files(path TEXT PRIMARY KEY, content BLOB, revision INTEGER NOT NULL,
                                       modified_at REAL NOT NULL, writer TEXT NOT NULL);
                    CREATE INDEX files_revision ON files(revision);
                    CREATE TABLE holders(lock TEXT NOT NULL, holder TEXT NOT NULL, node TEXT NOT NULL,
                                         acquired_at REAL NOT NULL, revision INTEGER NOT NULL,
                                         released INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(lock, holder));
                    CREATE INDEX holders_revision ON holders(revision);
                    CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                    INSERT INTO meta(key, value) VALUES ('revision', 0);
                    """)
        }
        // v2: a refused request's verdict is kept with its seq and digest, so a retry gets the same answer (not
        // "replayed"); refusals per node (and per unknown name, at most `maxUnknownWriters`) for status and metrics;
        // each published upgrade's class, so its summary counts only the nodes of that class; each node's mount session.
        migrator.registerMigration("v2") { db in
            try db.execute(
                sql: """
                    ALTER TABLE channels ADD COLUMN refused_code TEXT;
                    ALTER TABLE channels ADD COLUMN refused_error TEXT;
                    CREATE TABLE refusals(node TEXT PRIMARY KEY, enrolled INTEGER NOT NULL, total INTEGER NOT NULL,
                                          refusing INTEGER NOT NULL, last_at REAL NOT NULL, last_code TEXT NOT NULL,
                                          last_error TEXT NOT NULL);
                    CREATE TABLE upgrades(version INTEGER PRIMARY KEY, class TEXT NOT NULL);
                    CREATE TABLE sessions(node TEXT PRIMARY KEY, instance TEXT NOT NULL, renewed_at REAL NOT NULL);
                    """)
            // Summaries made before (also for control files of versions never published) become tombstones; the
            // server's start registers every published upgrade again, which makes its summary.
            if try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM files WHERE path LIKE 'upgrades/%/summary' AND content IS NOT NULL") ?? 0 > 0 {
                try db.execute(sql: "UPDATE meta SET value = value + 1 WHERE key = 'revision'")
                try db.execute(sql: """
                    UPDATE files SET content = NULL, revision = (SELECT value FROM meta WHERE key = 'revision')
                    WHERE path LIKE 'upgrades/%/summary' AND content IS NOT NULL
                    """)
            }
        }
        // v3: each writer's live files are counted on every put (`WhiteboardRules.quotaDenial`).
        migrator.registerMigration("v3") { db in
            try db.execute(sql: "CREATE INDEX files_writer ON files(writer) WHERE content IS NOT NULL")
        }
        return migrator
    }
}

/// One GRDB transaction (or read) of `SQLiteWhiteboardStorage`: each row operation is one statement.
public struct SQLiteWhiteboardTransaction: WhiteboardTransaction {
    let db: Database
    /// This transaction's revision, once allocated.
    private var allocated: Int64?

    init(db: Database) { self.db = db }

    public func revision() throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'revision'") ?? 0
    }

    public mutating func changeRevision() throws -> Int64 {
        if let allocated { return allocated }
        try db.execute(sql: "UPDATE meta SET value = value + 1 WHERE key = 'revision'")
        let revision = try revision()
        allocated = revision
        return revision
    }

    // MARK: Identities

    public func node(_ name: String) throws -> EnrolledNode? {
        try Row.fetchOne(db, sql: "SELECT * FROM nodes WHERE name = ?", arguments: [name]).map(Self.node)
    }

    public func nodes() throws -> [EnrolledNode] {
        try Row.fetchAll(db, sql: "SELECT * FROM nodes").map(Self.node)
    }

    public mutating func putNode(_ node: EnrolledNode) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO nodes(name, public_key, enrolled_at) VALUES (?, ?, ?)",
            arguments: [node.name, Data(node.publicKey), node.enrolledAt])
    }

    public mutating func deleteNode(_ name: String) throws -> Bool {
        try db.execute(sql: "DELETE FROM nodes WHERE name = ?", arguments: [name])
        return db.changesCount > 0
    }

    private static func node(_ row: Row) -> EnrolledNode {
        EnrolledNode(name: row["name"], publicKey: Array(row["public_key"] as Data), enrolledAt: row["enrolled_at"])
    }

    // MARK: Replay state, sessions, refusals

    public func replay(node: String, stream: String) throws -> WhiteboardReplayRow? {
        try Row.fetchOne(db, sql: "SELECT * FROM channels WHERE node = ? AND channel = ?", arguments: [node, stream]).map {
            WhiteboardReplayRow(
                node: $0["node"], stream: $0["channel"], lastSeq: $0["last_seq"], lastDigest: ($0["last_digest"] as Data?).map(Array.init),
                refusedCode: $0["refused_code"], refusedError: $0["refused_error"])
        }
    }

    public mutating func putReplay(_ row: WhiteboardReplayRow) throws {
        try db.execute(
            sql: """
                INSERT OR REPLACE INTO channels(node, channel, last_seq, last_digest, refused_code, refused_error)
                VALUES (?, ?, ?, ?, ?, ?)
                """,
            arguments: [row.node, row.stream, row.lastSeq, row.lastDigest.map { Data($0) }, row.refusedCode, row.refusedError])
    }

    public func session(node: String) throws -> WhiteboardSessionRow? {
        try Row.fetchOne(db, sql: "SELECT * FROM sessions WHERE node = ?", arguments: [node]).map {
            WhiteboardSessionRow(node: $0["node"], instance: $0["instance"], renewedAt: $0["renewed_at"])
        }
    }

    public mutating func putSession(_ row: WhiteboardSessionRow) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO sessions(node, instance, renewed_at) VALUES (?, ?, ?)",
            arguments: [row.node, row.instance, row.renewedAt])
    }

    public mutating func deleteSession(node: String) throws {
        try db.execute(sql: "DELETE FROM sessions WHERE node = ?", arguments: [node])
    }

    public func refusal(node: String) throws -> WhiteboardRefusals? {
        try Row.fetchOne(db, sql: "SELECT * FROM refusals WHERE node = ?", arguments: [node]).map(Self.refusal)
    }

    public func refusals() throws -> [WhiteboardRefusals] {
        try Row.fetchAll(db, sql: "SELECT * FROM refusals").map(Self.refusal)
    }

    public mutating func putRefusal(_ row: WhiteboardRefusals) throws {
        try db.execute(
            sql: """
                INSERT OR REPLACE INTO refusals(node, enrolled, total, refusing, last_at, last_code, last_error)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [row.node, row.enrolled ? 1 : 0, row.total, row.refusing ? 1 : 0, row.lastAt, row.lastCode, row.lastError])
    }

    public mutating func deleteRefusal(node: String) throws {
        try db.execute(sql: "DELETE FROM refusals WHERE node = ?", arguments: [node])
    }

    private static func refusal(_ row: Row) -> WhiteboardRefusals {
        WhiteboardRefusals(
            node: row["node"], enrolled: (row["enrolled"] as Int64) != 0, total: row["total"], refusing: (row["refusing"] as Int64) != 0,
            lastAt: row["last_at"], lastCode: row["last_code"], lastError: row["last_error"])
    }

    // MARK: Files

    public func file(_ path: String) throws -> WhiteboardFileRow? {
        try Row.fetchOne(db, sql: "SELECT * FROM files WHERE path = ?", arguments: [path]).map(Self.file)
    }

    public func liveFiles() throws -> [WhiteboardFileRow] {
        try Row.fetchAll(db, sql: "SELECT * FROM files WHERE content IS NOT NULL").map(Self.file)
    }

    public func files(after revision: Int64) throws -> [WhiteboardFileRow] {
        try Row.fetchAll(db, sql: "SELECT * FROM files WHERE revision > ?", arguments: [revision]).map(Self.file)
    }

    public func hasLiveFile(withPrefix prefix: String) throws -> Bool {
        try Row.fetchOne(
            db, sql: "SELECT 1 FROM files WHERE substr(path, 1, length(?1)) = ?1 AND content IS NOT NULL", arguments: [prefix]) != nil
    }

    public func liveUsage(writer: String, excluding path: String) throws -> (files: Int, bytes: Int) {
        let usage = try Row.fetchOne(
            db, sql: """
                SELECT COUNT(*) AS files, COALESCE(SUM(LENGTH(content)), 0) AS bytes FROM files
                WHERE writer = ? AND content IS NOT NULL AND path != ?
                """, arguments: [writer, path])
        return (usage?["files"] ?? 0, usage?["bytes"] ?? 0)
    }

    public func enrolledNodeFiles(_ names: [String], whereFile filter: String, isOneOf values: [[UInt8]]) throws -> [String: [String: [UInt8]]] {
        guard !values.isEmpty else { return [:] }
        // One LEFT JOIN per name: f0.content, f1.content, …
        let columns = names.indices.map { ", f\($0).content AS c\($0)" }.joined()
        let joins = names.indices.map { " LEFT JOIN files f\($0) ON f\($0).path = 'nodes/' || n.name || '/' || ? AND f\($0).content IS NOT NULL" }
        let sql = "SELECT n.name\(columns) FROM nodes n JOIN files w ON w.path = 'nodes/' || n.name || '/' || ?"
            + " AND w.content IN (\(Array(repeating: "?", count: values.count).joined(separator: ", ")))" + joins.joined()
        let arguments = StatementArguments([filter]) + StatementArguments(values.map { Data($0) }) + StatementArguments(names)
        var result: [String: [String: [UInt8]]] = [:]
        for row in try Row.fetchAll(db, sql: sql, arguments: arguments) {
            var files: [String: [UInt8]] = [:]
            for (index, name) in names.enumerated() { files[name] = (row["c\(index)"] as Data?).map(Array.init) }
            result[row["name"]] = files
        }
        return result
    }

    public mutating func putFile(_ row: WhiteboardFileRow) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO files(path, content, revision, modified_at, writer) VALUES (?, ?, ?, ?, ?)",
            arguments: [row.path, row.content.map { Data($0) }, row.revision, row.modifiedAt, row.writer])
    }

    private static func file(_ row: Row) -> WhiteboardFileRow {
        WhiteboardFileRow(
            path: row["path"], content: (row["content"] as Data?).map(Array.init), revision: row["revision"],
            modifiedAt: row["modified_at"], writer: row["writer"])
    }

    // MARK: Lock holders

    public func liveHolder(lock: String, holder: String) throws -> WhiteboardHolderRow? {
        try Row.fetchOne(
            db, sql: "SELECT * FROM holders WHERE lock = ? AND holder = ? AND released = 0", arguments: [lock, holder]
        ).map(Self.holder)
    }

    public func liveHolders(lock: String?) throws -> [WhiteboardHolderRow] {
        guard let lock else { return try Row.fetchAll(db, sql: "SELECT * FROM holders WHERE released = 0").map(Self.holder) }
        return try Row.fetchAll(db, sql: "SELECT * FROM holders WHERE lock = ? AND released = 0", arguments: [lock]).map(Self.holder)
    }

    public func liveHolders(node: String) throws -> [WhiteboardHolderRow] {
        try Row.fetchAll(db, sql: "SELECT * FROM holders WHERE node = ? AND released = 0", arguments: [node]).map(Self.holder)
    }

    public func holders(after revision: Int64) throws -> [WhiteboardHolderRow] {
        try Row.fetchAll(db, sql: "SELECT * FROM holders WHERE revision > ?", arguments: [revision]).map(Self.holder)
    }

    public mutating func putHolder(_ row: WhiteboardHolderRow) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO holders(lock, holder, node, acquired_at, revision, released) VALUES (?, ?, ?, ?, ?, ?)",
            arguments: [row.lock, row.holder, row.node, row.acquiredAt, row.revision, row.released ? 1 : 0])
    }

    private static func holder(_ row: Row) -> WhiteboardHolderRow {
        WhiteboardHolderRow(
            lock: row["lock"], holder: row["holder"], node: row["node"], acquiredAt: row["acquired_at"], revision: row["revision"],
            released: (row["released"] as Int64) != 0)
    }

    // MARK: Published upgrades

    public func upgrades() throws -> [Int64: String] {
        Dictionary(uniqueKeysWithValues: try Row.fetchAll(db, sql: "SELECT version, class FROM upgrades").map {
            ($0["version"] as Int64, $0["class"] as String)
        })
    }

    public mutating func putUpgrade(version: Int64, class upgradeClass: String) throws {
        try db.execute(sql: "INSERT OR REPLACE INTO upgrades(version, class) VALUES (?, ?)", arguments: [version, upgradeClass])
    }
}
