import Logging
import PostgresNIO
import UpgradeCore

/// One transaction (or read) of `PostgresWhiteboardStorage`: each row operation is one statement, waited for on the
/// storage's thread.
public struct PostgresWhiteboardTransaction: WhiteboardTransaction {
    let session: PostgresSession
    /// This transaction's revision, once allocated.
    private var allocated: Int64?

    init(session: PostgresSession) { self.session = session }

    private func rows(_ query: PostgresQuery) throws -> [PostgresRow] { try session.rows(query) }
    private func run(_ query: PostgresQuery) throws { try session.run(query) }

    public func revision() throws -> Int64 {
        try rows("SELECT value FROM meta WHERE key = 'revision'").first?.decode(Int64.self) ?? 0
    }

    /// The row of `meta` stays locked by this UPDATE until the commit, and every writer holds the storage's write
    /// lock anyway: revision R + 1 cannot be allocated before R's transaction committed or rolled back.
    public mutating func changeRevision() throws -> Int64 {
        if let allocated { return allocated }
        let revision = try rows("UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value").first?.decode(Int64.self)
        guard let revision else { throw WhiteboardStorageUnavailable("the upgrade database has no revision row") }
        allocated = revision
        return revision
    }

    // MARK: Identities

    public func node(_ name: String) throws -> EnrolledNode? {
        try rows("SELECT name, public_key, enrolled_at FROM nodes WHERE name = \(name)").first.map(Self.node)
    }

    public func nodes() throws -> [EnrolledNode] {
        try rows("SELECT name, public_key, enrolled_at FROM nodes").map(Self.node)
    }

    public mutating func putNode(_ node: EnrolledNode) throws {
        try run("""
            INSERT INTO nodes(name, public_key, enrolled_at) VALUES (\(node.name), \(Self.bytes(node.publicKey)), \(node.enrolledAt))
            ON CONFLICT (name) DO UPDATE SET public_key = EXCLUDED.public_key, enrolled_at = EXCLUDED.enrolled_at
            """)
    }

    public mutating func deleteNode(_ name: String) throws -> Bool {
        try !rows("DELETE FROM nodes WHERE name = \(name) RETURNING 1").isEmpty
    }

    private static func node(_ row: PostgresRow) throws -> EnrolledNode {
        let (name, key, at) = try row.decode((String, ByteBuffer, Double).self)
        return EnrolledNode(name: name, publicKey: Array(key.readableBytesView), enrolledAt: at)
    }

    // MARK: Replay state, sessions, refusals

    public func replay(node: String, stream: String) throws -> WhiteboardReplayRow? {
        try rows("""
            SELECT node, channel, last_seq, last_digest, refused_code, refused_error FROM channels
            WHERE node = \(node) AND channel = \(stream)
            """).first.map {
            let (node, channel, seq, digest, code, error) = try $0.decode((String, String, Int64, ByteBuffer?, String?, String?).self)
            return WhiteboardReplayRow(
                node: node, stream: channel, lastSeq: seq, lastDigest: digest.map { Array($0.readableBytesView) },
                refusedCode: code, refusedError: error)
        }
    }

    public mutating func putReplay(_ row: WhiteboardReplayRow) throws {
        try run("""
            INSERT INTO channels(node, channel, last_seq, last_digest, refused_code, refused_error)
            VALUES (\(row.node), \(row.stream), \(row.lastSeq), \(row.lastDigest.map(Self.bytes)), \(row.refusedCode), \(row.refusedError))
            ON CONFLICT (node, channel) DO UPDATE SET last_seq = EXCLUDED.last_seq, last_digest = EXCLUDED.last_digest,
                refused_code = EXCLUDED.refused_code, refused_error = EXCLUDED.refused_error
            """)
    }

    public func session(node: String) throws -> WhiteboardSessionRow? {
        try rows("SELECT node, instance, renewed_at FROM sessions WHERE node = \(node)").first.map {
            let (node, instance, at) = try $0.decode((String, String, Double).self)
            return WhiteboardSessionRow(node: node, instance: instance, renewedAt: at)
        }
    }

