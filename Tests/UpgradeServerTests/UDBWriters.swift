import Foundation
import Sodium
import Synchronization
import Testing
import UpgradeCore
@testable import UpgradeServer

/// A clock tests move by hand.
final class ManualClock: Sendable {
    private let seconds = Mutex<Double>(1_700_000_000)
    var now: Date { Date(timeIntervalSince1970: seconds.withLock { $0 }) }
    func advance(_ by: Double) { seconds.withLock { $0 += by } }
}

/// One identity that signs whiteboard requests, with its own sequence numbers.
final class WhiteboardWriter: Sendable {
    let name: String
    let key = Ed25519KeyPair.generate()
    private let seqs = Mutex<[WhiteboardChannel: Int64]>([:])

    init(_ name: String) { self.name = name }

    func request(_ op: WhiteboardOp, _ path: String, _ content: String? = nil, seq: Int64? = nil) -> SignedWhiteboardRequest {
        let channel: WhiteboardChannel = (op == .put || op == .delete) ? .outbox : .direct
        let next = seq ?? seqs.withLock { seqs in
            seqs[channel, default: 0] += 1
            return seqs[channel]!
        }
        return WhiteboardRequest(
            node: name, channel: channel, seq: next, op: op, path: path, content: content.map { Array($0.utf8) },
            nonce: Sodium.randomBytes(16)
        ).signed(by: key)
    }
}

extension WhiteboardView {
    func content(_ path: String) -> String? {
        files.first { $0.path == path }?.content.map { String(decoding: $0, as: UTF8.self) }
    }
}

extension WhiteboardApplyOutcome {
    var code: WhiteboardErrorBody.Code? {
        if case .refused(let body) = self { return body.code }
        return nil
    }
    var message: String? {
        if case .refused(let body) = self { return body.error }
        return nil
    }
    var result: WhiteboardResponse.Result? {
        if case .applied(let response) = self { return response.result }
        return nil
    }
}
