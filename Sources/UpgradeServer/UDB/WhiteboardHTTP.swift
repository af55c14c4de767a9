import Foundation
import Hummingbird
import HTTPTypes
import Logging
import ServiceLifecycle
import Sodium
import UpgradeCore

/// The whiteboard's HTTP routes under `/v1/udb/` (docs/DESIGN.md, "Wire protocol"):
/// `POST apply`, `GET snapshot`, `GET changes?after=R` (long poll). Answers
/// are signed by the server's timestamp key.
struct WhiteboardHTTP: Sendable {
    let store: any WhiteboardStore
    let notifier: VersionNotifier
    let signingKey: Ed25519KeyPair
    let keyID: String
    let changesTimeout: Duration
    let logger: Logger
    let counters = WhiteboardCounters()

    /// Largest apply body: a 1 MiB log write in base64 plus the envelope.
    static let maxApplyBodyBytes = 1_500_000
    static let maxNonceBytes = 128

    init(store: any WhiteboardStore, signingKey: Ed25519KeyPair, changesTimeout: Duration, logger: Logger) async throws {
        self.store = store
        self.notifier = VersionNotifier(current: Int(try await store.revision()))
        self.signingKey = signingKey
        self.keyID = TUFKey(ed25519PublicKey: signingKey.publicKey).keyID
        self.changesTimeout = changesTimeout
        self.logger = logger
        let counters = self.counters
        store.observeExpiredHolders { released in Self.report(expired: released, counters: counters, logger: logger) }
    }

    func respond(to request: Request, context: ServerRequestContext) async throws -> Response {
        let route = String(request.uri.path.dropFirst("/v1/udb/".count))
        do {
            switch (route, request.method) {
            case ("apply", .post): return try await apply(request)
            case ("snapshot", .get): return try await snapshot(query: request.uri.query)
            case ("changes", .get): return try await changes(query: request.uri.query)
            case ("apply", _):
                return HTTPHandler.text(.methodNotAllowed, "use POST for /v1/udb/apply", headers: [.allow: "POST"])
            case ("snapshot", _), ("changes", _):
                return HTTPHandler.text(.methodNotAllowed, "use GET for /v1/udb/\(route)", headers: [.allow: "GET"])
            default:
                return HTTPHandler.text(.notFound, "not found: \(HTTPHandler.clean(request.uri.path))")
            }
        } catch is CancellationError {
            // The server is stopping (a long poll cut short): not a failure of the request, nothing to log.
            return HTTPHandler.text(.serviceUnavailable, "the server is stopping")
        } catch let error as WhiteboardStorageUnavailable {
            // Nothing was decided: the node's sender retries a 503 (content is still served meanwhile).
            logger.warning("whiteboard request not answered", metadata: ["udb.route": .string(route), "error": .string(error.description)])
            var response = Self.error(WhiteboardErrorBody(error: error.description, code: .unavailable))
            response.headers[.retryAfter] = "1"
            return response
        } catch {
            logger.error("whiteboard request failed", metadata: ["udb.route": .string(route), "error": .string("\(error)")])
            return Self.error(WhiteboardErrorBody(error: "internal error: \(error)", code: .internalError))
        }
    }

    // MARK: - Routes

