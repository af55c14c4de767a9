#if canImport(Glibc)
import Glibc
#endif
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mustache
import NIOCore
import UpgradeCore

/// The fleet page's routes (docs/REFERENCE.md, "The fleet page"): `GET /` and `GET /nodes/NAME` (server-rendered),
/// `GET /events` (server-sent events: live sections re-rendered after each whiteboard change), `GET /login`,
/// `POST /login`, `POST /logout`, `POST /actions` (operator actions), and the script and style sheet under
/// `/assets/`. Who may do what is `OperatorGate`'s decision; the data is the whiteboard status.
struct DashboardHTTP: Sendable {
    let store: any WhiteboardStore
    /// The whiteboard's change notifier (woken by every write): the event streams wait on it.
    let notifier: VersionNotifier
    let publisher: Publisher
    let contentStore: ContentStore
    /// A node whose heartbeat is older than this is marked stale (the lock TTL: its holders are released then).
    let staleAfterSeconds: Int64
    let credential: OperatorCredential?
    let logger: Logger
    let library: MustacheLibrary

    /// After a change, the stream waits this long before rendering, so a burst of writes (a fleet's heartbeats)
    /// becomes one event.
    static let coalesceDelay: Duration = .milliseconds(200)
    /// A stream with nothing to send sends a comment this often (proxies keep it open; a dead client is noticed).
    static let keepAlive: Duration = .seconds(15)
    static let maxFormBytes = 16 << 10

    init(
        store: any WhiteboardStore, notifier: VersionNotifier, publisher: Publisher, contentStore: ContentStore,
        staleAfterSeconds: Int64, credential: OperatorCredential?, logger: Logger
    ) throws {
        self.store = store
        self.notifier = notifier
        self.publisher = publisher
        self.contentStore = contentStore
        self.staleAfterSeconds = staleAfterSeconds
        self.credential = credential
        self.logger = logger
        library = try Self.makeLibrary()
    }

    static func makeLibrary() throws -> MustacheLibrary {
        var library = MustacheLibrary()
        for (name, text) in DashboardTemplates.all { try library.register(text, named: name) }
        return library
    }

    /// Whether `path` is one of the page's routes.
    static func handles(_ path: String) -> Bool {
        path == "/" || path == "/events" || path == "/login" || path == "/logout" || path == "/actions"
            || path.hasPrefix("/nodes/") || path.hasPrefix("/assets/")
    }

    func respond(to request: Request, context: ServerRequestContext) async throws -> Response {
        let path = request.uri.path
        let now = Date()
        let session = sessionCookie(request, now: now)
        var facts = OperatorGate.Facts(
            credentialConfigured: credential != nil, bearerMatches: bearerMatches(request), validSession: session != nil,
            fromLoopback: Self.isLoopback(context.remoteAddress), origin: request.headers[.origin],
            host: request.head.authority, fetchSite: request.headers[HTTPField.Name("Sec-Fetch-Site")!])
        switch (path, request.method) {
        case ("/assets/live.js", .get):
            return Self.asset(DashboardTemplates.script, type: "text/javascript; charset=utf-8")
        case ("/assets/dashboard.css", .get):
            return Self.asset(DashboardTemplates.styleSheet, type: "text/css; charset=utf-8")
        case ("/login", .get):
            return page("signin", MessageView(title: "operator sign-in", session: sessionView(session, back: "/")))
        case ("/login", .post):
            return try await signIn(request, facts: facts, now: now)
        case ("/logout", .post):
            // Another site may not sign the operator out either.
            if case .refused(let status, let reason) = OperatorGate.crossSite(facts) ?? .allowed {
                return page("result", MessageView(title: "refused", heading: "Refused", message: reason, session: sessionView(session, back: "/")),
                            status: status)
            }
            var response = Self.redirect("/")
            response.headers[.setCookie] = OperatorCredential.clearCookie
            return response
        case ("/actions", .post):
            let form = FormFields.parse(try await formBody(request))
            facts.validCSRF = session.map { credential?.isValidCSRF(form["csrf"] ?? "", session: $0) ?? false } ?? false
            return try await act(form: form, facts: facts, session: session)
        case (_, .get), (_, .head):
            if case .refused(let status, let reason) = OperatorGate.read(facts) {
                return page("signin", MessageView(title: "operator sign-in", message: reason, session: sessionView(nil, back: "/")),
                            status: status)
            }
            if path == "/" {
                let view = DashboardView(title: "fleet", page: try await fleet(now: now), session: sessionView(session, back: "/"))
                return page("fleet", view)
            }
            if path == "/events" {
                return events(node: FormFields.parse(request.uri.query ?? "")["node"], session: session)
            }
            let name = String(path.dropFirst("/nodes/".count))
            guard path.hasPrefix("/nodes/"), let node = try await nodePage(name, now: now) else {
                return page("result", MessageView(
                    title: "not found", heading: "Not found", kind: "error", message: "no enrolled node at \(HTTPHandler.clean(path))",
                    session: sessionView(session, back: "/")), status: 404)
            }
            return page("node", DashboardView(title: "node \(name)", page: node, session: sessionView(session, back: path)))
        default:
            return HTTPHandler.text(.methodNotAllowed, "\(request.method) is not allowed on \(HTTPHandler.clean(path))")
        }
    }

