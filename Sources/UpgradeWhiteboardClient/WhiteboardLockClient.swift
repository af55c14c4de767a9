import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Sodium
import Synchronization
import UpgradeCore

/// Lock operations (`mkdir`/`rmdir` of `udb/locks/NAME/HOLDER`): signed on the direct channel and sent at once, never
/// journaled — a lock operation either reaches the server now or fails, so a scheduling function never waits
/// behind a queue or believes it holds a lock the server has not granted.
///
/// Operations run one at a time (the server takes a node's direct requests only in seq order). An acquire whose
/// answer never came (timeout, cut connection) may still reach the server later: the caller was told it failed, so
/// the client fences it — it sends a release of that holder, with a newer seq, before its next operation and every
/// second until the server answers. Whichever arrives first, the stale acquire ends up without effect (released,
/// or refused as a replay once the newer seq is in).
public final class WhiteboardLockClient: Sendable {
    /// Why a lock operation failed (the mount turns `reason` into its errno: `WhiteboardFileSystem.errno(for:)`).
    public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
        public enum Reason: Sendable, Equatable {
            /// The lock has as many holders as its capacity (409 `full`).
            case full
            /// This holder already holds it (409 `exists`).
            case alreadyHeld
            /// Release of a holder that does not hold it (404).
            case notHeld
            /// The rules refuse this node the operation (403).
            case forbidden
            /// The path is taken by something else (409 `conflict`).
            case conflict
            /// No answer in time, a refused connection, or the server cannot serve it now (5xx, 408, 429).
            case unreachable
            /// Anything else: the journal could not sign it, an answer refused as unverifiable, another refusal.
            case failed
        }

        public let reason: Reason
        public let message: String
        public var description: String { message }

