/// Where the whiteboard's rows live: storage only, no rules (those are `WhiteboardLedger`'s). SQLite implements it
/// in the server (`SQLiteWhiteboardStorage`), `InMemoryWhiteboardStorage` in core for tests; a new storage must pass
/// the conformance suite (docs/DESIGN.md, "Ledger and storage (server)").
public protocol WhiteboardStorage: Sendable {
    associatedtype Transaction: WhiteboardTransaction

    /// Runs `body` in one serializable transaction: its reads see one state that no other transaction changes
    /// meanwhile, and its writes are committed together when it returns, or none of them when it throws. `body` is
    /// escaping so a storage may run it on a thread or task of its own (PostgreSQL's does); it may run more than
    /// once (a retry after a serialization failure), so it decides from the transaction only.
    func write<T: Sendable>(_ body: @escaping @Sendable (inout Transaction) throws -> T) async throws -> T

    /// Runs `body` over one consistent state, changing nothing.
    func read<T: Sendable>(_ body: @escaping @Sendable (Transaction) throws -> T) async throws -> T
}

/// A storage cannot reach its database, or the database refuses for now (stopped, restarting, out of connections):
/// nothing was decided and nothing changed, so the same call may be tried again. The server answers a whiteboard call
/// that meets it with 503 and code `unavailable` (`WhiteboardErrorBody.Code`), which a node's sender retries.
public struct WhiteboardStorageUnavailable: Error, CustomStringConvertible, Sendable {
    public var reason: String

    public init(_ reason: String) { self.reason = reason }

    public var description: String { "the upgrade database is unavailable: \(reason)" }
}

/// One transaction's view of the rows. Lookups by key; lists come in any order (the ledger sorts what it shows).
/// "Live": a file with content (not a tombstone), a holder not released. A file's path is its UTF-8 bytes: two paths
/// a Swift string comparison equates (NFC and NFD) are two files.
public protocol WhiteboardTransaction {
    // MARK: Revision

    /// The whiteboard's revision: the highest revision of a committed change (this transaction's included).
    func revision() throws -> Int64
    /// The revision of this transaction's changes: allocated on the first call (above every revision allocated
    /// before), the same on later calls of the same transaction. Revisions become visible in the order they were
    /// allocated: a reader that saw revision R sees every change of revision ≤ R.
    mutating func changeRevision() throws -> Int64

    // MARK: Identities

    func node(_ name: String) throws -> EnrolledNode?
    func nodes() throws -> [EnrolledNode]
    /// Inserts or replaces the node of that name.
    mutating func putNode(_ node: EnrolledNode) throws
    /// False when there was none.
    mutating func deleteNode(_ name: String) throws -> Bool

    // MARK: Replay state, sessions, refusals

    func replay(node: String, stream: String) throws -> WhiteboardReplayRow?
    mutating func putReplay(_ row: WhiteboardReplayRow) throws

    func session(node: String) throws -> WhiteboardSessionRow?
    mutating func putSession(_ row: WhiteboardSessionRow) throws
    mutating func deleteSession(node: String) throws

    func refusal(node: String) throws -> WhiteboardRefusals?
    func refusals() throws -> [WhiteboardRefusals]
    mutating func putRefusal(_ row: WhiteboardRefusals) throws
    mutating func deleteRefusal(node: String) throws

    // MARK: Files

    /// The row of `path`, a tombstone included.
    func file(_ path: String) throws -> WhiteboardFileRow?
    func liveFiles() throws -> [WhiteboardFileRow]
    /// Every row (tombstones included) whose revision is above `revision`.
    func files(after revision: Int64) throws -> [WhiteboardFileRow]
    /// Whether a live file's path starts with `prefix`.
    func hasLiveFile(withPrefix prefix: String) throws -> Bool
    /// How many live files `writer` last wrote, and their bytes, not counting `path`.
    func liveUsage(writer: String, excluding path: String) throws -> (files: Int, bytes: Int)
    /// Every enrolled node whose live file `nodes/NODE/filter` holds one of `values`, with the live content of those
    /// of its files (`nodes/NODE/NAME`) named in `names`.
    func enrolledNodeFiles(_ names: [String], whereFile filter: String, isOneOf values: [[UInt8]]) throws -> [String: [String: [UInt8]]]
    /// Inserts or replaces the row of `row.path` (a tombstone when its content is nil).
    mutating func putFile(_ row: WhiteboardFileRow) throws

    // MARK: Lock holders