    // MARK: - Pages

    func fleet(now: Date) async throws -> FleetPage {
        let status = WhiteboardStatus(
            enrolled: try await store.enrolledNodes(), view: try await store.snapshot(), refusals: try await store.refusals(), now: now)
        return FleetPage(status: status, published: await publishedUpgrades(), staleAfterSeconds: staleAfterSeconds, now: now)
    }

    func nodePage(_ name: String, now: Date) async throws -> NodePage? {
        guard WhiteboardPath.isNodeName(name) else { return nil }
        let view = try await store.snapshot()
        let status = WhiteboardStatus(enrolled: try await store.enrolledNodes(), view: view, refusals: try await store.refusals(), now: now)
        return NodePage(name: name, status: status, view: view, staleAfterSeconds: staleAfterSeconds, now: now)
    }

    /// Each published upgrade's class and SF (from its signed manifest) and when it was published: when the server
    /// stored its manifest's blob (the blob's modification time; a blob is written once, at publishing).
    func publishedUpgrades() async -> [PublishedUpgrade] {
        var upgrades: [PublishedUpgrade] = []
        for (path, target) in await publisher.targets.targets where path.hasSuffix("/" + UpgradeManifest.fileName) {
            guard let version = Int64(path.dropLast(UpgradeManifest.fileName.count + 1)),
                  let manifest = target.custom?["upgradefs"]?["manifest"],
                  let upgradeClass = manifest["class"]?.stringValue
            else { continue }
            var info = stat()
            let publishedAt = stat(contentStore.path(sha256: target.sha256), &info) == 0
                ? Date(timeIntervalSince1970: Double(info.st_mtim.tv_sec)) : nil
            upgrades.append(PublishedUpgrade(
                version: version, class: upgradeClass, sf: manifest["sf"]?.stringValue, publishedAt: publishedAt,
                description: manifest["description"]?.stringValue))
        }
        return upgrades
    }

    /// The live sections of the fleet page (or of `node`'s page) as they render now: section id → HTML.
    func sections(node: String?, session: String?, now: Date) async throws -> [(String, String)] {
        if let node {
            guard let page = try await nodePage(node, now: now) else { return [] }
            let view = DashboardView(title: "node \(node)", page: page, session: sessionView(session, back: "/nodes/\(node)"))
            return DashboardTemplates.nodeSections.map { ($0, library.render(view, withTemplate: $0) ?? "") }
        }
        let view = DashboardView(title: "fleet", page: try await fleet(now: now), session: sessionView(session, back: "/"))
        return DashboardTemplates.fleetSections.map { ($0, library.render(view, withTemplate: $0) ?? "") }
    }

