import Foundation
import GRDB
import Sodium
import Synchronization
import UpgradeCore

/// The node's durable whiteboard journal, `CACHE/udb.sqlite` (docs/DESIGN.md, "Node side").
///
/// A write to one of the node's own files is signed and appended to the outbox in one transaction
/// (WAL, `synchronous = FULL`) before the caller returns, so it survives a crash of the mount or the
/// machine. The sender delivers the outbox in `seq` order and `acknowledge`s what the server took.
/// Sequence numbers come from `counters` and are never reused, not even after the outbox empties or
/// the journal is reopened.
///
/// Every method is synchronous and thread-safe (FUSE calls it from its worker threads).
public final class WhiteboardJournal: Sendable {
    public static let fileName = "udb.sqlite"

    /// The outbox's operations (locks go over the direct channel and are not journaled).
    public enum Op: String, Sendable, Hashable {
        case put
        case delete

        var wireOp: WhiteboardOp { self == .put ? .put : .delete }
    }

    /// One pending write, in the order it was made.
    public struct Entry: Sendable, Hashable {
        public let seq: Int64
        public let op: Op
        public let path: String
        /// The new content as the server will store it (put only; a `log` keeps its last 64 KiB).
        public let content: [UInt8]?
        /// The request's nonce; the server's answer must echo it.
        public let nonce: [UInt8]
        /// The exact body of `POST /v1/udb/apply`: the signed request, as signed at `enqueue` time.
        /// Retries send these same bytes, so the server recognises them as a duplicate.
        public let body: [UInt8]
    }

    public let node: String
    public let path: String
    /// This journal's identity in the node's mount session (`WhiteboardSession`): random, made once, kept with the
    /// journal, so a mount restarted on the same cache is the same instance and a mount on another cache is not.
    public let instance: String
    private let database: DatabasePool
    private let signer: WhiteboardRequestSigner
    /// Direct-channel seqs reserved on disk and not handed out yet: `next..<limit`.
    private let directSeqs = Mutex<(next: Int64, limit: Int64)>((0, 0))
    /// How many direct seqs one durable write reserves (a crash skips the unused rest: the server allows gaps).
    static let directSeqBlock: Int64 = 1024