    public mutating func putSession(_ row: WhiteboardSessionRow) throws {
        try run("""
            INSERT INTO sessions(node, instance, renewed_at) VALUES (\(row.node), \(row.instance), \(row.renewedAt))
            ON CONFLICT (node) DO UPDATE SET instance = EXCLUDED.instance, renewed_at = EXCLUDED.renewed_at
            """)
    }

    public mutating func deleteSession(node: String) throws {
        try run("DELETE FROM sessions WHERE node = \(node)")
    }

    public func refusal(node: String) throws -> WhiteboardRefusals? {
        try rows("SELECT \(unescaped: Self.refusalColumns) FROM refusals WHERE node = \(node)").first.map(Self.refusal)
    }

    public func refusals() throws -> [WhiteboardRefusals] {
        try rows("SELECT \(unescaped: Self.refusalColumns) FROM refusals").map(Self.refusal)
    }

    public mutating func putRefusal(_ row: WhiteboardRefusals) throws {
        try run("""
            INSERT INTO refusals(\(unescaped: Self.refusalColumns))
            VALUES (\(row.node), \(row.enrolled), \(row.total), \(row.refusing), \(row.lastAt), \(row.lastCode), \(row.lastError))
            ON CONFLICT (node) DO UPDATE SET enrolled = EXCLUDED.enrolled, total = EXCLUDED.total, refusing = EXCLUDED.refusing,
                last_at = EXCLUDED.last_at, last_code = EXCLUDED.last_code, last_error = EXCLUDED.last_error
            """)
    }

    public mutating func deleteRefusal(node: String) throws {
        try run("DELETE FROM refusals WHERE node = \(node)")
    }

    private static let refusalColumns = "node, enrolled, total, refusing, last_at, last_code, last_error"

    private static func refusal(_ row: PostgresRow) throws -> WhiteboardRefusals {
        let (node, enrolled, total, refusing, at, code, error) = try row.decode((String, Bool, Int64, Bool, Double, String, String).self)
        return WhiteboardRefusals(node: node, enrolled: enrolled, total: total, refusing: refusing, lastAt: at, lastCode: code, lastError: error)
    }

    // MARK: Files

    private static let fileColumns = "path, content, revision, modified_at, writer"

    public func file(_ path: String) throws -> WhiteboardFileRow? {
        try rows("SELECT \(unescaped: Self.fileColumns) FROM files WHERE path = \(path)").first.map(Self.file)
    }

    public func liveFiles() throws -> [WhiteboardFileRow] {
        try rows("SELECT \(unescaped: Self.fileColumns) FROM files WHERE content IS NOT NULL").map(Self.file)
    }

    public func files(after revision: Int64) throws -> [WhiteboardFileRow] {
        try rows("SELECT \(unescaped: Self.fileColumns) FROM files WHERE revision > \(revision)").map(Self.file)
    }

    public func hasLiveFile(withPrefix prefix: String) throws -> Bool {
        try !rows("SELECT 1 FROM files WHERE starts_with(path, \(prefix)) AND content IS NOT NULL LIMIT 1").isEmpty
    }

    public func liveUsage(writer: String, excluding path: String) throws -> (files: Int, bytes: Int) {
        let row = try rows("""
            SELECT COUNT(*)::bigint, COALESCE(SUM(octet_length(content)), 0)::bigint FROM files
            WHERE writer = \(writer) AND content IS NOT NULL AND path <> \(path)
            """).first
        guard let (files, bytes) = try row?.decode((Int64, Int64).self) else { return (0, 0) }
        return (Int(files), Int(bytes))
    }

    public func enrolledNodeFiles(_ names: [String], whereFile filter: String, isOneOf values: [[UInt8]]) throws -> [String: [String: [UInt8]]] {
        guard !values.isEmpty else { return [:] }
        // One LEFT JOIN per name: f0.content, f1.content, … ($1 the filter, then the values, then the names).
        var binds = PostgresBindings()
        binds.append(filter)
        for value in values { binds.append(Self.bytes(value)) }
        for name in names { binds.append(name) }
        let valueList = values.indices.map { "$\($0 + 2)" }.joined(separator: ", ")
        let columns = names.indices.map { ", f\($0).content" }.joined()
        let joins = names.indices.map {
            " LEFT JOIN files f\($0) ON f\($0).path = 'nodes/' || n.name || '/' || $\($0 + values.count + 2) AND f\($0).content IS NOT NULL"
        }
        let sql = "SELECT n.name\(columns) FROM nodes n JOIN files w ON w.path = 'nodes/' || n.name || '/' || $1"
            + " AND w.content IN (\(valueList))" + joins.joined()
        var result: [String: [String: [UInt8]]] = [:]
        for row in try rows(PostgresQuery(unsafeSQL: sql, binds: binds)) {
            var cells = row.makeIterator()
            let name = try cells.next()!.decode(String.self)
            var files: [String: [UInt8]] = [:]
            for fileName in names {
                files[fileName] = try cells.next()!.decode(ByteBuffer?.self).map { Array($0.readableBytesView) }
            }
            result[name] = files
        }
        return result
    }

