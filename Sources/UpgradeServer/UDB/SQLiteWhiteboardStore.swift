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

    // MARK: - Enrollment

    public func enroll(node: String, publicKey: [UInt8]) async throws -> Bool {
        let at = now()
        return try await pool.write { db in
            let old = try Data.fetchOne(db, sql: "SELECT public_key FROM nodes WHERE name = ?", arguments: [node])
            if old == Data(publicKey) { return false }
            try db.execute(
                sql: "INSERT OR REPLACE INTO nodes(name, public_key, enrolled_at) VALUES (?, ?, ?)",
                arguments: [node, Data(publicKey), at.timeIntervalSince1970])
            // The replay counters stay (a node's journal starts its seqs at the time it was created, so a new
            // journal continues above them), and so do the refusals of an enrolled node; an unknown name's go.
            try db.execute(sql: "DELETE FROM refusals WHERE node = ? AND enrolled = 0", arguments: [node])
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
            // Its replay counters stay (tombstones): a write captured before the removal stays a replay after a
            // re-enrolment.
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
                let refusal = WhiteboardErrorBody(error: "unknown node \(request.node) (not enrolled)", code: .unauthenticated)
                try Self.recordRefusal(db, node: request.node, enrolled: false, refusal: refusal, at: at)
                return .refused(refusal)
            }
            guard signed.verify(publicKey: Array(key), verifier: verifier) else {
                let refusal = WhiteboardErrorBody(
                    error: "bad signature on a request from \(request.node) (is it enrolled with another key?)", code: .unauthenticated)
                // Not recorded against the node: anyone can send a request in its name, and a forgery must not
                // make a healthy node show as refusing (upgradefs_udb_refused_total{reason="unauthenticated"} counts it).
                return .refused(refusal)
            }
            let outcome = try Self.applyAuthenticated(request, db: db, at: at, lockTTLSeconds: ttl, expired: expired)
            // Whether the node's file writes are being refused, for status and metrics (lock verdicts are answers).
            if request.channel == .outbox {
                switch outcome {
                case .refused(let refusal):
                    try Self.recordRefusal(db, node: request.node, enrolled: true, refusal: refusal, at: at)
                case .applied:
                    try db.execute(sql: "UPDATE refusals SET refusing = 0 WHERE node = ? AND refusing != 0", arguments: [request.node])
                }
            }
            return outcome
        }
    }

    /// The replay check and the request itself, for a request whose signature was checked.
    private static func applyAuthenticated(
        _ request: WhiteboardRequest, db: Database, at: Date, lockTTLSeconds ttl: Double, expired: ObserverBox.Collected
    ) throws -> WhiteboardApplyOutcome {
        // A session request has a replay stream per mount instance: a claim of a second mount (another journal, whose
        // seqs may be higher) must not use up the seqs of the live mount's direct channel.
        var stream = request.channel.rawValue
        var sessionAction: WhiteboardSession.Action?
        if request.op == .session {
            guard request.path == WhiteboardPath.node(request.node, "session"),
                  let action = WhiteboardSession.parse(request.content ?? [])
            else {
                return .refused(WhiteboardErrorBody(
                    error: "a session request is `claim HEX` or `end HEX` on nodes/NODE/session", code: .malformed))
            }
            sessionAction = action
            stream = "session " + action.instance
        }
        let digest = Data(request.digest())
        let channel = try Row.fetchOne(
            db, sql: "SELECT last_seq, last_digest, refused_code, refused_error FROM channels WHERE node = ? AND channel = ?",
            arguments: [request.node, stream])
        if let channel {
            let lastSeq: Int64 = channel["last_seq"]
            let lastDigest: Data? = channel["last_digest"]
            if request.seq == lastSeq, lastDigest == digest {
                // A retry of the last request: the same verdict again, nothing applied again.
                if let code = (channel["refused_code"] as String?).flatMap(WhiteboardErrorBody.Code.init(rawValue:)) {
                    return .refused(WhiteboardErrorBody(error: channel["refused_error"] ?? "refused", code: code))
                }
                return .applied(WhiteboardResponse(revision: try currentRevision(db), result: .duplicate, nonce: request.nonce))
            }
            if request.seq <= lastSeq {
                return .refused(WhiteboardErrorBody(
                    error: "replayed request: \(request.node) \(request.channel.rawValue) seq \(request.seq), last seen \(lastSeq)",
                    code: .replayed))
            }
        }
        func record(_ refusal: WhiteboardErrorBody?) throws {
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO channels(node, channel, last_seq, last_digest, refused_code, refused_error)
                    VALUES (?, ?, ?, ?, ?, ?)
                    """,
                arguments: [request.node, stream, request.seq, digest, refusal?.code.rawValue, refusal?.error])
        }
        if let sessionAction {
            // A refused claim records nothing; a session changes no file, so the revision stays.
            if let refusal = try session(sessionAction, node: request.node, db: db, at: at) { return .refused(refusal) }
            try record(nil)
            // The node's last seqs, so that a new journal's writes go above them instead of being refused as replays.
            var lastSeqs: [WhiteboardChannel: Int64] = [:]
            for channel in WhiteboardChannel.allCases {
                lastSeqs[channel] = try Int64.fetchOne(
                    db, sql: "SELECT last_seq FROM channels WHERE node = ? AND channel = ?", arguments: [request.node, channel.rawValue])
            }
            return .applied(WhiteboardResponse(
                revision: try currentRevision(db), result: .ok, nonce: request.nonce, lastSeqs: lastSeqs))
        }
        // From here on the seq is used up, whatever the verdict: a refused request cannot be replayed later, when it
        // might succeed. Its verdict is kept with its digest, so a retry of it (the answer was lost) hears it again.
        var change = Change(db: db, at: at)
        let refusal = try execute(request, change: &change, lockTTLSeconds: ttl)
        expired.holders = change.expired
        try record(refusal)
        if let refusal { return .refused(refusal) }
        return .applied(WhiteboardResponse(revision: try change.revision(), result: .ok, nonce: request.nonce))
    }

    /// Claims, renews or ends `node`'s mount session (`WhiteboardSession`); why not when refused.
    private static func session(_ action: WhiteboardSession.Action, node: String, db: Database, at: Date) throws -> WhiteboardErrorBody? {
        let current = try Row.fetchOne(db, sql: "SELECT instance, renewed_at FROM sessions WHERE node = ?", arguments: [node])
        switch action {
        case .claim(let instance):
            if let current, current["instance"] as String != instance {
                let age = at.timeIntervalSince1970 - (current["renewed_at"] as Double)
                if age < WhiteboardSession.leaseSeconds {
                    let left = Int((WhiteboardSession.leaseSeconds - age).rounded(.up))
                    return WhiteboardErrorBody(
                        error: "node \(node) is mounted elsewhere (another cache directory's mount renewed its session "
                            + "\(Int(age)) s ago); stop that mount, or wait \(left) s if it has stopped",
                        code: .inUse)
                }
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO sessions(node, instance, renewed_at) VALUES (?, ?, ?)",
                arguments: [node, instance, at.timeIntervalSince1970])
        case .end(let instance):
            try db.execute(sql: "DELETE FROM sessions WHERE node = ? AND instance = ?", arguments: [node, instance])
        }
        return nil
    }

    /// Names not enrolled whose refused writes are remembered (the least recent one makes room).
    static let maxUnknownWriters = 100

    /// Counts a refused write of `node` (an enrolled node's, or a name nobody enrolled) and marks it as being refused.
    private static func recordRefusal(_ db: Database, node: String, enrolled: Bool, refusal: WhiteboardErrorBody, at: Date) throws {
        try db.execute(
            sql: """
                INSERT INTO refusals(node, enrolled, total, refusing, last_at, last_code, last_error) VALUES (?, ?, 1, 1, ?, ?, ?)
                ON CONFLICT(node) DO UPDATE SET enrolled = excluded.enrolled, total = total + 1, refusing = 1,
                    last_at = excluded.last_at, last_code = excluded.last_code, last_error = excluded.last_error
                """,
            arguments: [node, enrolled ? 1 : 0, at.timeIntervalSince1970, refusal.code.rawValue, refusal.error])
        if !enrolled {
            try db.execute(
                sql: """
                    DELETE FROM refusals WHERE enrolled = 0 AND node NOT IN
                        (SELECT node FROM refusals WHERE enrolled = 0 ORDER BY last_at DESC LIMIT ?)
                    """,
                arguments: [maxUnknownWriters])
        }
    }

    public func refusals() async throws -> [WhiteboardRefusals] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM refusals ORDER BY node").map {
                WhiteboardRefusals(
                    node: $0["node"], enrolled: ($0["enrolled"] as Int64) != 0, total: $0["total"],
                    refusing: ($0["refusing"] as Int64) != 0, lastAt: Int64(($0["last_at"] as Double).rounded(.down)),
                    lastCode: $0["last_code"], lastError: $0["last_error"])
            }
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
            let usage = try Row.fetchOne(
                db, sql: """
                    SELECT COUNT(*) AS files, COALESCE(SUM(LENGTH(content)), 0) AS bytes FROM files
                    WHERE writer = ? AND content IS NOT NULL AND path != ?
                    """, arguments: [request.node, path.string])
            if let denial = WhiteboardRules.quotaDenial(
                node: request.node, path: path, files: (usage?["files"] ?? 0) + 1, bytes: (usage?["bytes"] ?? 0) + content.count)
            {
                return WhiteboardErrorBody(error: denial.message, code: .forbidden)
            }
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
            let heldBy = try String.fetchOne(
                db, sql: "SELECT node FROM holders WHERE lock = ? AND holder = ? AND released = 0", arguments: [lock, holder])
            let holderIsAnotherNode = try holder != request.node
                && Row.fetchOne(db, sql: "SELECT 1 FROM nodes WHERE name = ?", arguments: [holder]) != nil
            let holding = try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM holders WHERE node = ? AND released = 0", arguments: [request.node]) ?? 0
            if let denial = WhiteboardRules.authorizeAcquire(
                node: request.node, path: path, holderIsAnotherEnrolledNode: holderIsAnotherNode, heldBy: heldBy, holding: holding)
            {
                return WhiteboardErrorBody(error: denial.message, code: .forbidden)
            }
            if heldBy != nil {
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
        case .session:
            return nil  // answered by `session`
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

    public func registerUpgrade(_ version: Int64, class upgradeClass: String) async throws {
        let at = now()
        try await pool.write { db in
            try db.execute(sql: "INSERT OR REPLACE INTO upgrades(version, class) VALUES (?, ?)", arguments: [version, upgradeClass])
            var change = Change(db: db, at: at)
            try Self.recomputeSummaries(&change, versions: [version])
        }
    }

    private static func affectsSummaries(_ path: WhiteboardPath) -> Bool {
        switch path.kind {
        case .nodeFile(_, "state"), .nodeFile(_, "version"), .nodeFile(_, "class"), .nodeFile(_, "upgrade"): true
        default: false
        }
    }

    /// Brings the summary of every registered upgrade (or of `versions`) up to date.
    private static func recomputeSummaries(_ change: inout Change, versions: [Int64]? = nil) throws {
        let registered = try Row.fetchAll(change.db, sql: "SELECT version, class FROM upgrades ORDER BY version")
        for row in registered {
            let version: Int64 = row["version"]
            if let versions, !versions.contains(version) { continue }
            let path = "upgrades/\(version)/summary"
            let content = try summary(change.db, version: version, class: row["class"])
            if try change.liveContent(path) != content {
                try change.putFile(path, content: content, writer: "server")
            }
        }
    }

    /// `STATE COUNT` lines, sorted by state, over the enrolled nodes (not the operator) whose `class` file names
    /// `upgradeClass` (one trailing newline allowed), each counted as `WhiteboardRules.summaryState` says. A node that
    /// never reported a class is counted under no upgrade.
    static func summary(_ db: Database, version: Int64, class upgradeClass: String) throws -> [UInt8] {
        var counts: [String: Int] = [:]
        let rows = try Row.fetchAll(
            db,
            sql: """
                SELECT n.name, s.content AS state, v.content AS version, u.content AS upgrade FROM nodes n
                JOIN files c ON c.path = 'nodes/' || n.name || '/class' AND c.content IN (?, ?)
                LEFT JOIN files s ON s.path = 'nodes/' || n.name || '/state'
                LEFT JOIN files v ON v.path = 'nodes/' || n.name || '/version'
                LEFT JOIN files u ON u.path = 'nodes/' || n.name || '/upgrade'
                WHERE n.name != ?
                """,
            arguments: [Data(upgradeClass.utf8), Data((upgradeClass + "\n").utf8), WhiteboardRules.operatorName])
        for row in rows {
            let state = WhiteboardRules.summaryState(
                upgrade: version, state: (row["state"] as Data?).map(Array.init), version: (row["version"] as Data?).map(Array.init),
                reportedUpgrade: (row["upgrade"] as Data?).map(Array.init))
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