        public init(_ reason: Reason, message: String) {
            self.reason = reason
            self.message = message
        }
    }

    private let journal: WhiteboardJournal
    private let url: String
    private let http: HTTPClient
    private let serverKey: [UInt8]
    private let timeout: TimeAmount
    private let logger: Logger
    /// Serializes operations; guards the acquires whose outcome is unknown.
    private let serial = Mutex<Set<String>>([])

    /// - Parameters:
    ///   - http: a client configured with `retryConnectionEstablishment = false`, so a stopped server fails at once.
    ///   - timeout: the deadline of one operation; past it the server counts as unreachable.
    public init(journal: WhiteboardJournal, baseURL: String, http: HTTPClient, serverKey: [UInt8],
                timeout: TimeAmount = .seconds(5), logger: Logger) {
        self.journal = journal
        self.url = baseURL + "/v1/udb/apply"
        self.http = http
        self.serverKey = serverKey
        self.timeout = timeout
        self.logger = logger
    }

    /// Acquires or releases `locks/NAME/HOLDER` (blocking: FUSE worker threads call it, and they are not part of
    /// Swift's cooperative pool); returns the server's revision.
    public func perform(_ op: WhiteboardOp, path: String) -> Result<Int64, Failure> {
        serial.withLock { uncertain in
            if let failure = fence(&uncertain) { return .failure(failure) }
            let result = blocking { await self.send(op, path: path) }
            if case .failure(let failure) = result, failure.reason == .unreachable, op == .acquire {
                uncertain.insert(path)
            }
            return result
        }
    }

    /// What the server says to a claim of this node's mount session (`WhiteboardSession`).
    public enum SessionAnswer: Sendable, Equatable {
        case granted
        /// A signed 401: the server does not know this node, or knows it with another key.
        case notEnrolled(String)
        /// A signed 409 `in-use`: another mount of this node key (another cache directory) is live.
        case inUse(String)
        /// No verdict (unreachable, 5xx, an unsigned answer, another refusal): the mount starts anyway.
        case unknown(String)
    }

    /// Claims this node's mount session, which also tells whether its key is enrolled. Called when the mount starts,
    /// before any lock operation (so it does not take the serial lock).
    public func claimSession() async -> SessionAnswer {
        await session(.claim(instance: journal.instance))
    }

    /// Renews the session (every `WhiteboardSession.renewSeconds`, from the fencing thread), in line with the lock
    /// operations on the direct channel.
    public func renewSession() -> SessionAnswer {
        serial.withLock { _ in blocking { await self.session(.claim(instance: self.journal.instance)) } }
    }

    /// Ends the session (clean unmount), so that another mount of the node key may start at once.
    public func endSession() {
        serial.withLock { _ in _ = blocking { await self.session(.end(instance: self.journal.instance)) } }
    }

    private func session(_ action: WhiteboardSession.Action) async -> SessionAnswer {
        let signed: (seq: Int64, nonce: [UInt8], body: [UInt8])
        do {
            signed = try journal.signDirect(
                op: .session, path: WhiteboardPath.node(journal.node, "session"), content: WhiteboardSession.content(action))
        } catch {
            return .unknown("\(error)")
        }
        let answer: WhiteboardHTTPAnswer
        do {
            answer = try await http.postWhiteboardRequest(signed.body, to: url, timeout: timeout, logger: logger)
        } catch {
            return .unknown(NetworkErrorText.describe(error, url: url))
        }
        if answer.status == 401,
           case .success(let refusal) = WhiteboardErrorBody.verifiedRefusal(
               status: 401, body: answer.body, signatureHeader: answer.signatureHeader, sent: signed.body, nonce: signed.nonce,
               publicKey: serverKey, verifier: SodiumVerifier())
        {
            return .notEnrolled(refusal.error)
        }
        switch WhiteboardDeliveryOutcome.classify(answer, sent: signed.body, nonce: signed.nonce, serverKey: serverKey) {
        case .delivered:
            // Signed and bound to this request's nonce (checked just above): new writes go above the server's last seqs.
            if let lastSeqs = try? SignedWhiteboardResponse.decode(answer.body).response.lastSeqs, !lastSeqs.isEmpty {
                do {
                    for (channel, next) in try journal.raiseSeqs(above: lastSeqs) {
                        logger.warning(
                            "this journal's seqs were below the server's last seq from this node (cache wiped, or the clock was once ahead); its new writes start above it",
                            metadata: ["udb.channel": "\(channel.rawValue)", "udb.seq": "\(next)"])
                    }
                } catch {
                    return .unknown("\(error)")
                }
            }
            return .granted
        case .retry(let reason): return .unknown(reason)
        case .refused(let status, let reason):
            return WhiteboardErrorBody.decode(answer.body)?.code == .inUse ? .inUse(reason) : .unknown("HTTP \(status): \(reason)")
        }
    }

    /// Fences acquires whose answer never came (called every second by the mount while there are any).
    public func fenceUncertainAcquires() {
        serial.withLock { uncertain in _ = fence(&uncertain) }
    }

    /// Releases every holder in `uncertain`; nil once all are settled, else why not (the server is unreachable).
    private func fence(_ uncertain: inout Set<String>) -> Failure? {
        for path in uncertain.sorted() {
            switch blocking({ await self.send(.release, path: path) }) {
            case .success:
                logger.notice("released a lock acquired after its mkdir had already failed", metadata: ["udb.path": "\(path)"])
                uncertain.remove(path)
            case .failure(let failure) where failure.reason == .unreachable:
                return failure
            case .failure:
                uncertain.remove(path)  // not held (404) or refused: the stale acquire can no longer apply
            }
        }
        return nil
    }

    private func send(_ op: WhiteboardOp, path: String) async -> Result<Int64, Failure> {
        let signed: (seq: Int64, nonce: [UInt8], body: [UInt8])
        do {
            signed = try journal.signDirect(op: op, path: path)
        } catch {
            logger.error("whiteboard journal: cannot sign a lock operation", metadata: ["udb.path": "\(path)", "error": "\(error)"])
            return .failure(Failure(.failed, message: "\(error)"))
        }
        let answer: WhiteboardHTTPAnswer
        do {
            answer = try await http.postWhiteboardRequest(signed.body, to: url, timeout: timeout, logger: logger)
        } catch {
            return .failure(Failure(.unreachable, message: NetworkErrorText.describe(error, url: url)))
        }
        return Self.interpret(answer, sent: signed.body, nonce: signed.nonce, serverKey: serverKey, op: op, path: path, logger: logger)
    }

    private func blocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
        let box = Box<T>()
        let done = DispatchSemaphore(value: 0)
        Task {
            box.value = await body()
            done.signal()
        }
        done.wait()
        return box.value!
    }

    static func interpret(_ answer: WhiteboardHTTPAnswer, sent: [UInt8], nonce: [UInt8], serverKey: [UInt8], op: WhiteboardOp,
                          path: String, logger: Logger) -> Result<Int64, Failure> {
        let status = answer.status, body = answer.body
        switch WhiteboardDeliveryOutcome.classify(answer, sent: sent, nonce: nonce, serverKey: serverKey) {
        case .delivered(let revision, _):
            return .success(revision)
        case .retry(let reason):
            if (500...599).contains(status) || status == 408 || status == 429 {
                return .failure(Failure(.unreachable, message: "server cannot serve \(op.rawValue) \(path) now: \(reason)"))
            }
            logger.error("lock answer refused", metadata: ["udb.path": "\(path)", "error": "\(reason)"])
            return .failure(Failure(.failed, message: reason))
        case .refused(_, let reason):
            let failure: Failure.Reason
            switch WhiteboardErrorBody.decode(body)?.code {
            case .full?: failure = .full
            case .exists?: failure = .alreadyHeld
            case .notFound?: failure = .notHeld
            case .forbidden?: failure = .forbidden
            case .conflict?: failure = .conflict
            default:
                failure = .failed
                logger.error("the server refused a lock operation", metadata: [
                    "udb.op": "\(op.rawValue)", "udb.path": "\(path)", "http.status": "\(status)", "error": "\(reason)",
                ])
            }
            return .failure(Failure(failure, message: reason))
        }
    }
}

/// What a task computed for the thread that waits for it.
private final class Box<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T?
    var value: T? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