    /// Opens (creating if needed) the journal at `path` for `node`, signing with `key`.
    /// - Parameter firstSeq: the first sequence number of a new journal, on both channels. The default is
    ///   the current time in microseconds, so a journal recreated after the cache was wiped still starts
    ///   above every seq the server has seen from this node (the server allows gaps, not going back).
    public init(path: String, node: String, key: Ed25519KeyPair, firstSeq: Int64? = nil) throws(WhiteboardJournalError) {
        self.node = node
        self.path = path
        self.signer = WhiteboardRequestSigner(node: node, key: key)
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
        }
        do {
            database = try DatabasePool(path: path, configuration: configuration)
            try Self.migrator.migrate(database)
            let start = firstSeq ?? Int64(Date().timeIntervalSince1970 * 1_000_000)
            instance = try database.write { db in
                for channel in ["outbox", "direct"] {
                    try db.execute(sql: "INSERT OR IGNORE INTO counters(channel, next_seq) VALUES (?, ?)",
                                   arguments: [channel, start])
                }
                try db.execute(sql: "INSERT OR IGNORE INTO meta(key, value) VALUES ('instance', ?)",
                               arguments: [Int64.random(in: 1...Int64.max)])
                let value = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'instance'") ?? 0
                return String(UInt64(bitPattern: value), radix: 16)
            }
        } catch {
            throw WhiteboardJournalError(path: path, operation: "open", cause: error)
        }
    }

    /// The journal of a node's cache directory: `CACHE/udb.sqlite`.
    public convenience init(cacheDirectory: String, node: String, key: Ed25519KeyPair) throws(WhiteboardJournalError) {
        try self.init(path: cacheDirectory + "/" + Self.fileName, node: node, key: key)
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE outbox(
                    seq INTEGER PRIMARY KEY,
                    op TEXT NOT NULL,
                    path TEXT NOT NULL,
                    content BLOB,
                    nonce BLOB NOT NULL,
                    request BLOB NOT NULL,
                    signed BLOB NOT NULL);
                CREATE INDEX outbox_path ON outbox(path, seq);
                CREATE TABLE files(path TEXT PRIMARY KEY, content BLOB NOT NULL, revision INTEGER NOT NULL);
                CREATE TABLE counters(channel TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
                CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                """)
        }
        // v2: writes the server refused for good, set aside so that the writes behind them go on.
        migrator.registerMigration("v2") { db in
            try db.execute(sql: """
                CREATE TABLE refused(
                    seq INTEGER PRIMARY KEY,
                    op TEXT NOT NULL,
                    path TEXT NOT NULL,
                    content BLOB,
                    status INTEGER NOT NULL,
                    reason TEXT NOT NULL,
                    refused_at REAL NOT NULL);
                """)
        }
        return migrator
    }

    private func run<T>(_ operation: String, _ body: () throws -> T) throws(WhiteboardJournalError) -> T {
        do {
            return try body()
        } catch let error as WhiteboardJournalError {
            throw error
        } catch {
            throw WhiteboardJournalError(path: path, operation: operation, cause: error)
        }
    }

    // MARK: Outbox

    /// Signs a write of `path` and appends it to the outbox; returns its seq once it is durable.
    ///
    /// The whiteboard's rules are checked first (`WhiteboardRules`, as the server will): a write the
    /// server would refuse is never journaled, since it would hold up every later write. Such a refusal
    /// is thrown with `denial` set (`.forbidden` → EACCES, `.malformed` → EINVAL on the node).
    @discardableResult
    public func enqueue(op: Op, path: String, content: [UInt8]? = nil) throws(WhiteboardJournalError) -> Int64 {
        guard (op == .put) == (content != nil) else {
            throw WhiteboardJournalError(path: self.path, operation: "enqueue", message: "a put needs content, a delete has none")
        }
        let stored = try Self.check(node: node, op: op, path: path, content: content)
        return try run("enqueue") {
            try database.write { db in try append(db, op: op, path: path, content: content, stored: stored) }
        }
    }

    /// Signs a checked write with the next outbox seq and appends it (inside the caller's transaction).
    private func append(_ db: Database, op: Op, path: String, content: [UInt8]?, stored: [UInt8]?) throws -> Int64 {
        let seq = try Self.takeSeq(db, channel: "outbox")
        let nonce = Sodium.randomBytes(WhiteboardRequest.nonceBytes)
        let signed = signer.sign(channel: .outbox, seq: seq, op: op.wireOp, path: path, content: content, nonce: nonce)
        try db.execute(
            sql: "INSERT INTO outbox(seq, op, path, content, nonce, request, signed) VALUES (?, ?, ?, ?, ?, ?, ?)",
            arguments: [seq, op.rawValue, path, stored.map { Data($0) }, Data(nonce), Data(signed.request), Data(signed.body)])
        return seq
    }

    /// A write the server refused for good (a signed verdict), set aside by `setAside`.
    public struct RefusedWrite: Sendable, Hashable {
        public let seq: Int64
        public let op: Op
        public let path: String
        public let status: Int
        public let reason: String
    }

    /// Moves the pending write `seq`, which the server refused with a signed verdict (`status`, `reason`), out of the
    /// outbox into the `refused` table, so that the writes behind it go on, and appends a line saying so to the
    /// node's own `log` (journaled like any write, behind the others). Nothing is lost: the refused write stays in
    /// the journal. Its seq stays used: the server kept the verdict with it and answers a retry with the same one.
    public func setAside(seq: Int64, status: Int, reason: String, at: Date = Date()) throws(WhiteboardJournalError) {
        let logPath = WhiteboardPath.node(node, "log")
        try run("set aside a refused write") {
            try database.write { db in
                guard let row = try Row.fetchOne(db, sql: "SELECT op, path, content FROM outbox WHERE seq = ?", arguments: [seq]) else {
                    return
                }
                let path: String = row["path"]
                try db.execute(
                    sql: "INSERT OR REPLACE INTO refused(seq, op, path, content, status, reason, refused_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    arguments: [seq, row["op"] as String, path, row["content"] as Data?, status, reason, at.timeIntervalSince1970])
                try db.execute(sql: "DELETE FROM outbox WHERE seq = ?", arguments: [seq])
                guard path != logPath else { return }  // a refused log line is not reported in the log
                let line = "upgradefs mount: the server refused the write of \(path) (seq \(seq), HTTP \(status): \(reason)); "
                    + "it is set aside in the journal's refused table and later writes go on\n"
                let current = try Self.view(db, path: logPath) ?? []
                let content = current + Array(line.utf8)
                let stored = try Self.check(node: node, op: .put, path: logPath, content: content)
                _ = try append(db, op: .put, path: logPath, content: content, stored: stored)
            }
        }
    }

    /// The writes set aside because the server refused them, oldest first.
    public func refused() throws(WhiteboardJournalError) -> [RefusedWrite] {
        try run("read refused") {
            try database.read { db in
                try Row.fetchAll(db, sql: "SELECT seq, op, path, status, reason FROM refused ORDER BY seq").map {
                    RefusedWrite(seq: $0["seq"], op: Op(rawValue: $0["op"]) ?? .put, path: $0["path"], status: $0["status"],
                                 reason: $0["reason"])
                }
            }
        }
    }

    /// The bytes the server will store for this write (nil for a delete), or the rule it breaks.
    package static func check(node: String, op: Op, path: String, content: [UInt8]?) throws(WhiteboardJournalError) -> [UInt8]? {
        func refuse(_ denial: WhiteboardDenial) -> WhiteboardJournalError {
            WhiteboardJournalError(path: path, operation: "write", message: denial.message, denial: denial)
        }
        let parsed: WhiteboardPath
        do {
            parsed = try WhiteboardPath(path)
        } catch {
            throw refuse(WhiteboardDenial(.malformed, error.description))
        }
        if let denial = WhiteboardRules.authorize(node: node, op: op.wireOp, path: parsed) { throw refuse(denial) }
        guard let content else { return nil }
        switch WhiteboardRules.validate(content: content, for: parsed) {
        case .success(let stored): return stored
        case .failure(let denial): throw refuse(denial)
        }
    }

    /// Every write not yet acknowledged by the server, in seq order.
    public func pending() throws(WhiteboardJournalError) -> [Entry] {
        try run("read outbox") {
            try database.read { db in
                try Row.fetchAll(db, sql: "SELECT seq, op, path, content, nonce, signed FROM outbox ORDER BY seq").map(Self.entry)
            }
        }
    }

    /// The oldest pending write, if any.
    public func firstPending() throws(WhiteboardJournalError) -> Entry? {
        try run("read outbox") {
            try database.read { db in
                try Row.fetchOne(db, sql: "SELECT seq, op, path, content, nonce, signed FROM outbox ORDER BY seq LIMIT 1").map(Self.entry)
            }
        }
    }

    private static func entry(_ row: Row) -> Entry {
        Entry(seq: row["seq"], op: Op(rawValue: row["op"]) ?? .put, path: row["path"],
              content: (row["content"] as Data?).map(Array.init), nonce: Array(row["nonce"] as Data),
              body: Array(row["signed"] as Data))
    }

    /// Removes the entry `seq` (the server answered ok or duplicate); other entries stay.
    ///
    /// With the `revision` the server applied it at, the write moves into the server view in the same
    /// transaction, so a read of the file never falls back to an older server view between the
    /// acknowledgement and the change feed catching up (unless the view already holds a newer revision).
    public func acknowledge(seq: Int64, revision: Int64? = nil) throws(WhiteboardJournalError) {
        try run("acknowledge") {
            try database.write { db in
                if let revision,
                   let row = try Row.fetchOne(db, sql: "SELECT op, path, content FROM outbox WHERE seq = ?", arguments: [seq]) {
                    let path: String = row["path"]
                    if let content = row["content"] as Data?, row["op"] as String == Op.put.rawValue {
                        try Self.upsert(db, path: path, content: content, revision: revision)
                    } else {
                        try db.execute(sql: "DELETE FROM files WHERE path = ? AND revision <= ?", arguments: [path, revision])
                    }
                }
                try db.execute(sql: "DELETE FROM outbox WHERE seq = ?", arguments: [seq])
            }
        }
    }

    private static func upsert(_ db: Database, path: String, content: Data, revision: Int64) throws {
        try db.execute(sql: """
            INSERT INTO files(path, content, revision) VALUES (?, ?, ?)
            ON CONFLICT(path) DO UPDATE SET content = excluded.content, revision = excluded.revision
            WHERE excluded.revision >= files.revision
            """, arguments: [path, content, revision])
    }

    /// A fresh seq on the direct channel (lock operations). Seqs are reserved on disk in blocks before any of them
    /// is handed out, so a restart never hands one out again, and most lock operations need no disk write here.
    public func nextDirectSeq() throws(WhiteboardJournalError) -> Int64 {
        try directSeqs.withLock { (range: inout (next: Int64, limit: Int64)) throws(WhiteboardJournalError) -> Int64 in
            if range.next >= range.limit {
                let start = try run("take direct seq") {
                    try database.write { db in
                        let start = try Self.takeSeq(db, channel: "direct")
                        try db.execute(sql: "UPDATE counters SET next_seq = ? WHERE channel = 'direct'",
                                       arguments: [start + Self.directSeqBlock])
                        return start
                    }
                }
                range = (start, start + Self.directSeqBlock)
            }
            defer { range.next += 1 }
            return range.next
        }
    }

    /// Raises the counters so that each channel's next seq is above the last seq the server took from this node
    /// (`lastSeqs`, from the signed answer to a session claim): a journal that starts below them (a wiped cache while
    /// the clock was once far ahead) would have every new write refused as a replay. Entries already in the outbox
    /// keep their seqs (they may be old writes). The channels raised, with their new next seq.
    @discardableResult
    public func raiseSeqs(above lastSeqs: [WhiteboardChannel: Int64]) throws(WhiteboardJournalError) -> [WhiteboardChannel: Int64] {
        try directSeqs.withLock { (range: inout (next: Int64, limit: Int64)) throws(WhiteboardJournalError) in
            let raised = try run("raise seqs") {
                try database.write { db in
                    var raised: [WhiteboardChannel: Int64] = [:]
                    for (channel, last) in lastSeqs where last < Int64.max {
                        let next = try Int64.fetchOne(
                            db, sql: "SELECT next_seq FROM counters WHERE channel = ?", arguments: [channel.rawValue]) ?? 0
                        let inMemory = channel == .direct && range.next < range.limit ? range.next : next
                        guard min(next, inMemory) <= last else { continue }
                        let raisedNext = max(next, last + 1)
                        try db.execute(sql: "UPDATE counters SET next_seq = ? WHERE channel = ?", arguments: [raisedNext, channel.rawValue])
                        raised[channel] = raisedNext
                    }
                    return raised
                }
            }
            if raised[.direct] != nil { range = (0, 0) }
            return raised
        }
    }

    /// Signs a direct-channel request (acquire/release of `locks/NAME/HOLDER`, the mount's session) with a fresh seq.
    /// Not journaled: a lock operation either reaches the server now or fails.
    public func signDirect(op: WhiteboardOp, path: String, content: [UInt8]? = nil) throws(WhiteboardJournalError)
        -> (seq: Int64, nonce: [UInt8], body: [UInt8]) {
        let seq = try nextDirectSeq()
        let nonce = Sodium.randomBytes(WhiteboardRequest.nonceBytes)
        return (seq, nonce, signer.sign(channel: .direct, seq: seq, op: op, path: path, content: content, nonce: nonce).body)
    }

    private static func takeSeq(_ db: Database, channel: String) throws -> Int64 {
        guard let seq = try Int64.fetchOne(db, sql: "SELECT next_seq FROM counters WHERE channel = ?", arguments: [channel]) else {
            throw WhiteboardJournalError(path: "", operation: "take seq", message: "no counter for channel \(channel)")
        }
        try db.execute(sql: "UPDATE counters SET next_seq = ? WHERE channel = ?", arguments: [seq + 1, channel])
        return seq
    }

    // MARK: Views

    /// What a read of `path` shows on this node: the latest pending write to it if there is one (nil
    /// for a pending delete), else the last server view (nil if the server has no such file).
    public func view(path: String) throws(WhiteboardJournalError) -> [UInt8]? {
        try run("read view") {
            try database.read { db in try Self.view(db, path: path) }
        }
    }

    private static func view(_ db: Database, path: String) throws -> [UInt8]? {
        if let row = try Row.fetchOne(db, sql: "SELECT op, content FROM outbox WHERE path = ? ORDER BY seq DESC LIMIT 1",
                                      arguments: [path]) {
            return (row["content"] as Data?).map(Array.init)
        }
        return try Data.fetchOne(db, sql: "SELECT content FROM files WHERE path = ?", arguments: [path]).map(Array.init)
    }

    /// The paths that exist in this node's view (server view plus pending puts, minus pending deletes)
    /// whose path starts with `prefix`, sorted.
    public func paths(withPrefix prefix: String = "") throws(WhiteboardJournalError) -> [String] {
        try run("list view") {
            try database.read { db in
                let pattern = Self.likePattern(prefix)
                var result = Set(try String.fetchAll(db, sql: "SELECT path FROM files WHERE path LIKE ? ESCAPE '\\'", arguments: [pattern]))
                let latest = try Row.fetchAll(db, sql: """
                    SELECT path, op FROM outbox WHERE seq IN (SELECT max(seq) FROM outbox GROUP BY path) AND path LIKE ? ESCAPE '\\'
                    """, arguments: [pattern])
                for row in latest {
                    if row["op"] as String == Op.delete.rawValue { result.remove(row["path"]) } else { result.insert(row["path"]) }
                }
                return result.sorted()
            }
        }
    }

    private static func likePattern(_ prefix: String) -> String {
        prefix.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "%", with: "\\%")
            .replacingOccurrences(of: "_", with: "\\_") + "%"
    }

    /// The server's revision the view reflects (0 before the first snapshot).
    public func serverRevision() throws(WhiteboardJournalError) -> Int64 {
        try run("read revision") {
            try database.read { db in try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'revision'") ?? 0 }
        }
    }

    /// One file as the server reported it; `content == nil` is a deletion (tombstone).
    public struct ServerFile: Sendable, Hashable {
        public let path: String
        public let content: [UInt8]?
        public let revision: Int64
        public init(path: String, content: [UInt8]?, revision: Int64) {
            self.path = path
            self.content = content
            self.revision = revision
        }
    }

    /// Updates the server view with a snapshot (`replacingAll`) or a batch of changes, and records
    /// `revision`. A change older than what the view holds for a path is ignored; an older `revision`
    /// than the recorded one is ignored as a whole (answers can arrive out of order).
    public func applyServerChanges(revision: Int64, files: [ServerFile], replacingAll: Bool = false) throws(WhiteboardJournalError) {
        try run("apply server changes") {
            try database.write { db in
                let current = try Int64.fetchOne(db, sql: "SELECT value FROM meta WHERE key = 'revision'") ?? 0
                guard revision >= current else { return }
                if replacingAll { try db.execute(sql: "DELETE FROM files") }
                for file in files {
                    if let content = file.content {
                        try Self.upsert(db, path: file.path, content: Data(content), revision: file.revision)
                    } else {
                        try db.execute(sql: "DELETE FROM files WHERE path = ? AND revision <= ?", arguments: [file.path, file.revision])
                    }
                }
                try db.execute(sql: "INSERT OR REPLACE INTO meta(key, value) VALUES ('revision', ?)", arguments: [revision])
            }
        }
    }

    /// A pragma's value as SQLite reports it (for tests and diagnostics).
    func pragma(_ name: String) throws(WhiteboardJournalError) -> String? {
        try run("read pragma") { try database.read { db in try String.fetchOne(db, sql: "PRAGMA \(name)") } }
    }

    /// Closes the database; later calls fail.
    public func close() throws(WhiteboardJournalError) {
        try run("close") { try database.close() }
    }
}

/// Signs whiteboard requests with the node's key, in the core's wire shape (`WhiteboardRequest`).
struct WhiteboardRequestSigner: Sendable {
    let node: String
    let key: Ed25519KeyPair

    /// The canonical JSON of the request and the signed body `{"request": …, "signature": "<hex>"}`.
    func sign(channel: WhiteboardChannel, seq: Int64, op: WhiteboardOp, path: String, content: [UInt8]?, nonce: [UInt8])
        -> (request: [UInt8], body: [UInt8]) {
        let request = WhiteboardRequest(node: node, channel: channel, seq: seq, op: op, path: path, content: content, nonce: nonce)
        return (request.toJSON().canonicalBytes(), request.signed(by: key).encoded())
    }
}

/// A journal operation that failed: which, on which file, and why.
public struct WhiteboardJournalError: Error, CustomStringConvertible, Sendable {
    /// The journal's file, or for a refused write the whiteboard path.
    public let path: String
    public let operation: String
    public let message: String
    /// Set when a write breaks the whiteboard's rules (nothing was journaled); nil for storage failures (EIO).
    public let denial: WhiteboardDenial?

    public init(path: String, operation: String, message: String, denial: WhiteboardDenial? = nil) {
        self.path = path
        self.operation = operation
        self.message = message
        self.denial = denial
    }

    init(path: String, operation: String, cause: any Error) {
        self.init(path: path, operation: operation, message: "\(cause)")
    }

    public var description: String {
        denial != nil ? "whiteboard write refused: \(message)" : "whiteboard journal \(path): \(operation) failed: \(message)"
    }
}