    func liveHolder(lock: String, holder: String) throws -> WhiteboardHolderRow?
    /// Live holders of `lock`, or of every lock when nil.
    func liveHolders(lock: String?) throws -> [WhiteboardHolderRow]
    func liveHolders(node: String) throws -> [WhiteboardHolderRow]
    /// Every row (released ones included) whose revision is above `revision`.
    func holders(after revision: Int64) throws -> [WhiteboardHolderRow]
    /// Inserts or replaces the row of (`row.lock`, `row.holder`).
    mutating func putHolder(_ row: WhiteboardHolderRow) throws

    // MARK: Published upgrades

    /// Each registered upgrade's class, by version.
    func upgrades() throws -> [Int64: String]
    mutating func putUpgrade(version: Int64, class: String) throws
}

/// An identity admitted to write on the whiteboard.
public struct EnrolledNode: Sendable, Hashable {
    public var name: String
    public var publicKey: [UInt8]
    /// Unix seconds.
    public var enrolledAt: Double

    public init(name: String, publicKey: [UInt8], enrolledAt: Double) {
        self.name = name
        self.publicKey = publicKey
        self.enrolledAt = enrolledAt
    }
}

/// The replay state of one stream of a node: a channel, or a session instance's claims.
public struct WhiteboardReplayRow: Sendable, Hashable {
    public var node: String
    public var stream: String
    public var lastSeq: Int64
    /// `WhiteboardRequest.digest()` of the request of `lastSeq`.
    public var lastDigest: [UInt8]?
    /// The verdict on that request when it was refused.
    public var refusedCode: String?
    public var refusedError: String?

    public init(node: String, stream: String, lastSeq: Int64, lastDigest: [UInt8]?, refusedCode: String? = nil, refusedError: String? = nil) {
        self.node = node
        self.stream = stream
        self.lastSeq = lastSeq
        self.lastDigest = lastDigest
        self.refusedCode = refusedCode
        self.refusedError = refusedError
    }
}

/// A node key's live mount (`WhiteboardSession`).
public struct WhiteboardSessionRow: Sendable, Hashable {
    public var node: String
    public var instance: String
    /// Unix seconds of the last claim.
    public var renewedAt: Double

    public init(node: String, instance: String, renewedAt: Double) {
        self.node = node
        self.instance = instance
        self.renewedAt = renewedAt
    }
}

/// Writes the server refused from one name: an enrolled node's refused file writes, or writes from a name that is
/// not enrolled.
public struct WhiteboardRefusals: Sendable, Hashable {
    public var node: String
    /// False: the name was not enrolled when its last write was refused.
    public var enrolled: Bool
    /// Refused requests, counted since the name's first refusal (kept across restarts).
    public var total: Int64
    /// The name's latest write was refused (an applied file write clears it).
    public var refusing: Bool
    /// Unix seconds of the latest refusal.
    public var lastAt: Double
    public var lastCode: String
    public var lastError: String

    public init(node: String, enrolled: Bool, total: Int64, refusing: Bool, lastAt: Double, lastCode: String, lastError: String) {
        self.node = node
        self.enrolled = enrolled
        self.total = total
        self.refusing = refusing
        self.lastAt = lastAt
        self.lastCode = lastCode
        self.lastError = lastError
    }

    /// `lastAt` in whole seconds, as status shows it.
    public var lastAtSeconds: Int64 { Int64(lastAt.rounded(.down)) }
}

/// One whiteboard file, as stored.
public struct WhiteboardFileRow: Sendable, Hashable {
    public var path: String
    /// nil: deleted (a tombstone).
    public var content: [UInt8]?
    public var revision: Int64
    /// Unix seconds.
    public var modifiedAt: Double
    /// The identity whose write made this row (`server` for summaries).
    public var writer: String

    public init(path: String, content: [UInt8]?, revision: Int64, modifiedAt: Double, writer: String) {
        self.path = path
        self.content = content
        self.revision = revision
        self.modifiedAt = modifiedAt
        self.writer = writer
    }
}

/// One holder of a lock, as stored (released ones are kept as tombstones).
public struct WhiteboardHolderRow: Sendable, Hashable {
    public var lock: String
    public var holder: String
    public var node: String
    /// Unix seconds.
    public var acquiredAt: Double
    public var revision: Int64
    public var released: Bool

    public init(lock: String, holder: String, node: String, acquiredAt: Double, revision: Int64, released: Bool) {
        self.lock = lock
        self.holder = holder
        self.node = node
        self.acquiredAt = acquiredAt
        self.revision = revision
        self.released = released
    }
}