    /// `text/event-stream`: the live sections whose rendering changed since the stream last sent them, after every
    /// whiteboard change (the notifier wakes the stream; no timer asks the store), and `revision`. Ends when the
    /// client goes or the server stops.
    private func events(node: String?, session: String?) -> Response {
        let dashboard = self
        let body = ResponseBody { writer in
            var sent: [String: String] = [:]
            var out = "retry: 1000\n\n"
            while !Task.isCancelled && !dashboard.notifier.isShutDown {
                let revision = dashboard.notifier.current
                for (id, html) in try await dashboard.sections(node: node, session: session, now: Date()) where sent[id] != html {
                    out += ServerSentEvent.encode(event: id, data: html)
                    sent[id] = html
                }
                let stored = String(try await dashboard.store.revision())
                if sent["revision"] != stored {
                    out += ServerSentEvent.encode(event: "revision", data: stored)
                    sent["revision"] = stored
                }
                // A comment when there is nothing new: the 5-s check's wake-up refreshes heartbeat ages, and a
                // client that went away is noticed.
                try await writer.write(ByteBuffer(string: out.isEmpty ? ": keep-alive\n\n" : out))
                out = ""
                _ = await dashboard.notifier.wait(after: revision, timeout: Self.keepAlive)
                try await Task.sleep(for: Self.coalesceDelay)
            }
            try await writer.finish(nil)
        }
        return Response(
            status: .ok, headers: Self.securityHeaders(type: "text/event-stream; charset=utf-8"), body: body)
    }

    // MARK: - Operator

    private func signIn(_ request: Request, facts: OperatorGate.Facts, now: Date) async throws -> Response {
        if case .refused(let status, let reason) = OperatorGate.signIn(facts) {
            return page("signin", MessageView(title: "operator sign-in", message: reason, session: sessionView(nil, back: "/")), status: status)
        }
        let form = FormFields.parse(try await formBody(request))
        guard let credential, credential.matches(token: form["token"] ?? "") else {
            logger.warning("operator sign-in refused: wrong token", metadata: ["http.peer": .string(facts.fromLoopback ? "loopback" : "remote")])
            return page("signin", MessageView(title: "operator sign-in", message: "wrong operator token", session: sessionView(nil, back: "/")),
                        status: 401)
        }
        logger.notice("operator signed in on the fleet page")
        var response = Self.redirect("/")
        response.headers[.setCookie] = OperatorCredential.setCookie(credential.newSession(now: now))
        return response
    }

    private func act(form: [String: String], facts: OperatorGate.Facts, session: String?) async throws -> Response {
        let back = Self.safeBack(form["back"])
        func answer(_ status: Int, _ heading: String, _ kind: String, _ message: String) -> Response {
            page("result", MessageView(title: heading.lowercased(), heading: heading, kind: kind, message: message, back: back,
                                       session: sessionView(session, back: back)), status: status)
        }
        if case .refused(let status, let reason) = OperatorGate.act(facts) {
            logger.warning("operator action refused", metadata: ["http.status": .stringConvertible(status), "reason": .string(reason)])
            return answer(status, "Refused", "error", reason)
        }
        let action: OperatorAction
        switch OperatorAction.parse(form) {
        case .success(let parsed): action = parsed
        case .failure(let refused): return answer(refused.body.httpStatus, "Refused", "error", refused.body.error)
        }
        let write = action.write
        if let refusal = try await store.applyAsOperator(write.op, path: write.path, content: write.content) {
            logger.warning(
                "operator action refused by the whiteboard: \(refusal.error)",
                metadata: ["udb.op": .string(write.op.rawValue), "udb.path": .string(HTTPHandler.clean(write.path)),
                           "udb.code": .string(refusal.code.rawValue)])
            return answer(refusal.httpStatus, "Refused", "error", refusal.error)
        }
        notifier.publish(Int(try await store.revision()))
        logger.notice(
            "operator action applied: \(action.summary)",
            metadata: ["udb.op": .string(write.op.rawValue), "udb.path": .string(write.path)])
        return facts.bearerMatches == true ? answer(200, "Done", "ok", action.summary) : Self.redirect(back)
    }

