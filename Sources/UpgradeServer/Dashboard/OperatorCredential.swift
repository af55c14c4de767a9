import Crypto
import Foundation
import UpgradeCore

/// The operator's credential for the fleet page (docs/DESIGN.md, "Operator actions"): a token set on the server
/// (`serve --operator-token-file`). Sent once to sign in (or as `Authorization: Bearer TOKEN` by scripts); a signed-in
/// browser then carries a session cookie, `EXPIRY.MAC` where MAC is HMAC-SHA256 keyed by the token over the expiry,
/// so the server keeps no session table and replacing the token ends every session. Each session's CSRF token is an
/// HMAC of its cookie. Every comparison is in constant time; nothing here is logged. Pure: the time is given.
struct OperatorCredential: Sendable {
    /// The token's bytes: the HMAC key.
    private let secret: [UInt8]
    private let tokenDigest: [UInt8]

    static let cookieName = "upgradefs_operator"
    static let sessionSeconds: Int64 = 12 * 3600
    /// Fewest characters a token has (e.g. `openssl rand -hex 32` gives 64).
    static let minimumTokenLength = 32

    struct Problem: Error, CustomStringConvertible {
        let description: String
    }

    /// The token is the file's text without surrounding white space: at least 32 printable ASCII characters.
    init(fileContent: [UInt8]) throws(Problem) {
        let text = String(decoding: fileContent, as: UTF8.self).trimmingWhitespace()
        guard text.utf8.count >= Self.minimumTokenLength, text.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw Problem(description: "must hold one token of at least \(Self.minimumTokenLength) printable ASCII characters "
                + "without spaces (e.g. from `openssl rand -hex 32`)")
        }
        secret = Array(text.utf8)
        tokenDigest = Array(SHA256.hash(data: Array(text.utf8)))
    }

    /// Whether `candidate` is the token; the time taken does not depend on where they differ (nor on their lengths).
    func matches(token candidate: String) -> Bool {
        Self.constantTimeEquals(Array(SHA256.hash(data: Array(candidate.utf8))), tokenDigest)
    }

    /// A new session cookie's value, valid until `now` + `sessionSeconds`.
    func newSession(now: Date) -> String {
        let expiry = Int64(now.timeIntervalSince1970) + Self.sessionSeconds
        return "\(expiry).\(mac("upgradefs-operator-session-v1 \(expiry)"))"
    }

    /// Whether `cookie` is a session this token made that has not expired at `now`.
    func isValidSession(_ cookie: String, now: Date) -> Bool {
        let parts = cookie.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].utf8.count <= 18, let expiry = Int64(parts[0]), expiry > Int64(now.timeIntervalSince1970)
        else { return false }
        return Self.constantTimeEquals(Array(parts[1].utf8), Array(mac("upgradefs-operator-session-v1 \(expiry)").utf8))
    }

    /// The CSRF token of the session `cookie` (what its pages' forms carry).
    func csrfToken(session cookie: String) -> String { mac("upgradefs-operator-csrf-v1 " + cookie) }

    func isValidCSRF(_ token: String, session cookie: String) -> Bool {
        Self.constantTimeEquals(Array(token.utf8), Array(csrfToken(session: cookie).utf8))
    }

    private func mac(_ message: String) -> String {
        Hex.encode(Array(HMAC<SHA256>.authenticationCode(for: Array(message.utf8), using: SymmetricKey(data: secret))))
    }

    /// Equal lengths and bytes, looking at every byte whatever it finds.
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }

    /// The `Set-Cookie` value that signs a browser in: not readable by scripts, sent only with requests that start on
    /// this site (`SameSite=Strict`: a form on another site posting here arrives without it).
    static func setCookie(_ value: String) -> String {
        "\(cookieName)=\(value); Path=/; Max-Age=\(sessionSeconds); HttpOnly; SameSite=Strict"
    }

    static let clearCookie = "\(cookieName)=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
}

