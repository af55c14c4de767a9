import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import Sodium
import UpgradeCore

/// Delivers the journal's outbox to `POST /v1/udb/apply`, one entry at a time in seq order.
///
/// An entry leaves the outbox when the server answered 200 `ok` or `duplicate` with the entry's nonce (and,
/// given the server's key, a valid signature). While the server is unreachable, answers 5xx, 408, 429 or 401
/// (the node is not enrolled yet, or with another key: the operator can fix that), or answers with a refusal
/// that is not signed by the server's key over the entry's nonce and the status (anybody on the path could
/// forge it), the same bytes are sent again after a back-off of 250 ms doubling to 10 s, so a retry of an
/// applied request is recognised by the server as a duplicate and applied once. A signed refusal (400, 403,
/// 409, any other 4xx) is a verdict: the entry is set aside (`WhiteboardJournal.setAside`, the node's `log`
/// says so) and the entries behind it go on. The server keeps the verdict with the seq, so a retry of a
/// refused entry whose answer was lost hears the same verdict, never "replayed".
public actor WhiteboardSender {
    /// What the sender is doing, for status output and the mount's error reporting.
    public enum State: Sendable, Equatable {
        /// The outbox is empty.
        case idle
        /// Sending `seq`.
        case delivering(seq: Int64)
        /// `seq` could not be delivered (`reason`); the next attempt is the `attempt`-th.
        case retrying(seq: Int64, attempt: Int, reason: String)
    }

    public private(set) var state: State = .idle
    /// Entries acknowledged since start.
    public private(set) var deliveredCount = 0
    /// Entries the server refused and that were set aside since start.
    public private(set) var refusedCount = 0
    /// The server's revision after the last delivered entry.
    public private(set) var lastRevision: Int64?

    private let journal: WhiteboardJournal
    private let url: String
    private let http: HTTPClient
    private let serverKey: [UInt8]
    private let requestTimeout: TimeAmount
    private let logger: Logger
    private var backoff: WhiteboardBackoff
    private var failedAttempts = 0
    private let wakeups: AsyncStream<Void>
    private nonisolated let wakeupContinuation: AsyncStream<Void>.Continuation

    /// - Parameters:
    ///   - baseURL: `http://HOST:PORT` of the server.
    ///   - serverKey: the public key that signs whiteboard answers and refusals (the TUF root's timestamp key).
    ///   - requestTimeout: the deadline of one attempt. AsyncHTTPClient keeps retrying a refused connection
    ///     until this deadline (unless the client was configured with `retryConnectionEstablishment = false`),
    ///     so it is also how long an attempt against a stopped server takes.
    public init(journal: WhiteboardJournal, baseURL: String, http: HTTPClient, serverKey: [UInt8],
                backoff: WhiteboardBackoff = WhiteboardBackoff(), requestTimeout: TimeAmount = .seconds(10),
                logger: Logger) {
        self.journal = journal
        self.url = baseURL + "/v1/udb/apply"
        self.http = http
        self.serverKey = serverKey
        self.requestTimeout = requestTimeout
        self.backoff = backoff
        self.logger = logger
        (wakeups, wakeupContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Tells the sender the outbox has something new (call after `WhiteboardJournal.enqueue`).
    public nonisolated func wake() {
        wakeupContinuation.yield()
    }

    /// Delivers until the task is cancelled.
    public func run() async {
        var wakeIterator = wakeups.makeAsyncIterator()
        while !Task.isCancelled {
            let entry: WhiteboardJournal.Entry?
            do {
                entry = try journal.firstPending()
            } catch {
                logger.error("whiteboard journal unreadable", metadata: ["error": "\(error)"])
                await sleep(backoff.next())
                continue
            }
            guard let entry else {
                state = .idle
                backoff.reset()
                guard await wakeIterator.next() != nil else { return }
                continue
            }
            state = .delivering(seq: entry.seq)
            let outcome = await send(entry)
            switch outcome {
            case .delivered(let revision, let duplicate):
                do {
                    try journal.acknowledge(seq: entry.seq, revision: revision)
                } catch {
                    // The entry stays and is sent again: the server answers "duplicate".
                    logger.error("whiteboard journal: cannot acknowledge", metadata: ["udb.seq": "\(entry.seq)", "error": "\(error)"])
                    await sleep(backoff.next())
                    continue
                }
                deliveredCount += 1
                lastRevision = revision
                failedAttempts = 0
                backoff.reset()
                logger.debug("whiteboard write delivered", metadata: [
                    "udb.seq": "\(entry.seq)", "udb.path": "\(entry.path)", "udb.revision": "\(revision)",
                    "udb.duplicate": "\(duplicate)",
                ])
            case .retry(let reason):
                failedAttempts += 1
                let delay = backoff.next()
                state = .retrying(seq: entry.seq, attempt: failedAttempts + 1, reason: reason)
                logger.log(level: failedAttempts == 1 ? .warning : .debug, "whiteboard write not delivered; retrying", metadata: [
                    "udb.seq": "\(entry.seq)", "udb.path": "\(entry.path)", "error": "\(reason)",
                    "retry.delay": "\(delay)",
                ])
                await sleep(delay)
            case .refused(let status, let reason):
                do {
                    try journal.setAside(seq: entry.seq, status: status, reason: reason)
                } catch {
                    logger.error("whiteboard journal: cannot set a refused write aside", metadata: [
                        "udb.seq": "\(entry.seq)", "error": "\(error)",
                    ])
                    await sleep(backoff.next())
                    continue
                }
                failedAttempts = 0
                refusedCount += 1
                logger.error("the server refused a whiteboard write; it is set aside in the journal and later writes go on",
                             metadata: [
                                 "udb.seq": "\(entry.seq)", "udb.path": "\(entry.path)", "http.status": "\(status)", "error": "\(reason)",
                             ])
            }
        }
    }

    private func sleep(_ duration: Duration) async {
        try? await Task.sleep(for: duration)
    }

    private func send(_ entry: WhiteboardJournal.Entry) async -> WhiteboardDeliveryOutcome {
        let answer: WhiteboardHTTPAnswer
        do {
            answer = try await http.postWhiteboardRequest(entry.body, to: url, timeout: requestTimeout, logger: logger)
        } catch {
            return .retry(NetworkErrorText.describe(error, url: url))
        }
        return WhiteboardDeliveryOutcome.classify(answer, sent: entry.body, nonce: entry.nonce, serverKey: serverKey)
    }
}

/// An answer of `POST /v1/udb/apply`: status, body and signature header.
public struct WhiteboardHTTPAnswer: Sendable {
    public var status: Int
    public var body: [UInt8]
    public var signatureHeader: String?

    public init(status: Int, body: [UInt8], signatureHeader: String? = nil) {
        self.status = status
        self.body = body
        self.signatureHeader = signatureHeader
    }
}

extension HTTPClient {
    /// POSTs a signed request to `/v1/udb/apply`; the answer's status, body (at most 64 KiB) and signature header.
    func postWhiteboardRequest(_ body: [UInt8], to url: String, timeout: TimeAmount, logger: Logger) async throws
        -> WhiteboardHTTPAnswer {
        var request = HTTPClientRequest(url: url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(body)
        let response = try await execute(request, timeout: timeout, logger: logger)
        return WhiteboardHTTPAnswer(
            status: Int(response.status.code), body: Array(try await response.body.collect(upTo: 64 << 10).readableBytesView),
            signatureHeader: response.headers.first(name: WhiteboardServerSignature.headerName))
    }
}

/// What one answer of `POST /v1/udb/apply` means for the outbox entry sent (docs/DESIGN.md, error mapping).
public enum WhiteboardDeliveryOutcome: Sendable, Equatable {
    /// Applied (or a retry of what was applied): the entry leaves the outbox.
    case delivered(revision: Int64, duplicate: Bool)
    /// Not (known to be) applied, worth sending again later: no answer, 5xx, 408, 429, 401 (not enrolled yet), a
    /// garbled 200, a refusal not signed by the server over the request's nonce.
    case retry(String)
    /// Refused by the server with a signed verdict (400, 403, 409, other 4xx): sending the same bytes again cannot help.
    case refused(status: Int, reason: String)

    /// - Parameters:
    ///   - sent: the signed request body sent (a refusal must name its hash); `nonce`: its nonce.
    public static func classify(_ answer: WhiteboardHTTPAnswer, sent: [UInt8], nonce: [UInt8], serverKey: [UInt8])
        -> WhiteboardDeliveryOutcome {
        let status = answer.status, body = answer.body
        switch status {
        case 200:
            // Checked over the bytes received, not a re-encoding of what was parsed.
            let response: WhiteboardResponse
            do {
                response = try SignedWhiteboardResponse.verifiedResponse(body, publicKey: serverKey, verifier: SodiumVerifier())
            } catch {
                return .retry(error.description)
            }
            guard Sodium.constantTimeEqual(response.nonce, nonce) else {
                return .retry("the answer does not echo the request's nonce")
            }
            return .delivered(revision: response.revision, duplicate: response.result == .duplicate)
        case 401, 408, 429, 500...599:
            return .retry("HTTP \(status)" + (WhiteboardErrorBody.decode(body).map { ": \($0.error)" } ?? ""))
        default:
            switch WhiteboardErrorBody.verifiedRefusal(
                status: status, body: body, signatureHeader: answer.signatureHeader, sent: sent, nonce: nonce,
                publicKey: serverKey, verifier: SodiumVerifier())
            {
            case .success(let refusal):
                return .refused(status: status, reason: refusal.error)
            case .failure(let why):
                let said = WhiteboardErrorBody.decode(body)?.error
                    ?? String(decoding: body.prefix(200), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                return .retry("HTTP \(status) not taken as the server's verdict (\(why))" + (said.isEmpty ? "" : ": \(said)"))
            }
        }
    }
}

/// Exponential back-off: 250 ms, doubling, at most 10 s.
public struct WhiteboardBackoff: Sendable {
    public let initial: Duration
    public let maximum: Duration
    private var current: Duration?

    public init(initial: Duration = .milliseconds(250), maximum: Duration = .seconds(10)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next attempt.
    public mutating func next() -> Duration {
        let delay = current.map { min($0 * 2, maximum) } ?? initial
        current = delay
        return delay
    }

    /// After a success: the next failure waits `initial` again.
    public mutating func reset() { current = nil }
}