    private func formBody(_ request: Request) async throws -> String {
        let buffer = try await request.body.collect(upTo: Self.maxFormBytes)
        return String(buffer: buffer)
    }

    /// The session cookie when it is one the credential made and it has not expired.
    private func sessionCookie(_ request: Request, now: Date) -> String? {
        guard let credential, let value = request.cookies[OperatorCredential.cookieName]?.value,
              credential.isValidSession(value, now: now)
        else { return nil }
        return value
    }

    /// Whether `Authorization: Bearer …` is the token; nil without such a header.
    private func bearerMatches(_ request: Request) -> Bool? {
        guard let value = request.headers[.authorization], value.lowercased().hasPrefix("bearer ") else { return nil }
        return credential?.matches(token: String(value.dropFirst("bearer ".count)).trimmingWhitespace()) ?? false
    }

    private func sessionView(_ session: String?, back: String) -> SessionView {
        SessionView(
            signedIn: session != nil, csrf: session.flatMap { credential?.csrfToken(session: $0) } ?? "",
            actionsEnabled: credential != nil, back: back)
    }

    // MARK: - Helpers

    /// A page to return to after an action: `/` or `/nodes/NAME`, nothing else (no open redirect).
    static func safeBack(_ back: String?) -> String {
        guard let back, back.hasPrefix("/nodes/"), WhiteboardPath.isNodeName(String(back.dropFirst("/nodes/".count))) else { return "/" }
        return back
    }

    static func isLoopback(_ address: SocketAddress?) -> Bool {
        guard let ip = address?.ipAddress else { return false }
        return ip.hasPrefix("127.") || ip == "::1" || ip.hasPrefix("::ffff:127.")
    }

    private func page(_ template: String, _ view: Any, status: Int = 200) -> Response {
        let html = library.render(view, withTemplate: template) ?? ""
        return Response(
            status: HTTPResponse.Status(code: status), headers: Self.securityHeaders(type: "text/html; charset=utf-8"),
            body: ResponseBody(byteBuffer: ByteBuffer(string: html)))
    }

    /// No framing by other sites, scripts and styles from this server only, no caching of operator pages.
    static func securityHeaders(type: String) -> HTTPFields {
        var headers: HTTPFields = [.contentType: type, .cacheControl: "no-store"]
        headers[.contentSecurityPolicy] = "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; form-action 'self'"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        return headers
    }

    private static func asset(_ text: String, type: String) -> Response {
        var headers = securityHeaders(type: type)
        headers[.cacheControl] = "max-age=300"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    private static func redirect(_ location: String) -> Response {
        var headers = securityHeaders(type: "text/plain; charset=utf-8")
        headers[.location] = location
        return Response(status: .seeOther, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: "see \(location)\n")))
    }
}

/// What the templates see: the page's data and the session.
struct DashboardView<Page: Sendable>: Sendable {
    var title: String
    var page: Page
    var session: SessionView
}

struct SessionView: Sendable, Equatable {
    var signedIn: Bool
    /// The session's CSRF token (empty when not signed in: an action then is refused for want of credentials).
    var csrf: String
    var actionsEnabled: Bool
    /// The page an action form returns to.
    var back: String
}

/// The sign-in and result pages.
struct MessageView: Sendable {
    var title: String
    var heading: String = ""
    var kind: String = "error"
    var message: String?
    var back: String = "/"
    var session: SessionView
}

/// The server's request context: Hummingbird's core context and the client's address (the fleet page is open to
/// loopback clients only).
struct ServerRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}
