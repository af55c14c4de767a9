import Foundation
import Sodium
import UpgradeCore
import UpgradeWhiteboardClient

/// One enrolled node as the load tool plays it: its name, its key, and its replay counters on both
/// channels (each signed request carries the next seq, as the node's journal does). A value owned by
/// one task at a time.
struct SimulatedNode: Sendable {
    let name: String
    let key: Ed25519KeyPair
    private var nextOutboxSeq: Int64
    private var nextDirectSeq: Int64

    /// - Parameter firstSeq: where both counters start. The server accepts gaps, so a run that starts at
    ///   the wall clock in microseconds (`firstSeqNow()`) is above every seq an earlier run used.
    init(_ file: NodeKeyFile, firstSeq: Int64) {
        name = file.node
        key = file.key
        nextOutboxSeq = firstSeq
        nextDirectSeq = firstSeq
    }

    /// Microseconds since 1970: above any seq an earlier run (at most one request per microsecond) sent.
    static func firstSeqNow() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

    static func names(count: Int) -> [String] { (1...count).map { "n\($0)" } }
    static func keyPath(directory: String, name: String) -> String { "\(directory)/\(name).key" }

    /// The body of `POST /v1/udb/apply` for `op` on `path`, signed by this node with the next seq of the
    /// op's channel (outbox for put/delete, direct for acquire/release), and the nonce the answer must echo.
    mutating func sign(_ op: WhiteboardOp, _ path: String, content: [UInt8]? = nil) -> (body: [UInt8], nonce: [UInt8]) {
        let channel: WhiteboardChannel
        let seq: Int64
        switch op {
        case .put, .delete:
            channel = .outbox
            seq = nextOutboxSeq
            nextOutboxSeq += 1
        case .acquire, .release, .session:
            channel = .direct
            seq = nextDirectSeq
            nextDirectSeq += 1
        }
        let nonce = Sodium.randomBytes(WhiteboardRequest.nonceBytes)
        let request = WhiteboardRequest(node: name, channel: channel, seq: seq, op: op, path: path, content: content, nonce: nonce)
        return (request.signed(by: key).encoded(), nonce)
    }
}
