import AsyncHTTPClient
import HTTPTypes
import Hummingbird
import NIOCore
import NIOHTTP1
import UpgradeCore

/// Carries out the router's decisions: forwards a call, its body streamed both ways, or answers a refusal.
struct LayerForwarder: Sendable {
    let client: HTTPClient
    let views: LayerViewHolder
    let simulationObjects: SimulationObjectSupervisor
    let upstreamTimeoutSeconds: Double
    let refreshIntervalSeconds: Double

    static let versionField = HTTPField.Name(LayerHeader.version)!
    static let errorField = HTTPField.Name(LayerHeader.error)!

    /// A call into the node, on the public address.
    func inbound(_ request: Request, application: String) async -> Response {
        let view = views.current
        switch LayerRouter.route(versionHeader: request.headers[values: Self.versionField], view: view) {
        case .application:
            return await forward(request, to: application, host: request.head.authority, tag: nil, view: view)
        case .simulationObject(let so):
            guard let address = simulationObjects.address(of: so) else {
                return Self.answer(.simulationObjectUnavailable(so, "it is starting", view: view))
            }
            return await forward(request, to: "http://\(address)", host: request.head.authority, tag: nil, view: view,
                                 through: so)
        case .refuse(let refusal):
            return Self.answer(refusal)
        }
    }

    /// An outgoing call of the application, on the proxy address: forwarded to the request's target (its
    /// absolute-form URI's authority, which HTTP/1.1 clients also send as Host) with the node's version.
    func outbound(_ request: Request) async -> Response {
        let view = views.current
        guard request.method != .connect else {
            return Self.answer(.badRequest("CONNECT is not supported: the layer proxies plain HTTP only", status: 501, view: view))
        }
        guard let authority = request.head.authority, !authority.isEmpty else {
            return Self.answer(.badRequest("a proxied request must name its target (absolute-form URI or Host)", view: view))
        }
        return await forward(request, to: "http://\(authority)", host: authority, tag: view.nodeVersion, view: view)
    }

    /// Forwards `request` to `base` + its path; `tag` replaces the caller's version header (outgoing calls).
    /// `through`: the SO at `base` (nil: the application or a peer), which names the failure when it cannot be reached.
    private func forward(_ request: Request, to base: String, host: String?, tag: Int64?, view: LayerView,
                         through so: SimulationObject? = nil) async -> Response {
        var upstream = HTTPClientRequest(url: base + (request.head.path ?? "/"))
        upstream.method = HTTPMethod(rawValue: request.method.rawValue)
        let dropped = Self.hopByHop(request.headers)
        for field in request.headers where !dropped.contains(field.name.canonicalName) {
            if tag != nil && field.name == Self.versionField { continue }
            upstream.headers.add(name: field.name.rawName, value: field.value)
        }
        if let host { upstream.headers.replaceOrAdd(name: "Host", value: host) }
        if let tag { upstream.headers.replaceOrAdd(name: LayerHeader.version, value: "\(tag)") }
        if let length = request.headers[.contentLength].flatMap({ Int64($0) }) {
            if length > 0 { upstream.body = .stream(request.body, length: .known(length)) }
        } else if request.headers[.transferEncoding] != nil {
            upstream.body = .stream(request.body, length: .unknown)
        }

        let response: HTTPClientResponse
        do {
            response = try await client.execute(upstream, deadline: .distantFuture)
        } catch {
            if let so, !Self.isTimeout(error) {
                return Self.answer(.simulationObjectUnavailable(so, String(describing: error), view: views.current))
            }
            var now = views.current
            // The manager reports `upgrading` just before it stops the application, and the poller may not have
            // seen it yet: look again after two polls before calling the application down (502) rather than
            // upgrading (503, retryable).
            if !now.upgrading && !Self.isTimeout(error) {
                try? await Task.sleep(for: .milliseconds(Int64(2 * refreshIntervalSeconds * 1000)))
                now = views.current
            }
            return Self.answer(refusal(for: error, view: now))
        }
        var headers = HTTPFields()
        let droppedAnswer = Self.hopByHop(response.headers)
        for header in response.headers {
            guard let name = HTTPField.Name(header.name), !droppedAnswer.contains(name.canonicalName),
                  name != .contentLength else { continue }
            if tag == nil && name == Self.versionField { continue }
            headers.append(HTTPField(name: name, value: header.value))
        }
        if tag == nil { headers[Self.versionField] = "\(view.nodeVersion)" }
        let length = response.headers.first(name: "Content-Length").flatMap { Int($0) }
        let body = response.body
        let status = HTTPResponse.Status(code: Int(response.status.code), reasonPhrase: response.status.reasonPhrase)
        // No body (HEAD, 204, 304): the application's Content-Length, if any, is passed on as it was given.
        if request.method == .head || [204, 304].contains(response.status.code) || (100..<200).contains(response.status.code) {
            if let length { headers[.contentLength] = "\(length)" }
            return Response(status: status, headers: headers, body: ResponseBody())
        }
        return Response(status: status, headers: headers, body: ResponseBody(contentLength: length) { writer in
            for try await chunk in body { try await writer.write(chunk) }
            try await writer.finish(nil)
        })
    }

    private func refusal(for error: any Error, view: LayerView) -> LayerRefusal {
        Self.isTimeout(error) ? .applicationTimeout(seconds: upstreamTimeoutSeconds, view: view)
            : .applicationUnreachable(String(describing: error), view: view)
    }

    static func isTimeout(_ error: any Error) -> Bool {
        guard let error = error as? HTTPClientError else { return false }
        return error == .readTimeout || error == .deadlineExceeded
    }

    /// The layer's own answer to a refusal: its status, `Upgradefs-Error`, `Upgradefs-Version`, `Retry-After`
    /// when a retry may succeed, and the JSON body.
    static func answer(_ refusal: LayerRefusal) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[errorField] = refusal.code.rawValue
        headers[versionField] = "\(refusal.nodeVersion)"
        if let seconds = refusal.retryAfterSeconds { headers[.retryAfter] = "\(seconds)" }
        return Response(status: .init(code: refusal.status), headers: headers,
                        body: ResponseBody(byteBuffer: ByteBuffer(string: refusal.json)))
    }

    /// Lower-case names of the hop-by-hop fields (RFC 9110 §7.6.1) and of those the Connection field lists; each
    /// side of the layer frames its own connection and body.
    static func hopByHop(_ fields: HTTPFields) -> Set<String> {
        var names: Set<String> = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                                  "upgrade", "proxy-authorization", "proxy-authenticate", "expect", "content-length"]
        for value in fields[values: .connection] {
            for token in value.split(separator: ",") { names.insert(String(token).trimmingWhitespace().lowercased()) }
        }
        return names
    }

    static func hopByHop(_ headers: HTTPHeaders) -> Set<String> {
        var names = hopByHop(HTTPFields())
        for value in headers[canonicalForm: "Connection"] { names.insert(value.lowercased()) }
        return names
    }
}