/// Who may read the fleet page and act on it, decided from what a request carries (docs/DESIGN.md, "Operator
/// actions"). Pure: the HTTP layer gathers the facts and carries out the verdict.
enum OperatorGate {
    /// What a request carries, already checked against the credential.
    struct Facts: Sendable, Equatable {
        /// The server has an operator token (`--operator-token-file`).
        var credentialConfigured: Bool
        /// `Authorization: Bearer …` was sent: whether it is the token (nil: no such header).
        var bearerMatches: Bool?
        /// A session cookie that is valid now was sent.
        var validSession: Bool
        /// The form's `csrf` field is the session's CSRF token.
        var validCSRF: Bool
        /// The request came from a loopback address.
        var fromLoopback: Bool
        /// `Origin`, `Host` and `Sec-Fetch-Site` as sent (nil: absent).
        var origin: String?
        var host: String?
        var fetchSite: String?

        init(
            credentialConfigured: Bool, bearerMatches: Bool? = nil, validSession: Bool = false, validCSRF: Bool = false,
            fromLoopback: Bool = true, origin: String? = nil, host: String? = nil, fetchSite: String? = nil
        ) {
            self.credentialConfigured = credentialConfigured
            self.bearerMatches = bearerMatches
            self.validSession = validSession
            self.validCSRF = validCSRF
            self.fromLoopback = fromLoopback
            self.origin = origin
            self.host = host
            self.fetchSite = fetchSite
        }
    }

    enum Verdict: Sendable, Equatable {
        case allowed
        /// HTTP status and why, for the page that says so.
        case refused(status: Int, reason: String)
    }

    /// Reading the page: open from loopback, else only with the operator's credential.
    static func read(_ facts: Facts) -> Verdict {
        if facts.bearerMatches == false { return .refused(status: 401, reason: "wrong operator token") }
        if facts.fromLoopback || facts.validSession || facts.bearerMatches == true { return .allowed }
        if !facts.credentialConfigured {
            return .refused(status: 403, reason: "the fleet page is open on loopback only: the server has no --operator-token-file")
        }
        return .refused(status: 401, reason: "sign in as the operator to see the fleet from another host")
    }

    /// An operator action (a POST): always needs the credential. A bearer token is not sent by browsers on their own,
    /// so it needs nothing more; a session cookie is, so its request must come from this site (`Origin` equal to
    /// this host, `Sec-Fetch-Site` same-origin when sent) and carry the session's CSRF token.
    static func act(_ facts: Facts) -> Verdict {
        guard facts.credentialConfigured else {
            return .refused(status: 403, reason: "operator actions are off: the server was started without --operator-token-file")
        }
        if let bearer = facts.bearerMatches {
            return bearer ? .allowed : .refused(status: 401, reason: "wrong operator token")
        }
        if let refusal = crossSite(facts) { return refusal }
        guard facts.validSession else {
            return .refused(status: 401, reason: "operator credentials required: sign in as the operator first")
        }
        guard facts.validCSRF else {
            return .refused(status: 403, reason: "missing or wrong CSRF token: reload the page and try again")
        }
        return .allowed
    }

    /// Signing in (a POST of the token): refused from another site, so no page elsewhere can sign a browser in.
    static func signIn(_ facts: Facts) -> Verdict {
        guard facts.credentialConfigured else {
            return .refused(status: 403, reason: "operator sign-in is off: the server was started without --operator-token-file")
        }
        return crossSite(facts) ?? .allowed
    }

    /// A request a browser sent from another site, or without saying where from.
    static func crossSite(_ facts: Facts) -> Verdict? {
        if let site = facts.fetchSite, site != "same-origin", site != "none" {
            return .refused(status: 403, reason: "cross-site request refused (Sec-Fetch-Site: \(site))")
        }
        guard let origin = facts.origin else {
            return .refused(status: 403, reason: "request without an Origin header refused (it cannot be told from a cross-site one)")
        }
        guard let host = facts.host, originHost(origin) == host.lowercased() else {
            return .refused(status: 403, reason: "cross-site request refused: Origin \(origin) is not this server")
        }
        return nil
    }

    /// `HOST:PORT` of an origin `http://HOST:PORT` (lowercased), nil for `null` or another shape.
    static func originHost(_ origin: String) -> String? {
        for scheme in ["http://", "https://"] where origin.lowercased().hasPrefix(scheme) {
            let rest = origin.dropFirst(scheme.count)
            guard !rest.isEmpty, !rest.contains("/") else { return nil }
            return rest.lowercased()
        }
        return nil
    }
}