    private func apply(_ request: Request) async throws -> Response {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: Self.maxApplyBodyBytes)
        } catch {
            return Self.error(WhiteboardErrorBody(error: "request body larger than \(Self.maxApplyBodyBytes) bytes", code: .malformed))
        }
        let signed: SignedWhiteboardRequest
        do {
            signed = try SignedWhiteboardRequest.decode(Array(buffer.readableBytesView))
        } catch {
            logger.warning("whiteboard write refused: malformed request", metadata: ["udb.reason": .string(error.description)])
            counters.refused(.malformed)
            // Unsigned: a body that does not parse may have been altered on the way; no verdict binds the node.
            return Self.error(WhiteboardErrorBody(error: error.description, code: .malformed))
        }
        let outcome = try await store.apply(signed)
        let r = signed.request
        switch outcome {
        case .applied(let response):
            if response.result == .ok { notifier.publish(Int(response.revision)) }
            counters.applied(r.op, duplicate: response.result == .duplicate)
            logger.debug(
                "whiteboard write applied",
                metadata: ["node.name": .string(r.node), "udb.op": .string(r.op.rawValue), "udb.path": .string(r.path),
                           "udb.result": .string(response.result.rawValue), "udb.revision": .stringConvertible(response.revision)])
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: response.signed(by: signingKey).encoded())))
        case .refused(let body):
            counters.refused(body.code)
            logger.warning(
                "whiteboard write refused: \(body.error)",
                metadata: ["node.name": .string(r.node), "udb.op": .string(r.op.rawValue), "udb.path": .string(HTTPHandler.clean(r.path)),
                           "udb.channel": .string(r.channel.rawValue), "udb.seq": .stringConvertible(r.seq),
                           "udb.code": .string(body.code.rawValue)])
            return signedError(body, for: signed)
        }
    }

    private func snapshot(query: String?) async throws -> Response {
        let parameters = Self.parameters(query)
        guard let nonce = Self.nonce(parameters) else { return Self.badNonce() }
        var view = try await store.snapshot()
        view.nonce = nonce
        return signedView(view)
    }

    private func changes(query: String?) async throws -> Response {
        let parameters = Self.parameters(query)
        guard let nonce = Self.nonce(parameters) else { return Self.badNonce() }
        guard let text = parameters["after"] else {
            return Self.error(WhiteboardErrorBody(error: "missing query parameter after=R (the revision you have)", code: .malformed))
        }
        guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ (48...57).contains($0) }), let after = Int64(text) else {
            return Self.error(WhiteboardErrorBody(error: "after must be a non-negative integer, got \"\(HTTPHandler.clean(text))\"", code: .malformed))
        }
        if try await store.revision() <= after {
            _ = await notifier.wait(after: Int(after), timeout: changesTimeout)
        }
        var view = try await store.changes(after: after)
        view.nonce = nonce
        view.after = after
        return signedView(view)
    }

    /// `GET /metrics` (Prometheus text format).
    /// Releases holders whose node's heartbeat is older than the lock TTL, logged and counted (the caller wakes
    /// the long polls).
    func releaseExpiredHolders() async throws {
        Self.report(expired: try await store.releaseExpiredHolders(), counters: counters, logger: logger)
    }

    static func report(expired released: [WhiteboardHolder], counters: WhiteboardCounters, logger: Logger) {
        counters.ttlReleased(released.count)
        for holder in released {
            logger.notice(
                "lock holder released: its node's heartbeat is older than the lock TTL",
                metadata: ["udb.lock": .string(holder.lock), "udb.holder": .string(holder.holder), "node.name": .string(holder.node)])
        }
    }

    func metrics(publisher: Publisher) async -> Response {
        do {
            let status = WhiteboardStatus(
                enrolled: try await store.enrolledNodes(), view: try await store.snapshot(), refusals: try await store.refusals())
            let text = counters.render(
                status: status, publishedVersion: await publisher.latestVersion, timestampVersion: await publisher.timestampVersion,
                bundles: await publisher.outcomeCounts)
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        } catch {
            return HTTPHandler.text(.internalServerError, "cannot read the upgrade database: \(error)")
        }
    }

    /// Registers every published bundle version N with its class (from the signed manifest), which makes
    /// `upgrades/N/summary` exist.
    func registerPublishedUpgrades(_ targets: TargetsMetadata) async throws {
        var classes: [Int64: String] = [:]
        for (path, target) in targets.targets where path.hasSuffix("/upgrade.toml") {
            guard let version = Int64(path.dropLast("/upgrade.toml".count)), version > 0,
                  let upgradeClass = target.custom?["upgradefs"]?["manifest"]?["class"]?.stringValue
            else { continue }
            classes[version] = upgradeClass
        }
        for version in classes.keys.sorted() { try await store.registerUpgrade(version, class: classes[version]!) }
        // New summaries are changes: followers and the fleet page's streams hear of them now, not at the next check.
        notifier.publish(Int(try await store.revision()))
    }

    // MARK: - Helpers

    private func signedView(_ view: WhiteboardView) -> Response {
        signedResponse(.ok, body: view.toJSON().canonicalBytes())
    }

    /// `body` (canonical JSON, built once: what is signed is exactly what is sent) with its `Upgradefs-Signature`.
    private func signedResponse(_ status: HTTPResponse.Status, body: [UInt8]) -> Response {
        let signature = WhiteboardServerSignature.sign(canonicalBody: body, key: signingKey)
        var headers: HTTPFields = [.contentType: "application/json"]
        headers[HTTPField.Name(WhiteboardServerSignature.headerName)!] = WhiteboardServerSignature.header(keyID: keyID, signature: signature)
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// A refusal of `request`, bound to its nonce and to the hash of its signed body (re-encoded canonically, as the
    /// node sends it) and signed like a read answer: the node takes only such refusals as verdicts.
    private func signedError(_ body: WhiteboardErrorBody, for request: SignedWhiteboardRequest) -> Response {
        var body = body
        body.nonce = Hex.encode(request.request.nonce)
        body.request = WhiteboardErrorBody.requestHash(request.encoded())
        return signedResponse(HTTPResponse.Status(code: body.httpStatus), body: body.encoded())
    }

    static func error(_ body: WhiteboardErrorBody) -> Response {
        Response(
            status: HTTPResponse.Status(code: body.httpStatus), headers: [.contentType: "application/json"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body.encoded())))
    }

    private static func badNonce() -> Response {
        error(WhiteboardErrorBody(error: "nonce must be at most \(maxNonceBytes) letters and digits", code: .malformed))
    }

    /// The `nonce` parameter ("" when absent), or nil when it is not letters and digits.
    private static func nonce(_ parameters: [String: String]) -> String? {
        let nonce = parameters["nonce"] ?? ""
        guard nonce.utf8.count <= maxNonceBytes,
              nonce.utf8.allSatisfy({ (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) })
        else { return nil }
        return nonce
    }

    private static func parameters(_ query: String?) -> [String: String] {
        var result: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            result[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return result
    }
}

