import AsyncHTTPClient
import Logging
import NIOCore
import Sodium
import UpgradeCore

/// Signed reads of the server's whiteboard, keeping nothing: `GET /v1/udb/snapshot` and the long poll
/// `GET /v1/udb/changes?after=R`, each with a fresh nonce, each answer checked against the server's timestamp key,
/// the nonce sent and the `after` asked (`WhiteboardView.verifiedDecode`, over the exact bytes received).
/// `WhiteboardFollower` applies the answers to the node's journal; `upgradefs status --watch --server` to its view.
public struct WhiteboardReader: Sendable {
    private let baseURL: String
    private let http: HTTPClient
    private let serverKey: [UInt8]
    private let logger: Logger

    /// - Parameter serverKey: the TUF root's timestamp key, which signs every whiteboard read.
    public init(baseURL: String, http: HTTPClient, serverKey: [UInt8], logger: Logger) {
        self.baseURL = baseURL
        self.http = http
        self.serverKey = serverKey
        self.logger = logger
    }

    /// Everything: every live file and holder, at the server's current revision.
    public func snapshot(timeout: TimeAmount = .seconds(30)) async throws -> WhiteboardView {
        let nonce = Hex.encode(Sodium.randomBytes(16))
        return try await read("snapshot?nonce=\(nonce)", nonce: nonce, after: nil, timeout: timeout)
    }

    /// What changed after `revision` (tombstones for deletions), waiting up to the server's long-poll time for
    /// something to change; `timeout` should be longer than that (25 s by default).
    public func changes(after revision: Int64, timeout: TimeAmount) async throws -> WhiteboardView {
        let nonce = Hex.encode(Sodium.randomBytes(16))
        return try await read("changes?after=\(revision)&nonce=\(nonce)", nonce: nonce, after: revision, timeout: timeout)
    }

    private func read(_ pathAndQuery: String, nonce: String, after: Int64?, timeout: TimeAmount) async throws -> WhiteboardView {
        let url = "\(baseURL)/v1/udb/\(pathAndQuery)"
        let response: HTTPClientResponse
        let body: [UInt8]
        do {
            // The body too: a connection cut while it arrives is a network failure like a refused connect.
            response = try await http.execute(HTTPClientRequest(url: url), timeout: timeout, logger: logger)
            body = Array(try await response.body.collect(upTo: 64 << 20).readableBytesView)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw WhiteboardProtocolError(NetworkErrorText.describe(error, url: url))
        }
        guard response.status == .ok else {
            throw WhiteboardProtocolError("GET /v1/udb/\(pathAndQuery.prefix { $0 != "?" }) answered HTTP \(response.status.code)"
                + (WhiteboardErrorBody.decode(body).map { ": \($0.error)" } ?? ""))
        }
        return try WhiteboardView.verifiedDecode(
            body: body, signatureHeader: response.headers.first(name: WhiteboardServerSignature.headerName),
            expectedNonce: nonce, expectedAfter: after, publicKey: serverKey, verifier: SodiumVerifier())
    }
}
