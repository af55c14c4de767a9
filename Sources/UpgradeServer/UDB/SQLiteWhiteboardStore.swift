import Foundation
import GRDB
import UpgradeCore

/// The whiteboard in `DIR/udb.sqlite` (WAL, `synchronous = FULL`: a commit is
/// on disk before the answer leaves, so kill -9 loses nothing answered).
/// Schema: docs/DESIGN.md, "Storage (server)", plus `holders.released`
/// (released holders are kept as tombstones, like deleted files, so
/// `changes` can report them).
public final class SQLiteWhiteboardStore: WhiteboardStore {
    public static let fileName = "udb.sqlite"
    /// Holders of a lock with no `capacity` file.
    public static let defaultCapacity: Int64 = 1
    public static let defaultLockTTLSeconds: Double = 60

    public let path: String
    private let pool: DatabasePool
    private let verifier: any Ed25519Verifying
    private let lockTTLSeconds: Double
    private let now: @Sendable () -> Date
    private let expiredObserver = ObserverBox()

    /// Opens (creating and migrating if needed) `directory/udb.sqlite`.
    public init(
        directory: String, verifier: any Ed25519Verifying, lockTTLSeconds: Double = SQLiteWhiteboardStore.defaultLockTTLSeconds,
        now: @escaping @Sendable () -> Date = { Date() }
    ) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        path = directory + "/" + Self.fileName
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        pool = try DatabasePool(path: path, configuration: configuration)
        try Self.migrator.migrate(pool)
        self.verifier = verifier
        self.lockTTLSeconds = lockTTLSeconds
        self.now = now
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
        return migrator
    }

    // MARK: - Enrollment

    public func enroll(node: String, publicKey: [UInt8]) async throws -> Bool {
        let at = now()
        return try await pool.write { db in
            let old = try Data.fetchOne(db, sql: "SELECT public_key FROM nodes WHERE name = ?", arguments: [node])
            if old == Data(publicKey) { return false }
            try db.execute(
                sql: "INSERT OR REPLACE INTO nodes(name, public_key, enrolled_at) VALUES (?, ?, ?)",
                arguments: [node, Data(publicKey), at.timeIntervalSince1970])
            try db.execute(sql: "DELETE FROM channels WHERE node = ?", arguments: [node])
            var change = Change(db: db, at: at)
            try Self.recomputeSummaries(&change)
            return true
        }
    }

    public func remove(node: String) async throws -> Bool {
        let at = now()
        return try await pool.write { db in
            try db.execute(sql: "DELETE FROM nodes WHERE name = ?", arguments: [node])
            guard db.changesCount > 0 else { return false }
            try db.execute(sql: "DELETE FROM channels WHERE node = ?", arguments: [node])
            var change = Change(db: db, at: at)
            let held = try Row.fetchAll(db, sql: "SELECT lock, holder FROM holders WHERE node = ? AND released = 0", arguments: [node])
            for row in held {
                try change.releaseHolder(lock: row["lock"], holder: row["holder"])
            }
            try Self.recomputeSummaries(&change)
            return true
        }
    }

    public func enrolledNodes() async throws -> [EnrolledNode] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT name, public_key, enrolled_at FROM nodes ORDER BY name").map {
                EnrolledNode(name: $0["name"], publicKey: Array($0["public_key"] as Data), enrolledAt: $0["enrolled_at"])
            }
        }
    }

    // MARK: - Apply

    public func observeExpiredHolders(_ observer: @escaping @Sendable ([WhiteboardHolder]) -> Void) {
        expiredObserver.set(observer)
    }

    public func apply(_ signed: SignedWhiteboardRequest) async throws -> WhiteboardApplyOutcome {
        let expired = ObserverBox.Collected()
        let outcome = try await apply(signed, expired: expired)
        let released = expired.holders
        if !released.isEmpty { expiredObserver.call(released) }
        return outcome
    }

    private func apply(_ signed: SignedWhiteboardRequest, expired: ObserverBox.Collected) async throws -> WhiteboardApplyOutcome {
        let at = now()
        let verifier = self.verifier
        let ttl = lockTTLSeconds
        return try await pool.write { db in
            let request = signed.request
            guard let key = try Data.fetchOne(db, sql: "SELECT public_key FROM nodes WHERE name = ?", arguments: [request.node]) else {
                return .refused(WhiteboardErrorBody(error: "unknown node \(request.node) (not enrolled)", code: .unauthenticated))
            }
            guard signed.verify(publicKey: Array(key), verifier: verifier) else {
                return .refused(WhiteboardErrorBody(error: "bad signature on a request from \(request.node)", code: .unauthenticated))
            }
            let digest = Data(request.digest())
            let channel = try Row.fetchOne(
                db, sql: "SELECT last_seq, last_digest FROM channels WHERE node = ? AND channel = ?",
                arguments: [request.node, request.channel.rawValue])
            if let channel {
                let lastSeq: Int64 = channel["last_seq"]
                let lastDigest: Data? = channel["last_digest"]
                if request.seq == lastSeq, lastDigest == digest {
                    let revision = try Self.currentRevision(db)
                    return .applied(WhiteboardResponse(revision: revision, result: .duplicate, nonce: request.nonce))
                }
                if request.seq <= lastSeq {
                    return .refused(WhiteboardErrorBody(
                        error: "replayed request: \(request.node) \(request.channel.rawValue) seq \(request.seq), last seen \(lastSeq)",
                        code: .replayed))
                }
            }
            // From here on the seq is used up, whatever the verdict: a refused
            // request cannot be replayed later, when it might succeed.
            var change = Change(db: db, at: at)
            let refusal = try Self.execute(request, change: &change, lockTTLSeconds: ttl)
            expired.holders = change.expired
            try db.execute(
                sql: "INSERT OR REPLACE INTO channels(node, channel, last_seq, last_digest) VALUES (?, ?, ?, ?)",
                arguments: [request.node, request.channel.rawValue, request.seq, refusal == nil ? digest : nil])
            if let refusal { return .refused(refusal) }
            return .applied(WhiteboardResponse(revision: try change.revision(), result: .ok, nonce: request.nonce))
        }
    }

    /// Carries out an authenticated, fresh request; returns why not when refused.
    private static func execute(_ request: WhiteboardRequest, change: inout Change, lockTTLSeconds: Double) throws -> WhiteboardErrorBody? {
        let path: WhiteboardPath
        do {
            path = try WhiteboardPath(request.path)
        } catch {
            return WhiteboardErrorBody(error: error.description, code: .malformed)
        }
        if let denial = WhiteboardRules.authorize(node: request.node, op: request.op, path: path) {
            return WhiteboardErrorBody(error: denial.message, code: denial.kind == .forbidden ? .forbidden : .malformed)
        }
        let db = change.db
        switch request.op {
        case .put:
            let content: [UInt8]
            switch WhiteboardRules.validate(content: request.content ?? [], for: path) {
            case .success(let valid): content = valid
            case .failure(let denial): return WhiteboardErrorBody(error: denial.message, code: .malformed)
            }
            if let conflict = try fileTreeConflict(db, path: path.string) { return conflict }
            try change.putFile(path.string, content: content, writer: request.node)
            if affectsSummaries(path) { try recomputeSummaries(&change) }
        case .delete:
            if try change.liveContent(path.string) != nil {
                try change.putFile(path.string, content: nil, writer: request.node)
                if affectsSummaries(path) { try recomputeSummaries(&change) }
            }
        case .acquire:
            guard case .lockHolder(let lock, let holder) = path.kind else { return nil }
            try releaseExpired(&change, lock: lock, ttlSeconds: lockTTLSeconds)
            if try Row.fetchOne(
                db, sql: "SELECT 1 FROM holders WHERE lock = ? AND holder = ? AND released = 0", arguments: [lock, holder]) != nil
            {
                return WhiteboardErrorBody(error: "lock \(lock) already has holder \(holder)", code: .exists)
            }
            let held = try Int64.fetchOne(db, sql: "SELECT COUNT(*) FROM holders WHERE lock = ? AND released = 0", arguments: [lock]) ?? 0
            let capacity = try change.liveContent("locks/\(lock)/capacity").flatMap(WhiteboardRules.parseCount) ?? defaultCapacity
            if held >= capacity {
                return WhiteboardErrorBody(error: "lock \(lock) is full (\(held) of \(capacity))", code: .full)
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO holders(lock, holder, node, acquired_at, revision, released) VALUES (?, ?, ?, ?, ?, 0)",
                arguments: [lock, holder, request.node, change.at.timeIntervalSince1970, try change.revision()])
        case .release:
            guard case .lockHolder(let lock, let holder) = path.kind else { return nil }
            guard let owner = try String.fetchOne(
                db, sql: "SELECT node FROM holders WHERE lock = ? AND holder = ? AND released = 0", arguments: [lock, holder])
            else {
                return WhiteboardErrorBody(error: "lock \(lock) has no holder \(holder)", code: .notFound)
            }
            guard owner == request.node || request.node == WhiteboardRules.operatorName else {
                return WhiteboardErrorBody(error: "\(request.node) may not release \(path.string) (held by \(owner))", code: .forbidden)
            }
            try change.releaseHolder(lock: lock, holder: holder)
        }
        return nil
    }

    /// A put of `shared/a/b` while `shared/a` is a file, or of `shared/a` while `shared/a/…` exist.
    private static func fileTreeConflict(_ db: Database, path: String) throws -> WhiteboardErrorBody? {
        let parts = path.split(separator: "/")
        for count in 1..<parts.count {
            let prefix = parts[0..<count].joined(separator: "/")
            if try Row.fetchOne(db, sql: "SELECT 1 FROM files WHERE path = ? AND content IS NOT NULL", arguments: [prefix]) != nil {
                return WhiteboardErrorBody(error: "\(prefix) is a file, so \(path) cannot be created", code: .conflict)
            }
        }
        let below = path + "/"
        if try Row.fetchOne(
            db, sql: "SELECT 1 FROM files WHERE substr(path, 1, ?) = ? AND content IS NOT NULL",
            arguments: [below.utf8.count, below]) != nil
        {
            return WhiteboardErrorBody(error: "\(path) is a directory", code: .conflict)
        }
        return nil
    }

    // MARK: - Locks

    public func releaseExpiredHolders() async throws -> [WhiteboardHolder] {
        let at = now()
        let ttl = lockTTLSeconds
        return try await pool.write { db in
            var change = Change(db: db, at: at)
            return try Self.releaseExpired(&change, lock: nil, ttlSeconds: ttl)
        }
    }

    @discardableResult
    private static func releaseExpired(_ change: inout Change, lock: String?, ttlSeconds: Double) throws -> [WhiteboardHolder] {
        var sql = """
            SELECT h.lock, h.holder, h.node, h.acquired_at, h.revision, f.modified_at AS heartbeat
            FROM holders h LEFT JOIN files f ON f.path = 'nodes/' || h.node || '/heartbeat' AND f.content IS NOT NULL
            WHERE h.released = 0
            """
        var arguments: StatementArguments = []
        if let lock {
            sql += " AND h.lock = ?"
            arguments = [lock]
        }
        var released: [WhiteboardHolder] = []
        let limit = change.at.timeIntervalSince1970 - ttlSeconds
        for row in try Row.fetchAll(change.db, sql: sql, arguments: arguments) {
            let acquiredAt: Double = row["acquired_at"]
            let heartbeat: Double? = row["heartbeat"]
            guard max(acquiredAt, heartbeat ?? acquiredAt) < limit else { continue }
            try change.releaseHolder(lock: row["lock"], holder: row["holder"])
            released.append(WhiteboardHolder(
                lock: row["lock"], holder: row["holder"], node: row["node"], acquiredAt: Int64(acquiredAt),
                revision: try change.revision(), released: true))
        }
        change.expired += released
        return released
    }

    public func release(lock: String, holder: String) async throws -> Bool {
        let at = now()
        return try await pool.write { db in
            guard try Row.fetchOne(
                db, sql: "SELECT 1 FROM holders WHERE lock = ? AND holder = ? AND released = 0", arguments: [lock, holder]) != nil
            else { return false }
            var change = Change(db: db, at: at)
            try change.releaseHolder(lock: lock, holder: holder)
            return true
        }
    }

    // MARK: - Summaries

    public func registerUpgrade(_ version: Int64) async throws {
        let at = now()
        try await pool.write { db in
            var change = Change(db: db, at: at)
            let path = "upgrades/\(version)/summary"
            if try change.liveContent(path) == nil {
                try change.putFile(path, content: Self.summary(db, version: version), writer: "server")
            }
        }
    }

    private static func affectsSummaries(_ path: WhiteboardPath) -> Bool {
        switch path.kind {
        case .nodeFile(_, "state"), .nodeFile(_, "version"), .upgradeControl: true
        default: false
        }
    }

    /// Brings every existing summary (and one for each upgrade with a control file) up to date.
    private static func recomputeSummaries(_ change: inout Change) throws {
        var versions = Set<Int64>()
        for path in try String.fetchAll(
            change.db, sql: "SELECT path FROM files WHERE path LIKE 'upgrades/%' AND content IS NOT NULL")
        {
            if let parsed = try? WhiteboardPath(path) {
                switch parsed.kind {
                case .upgradeControl(let version), .upgradeSummary(let version): versions.insert(version)
                default: break
                }
            }
        }
        for version in versions.sorted() {
            let path = "upgrades/\(version)/summary"
            let content = try summary(change.db, version: version)
            if try change.liveContent(path) != content {
                try change.putFile(path, content: content, writer: "server")
            }
        }
    }

    /// `STATE COUNT` lines, sorted by state, over the enrolled nodes (not the
    /// operator); a node whose version is ≥ N counts as `done`, one without a
    /// state as `unknown`.
    static func summary(_ db: Database, version: Int64) throws -> [UInt8] {
        var counts: [String: Int] = [:]
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT n.name, s.content AS state, v.content AS version FROM nodes n
                LEFT JOIN files s ON s.path = 'nodes/' || n.name || '/state'
                LEFT JOIN files v ON v.path = 'nodes/' || n.name || '/version'
                WHERE n.name != ?
                """,
            arguments: [WhiteboardRules.operatorName])
        for row in rows {
            let nodeVersion = (row["version"] as Data?).flatMap { WhiteboardRules.parseCount(Array($0)) }
            var state = (row["state"] as Data?).map { String(decoding: $0, as: UTF8.self) } ?? "unknown"
            if state.hasSuffix("\n") { state.removeLast() }
            if let nodeVersion, nodeVersion >= version { state = "done" }
            counts[state, default: 0] += 1
        }
        return Array(counts.keys.sorted().map { "\($0) \(counts[$0]!)\n" }.joined().utf8)
    }

    // MARK: - Reads

    public func revision() async throws -> Int64 {
        try await pool.read { try Self.currentRevision($0) }
    }

    public func snapshot() async throws -> WhiteboardView {
        try await pool.read { db in
            let revision = try Self.currentRevision(db)
            let files = try Row.fetchAll(
                db, sql: "SELECT path, content, revision, modified_at FROM files WHERE content IS NOT NULL ORDER BY path"
            ).map(Self.file)
            let holders = try Row.fetchAll(
                db, sql: "SELECT * FROM holders WHERE released = 0 ORDER BY lock, holder").map(Self.holder)
            return WhiteboardView(revision: revision, files: files, holders: holders)
        }
    }

    public func changes(after revision: Int64) async throws -> WhiteboardView {
        try await pool.read { db in
            let current = try Self.currentRevision(db)
            let files = try Row.fetchAll(
                db, sql: "SELECT path, content, revision, modified_at FROM files WHERE revision > ? ORDER BY revision, path",
                arguments: [revision]
            ).map(Self.file)
            let holders = try Row.fetchAll(
                db, sql: "SELECT * FROM holders WHERE revision > ? ORDER BY revision, lock, holder", arguments: [revision]
            ).map(Self.holder)
            return WhiteboardView(revision: current, files: files, holders: holders)
        }
    }

    private static func file(_ row: Row) -> WhiteboardFile {
        WhiteboardFile(
            path: row["path"], content: (row["content"] as Data?).map(Array.init), revision: row["revision"],
            modifiedAt: Int64((row["modified_at"] as Double).rounded(.down)))
    }

    private static func holder(_ row: Row) -> WhiteboardHolder {
        WhiteboardHolder(
            lock: row["lock"], holder: row["holder"], node: row["node"],
            acquiredAt: Int64((row["acquired_at"] as Double).rounded(.down)), revision: row["revision"],
            released: (row["released"] as Int64) != 0)
    }

    static func currentRevision(_ db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'revision'") ?? 0
    }
}

/// One transaction's changes: the revision is bumped once, on the first change.
private struct Change {
    let db: Database
    let at: Date
    private var bumped: Int64?
    /// Holders released in this transaction because their TTL ran out.
    var expired: [WhiteboardHolder] = []

    init(db: Database, at: Date) {
        self.db = db
        self.at = at
    }

    /// The revision of this transaction's changes (bumping the counter the first time).
    mutating func revision() throws -> Int64 {
        if let bumped { return bumped }
        try db.execute(sql: "UPDATE meta SET value = value + 1 WHERE key = 'revision'")
        let revision = try SQLiteWhiteboardStore.currentRevision(db)
        bumped = revision
        return revision
    }

    func liveContent(_ path: String) throws -> [UInt8]? {
        try Data.fetchOne(db, sql: "SELECT content FROM files WHERE path = ? AND content IS NOT NULL", arguments: [path]).map(Array.init)
    }

    /// Writes a file, or a tombstone when `content` is nil.
    mutating func putFile(_ path: String, content: [UInt8]?, writer: String) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO files(path, content, revision, modified_at, writer) VALUES (?, ?, ?, ?, ?)",
            arguments: [path, content.map { Data($0) }, try revision(), at.timeIntervalSince1970, writer])
    }

    mutating func releaseHolder(lock: String, holder: String) throws {
        try db.execute(
            sql: "UPDATE holders SET released = 1, revision = ? WHERE lock = ? AND holder = ?",
            arguments: [try revision(), lock, holder])
    }
}

/// The store's observer of TTL releases, and what one apply collected for it.
private final class ObserverBox: @unchecked Sendable {
    private let lock = NSLock()
    private var observer: (@Sendable ([WhiteboardHolder]) -> Void)?

    func set(_ observer: @escaping @Sendable ([WhiteboardHolder]) -> Void) { lock.withLock { self.observer = observer } }
    func call(_ holders: [WhiteboardHolder]) { lock.withLock { observer }?(holders) }

    final class Collected: @unchecked Sendable {
        private let lock = NSLock()
        private var stored: [WhiteboardHolder] = []
        var holders: [WhiteboardHolder] {
            get { lock.withLock { stored } }
            set { lock.withLock { stored = newValue } }
        }
    }
}