/// Every 5 s: releases holders whose node's heartbeat is older than the lock
/// TTL, and wakes long polls for changes made by other processes (`upgradefs enroll`).
/// On every publish: gives each published upgrade its `upgrades/N/summary`.
struct WhiteboardService: Service {
    static let checkInterval: Duration = .seconds(5)
    let whiteboard: WhiteboardHTTP
    let publisher: Publisher

    func run() async throws {
        let notifier = whiteboard.notifier
        try await withGracefulShutdownHandler {
            try await cancelWhenGracefulShutdown {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { try await checkLoop() }
                    group.addTask { await registrationLoop() }
                    try await group.next()
                    group.cancelAll()
                }
            }
        } onGracefulShutdown: {
            notifier.shutdown()
        }
    }

    private func checkLoop() async throws {
        while !Task.isCancelled {
            try await Task.sleep(for: Self.checkInterval)
            do {
                try await whiteboard.releaseExpiredHolders()
                // Wakes long polls for those releases and for changes other processes made (`upgradefs enroll`).
                whiteboard.notifier.publish(Int(try await whiteboard.store.revision()))
            } catch is CancellationError {
                return
            } catch {
                if Task.isCancelled { return }
                whiteboard.logger.error("whiteboard check failed", metadata: ["error": .string("\(error)")])
            }
        }
    }

    private func registrationLoop() async {
        var seen = -1
        while !Task.isCancelled {
            let current = await publisher.timestampVersion
            if current != seen {
                seen = current
                do {
                    try await whiteboard.registerPublishedUpgrades(await publisher.targets)
                } catch {
                    if Task.isCancelled { return }
                    whiteboard.logger.error("cannot add upgrade summaries", metadata: ["error": .string("\(error)")])
                    // The database may be back later (PostgreSQL restarting): try again after the check interval.
                    seen = -1
                    do { try await Task.sleep(for: Self.checkInterval) } catch { return }
                    continue
                }
            }
            if await publisher.notifier.wait(after: seen, timeout: .seconds(25)) <= seen {
                // A timeout, or the notifier shut down: do not spin.
                do { try await Task.sleep(for: .seconds(1)) } catch { return }
            }
        }
    }
}
