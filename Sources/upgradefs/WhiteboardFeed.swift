import AsyncHTTPClient
import Foundation
import UpgradeCore
import UpgradeServer
import UpgradeWhiteboardClient

/// Where `status --watch` reads the whiteboard: what `WhiteboardStore` and the signed HTTP feed have in common.
protocol WhiteboardFeed: Sendable {
    /// Every live file, at the current revision.
    func snapshot() async throws -> WhiteboardView
    /// What changed after `revision` (tombstones for deletions); waits, for a bounded time, for a change.
    func changes(after revision: Int64) async throws -> WhiteboardView
}

/// A read that failed for a reason that may pass (the server away, a network cut): the watch retries.
struct FeedUnavailable: Error {
    var reason: String
    /// Whether the previous read failed too (the reason was said already).
    var repeated: Bool
}

/// On the server machine: STATE/udb.sqlite. There is no notification across processes, so it reads the
/// revision every `pollInterval` (one indexed read) and the changed files only when it moved.
struct LocalWhiteboardFeed: WhiteboardFeed {
    static let pollInterval = Duration.milliseconds(250)

    let store: any WhiteboardStore

    func snapshot() async throws -> WhiteboardView { try await store.snapshot() }

    func changes(after revision: Int64) async throws -> WhiteboardView {
        while try await store.revision() == revision { try await Task.sleep(for: Self.pollInterval) }
        return try await store.changes(after: revision)
    }
}

/// From anywhere: the server's `GET /v1/udb/snapshot` and long-polled `changes`, each answer verified with the
/// timestamp key of the TUF root the server id names (`WhiteboardReader`, as the mount does).
actor RemoteWhiteboardFeed: WhiteboardFeed {
    private let reader: WhiteboardReader
    private var failing = false

    init(reader: WhiteboardReader) {
        self.reader = reader
    }

    func snapshot() async throws -> WhiteboardView { try await read { try await $0.snapshot() } }

    func changes(after revision: Int64) async throws -> WhiteboardView {
        try await read { try await $0.changes(after: revision, timeout: .seconds(35)) }
    }

    private func read(_ body: (WhiteboardReader) async throws -> WhiteboardView) async throws -> WhiteboardView {
        do {
            let view = try await body(reader)
            failing = false
            return view
        } catch let error as WhiteboardProtocolError {
            let repeated = failing
            failing = true
            if repeated { try await Task.sleep(for: .seconds(1)) }
            throw FeedUnavailable(reason: "\(error)", repeated: repeated)
        }
    }
}