    public mutating func putFile(_ row: WhiteboardFileRow) throws {
        try run("""
            INSERT INTO files(\(unescaped: Self.fileColumns))
            VALUES (\(row.path), \(row.content.map(Self.bytes)), \(row.revision), \(row.modifiedAt), \(row.writer))
            ON CONFLICT (path) DO UPDATE SET content = EXCLUDED.content, revision = EXCLUDED.revision,
                modified_at = EXCLUDED.modified_at, writer = EXCLUDED.writer
            """)
    }

    private static func file(_ row: PostgresRow) throws -> WhiteboardFileRow {
        let (path, content, revision, at, writer) = try row.decode((String, ByteBuffer?, Int64, Double, String).self)
        return WhiteboardFileRow(
            path: path, content: content.map { Array($0.readableBytesView) }, revision: revision, modifiedAt: at, writer: writer)
    }

    // MARK: Lock holders

    private static let holderColumns = "\"lock\", holder, node, acquired_at, revision, released"

    public func liveHolder(lock: String, holder: String) throws -> WhiteboardHolderRow? {
        try rows("""
            SELECT \(unescaped: Self.holderColumns) FROM holders WHERE "lock" = \(lock) AND holder = \(holder) AND NOT released
            """).first.map(Self.holder)
    }

    public func liveHolders(lock: String?) throws -> [WhiteboardHolderRow] {
        guard let lock else { return try rows("SELECT \(unescaped: Self.holderColumns) FROM holders WHERE NOT released").map(Self.holder) }
        return try rows("SELECT \(unescaped: Self.holderColumns) FROM holders WHERE \"lock\" = \(lock) AND NOT released").map(Self.holder)
    }

    public func liveHolders(node: String) throws -> [WhiteboardHolderRow] {
        try rows("SELECT \(unescaped: Self.holderColumns) FROM holders WHERE node = \(node) AND NOT released").map(Self.holder)
    }

    public func holders(after revision: Int64) throws -> [WhiteboardHolderRow] {
        try rows("SELECT \(unescaped: Self.holderColumns) FROM holders WHERE revision > \(revision)").map(Self.holder)
    }

    public mutating func putHolder(_ row: WhiteboardHolderRow) throws {
        try run("""
            INSERT INTO holders(\(unescaped: Self.holderColumns))
            VALUES (\(row.lock), \(row.holder), \(row.node), \(row.acquiredAt), \(row.revision), \(row.released))
            ON CONFLICT ("lock", holder) DO UPDATE SET node = EXCLUDED.node, acquired_at = EXCLUDED.acquired_at,
                revision = EXCLUDED.revision, released = EXCLUDED.released
            """)
    }

    private static func holder(_ row: PostgresRow) throws -> WhiteboardHolderRow {
        let (lock, holder, node, at, revision, released) = try row.decode((String, String, String, Double, Int64, Bool).self)
        return WhiteboardHolderRow(lock: lock, holder: holder, node: node, acquiredAt: at, revision: revision, released: released)
    }

    // MARK: Published upgrades

    public func upgrades() throws -> [Int64: String] {
        Dictionary(uniqueKeysWithValues: try rows("SELECT version, class FROM upgrades").map { try $0.decode((Int64, String).self) })
    }

    public mutating func putUpgrade(version: Int64, class upgradeClass: String) throws {
        try run("""
            INSERT INTO upgrades(version, class) VALUES (\(version), \(upgradeClass))
            ON CONFLICT (version) DO UPDATE SET class = EXCLUDED.class
            """)
    }

    /// `bytea` binds.
    private static func bytes(_ value: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: value) }
}
