import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import UpgradeCore

/// Keeps the journal's server view current: one signed `GET /v1/udb/snapshot`, then `GET /v1/udb/changes?after=R`
/// long polls, read and verified by `WhiteboardReader`, each answer applied with
/// `WhiteboardJournal.applyServerChanges`. Lock holders go to the mount's one `WhiteboardHolders`.
public actor WhiteboardFollower {
    /// The lock holders the server reported (and the mount's own lock operations, when it shares the table).
    public let holderTable: WhiteboardHolders
    /// Currently held paths `locks/NAME/HOLDER`, each with the revision it is known from.
    public var holders: [String: Int64] { holderTable.held }
    /// True once a snapshot was applied in this process.
    public private(set) var synchronized = false
    /// The last failure to read from the server (nil after a success).
    public private(set) var lastError: String?

    private let journal: WhiteboardJournal
    private let reader: WhiteboardReader
    private let pollTimeout: TimeAmount
    private let logger: Logger
    private var backoff: WhiteboardBackoff
    private let filesChanged: @Sendable (_ paths: [String]) -> Void

    /// - Parameters:
    ///   - serverKey: the TUF root's timestamp key, which signs every whiteboard read.
    ///   - pollTimeout: the deadline of one long poll; longer than the server's (25 s by default).
    ///   - holders: where the holders the server reports are recorded (the mount shares it with its files).
    ///   - filesChanged: told of the paths each change-feed answer brought (written or deleted).
    public init(journal: WhiteboardJournal, baseURL: String, http: HTTPClient, serverKey: [UInt8],
                pollTimeout: TimeAmount = .seconds(35), backoff: WhiteboardBackoff = WhiteboardBackoff(), logger: Logger,
                holders: WhiteboardHolders = WhiteboardHolders(),
                filesChanged: @escaping @Sendable (_ paths: [String]) -> Void = { _ in }) {
        self.holderTable = holders
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
            holderTable.apply(view.holders, replacingAll: true, revision: view.revision)
            synchronized = true
        } else {
            let after = try journal.serverRevision()
            let view = try await reader.changes(after: after, timeout: pollTimeout)
            try journal.applyServerChanges(
                revision: view.revision,
                files: view.files.map { .init(path: $0.path, content: $0.content, revision: $0.revision) })
            holderTable.apply(view.holders, replacingAll: false, revision: view.revision)
            if !view.files.isEmpty { filesChanged(view.files.map(\.path)) }
        }
        lastError = nil
    }
}
