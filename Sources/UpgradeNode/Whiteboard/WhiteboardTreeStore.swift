import UpgradeCore
import UpgradeWhiteboardClient

/// What `WhiteboardTree` reads and writes through: the node's view of the server's files (with this node's pending
/// writes on top), the journal that makes a write durable, and the server's locks. In the mount that is
/// `JournalWhiteboardStore`; unit tests use a dictionary.
protocol WhiteboardTreeStore: Sendable {
    /// The file's content in the node's view, nil when there is none.
    func content(at path: String) throws(WhiteboardJournalError) -> [UInt8]?
    /// Every file path in the view that starts with `prefix`.
    func paths(withPrefix prefix: String) throws(WhiteboardJournalError) -> [String]
    /// Makes a write durable on the node (journaled before this returns; the sender delivers it). A write the rules
    /// refuse throws with `denial` set.
    func commit(_ op: WhiteboardJournal.Op, path: String, content: [UInt8]?) throws(WhiteboardJournalError)
    /// Acquires or releases `locks/NAME/HOLDER` on the server (blocking); the revision it was applied at.
    func lock(_ op: WhiteboardOp, path: String) -> Result<Int64, WhiteboardLockClient.Failure>
}

/// The mount's store: the journal, the sender it wakes after each write, and the lock client.
struct JournalWhiteboardStore: WhiteboardTreeStore {
    let journal: WhiteboardJournal
    let locks: WhiteboardLockClient
    let wakeSender: @Sendable () -> Void

    func content(at path: String) throws(WhiteboardJournalError) -> [UInt8]? { try journal.view(path: path) }

    func paths(withPrefix prefix: String) throws(WhiteboardJournalError) -> [String] {
        try journal.paths(withPrefix: prefix)
    }

    func commit(_ op: WhiteboardJournal.Op, path: String, content: [UInt8]?) throws(WhiteboardJournalError) {
        _ = try journal.enqueue(op: op, path: path, content: content)
        wakeSender()
    }

    func lock(_ op: WhiteboardOp, path: String) -> Result<Int64, WhiteboardLockClient.Failure> {
        locks.perform(op, path: path)
    }
}
