import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import UpgradeCore

/// Keeps the journal's server view current: one signed `GET /v1/udb/snapshot`, then `GET /v1/udb/changes?after=R`
/// long polls, read and verified by `WhiteboardReader`, each answer applied with
/// `WhiteboardJournal.applyServerChanges`. Lock holders are kept in memory (they mean nothing without the
/// server, which every lock operation needs anyway).
public actor WhiteboardFollower {
    /// Current holders by path `locks/NAME/HOLDER`.
    public private(set) var holders: [String: WhiteboardHolder] = [:]
    /// True once a snapshot was applied in this process.
    public private(set) var synchronized = false
    /// The last failure to read from the server (nil after a success).
    public private(set) var lastError: String?

    private let journal: WhiteboardJournal
    private let reader: WhiteboardReader
    private let pollTimeout: TimeAmount
    private let logger: Logger
    private var backoff: WhiteboardBackoff
    private let holdersChanged: @Sendable (_ changed: [WhiteboardHolder], _ replacingAll: Bool, _ revision: Int64) -> Void
    private let filesChanged: @Sendable (_ paths: [String]) -> Void

    /// - Parameters:
    ///   - serverKey: the TUF root's timestamp key, which signs every whiteboard read.
    ///   - pollTimeout: the deadline of one long poll; longer than the server's (25 s by default).
    ///   - holdersChanged: told of every holder change (all holders, `replacingAll`, after a snapshot), with the
    ///     revision of the answer.
    ///   - filesChanged: told of the paths each change-feed answer brought (written or deleted).
    public init(journal: WhiteboardJournal, baseURL: String, http: HTTPClient, serverKey: [UInt8],
                pollTimeout: TimeAmount = .seconds(35), backoff: WhiteboardBackoff = WhiteboardBackoff(), logger: Logger,
                holdersChanged: @escaping @Sendable (_ changed: [WhiteboardHolder], _ replacingAll: Bool, _ revision: Int64) -> Void
                    = { _, _, _ in },
                filesChanged: @escaping @Sendable (_ paths: [String]) -> Void = { _ in }) {
        self.holdersChanged = holdersChanged
        self.filesChanged = filesChanged
        self.journal = journal
        self.reader = WhiteboardReader(baseURL: baseURL, http: http, serverKey: serverKey, logger: logger)
        self.pollTimeout = pollTimeout
        self.backoff = backoff
        self.logger = logger
    }

    /// Follows the server until the task is cancelled.
    public func run() async {
        while !Task.isCancelled {
            do {
                try await poll()
                backoff.reset()
            } catch is CancellationError {
                return
            } catch {
                if lastError == nil {
                    logger.warning("cannot read the whiteboard from the server; retrying", metadata: ["error": "\(error)"])
                }
                lastError = "\(error)"
                try? await Task.sleep(for: backoff.next())
            }
        }
    }

    /// One step: the snapshot if this process has none yet, else the changes after the journal's revision
    /// (waiting up to the server's long-poll time for some).
    public func poll() async throws {
        if !synchronized {
            let view = try await reader.snapshot()
            try journal.applyServerChanges(
                revision: view.revision,
                files: view.files.map { .init(path: $0.path, content: $0.content, revision: $0.revision) },
                replacingAll: true)
            holders = Dictionary(view.holders.map { ($0.path, $0) }, uniquingKeysWith: { $1 })
            holdersChanged(view.holders, true, view.revision)
            synchronized = true
        } else {
            let after = try journal.serverRevision()
            let view = try await reader.changes(after: after, timeout: pollTimeout)
            try journal.applyServerChanges(
                revision: view.revision,
                files: view.files.map { .init(path: $0.path, content: $0.content, revision: $0.revision) })
            for holder in view.holders {
                if holder.released { holders[holder.path] = nil } else { holders[holder.path] = holder }
            }
            if !view.holders.isEmpty { holdersChanged(view.holders, false, view.revision) }
            if !view.files.isEmpty { filesChanged(view.files.map(\.path)) }
        }
        lastError = nil
    }
}
