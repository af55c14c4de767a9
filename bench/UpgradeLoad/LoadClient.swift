import AsyncHTTPClient
import Foundation
import NIOCore
import Sodium
import UpgradeCore

/// The HTTP side of the simulated nodes: one shared client whose pool opens a connection for every
/// request in flight (so N nodes hold N connections, as N real nodes would), against one server.
struct LoadClient: Sendable {
    struct Answer: Sendable {
        let status: Int
        let signatureHeader: String?
        let body: [UInt8]
    }

    let http: HTTPClient
    let baseURL: String
    /// The server's timestamp key (from its 1.root.json), which signs every whiteboard answer.
    let serverKey: [UInt8]
    static let requestTimeout: TimeAmount = .seconds(30)
    static let maxBodyBytes = 64 << 20

    static func makeHTTPClient(connections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Reads the server's `1.root.json` (checked against `serverID` when given) for its timestamp key.
    static func connect(http: HTTPClient, baseURL: String, serverID: String?) async throws -> LoadClient {
        let unverified = LoadClient(http: http, baseURL: baseURL, serverKey: [])
        let root = try await unverified.get("/metadata/1.root.json")
        guard root.status == 200 else { throw LoadError("GET /metadata/1.root.json answered HTTP \(root.status)") }
        if let serverID, ServerID.of(initialRoot: root.body) != serverID {
            throw LoadError("the server at \(baseURL) is not \(serverID)")
        }
        let decoded = try MetadataCodec.decode(root.body, as: RootMetadata.self)
        guard let key = decoded.payload.keys(for: .timestamp).first else { throw LoadError("1.root.json names no timestamp key") }
        return LoadClient(http: http, baseURL: baseURL, serverKey: key.publicKey)
    }

    func get(_ pathAndQuery: String) async throws -> Answer {
        try await send(HTTPClientRequest(url: baseURL + pathAndQuery))
    }

    func apply(_ body: [UInt8]) async throws -> Answer {
        var request = HTTPClientRequest(url: baseURL + "/v1/udb/apply")
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(body)
        return try await send(request)
    }

    private func send(_ request: HTTPClientRequest) async throws -> Answer {
        let response = try await http.execute(request, timeout: Self.requestTimeout)
        let body = try await response.body.collect(upTo: Self.maxBodyBytes)
        return Answer(status: Int(response.status.code),
                      signatureHeader: response.headers.first(name: WhiteboardServerSignature.headerName),
                      body: Array(body.readableBytesView))
    }

    /// A whiteboard read: `GET /v1/udb/ROUTE` with a fresh nonce. With `verify`, the answer must be
    /// signed by the server's key and echo the nonce (what a node checks); otherwise only HTTP 200.
    func read(_ route: String, verify: Bool) async throws -> WhiteboardView? {
        let nonce = Hex.encode(Sodium.randomBytes(8))
        let separator = route.contains("?") ? "&" : "?"
        let answer = try await get("/v1/udb/\(route)\(separator)nonce=\(nonce)")
        guard answer.status == 200 else {
            throw LoadError("GET /v1/udb/\(route) answered HTTP \(answer.status): \(String(decoding: answer.body.prefix(200), as: UTF8.self))")
        }
        guard verify else { return nil }
        return try WhiteboardView.verifiedDecode(
            body: answer.body, signatureHeader: answer.signatureHeader, expectedNonce: nonce,
            expectedAfter: WhiteboardView.after(inRoute: route), publicKey: serverKey,
            verifier: SodiumVerifier())
    }
}

struct LoadError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
