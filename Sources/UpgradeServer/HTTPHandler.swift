#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Hummingbird
import UpgradeCore
import UpgradeFiles

/// The server's HTTP interface (docs/DESIGN.md, "HTTP (server)"). Metadata and
/// blobs are read from disk on every request.
struct HTTPHandler: Sendable {
    let metadataDirectory: String
    let store: ContentStore
    let notifier: VersionNotifier
    let serverID: String
    let notifyTimeout: Duration
    /// The whiteboard's routes under `/v1/udb/` (nil: not served).
    var whiteboard: WhiteboardHTTP? = nil
    /// For `/metrics` (nil: not served).
    var publisher: Publisher? = nil
    /// The fleet page's routes (`/`, `/nodes/…`, `/events`, `/login`, `/logout`, `/actions`, `/assets/…`; nil: not served).
    var dashboard: DashboardHTTP? = nil
    let fileIO = FileIO()

    /// Size of the pieces big blobs are read and sent in. Hummingbird's default
    /// (128 KiB) halves loopback throughput here; 1–4 MiB measured alike
    /// (~1.6–2.1 GB/s to curl on 2 busy cores). NIO buffers up to 8 chunks
    /// per response, so this bounds memory at 16 MiB per download.
    static let blobChunkBytes = 2 << 20
    /// Blobs up to this size are read in one go instead of streamed.
    static let smallBlobBytes = 256 << 10
    static let maxQueryVersionDigits = 18

    func respond(to request: Request, context: ServerRequestContext) async throws -> Response {
        if let whiteboard, request.uri.path.hasPrefix("/v1/udb/") {
            return try await whiteboard.respond(to: request, context: context)
        }
        if let dashboard, DashboardHTTP.handles(request.uri.path) {
            return try await dashboard.respond(to: request, context: context)
        }
        guard request.method == .get || request.method == .head else {
            return Self.text(.methodNotAllowed, "only GET and HEAD are supported", headers: [.allow: "GET, HEAD"])
        }
        let path = request.uri.path
        let response: Response
        if path == "/healthz" {
            response = Self.text(.ok, "ok", newline: false)
        } else if path == "/v1/id" {
            response = Self.text(.ok, serverID)
        } else if path == "/metrics", let whiteboard, let publisher {
            response = await whiteboard.metrics(publisher: publisher)
        } else if path == "/v1/notify" {
            response = await notify(query: request.uri.query)
        } else if path.hasPrefix("/metadata/") {
            response = metadata(name: String(path.dropFirst("/metadata/".count)))
        } else if path.hasPrefix("/targets/") {
            response = try await target(path: String(path.dropFirst("/targets/".count)), context: context)
        } else {
            response = Self.text(.notFound, "not found: \(Self.clean(path))")
        }
        if request.method == .head {
            var head = Response(status: response.status, headers: response.headers)
            if let length = response.body.contentLength { head.headers[.contentLength] = String(length) }
            return head
        }
        return response
    }

    // MARK: - Routes

    private func notify(query: String?) async -> Response {
        var after: String?
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts[0] == "after" { after = parts.count > 1 ? String(parts[1]) : "" }
        }
        guard let after else { return Self.text(.badRequest, "missing query parameter after=N (the timestamp version you have)") }
        guard !after.isEmpty, after.utf8.count <= Self.maxQueryVersionDigits, after.utf8.allSatisfy({ (48...57).contains($0) }),
              let version = Int(after)
        else {
            return Self.text(.badRequest, "after must be a non-negative integer, got \"\(Self.clean(after))\"")
        }
        let current = await notifier.wait(after: version, timeout: notifyTimeout)
        return Self.text(.ok, String(current))
    }

    private func metadata(name: String) -> Response {
        guard !name.contains("/"), name != "..", name != "." else {
            return Self.text(.badRequest, "bad metadata path: \(Self.clean(name))")
        }
        guard Self.isMetadataName(name) else {
            return Self.text(.notFound, "no such metadata: \(Self.clean(name))")
        }
        let bytes: [UInt8]
        do {
            bytes = try POSIXFiles.readFile(metadataDirectory + "/" + name)
        } catch {
            if error.isNotFound { return Self.text(.notFound, "no such metadata: \(name)") }
            return Self.text(.internalServerError, "cannot read \(name)")
        }
        return Response(
            status: .ok, headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// `timestamp.json` or `N.root.json`, `N.targets.json`, `N.snapshot.json` with N ≥ 1 in decimal.
    static func isMetadataName(_ name: String) -> Bool {
        if name == "timestamp.json" { return true }
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2] == "json", ["root", "targets", "snapshot"].contains(parts[1]) else { return false }
        let digits = parts[0].utf8
        return !digits.isEmpty && digits.count <= maxQueryVersionDigits && digits.first != UInt8(ascii: "0")
            && digits.allSatisfy { (48...57).contains($0) }
    }

    /// `/targets/<dir>/<sha256>.<name>`: the blob with that hash (dir and name
    /// are not needed to find it).
    private func target(path: String, context: ServerRequestContext) async throws -> Response {
        let components = path.split(separator: "/", omittingEmptySubsequences: false)
        for component in components {
            let decoded = String(component).removingPercentEncoding ?? String(component)
            if decoded == ".." || decoded == "." || component.isEmpty {
                return Self.text(.badRequest, "bad target path: \(Self.clean(path))")
            }
        }
        guard let last = components.last else { return Self.text(.badRequest, "bad target path") }
        let hash = last.prefix(64)
        let rest = last.dropFirst(64)
        guard ContentStore.isValidHash(hash), rest.first == ".", rest.count > 1 else {
            return Self.text(.badRequest, "target path must end in <64 lowercase hex sha256>.<name>, got \(Self.clean(String(last)))")
        }
        let blobPath = store.path(sha256: String(hash))
        var st = stat()
        guard stat(blobPath, &st) == 0, st.st_mode & S_IFMT == S_IFREG else {
            return Self.text(.notFound, "no content with sha256 \(hash)")
        }
        let size = Int(st.st_size)
        let body: ResponseBody
        if size <= Self.smallBlobBytes {
            guard let bytes = try? POSIXFiles.readFile(blobPath) else {
                return Self.text(.notFound, "no content with sha256 \(hash)")
            }
            body = ResponseBody(byteBuffer: ByteBuffer(bytes: bytes))
        } else {
            body = try await fileIO.loadFile(path: blobPath, context: context, chunkLength: Self.blobChunkBytes)
        }
        return Response(status: .ok, headers: [.contentType: "application/octet-stream"], body: body)
    }

    // MARK: - Helpers

    static func text(_ status: HTTPResponse.Status, _ message: String, newline: Bool = true, headers: HTTPFields = [:]) -> Response {
        var fields = headers
        fields[.contentType] = "text/plain; charset=utf-8"
        let body = newline ? message + "\n" : message
        return Response(status: status, headers: fields, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    /// A request path made safe to echo on one line, and not too long.
    static func clean(_ text: String) -> String {
        let printable = BundlePath.printable(text)
        return printable.count > 200 ? String(printable.prefix(200)) + "…" : printable
    }
}
